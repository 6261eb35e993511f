"""In-process tests of the HTTP API (FastAPI TestClient): both request forms, the three
response types checked against independent computations, and problem+json errors."""

from __future__ import annotations

import base64
import io
import json
import time
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():  # starlette's note about httpx in its TestClient
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient

from core import METRICS, POST_PROCESSORS, PRE_PROCESSORS, STRATEGIES, Finder
from core.render import RenderConfig, heatmap, lut
from service.app import create_app
from service.settings import Settings
from tests.conftest import assert_problem, b64, png, wait_ready


def decode_map(payload: dict) -> np.ndarray:
    assert payload["dtype"] == "float32"
    raw = base64.b64decode(payload["data"])
    return np.frombuffer(raw, dtype="<f4").reshape(payload["shape"])


@pytest.fixture(scope="module")
def pair(astronaut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 256x256 crop of the astronaut photo and a copy with a painted rectangle."""
    ref = np.ascontiguousarray(astronaut[:256, 128:384])
    cand = ref.copy()
    cand[60:100, 150:200] = (250, 20, 20)
    return ref, cand


@pytest.fixture(scope="module")
def pair_png(pair) -> tuple[bytes, bytes]:
    return png(pair[0]), png(pair[1])


def _client(**settings) -> TestClient:
    """One CPU worker unless asked otherwise, so metrics per worker are predictable."""
    settings = {"devices": ["cpu"], "cpu_workers": 1, **settings}
    return TestClient(create_app(Settings(**settings)), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with _client(max_pixels=1_000_000) as c:
        wait_ready(c)
        yield c


def post_files(client: TestClient, ref: bytes, cand: bytes, config: dict | str | None = None,
               accept: str | None = None, metrics: str | None = None):
    data = {} if config is None else {
        "config": config if isinstance(config, str) else json.dumps(config)}
    if metrics is not None:
        data["metrics"] = metrics
    headers = {"accept": accept} if accept else {}
    return client.post("/v1/diff", files={"reference": ("ref.png", ref, "image/png"),
                                          "candidate": ("cand.png", cand, "image/png")},
                       data=data, headers=headers)


# -- results --------------------------------------------------------------------------


def test_multipart_json_response_matches_core(client, pair, pair_png):
    r = post_files(client, *pair_png)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"map", "metrics", "regions", "summary", "config", "timing_ms"}
    m = decode_map(body["map"])
    assert m.shape == (256, 256)
    expected = Finder(device="cpu").analyze(*pair)[0]
    np.testing.assert_allclose(m, expected.map, rtol=1e-5, atol=1e-6)
    # the default answer has only the cheap scores (the configured SSIM is asked for below)
    assert set(body["metrics"]) == set(expected.metrics) == {"mse", "psnr"}
    for name, value in expected.metrics.items():
        assert body["metrics"][name] == pytest.approx(value, rel=1e-5)
    scores = [reg["score"] for reg in body["regions"]]
    assert scores == sorted(scores, reverse=True) and scores
    assert body["regions"] == [reg.to_dict() for reg in expected.regions]
    assert body["summary"] == expected.summary == (
        f"{len(scores)} significant region{'s' if len(scores) > 1 else ''}")
    assert all(reg["significance"] >= 12 for reg in body["regions"])  # the hysteresis core
    assert body["config"] == Finder(device="cpu").config.resolved(mode="json")
    assert {"decode", "queue", "compute", "encode", "total"} <= set(body["timing_ms"])
    assert "compute;dur=" in r.headers["server-timing"]


def test_metrics_option_asks_for_scores_in_both_forms(client, pair, pair_png):
    """``metrics`` names the scores: the configured SSIM (as ``true`` or by name), several,
    or none; the values are core's for the same request."""
    ref, cand = pair_png
    want = Finder(device="cpu").analyze(*pair, metrics=["ssim", "psnr"], regions=False)[0]
    as_json = client.post("/v1/diff", json={"reference": {"data": b64(ref)},
                                            "candidate": {"data": b64(cand)},
                                            "metrics": ["ssim", "psnr"]}).json()
    for form in ("ssim,psnr", '["ssim", "psnr"]'):
        body = post_files(client, ref, cand, metrics=form).json()
        assert body["metrics"] == as_json["metrics"]
    assert set(as_json["metrics"]) == {"ssim", "psnr"}
    for name, value in want.metrics.items():
        assert as_json["metrics"][name] == pytest.approx(value, rel=1e-5)
    assert set(post_files(client, ref, cand, metrics="true").json()["metrics"]) == {"ssim"}
    assert post_files(client, ref, cand, metrics="false").json()["metrics"] == {}
    assert post_files(client, ref, cand, metrics="none").json()["metrics"] == {}  # as the CLI
    assert set(post_files(client, ref, cand, metrics="auto").json()["metrics"]) == {"mse",
                                                                                    "psnr"}


def test_unknown_metrics_option_names_the_valid_ones(client, pair_png):
    ref, cand = pair_png
    multipart = assert_problem(post_files(client, ref, cand, metrics="ssim,nope"), 422,
                               "validation-error")
    as_json = assert_problem(client.post("/v1/diff", json={
        "reference": {"data": b64(ref)}, "candidate": {"data": b64(cand)},
        "metrics": ["nope"]}), 422, "validation-error")
    for body in (multipart, as_json):
        [err] = body["errors"]
        assert err["pointer"] == "#/metrics"
        assert "'nope'" in err["message"]
        for name in METRICS.names():
            assert name in body["detail"]
    wrong = assert_problem(client.post("/v1/diff", json={
        "reference": {"data": b64(ref)}, "candidate": {"data": b64(cand)},
        "metrics": "ssim"}), 422, "validation-error")
    assert wrong["errors"][0]["pointer"] == "#/metrics"


def test_identical_pair_says_no_significant_difference(client, pair_png):
    body = post_files(client, pair_png[0], pair_png[0]).json()
    assert body["regions"] == []
    assert body["summary"] == "no significant difference found"
    # the default PNG heatmap is in fixed units: such a pair looks empty, an edit does not
    first = lut(body["config"]["render"]["colormap"])[0]
    same = post_files(client, pair_png[0], pair_png[0], accept="image/png")
    assert (np.asarray(Image.open(io.BytesIO(same.content)).convert("RGB")) == first).all()
    edited = post_files(client, *pair_png, accept="image/png")
    assert not (np.asarray(Image.open(io.BytesIO(edited.content)).convert("RGB"))
                == first).all()


def test_map_and_regions_against_numpy(client, pair, pair_png):
    """MSE map = per-pixel squared error, channel mean; the top region is the painted box.
    The raw map pipeline (no smoothing) with Otsu regions: exact pixels, an exact box."""
    config = {"strategy": "map", "metric": "mse", "post_processor": "identity",
              "regions": {"threshold": "otsu"}}
    r = post_files(client, *pair_png, config=config)
    body = r.json()
    ref, cand = (x.astype(np.float64) / 255 for x in pair)
    expected = ((ref - cand) ** 2).mean(axis=2)
    np.testing.assert_allclose(decode_map(body["map"]), expected, atol=1e-6)
    assert body["metrics"]["mse"] == pytest.approx(expected.mean(), rel=1e-5)
    top = body["regions"][0]
    assert (top["x"], top["y"], top["width"], top["height"]) == (150, 60, 50, 40)


def test_json_base64_form_equals_multipart(client, pair_png):
    ref, cand = pair_png
    config = {"metric": "psnr", "post_processor": [{"name": "smooth", "sigma": 1.5}]}
    a = post_files(client, ref, cand, config=config).json()
    b = client.post("/v1/diff", json={"reference": {"data": b64(ref)},
                                      "candidate": {"data": "data:image/png;base64," + b64(cand)},
                                      "config": config}).json()
    np.testing.assert_array_equal(decode_map(a["map"]), decode_map(b["map"]))
    assert a["metrics"] == b["metrics"] and a["regions"] == b["regions"]
    assert b["config"]["post_processor"] == [{"name": "smooth", "sigma": 1.5}]


def test_psnr_against_skimage_and_identical_images_give_null(client, pair, pair_png):
    from skimage.metrics import peak_signal_noise_ratio

    body = post_files(client, *pair_png, config={"metric": "psnr"}).json()
    assert body["metrics"]["psnr"] == pytest.approx(
        peak_signal_noise_ratio(pair[0], pair[1], data_range=255), rel=1e-4)
    r = post_files(client, pair_png[0], pair_png[0], config={"metric": "psnr"})
    assert r.status_code == 200
    strict = json.loads(r.text, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert strict["metrics"] == {"psnr": None}
    assert strict["regions"] == []


def test_npy_response(client, pair_png):
    as_json = decode_map(post_files(client, *pair_png).json()["map"])
    r = post_files(client, *pair_png, accept="application/x-npy")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
    arr = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert arr.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(arr, as_json)


def test_png_response_follows_render_config(client, pair_png):
    config = {"render": {"colormap": "viridis", "vmin": 0.0, "vmax": 0.5}}
    m = decode_map(post_files(client, *pair_png, config=config).json()["map"])
    r = post_files(client, *pair_png, config=config, accept="image/png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    want = np.asarray(heatmap(m, RenderConfig(colormap="viridis", vmin=0.0, vmax=0.5)))
    np.testing.assert_array_equal(got, want)
    magma = post_files(client, *pair_png, config={"render": {"colormap": "magma"}},
                       accept="image/png")
    assert magma.content != r.content


@pytest.mark.parametrize(("accept", "media"), [
    (None, "application/json"), ("*/*", "application/json"),
    ("image/*", "image/png"), ("text/html, application/x-npy;q=0.5", "application/x-npy"),
    ("image/png;q=0.2, application/json;q=0.9", "application/json"),
])
def test_accept_negotiation(accept, media):
    from service.encoding import negotiate

    assert negotiate(accept) == media


def test_unacceptable_accept_is_406(client, pair_png):
    body = assert_problem(post_files(client, *pair_png, accept="text/html"), 406,
                          "not-acceptable")
    assert "image/png" in body["detail"]


# -- bad requests -------------------------------------------------------------------


def test_invalid_config_names_json_path_in_both_forms(client, pair_png):
    config = {"post_processor": ["abs", {"name": "smooth", "sigma": -1}]}
    multipart = assert_problem(post_files(client, *pair_png, config=config), 422,
                               "validation-error")
    as_json = assert_problem(client.post("/v1/diff", json={
        "reference": {"data": b64(pair_png[0])}, "candidate": {"data": b64(pair_png[1])},
        "config": config}), 422, "validation-error")
    for body in (multipart, as_json):
        [err] = body["errors"]
        assert err["pointer"] == "#/config/post_processor/1/sigma"
        assert err["loc"] == ["config", "post_processor", 1, "sigma"]
        assert "config.post_processor.1.sigma" in body["detail"]


def test_unknown_metric_lists_valid_names(client, pair_png):
    body = assert_problem(post_files(client, *pair_png, config={"metric": "nope"}), 422,
                          "validation-error")
    assert body["errors"][0]["pointer"] == "#/config/metric"
    for name in METRICS.names():
        assert name in body["detail"]


def test_unknown_config_field(client, pair_png):
    body = assert_problem(post_files(client, *pair_png, config={"colour": "red"}), 422,
                          "validation-error")
    assert body["errors"][0]["pointer"] == "#/config/colour"


def test_config_field_not_json(client, pair_png):
    body = assert_problem(post_files(client, *pair_png, config="{metric: ssim"), 422,
                          "validation-error")
    assert body["errors"][0]["pointer"] == "#/config"


def test_malformed_json_body_is_400(client):
    r = client.post("/v1/diff", content=b'{"reference": ', headers={
        "content-type": "application/json"})
    assert_problem(r, 400, "malformed-json")


def test_absurd_nesting_is_a_client_error(client, pair_png):
    deep = b"[" * 100_000 + b"]" * 100_000
    r = client.post("/v1/diff", content=deep, headers={"content-type": "application/json"})
    assert_problem(r, 400, "malformed-json")
    body = assert_problem(post_files(client, *pair_png, config=deep.decode()), 422,
                          "validation-error")
    assert body["errors"][0]["pointer"] == "#/config"


def test_missing_and_unexpected_parts(client, pair_png):
    r = client.post("/v1/diff", files={"reference": ("a.png", pair_png[0]),
                                       "extra": ("x.png", pair_png[1])})
    body = assert_problem(r, 422, "validation-error")
    assert {e["pointer"] for e in body["errors"]} == {"#/extra", "#/candidate"}
    r = client.post("/v1/diff", json={"reference": {"data": b64(pair_png[0])}})
    body = assert_problem(r, 422, "validation-error")
    assert [e["pointer"] for e in body["errors"]] == ["#/candidate"]
    r = client.post("/v1/diff", json={"reference": {"data": "x", "url": "http://a/"},
                                      "candidate": {"data": b64(pair_png[1])}})
    body = assert_problem(r, 422, "validation-error")
    assert body["errors"][0]["pointer"] == "#/reference"


def test_text_field_instead_of_file(client, pair_png):
    r = client.post("/v1/diff", data={"reference": "abc"},
                    files={"candidate": ("b.png", pair_png[1])})
    body = assert_problem(r, 422, "validation-error")
    assert body["errors"][0]["pointer"] == "#/reference"


def test_bad_base64(client, pair_png):
    r = client.post("/v1/diff", json={"reference": {"data": "not base64!"},
                                      "candidate": {"data": b64(pair_png[1])}})
    body = assert_problem(r, 422, "validation-error")
    assert body["errors"][0]["pointer"] == "#/reference/data"


def test_not_an_image(client, pair_png):
    body = assert_problem(post_files(client, b"hello, world", pair_png[1]), 422,
                          "undecodable-image")
    assert "reference" in body["detail"]


def test_size_mismatch_names_both_sizes(client, pair, pair_png):
    small = png(pair[1][:200, :100])
    body = assert_problem(post_files(client, pair_png[0], small), 422, "shape-mismatch")
    assert "256x256" in body["detail"] and "100x200" in body["detail"]
    ok = post_files(client, pair_png[0], small, config={"size_policy": "resize"})
    assert ok.status_code == 200 and decode_map(ok.json()["map"]).shape == (256, 256)


def test_pixel_limit_checked(client, astronaut):
    big = png(np.tile(astronaut, (2, 2, 1)))  # 1024x1024 > max_pixels of 1e6
    body = assert_problem(post_files(client, big, big), 422, "invalid-input")
    assert "1000000" in body["detail"]


def test_unsupported_content_type(client):
    r = client.post("/v1/diff", content=b"abc", headers={"content-type": "text/plain"})
    assert_problem(r, 415, "unsupported-media-type")


def test_upload_and_body_limits():
    with _client(max_upload_bytes=1000, max_body_bytes=4000) as c:
        wait_ready(c)
        img = png(np.zeros((32, 32), np.uint8))
        body = assert_problem(post_files(c, img + b"\0" * 1500, img), 413,
                              "payload-too-large")
        assert "reference" in body["detail"]
        r = c.post("/v1/diff", json={"reference": {"data": b64(b"\0" * 1500)},
                                     "candidate": {"data": b64(img)}})
        assert_problem(r, 413, "payload-too-large")
        r = c.post("/v1/diff", content=b"x" * 5000,
                   headers={"content-type": "application/json"})
        assert_problem(r, 413, "payload-too-large")

        def chunks():  # no Content-Length: the cap is enforced while streaming
            for _ in range(10):
                yield b" " * 1000

        r = c.post("/v1/diff", content=chunks(), headers={"content-type": "application/json"})
        assert_problem(r, 413, "payload-too-large")
        assert post_files(c, img, img).status_code == 200


def test_unknown_route_and_wrong_method_are_problems(client):
    assert_problem(client.get("/nope"), 404, "not-found")
    r = client.get("/v1/diff")
    assert_problem(r, 405, "method-not-allowed")
    assert "POST" in r.headers["allow"]


# -- LPIPS weights ------------------------------------------------------------------


def test_missing_weights_ready_and_clear_problem(empty_torch_home, pair_png):
    with _client(preload=["alex"]) as c:
        wait_ready(c)
        ready = c.get("/readyz").json()
        assert ready["models"] == {"alex@cpu": "missing"}
        assert ready["missing_weights"]["alex"].endswith("alexnet-owt-7be5be79.pth")
        # the default answer has no LPIPS score; naming LPIPS asks for it, which needs
        # weights: a clear 503, never a silent answer without it
        cheap = post_files(c, *pair_png)
        assert cheap.status_code == 200 and "lpips" not in cheap.json()["metrics"]
        assert_problem(post_files(c, *pair_png, config={"metric": "lpips"}), 503,
                       "weights-missing")
        body = assert_problem(post_files(c, *pair_png, config={"metric": "lpips"},
                                         metrics="true"), 503, "weights-missing")
        assert body["net"] == "alex"
        assert body["file"].endswith("alexnet-owt-7be5be79.pth")
        assert body["file"] in body["detail"]
        caps = c.get("/v1/capabilities").json()
        assert caps["lpips_weights"] == {"alex": False, "vgg": False, "squeeze": False}
        assert post_files(c, *pair_png).status_code == 200  # other metrics still work


def test_lpips_with_weights(lpips_home, pair, pair_png):
    with _client(preload=["squeeze"]) as c:
        wait_ready(c)
        assert c.get("/readyz").json()["models"] == {"squeeze@cpu": "loaded"}
        config = {"metric": {"name": "lpips", "net": "squeeze"}}
        body = post_files(c, *pair_png, config=config).json()
        expected = Finder(device="cpu", metric={"name": "lpips", "net": "squeeze"}).analyze(
            *pair)[0]
        np.testing.assert_allclose(decode_map(body["map"]), expected.map, rtol=1e-4,
                                   atol=1e-6)
        assert c.get("/v1/capabilities").json()["lpips_weights"]["squeeze"] is True
        assert 'df_model_load_seconds{device="cpu",net="squeeze"}' in c.get("/metrics").text


# -- service endpoints --------------------------------------------------------------


def test_capabilities(client):
    caps = client.get("/v1/capabilities").json()
    assert [m["name"] for m in caps["metrics"]] == METRICS.names()
    assert [s["name"] for s in caps["strategies"]] == STRATEGIES.names()
    assert [p["name"] for p in caps["pre_processors"]] == PRE_PROCESSORS.names()
    assert [p["name"] for p in caps["post_processors"]] == POST_PROCESSORS.names()
    ssim = next(m for m in caps["metrics"] if m["name"] == "ssim")
    assert ssim["parameters"]["win_size"]["default"] == 11
    assert "magma" in caps["colormaps"]["sequential"]
    assert set(caps["lpips_weights"]) == {"alex", "vgg", "squeeze"}
    assert caps["response_types"] == ["application/json", "image/png", "application/x-npy"]
    assert caps["limits"]["max_pixels"] == 1_000_000


def test_an_answers_config_posted_back_gives_the_same_answer(client, pair_png):
    """The echoed config is the pipeline as it ran: posted back, the same scores, regions
    and summary (a default metric in it used to count as named: SSIM was computed)."""
    first = post_files(client, *pair_png).json()
    assert "metric" not in first["config"] and set(first["metrics"]) == {"mse", "psnr"}
    again = post_files(client, *pair_png, config=first["config"]).json()
    assert {k: again[k] for k in ("metrics", "regions", "summary", "config")} == {
        k: first[k] for k in ("metrics", "regions", "summary", "config")}
    named = post_files(client, *pair_png, config={"metric": "ssim"}).json()
    assert named["config"]["metric"]["name"] == "ssim" and set(named["metrics"]) == {"ssim"}
    back = post_files(client, *pair_png, config=named["config"]).json()
    assert back["metrics"] == named["metrics"]


def test_health_and_metrics(client, pair_png):
    assert client.get("/healthz").json() == {"status": "ok"}
    for path in ("/healthz", "/readyz", "/v1/capabilities", "/metrics", "/"):
        head = client.head(path)  # load balancers and link checkers probe with HEAD too
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == client.get(path).headers["content-type"]
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["workers"][0]["device"] == "cpu"
    post_files(client, *pair_png)
    bad = client.post("/v1/diff", json={"reference": "x"})  # its own 422, whatever ran before
    assert bad.status_code == 422
    text = client.get("/metrics").text
    assert 'df_http_requests_total{method="POST",route="/v1/diff",status="200"}' in text
    assert 'df_http_requests_total{method="POST",route="/v1/diff",status="422"}' in text
    assert "df_http_request_duration_seconds_bucket" in text
    assert "df_queue_wait_seconds_count" in text
    assert "df_queue_depth 0.0" in text
    busy = [line for line in text.splitlines()
            if line.startswith('df_worker_busy_seconds_total{device="cpu",worker="0"}')]
    assert busy and float(busy[0].split()[-1]) > 0


def test_readiness_waits_for_warmup(pair_png):
    import threading

    gate = threading.Event()
    app = create_app(Settings(devices=["cpu"], cpu_workers=1))
    pool = app.state.df.pool
    inner = pool.warmup
    pool.warmup = lambda device: (gate.wait(30), inner(device))
    with TestClient(app) as c:
        body = assert_problem(c.get("/readyz"), 503, "not-ready")
        assert body["workers"][0]["ready"] is False
        assert c.get("/healthz").status_code == 200
        assert "df_ready 0.0" in c.get("/metrics").text
        gate.set()
        wait_ready(c, timeout=30)
        assert "df_ready 1.0" in c.get("/metrics").text


def test_several_workers_on_the_cpu(pair_png):
    """DF_DEVICES=cpu with two CPU workers: both are up, and dispatch reaches both."""
    with _client(cpu_workers=2, torch_threads=1) as c:
        wait_ready(c)
        workers = c.get("/readyz").json()["workers"]
        assert [(w["device"], w["worker"]) for w in workers] == [("cpu", 0), ("cpu", 1)]
        for _ in range(2):  # sequential: ties between idle workers go round-robin
            assert post_files(c, *pair_png).status_code == 200
        text = c.get("/metrics").text
        for worker in ("0", "1"):
            assert f'df_worker_jobs_total{{device="cpu",outcome="ok",worker="{worker}"}} 1.0' \
                in text


# -- auth and CORS ------------------------------------------------------------------


def test_api_keys(pair_png):
    with _client(api_keys="k1,second-key") as c:
        wait_ready(c)
        r = post_files(c, *pair_png)
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["detail"].startswith("this server needs an API key")
        r = c.get("/v1/capabilities", headers={"authorization": "Bearer wrong"})
        assert_problem(r, 401, "unauthorized")  # a wrong key is told apart from none
        assert r.json()["detail"].startswith("the credentials sent are not a valid API key")
        assert_problem(c.get("/metrics"), 401, "unauthorized")
        for key in ("k1", "second-key"):
            ok = c.get("/v1/capabilities", headers={"authorization": f"Bearer {key}"})
            assert ok.status_code == 200
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        assert c.get("/openapi.json").status_code == 200
    with _client(api_keys="k1", metrics_auth=False) as c:
        assert c.get("/metrics").status_code == 200


def test_cors_only_for_configured_origins():
    with _client(cors_origins="https://annotate.example", api_keys="k") as c:
        pre = c.options("/v1/diff", headers={
            "origin": "https://annotate.example", "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://annotate.example"
        r = c.get("/healthz", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    with _client() as c:  # no origins configured: no CORS headers at all
        r = c.get("/healthz", headers={"origin": "https://annotate.example"})
        assert "access-control-allow-origin" not in r.headers


# -- failures inside one request ------------------------------------------------------


def test_errors_in_one_request_leave_the_worker_serving(monkeypatch, client, pair_png):
    import torch

    import service.routes.diff as diff_route

    real = diff_route.compute
    calls = {"n": 0}

    def flaky(config, ref, cand, device, metrics="auto"):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4 GiB")
        if calls["n"] == 2:
            raise RuntimeError("secret internal detail")
        return real(config, ref, cand, device, metrics)

    monkeypatch.setattr(diff_route, "compute", flaky)
    body = assert_problem(post_files(client, *pair_png), 503, "out-of-memory")
    assert body["device"] == "cpu"
    body = assert_problem(post_files(client, *pair_png), 500, "internal-error")
    assert "secret" not in body["detail"]
    assert post_files(client, *pair_png).status_code == 200
    text = client.get("/metrics").text
    assert 'df_worker_jobs_total{device="cpu",outcome="oom",worker="0"} 1.0' in text


def test_deadline_gives_504(monkeypatch, pair_png):
    import service.routes.diff as diff_route

    monkeypatch.setattr(diff_route, "compute", lambda *a: time.sleep(1.0))
    with _client(request_timeout=0.3) as c:
        wait_ready(c)
        start = time.monotonic()
        body = assert_problem(post_files(c, *pair_png), 504, "deadline-exceeded")
        assert time.monotonic() - start < 0.9
        assert "0.3" in body["detail"]


def test_a_validator_message_is_shown_without_pydantics_prefix(client, pair_png):
    body = assert_problem(post_files(client, *pair_png, config={"render": {"colormap": "nope"}}),
                          422, "validation-error")
    [err] = body["errors"]
    assert err["pointer"] == "#/config/render/colormap"
    assert err["message"].startswith("unknown colormap 'nope'; try one of:")
    assert "Value error" not in body["detail"]

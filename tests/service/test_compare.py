"""In-process HTTP tests of POST /v1/compare (multipart, JSON with base64 and URLs; JSON
and figure responses) and of the page routes, checked against core.compare directly."""

from __future__ import annotations

import base64
import io
import json
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():  # starlette's note about httpx in its TestClient
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient

from core.compare import compare
from core.figure import layout_figure
from core.render import lut
from service.app import create_app
from service.settings import Settings
from tests.conftest import assert_problem, b64, png, wait_ready

#: the raw difference pipeline, where a uniformly noisier candidate has a larger map
RAW = {"strategy": "difference", "post_processor": [{"name": "smooth", "sigma": 2.0}]}


def decode_map(payload: dict) -> np.ndarray:
    assert payload["dtype"] == "float32"
    return np.frombuffer(base64.b64decode(payload["data"]), dtype="<f4").reshape(
        payload["shape"])


@pytest.fixture(scope="module")
def images(astronaut: np.ndarray) -> dict[str, np.ndarray]:
    """A 192 px reference, a noisy baseline, a less noisy candidate, one of the wrong size."""
    ref = np.ascontiguousarray(astronaut[64:448:2, 64:448:2])
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 16, ref.shape)
    return {"ref": ref,
            "noisy": np.clip(ref + noise, 0, 255).astype(np.uint8),
            "ours": np.clip(ref + noise / 4, 0, 255).astype(np.uint8),
            "small": ref[:100, :120].copy()}


@pytest.fixture(scope="module")
def files(images) -> dict[str, bytes]:
    return {k: png(v) for k, v in images.items()}


@pytest.fixture
def expected(images):  # per test: LPIPS joins the scores once a test sets up weights
    return compare(images["ref"], [images["noisy"], images["ours"]], labels=["noisy", "ours"],
                   baseline="noisy", device="cpu")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(Settings(devices=["cpu"], allow_private_urls=True))
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def post_multipart(client, files, names=("noisy", "ours"), *, ref="ref", accept=None,
                   query="", **data):
    parts = [("reference", ("ref.png", files[ref], "image/png"))]
    parts += [("candidates", (f"{n}.png", files[n], "image/png")) for n in names]
    headers = {"accept": accept} if accept else {}
    return client.post("/v1/compare" + query, files=parts, data=data, headers=headers)


def check_against_core(body: dict, expected) -> None:
    assert [c["label"] for c in body["candidates"]] == expected.labels  # request order
    assert (body["scale"]["vmin"], body["scale"]["vmax"]) == pytest.approx(expected.scale)
    assert body["metric"] == "ssim" and body["baseline"] == expected.baseline
    for got, want in zip(body["candidates"], expected.candidates, strict=True):
        np.testing.assert_allclose(decode_map(got["map"]), want.map, rtol=1e-5, atol=1e-6)
        assert got["metrics"] == pytest.approx(want.metrics, rel=1e-5)
        assert got["skipped"] == want.skipped
        assert got["summary"] == want.summary
        scores = [r["score"] for r in got["regions"]]
        assert scores == sorted(scores, reverse=True)
        assert len(got["regions"]) == len(want.regions)
    (gain,) = body["improvement"]
    want = expected.improvement[0]
    assert gain["label"] == "ours"
    np.testing.assert_allclose(decode_map(gain["map"]), want.map, rtol=1e-5, atol=1e-6)
    assert gain["improved_fraction"] == pytest.approx(want.improved_fraction, abs=1e-6)
    assert gain["worsened_fraction"] == pytest.approx(want.worsened_fraction, abs=1e-6)
    assert body["tolerance"] == pytest.approx(expected.tolerance, rel=1e-6)
    assert body["config"] == expected.config.model_dump(mode="json")


def test_multipart_matches_core(client, files, expected) -> None:
    r = post_multipart(client, files, baseline="noisy")  # labels: the files' names
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert "compute;dur=" in r.headers["server-timing"]
    body = r.json()
    check_against_core(body, expected)
    assert {"decode", "queue", "compute", "encode", "total"} <= set(body["timing_ms"])
    assert "heatmap" not in body["candidates"][0] and "colorbar" not in body
    # the measurably better candidate scores better
    noisy, ours = (c["metrics"] for c in body["candidates"])
    assert ours["psnr"] > noisy["psnr"] and ours["ssim"] > noisy["ssim"]
    # noise alone is no significant difference under the default pipeline
    for c in body["candidates"]:
        assert c["regions"] == [] and c["summary"] == "no significant difference found"
    # the improvement of raw difference maps (a calibrated map rescales each pair on its own)
    raw = post_multipart(client, files, baseline="noisy", config=json.dumps(RAW)).json()
    assert raw["improvement"][0]["improved_fraction"] > 0.9


def test_plain_comma_separated_labels_as_the_cli(client, files, expected) -> None:
    r = post_multipart(client, files, names=("noisy", "ours"), labels="noisy, ours",
                       baseline="noisy")
    assert r.status_code == 200, r.text
    check_against_core(r.json(), expected)


def test_json_with_base64_matches_multipart(client, files, expected) -> None:
    r = client.post("/v1/compare", json={
        "reference": {"data": b64(files["ref"])},
        "candidates": [{"data": "data:image/png;base64," + b64(files["noisy"])},
                       {"data": b64(files["ours"])}],
        "labels": ["noisy", "ours"], "baseline": "noisy"})
    assert r.status_code == 200, r.text
    check_against_core(r.json(), expected)


@pytest.fixture(scope="module")
def image_server(files, tmp_path_factory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("served")
    for name, data in files.items():
        (folder / f"{name}.png").write_bytes(data)
    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_json_with_urls_and_config(client, files, images, image_server) -> None:
    config = {"metric": "psnr", "strategy": "map", "render": {"percentile": 99}}
    r = client.post("/v1/compare", json={
        "reference": {"url": f"{image_server}/ref.png"},
        "candidates": [{"url": f"{image_server}/noisy.png"}, {"data": b64(files["ours"])}],
        "config": config})
    assert r.status_code == 200, r.text
    body = r.json()
    want = compare(images["ref"], [images["noisy"], images["ours"]], config=config,
                   device="cpu")
    assert [c["label"] for c in body["candidates"]] == ["noisy", "candidate 2"]  # URL stem
    assert body["scale"]["vmax"] == pytest.approx(want.scale[1], rel=1e-5)
    assert body["improvement"] == [] and body["improvement_scale"] is None
    assert body["candidates"][0]["metrics"]["psnr"] == pytest.approx(
        want.candidates[0].metrics["psnr"], rel=1e-5)


def test_accept_png_returns_the_figure(client, files, expected) -> None:
    r = post_multipart(client, files, accept="image/png", query="?dpi=150",
                       labels=json.dumps(["noisy", "ours"]), baseline="noisy")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    layout = layout_figure(expected)
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.format == "PNG"
        assert img.size == (layout.width, layout.height)
        assert img.info["dpi"] == pytest.approx((150, 150), abs=0.05)


@pytest.mark.parametrize(("accept", "check"), [
    ("image/svg+xml", lambda data: ET.fromstring(data).tag.endswith("svg")),
    ("application/pdf", lambda data: data.startswith(b"%PDF")),
])
def test_figure_as_svg_and_pdf(client, files, accept, check) -> None:
    r = post_multipart(client, files, accept=accept, query="?insets=0")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == accept
    assert check(r.content)


def test_heatmaps_for_display(client, files, expected) -> None:
    r = post_multipart(client, files, query="?heatmaps=true",
                       labels=json.dumps(["noisy", "ours"]), baseline="noisy")
    assert r.status_code == 200, r.text
    body = r.json()
    urls = [c["heatmap"] for c in body["candidates"]] + [body["improvement"][0]["heatmap"],
                                                         body["colorbar"],
                                                         body["improvement_colorbar"]]
    decoded = []
    for url in urls:
        assert url.startswith("data:image/png;base64,")
        decoded.append(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    for img in decoded[:3]:
        assert img.size == (192, 192)
    # the default significance map is drawn in fixed units: noise alone looks empty (the
    # colormap's first colour nearly everywhere), and the colorbar names the unit's scale
    first = lut(body["config"]["render"]["colormap"])[0]
    for img in decoded[:2]:
        assert (np.asarray(img.convert("RGB")) == first).all(-1).mean() > 0.99
    assert (body["scale"]["vmin"], body["scale"]["vmax"]) == (
        body["config"]["render"]["vmin"], body["config"]["render"]["vmax"])
    # raw difference maps on the one shared scale: the darker map is the better candidate
    r = post_multipart(client, files, query="?heatmaps=true", config=json.dumps(RAW),
                       labels=json.dumps(["noisy", "ours"]), baseline="noisy")
    heat = [Image.open(io.BytesIO(base64.b64decode(c["heatmap"].split(",", 1)[1])))
            for c in r.json()["candidates"]]
    noisy, ours = (np.asarray(img.convert("L"), dtype=float).mean() for img in heat)
    assert ours < noisy


def test_lpips_is_reported_when_weights_are_present(lpips_home, client, files) -> None:
    r = post_multipart(client, files, names=("ours",))
    assert r.status_code == 200, r.text
    c = r.json()["candidates"][0]
    assert c["metrics"]["lpips"] > 0 and "lpips" not in c["skipped"]


def test_mismatched_sizes_name_the_candidate(client, files) -> None:
    r = post_multipart(client, files, names=("ours", "small"),
                       labels=json.dumps(["ours", "tiny"]))
    body = assert_problem(r, 422, "shape-mismatch")
    assert body["detail"].startswith("candidate 'tiny': image sizes differ: reference is "
                                     "192x192, candidate is 120x100")
    assert body["label"] == "tiny"


@pytest.mark.parametrize(("data", "pointer", "text"), [
    ({"labels": "[not json"}, "#/labels", "Invalid JSON"),
    ({"labels": "a, "}, "#/labels/1", "at least 1 character"),
    ({"labels": json.dumps(["a", ""])}, "#/labels/1", "at least 1 character"),
    ({"config": json.dumps({"metric": {"name": "ssim", "win_size": 4}})},
     "#/config/metric/win_size", "odd"),
])
def test_invalid_fields_are_problems_with_pointers(client, files, data, pointer, text) -> None:
    body = assert_problem(post_multipart(client, files, **data), 422, "validation-error")
    assert pointer in [e["pointer"] for e in body["errors"]]
    assert text in body["detail"]


@pytest.mark.parametrize(("data", "detail"), [
    ({"labels": json.dumps(["only one"])}, "1 label(s) given for 2 candidate(s)"),
    ({"labels": "only one"}, "1 label(s) given for 2 candidate(s)"),
    ({"labels": "a,a"}, "labels must be unique; repeated: a"),
    ({"labels": json.dumps(["a", "a"])}, "labels must be unique; repeated: a"),
    ({"baseline": "nobody"}, "baseline 'nobody' is not one of the labels: noisy, ours"),
])
def test_inconsistent_labels_are_input_problems(client, files, data, detail) -> None:
    body = assert_problem(post_multipart(client, files, **data), 422, "invalid-input")
    assert detail in body["detail"]


def test_missing_and_extra_parts(client, files) -> None:
    r = client.post("/v1/compare", files=[("reference", ("r.png", files["ref"]))])
    body = assert_problem(r, 422, "validation-error")
    assert body["errors"][0]["pointer"] == "#/candidates"
    r = client.post("/v1/compare", files=[("reference", ("r.png", files["ref"])),
                                          ("candidate", ("c.png", files["ours"]))])
    pointers = [e["pointer"] for e in assert_problem(r, 422, "validation-error")["errors"]]
    assert pointers == ["#/candidate", "#/candidates"]
    r = client.post("/v1/compare", files=[("reference", ("r.png", files["ref"]))],
                    data={"candidates": "not a file"})
    body = assert_problem(r, 422, "validation-error")
    assert body["errors"][0]["pointer"] == "#/candidates/0"


def test_too_many_candidates(client, files) -> None:
    from service.schemas import MAX_CANDIDATES

    names = ("ours",) * (MAX_CANDIDATES + 1)
    body = assert_problem(post_multipart(client, files, names=names), 422, "validation-error")
    assert f"at most {MAX_CANDIDATES} candidates" in body["detail"]
    r = client.post("/v1/compare", json={"reference": {"data": b64(files["ref"])},
                                         "candidates": [{"data": b64(files["ours"])}] * 9})
    body = assert_problem(r, 422, "validation-error")
    assert body["errors"][0]["pointer"] == "#/candidates"


def test_json_body_errors(client, files) -> None:
    r = client.post("/v1/compare", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert_problem(r, 400, "malformed-json")
    r = client.post("/v1/compare", json={"reference": {"data": b64(files["ref"])},
                                         "candidates": []})
    body = assert_problem(r, 422, "validation-error")
    assert body["errors"][0]["pointer"] == "#/candidates"
    r = client.post("/v1/compare", json={"reference": {"data": "%%%"},
                                         "candidates": [{"data": b64(files["ours"])}]})
    body = assert_problem(r, 422, "validation-error")
    assert body["errors"][0]["pointer"] == "#/reference/data"


def test_negotiation_query_and_content_type_errors(client, files) -> None:
    body = assert_problem(post_multipart(client, files, accept="application/x-npy"), 406,
                          "not-acceptable")
    assert body["available"] == ["application/json", "image/png", "image/svg+xml",
                                 "application/pdf"]
    body = assert_problem(post_multipart(client, files, query="?dpi=5"), 422,
                          "validation-error")
    assert body["errors"][0]["loc"] == ["query", "dpi"]
    r = client.post("/v1/compare", content=b"x", headers={"content-type": "text/plain"})
    assert_problem(r, 415, "unsupported-media-type")


def test_page_and_its_files_are_served(client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in r.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "/v1/compare" in js.text and "/v1/capabilities" in js.text
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert_problem(client.get("/static/../app.py"), 404, "not-found")
    assert_problem(client.get("/static/secret.txt"), 404, "not-found")


def test_page_is_open_but_the_api_needs_the_key(files) -> None:
    app = create_app(Settings(devices=["cpu"], api_keys=["s3cret"]))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/").status_code == 200
        assert c.get("/static/app.js").status_code == 200
        assert_problem(post_multipart(c, files, names=("ours",)), 401, "unauthorized")
        wait_ready(c)
        r = c.post("/v1/compare", headers={"authorization": "Bearer s3cret"},
                   files=[("reference", ("r.png", files["ref"])),
                          ("candidates", ("c.png", files["ours"]))])
        assert r.status_code == 200, r.text


def test_default_labels_are_the_file_names_made_unique(client, files) -> None:
    r = client.post("/v1/compare", files=[
        ("reference", ("ref.png", files["ref"])),
        ("candidates", ("a/out.png", files["noisy"])),
        ("candidates", ("b/out.png", files["ours"]))])
    assert r.status_code == 200, r.text
    assert [c["label"] for c in r.json()["candidates"]] == ["out (1)", "out (2)"]

"""The CVAT detector: POST /cvat/detect in the request and response shapes of CVAT's
serverless detectors (CVAT's lambda manager sends {"image", "threshold"}; its functions
answer [{"confidence", "label", "points", "type"}]), the same code run as a Nuclio
function (init_context/handler with a stand-in Nuclio context), and docker/function.yaml."""

from __future__ import annotations

import base64
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

with warnings.catch_warnings():  # starlette's note about httpx in its TestClient
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient

from core import Finder, PipelineConfig
from core.regions import confidence
from service.app import create_app
from service.settings import Settings
from tests.conftest import assert_problem, png

FUNCTION_YAML = Path(__file__).resolve().parents[2] / "docker" / "function.yaml"
# y, x, height, width of the painted block: 768 px, 1.6% of the 256x192 frame, inside the
# share the default regions threshold (the 98th percentile of the map) can mark
EDIT = (60, 150, 24, 32)


def b64(a: np.ndarray) -> str:
    return base64.b64encode(png(a)).decode()


def iou(a, b) -> float:
    """Boxes as [x0, y0, x1, y1]."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def pair(astronaut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 256x192 crop of a real photo and a copy with faint noise, a painted block (the
    strongest region) and a mirrored patch (weaker ones)."""
    ref = np.ascontiguousarray(astronaut[:192, 128:384])
    rng = np.random.default_rng(1)
    cand = np.clip(ref + rng.normal(0, 2, ref.shape), 0, 255).astype(np.uint8)
    y, x, h, w = EDIT
    cand[y:y + h, x:x + w] = (250, 20, 20)
    cand[140:164, 30:62] = cand[140:164, 30:62][:, ::-1].copy()
    return ref, cand


@pytest.fixture(scope="module")
def expected(pair):
    """core's regions for the pair, in core's ranking (strongest first)."""
    return Finder.from_config(PipelineConfig(), "cpu").analyze(*pair)[0].regions


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(Settings(devices=["cpu"], cpu_workers=1))
    with TestClient(app, raise_server_exceptions=False) as c:
        end = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < end
            time.sleep(0.02)
        yield c


def check_shapes(shapes: list[dict], expected, pair) -> None:
    """CVAT's shape format, strongest first, the first on the edit, equal to core's."""
    assert shapes, "no regions"
    for s in shapes:
        assert set(s) == {"confidence", "label", "points", "type"}
        assert isinstance(s["confidence"], str) and s["label"] == "difference"
        assert s["type"] == "rectangle" and len(s["points"]) == 4
    conf = [float(s["confidence"]) for s in shapes]
    assert conf == sorted(conf, reverse=True) and all(0.5 <= c < 1 for c in conf)
    y, x, h, w = EDIT
    assert iou(shapes[0]["points"], [x, y, x + w, y + h]) > 0.6
    assert len(shapes) == len(expected)
    for s, r in zip(shapes, expected, strict=True):
        assert s["points"] == [r.x, r.y, r.x + r.width, r.y + r.height]
        high = PipelineConfig().regions.high  # confidence from significance: 0.5 at high
        assert float(s["confidence"]) == pytest.approx(
            r.significance / (r.significance + high), abs=1e-4)
    hgt, wid = pair[0].shape[:2]
    assert all(0 <= p[0] < p[2] <= wid and 0 <= p[1] < p[3] <= hgt
               for p in (s["points"] for s in shapes))


def test_detect_real_photo_pair(client, pair, expected):
    ref, cand = pair
    r = client.post("/cvat/detect", json={"image": b64(cand), "reference": b64(ref)})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    check_shapes(r.json(), expected, pair)


def test_threshold_filters_on_confidence(client, pair, expected):
    ref, cand = pair
    assert len(expected) >= 2
    cut = (confidence(expected[0]) + confidence(expected[1])) / 2
    r = client.post("/cvat/detect", json={"image": b64(cand), "reference": b64(ref),
                                          "threshold": cut, "mapping": {}})  # extra: ignored
    assert r.status_code == 200, r.text
    kept = r.json()
    assert len(kept) == sum(confidence(reg) >= cut for reg in expected) == 1
    assert all(float(s["confidence"]) >= cut - 1e-4 for s in kept)
    # identical images: nothing to report
    r = client.post("/cvat/detect", json={"image": b64(ref), "reference": b64(ref)})
    assert r.status_code == 200 and r.json() == []


def test_config_in_the_request(client, pair):
    ref, cand = pair
    r = client.post("/cvat/detect", json={"image": b64(cand), "reference": b64(ref),
                                          "config": {"regions": {"max_regions": 1}}})
    assert r.status_code == 200 and len(r.json()) == 1


@pytest.mark.parametrize(("body", "status", "code", "pointer"), [
    ({"image": "***", "reference": "REF"}, 422, "validation-error", "#/image"),
    ({"image": "CAND"}, 422, "validation-error", "#/reference"),
    ({"image": "CAND", "reference": "REF", "threshold": 2}, 422, "validation-error",
     "#/threshold"),
    ({"image": "CAND", "reference": "REF", "config": {"metric": "nope"}}, 422,
     "validation-error", "#/config/metric"),
    ({"image": base64.b64encode(b"GIF89a not really").decode(), "reference": "REF"}, 422,
     "undecodable-image", None),
    ({"image": "SMALL", "reference": "REF"}, 422, "shape-mismatch", None),
])
def test_bad_inputs_are_problems(client, pair, body, status, code, pointer):
    ref, cand = pair
    subst = {"REF": b64(ref), "CAND": b64(cand), "SMALL": b64(cand[:64, :64])}
    body = {k: subst.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    problem = assert_problem(client.post("/cvat/detect", json=body), status, code)
    if pointer:
        assert problem["errors"][0]["pointer"] == pointer


def test_bad_bodies(client):
    r = client.post("/cvat/detect", content=b"{oops", headers={"content-type":
                                                                "application/json"})
    assert_problem(r, 400, "malformed-json")
    r = client.post("/cvat/detect", content=b"image=1", headers={"content-type": "text/plain"})
    assert_problem(r, 415, "unsupported-media-type")
    assert_problem(client.post("/cvat/detect", json=[1, 2]), 422, "validation-error")


# --- as a Nuclio function --------------------------------------------------------------------


class Context:
    """What a Nuclio Python handler is given: user_data, a logger and Response."""

    def __init__(self) -> None:
        self.user_data = SimpleNamespace()
        self.logger = SimpleNamespace(info=lambda *a, **k: None)

    @staticmethod
    def Response(body, headers, content_type, status_code):  # Nuclio's name for it
        return SimpleNamespace(body=body, headers=headers, content_type=content_type,
                               status_code=status_code)


def test_function_yaml_is_a_cvat_detector():
    fn = yaml.safe_load(FUNCTION_YAML.read_text())
    meta = fn["metadata"]["annotations"]
    assert meta["type"] == "detector" and meta["name"]
    labels = json.loads(meta["spec"])
    assert labels == [{"id": 0, "name": "difference", "type": "rectangle"}]
    spec = fn["spec"]
    assert spec["runtime"].startswith("python:3") and spec["handler"] == "main:handler"
    assert spec["triggers"]["myHttpTrigger"]["kind"] == "http"
    env = {e["name"]: e["value"] for e in spec["env"]}
    mount = spec["volumes"][0]["volumeMount"]["mountPath"]
    assert env["DF_CVAT_REFERENCE"].startswith(mount + "/")
    assert set(env) <= {"DF_CVAT_REFERENCE"} | {"DF_" + k.upper() for k in Settings.model_fields}
    # the embedded main.py is the handler in service/cvat.py
    source = base64.b64decode(spec["build"]["functionSourceCode"]).decode()
    namespace: dict = {}
    exec(compile(source, "main.py", "exec"), namespace)
    from service import cvat

    assert namespace["handler"] is cvat.handler
    assert namespace["init_context"] is cvat.init_context


def test_nuclio_handler_with_the_reference_from_a_file(tmp_path, monkeypatch, pair, expected,
                                                        client):
    ref, cand = pair
    (tmp_path / "reference.png").write_bytes(png(ref))
    monkeypatch.setenv("DF_CVAT_REFERENCE", str(tmp_path / "reference.png"))
    monkeypatch.setenv("DF_DEVICES", "cpu")
    from service.cvat import handler, init_context

    ctx = Context()
    init_context(ctx)
    # what CVAT's lambda manager sends a detector: the frame and, if set, the threshold
    out = handler(ctx, SimpleNamespace(body={"image": b64(cand)}))
    assert out.status_code == 200 and out.content_type == "application/json"
    shapes = json.loads(out.body)
    check_shapes(shapes, expected, pair)
    over_http = client.post("/cvat/detect", json={"image": b64(cand), "reference": b64(ref)})
    assert shapes == over_http.json()
    # a raw JSON body and a threshold
    cut = (float(shapes[0]["confidence"]) + float(shapes[-1]["confidence"])) / 2
    raw = json.dumps({"image": b64(cand), "threshold": cut}).encode()
    out = handler(ctx, SimpleNamespace(body=raw))
    assert json.loads(out.body) == [s for s in shapes if float(s["confidence"]) >= cut]
    assert 0 < len(json.loads(out.body)) < len(shapes)
    # a reference in the body wins over the file: the frame against itself finds nothing
    out = handler(ctx, SimpleNamespace(body={"image": b64(cand), "reference": b64(cand)}))
    assert out.status_code == 200 and json.loads(out.body) == []


def test_nuclio_handler_problems(monkeypatch, pair):
    monkeypatch.delenv("DF_CVAT_REFERENCE", raising=False)
    monkeypatch.setenv("DF_DEVICES", "cpu")
    from service.cvat import handler, init_context

    ctx = Context()
    init_context(ctx)
    for body, status, code in [
        ({"image": b64(pair[1])}, 422, "validation-error"),  # no reference anywhere
        (b"{oops", 400, "malformed-json"),
        (b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "malformed-json"),
        ({"image": "%%%", "reference": b64(pair[0])}, 422, "validation-error"),
        ({"image": b64(pair[1][:50]), "reference": b64(pair[0])}, 422, "shape-mismatch"),
    ]:
        out = handler(ctx, SimpleNamespace(body=body))
        problem = json.loads(out.body)
        assert out.status_code == status and out.content_type == "application/problem+json"
        assert problem["code"] == code and problem["status"] == status and problem["detail"]

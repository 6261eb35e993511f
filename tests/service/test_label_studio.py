"""The Label Studio ML backend under /label-studio, spoken to in Label Studio's own request
shapes (label-studio's ml/api_connector.py: tasks, label_config, project "id.timestamp",
params) and fetching task images from a local stand-in of Label Studio's file endpoints
(/data/upload, /data/local-files, /tasks/<id>/presign) that checks the access token.

The brush RLE is checked against a decoder written here from the format's reference
(thi.ng rle-pack's ``decode``, quoted in label-studio-converter's brush.py), and against a
bit string worked out by hand.
"""

from __future__ import annotations

import base64
import json
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

with warnings.catch_warnings():  # starlette's note about httpx in its TestClient
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient

from core import Finder, PipelineConfig
from core.regions import confidence, region_mask
from service.app import create_app
from service.errors import ServiceProblem
from service.label_studio import (
    encode_rle,
    mask_to_rle,
    model_version,
    parse_label_config,
    resolve_task_url,
)
from service.settings import Settings
from tests.conftest import assert_problem, png, wait_ready

TOKEN = "3f1c0ffee0ddba11"
EDIT = (40, 120, 24, 40)  # y, x, height, width of the edit in the candidate

CONFIG = """<View>
  <Header value="Mark what changed"/>
  <Image name="before" value="$reference" zoom="true"/>
  <Image name="after" value="$candidate" zoom="true"/>
  <RectangleLabels name="changes" toName="after">
    <Label value="changed" background="red"/>
    <Label value="moved" background="blue"/>
  </RectangleLabels>
</View>"""

BRUSH_CONFIG = """<View>
  <Image name="after" value="$candidate"/>
  <BrushLabels name="paint" toName="after"><Label value="changed"/></BrushLabels>
</View>"""


# --- helpers ---------------------------------------------------------------------------------


def rle_decode(rle: list[int]) -> np.ndarray:
    """thi.ng rle-pack's decode, as label-studio-converter quotes it (independent of ours)."""
    bits = "".join(f"{b:08b}" for b in rle)
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        assert pos + n <= len(bits), "read past the end"
        value = int(bits[pos:pos + n], 2)
        pos += n
        return value

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8)
    i = 0
    while i < num:
        x = read(1)
        j = i + 1 + read(sizes[read(2)])
        if x:
            out[i:j] = read(word)
            i = j
        else:
            while i < j:
                out[i] = read(word)
                i += 1
    return out


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Boxes as (x, y, width, height)."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def ls_task(task_id: int = 7, **data: str) -> dict:
    """A task as Label Studio serializes it for the ML backend."""
    return {"id": task_id, "data": data, "meta": {}, "created_at": "2024-06-18T23:45:46Z",
            "updated_at": "2024-06-18T23:45:46Z", "is_labeled": False, "overlap": 1,
            "inner_id": task_id, "total_annotations": 0, "cancelled_annotations": 0,
            "total_predictions": 0, "comment_count": 0, "unresolved_comment_count": 0,
            "last_comment_updated_at": None, "project": 1, "updated_by": None,
            "file_upload": None, "comment_authors": [], "annotations": [], "predictions": []}


def predict_body(tasks: list[dict], label_config: str = CONFIG) -> dict:
    """The body Label Studio posts to <backend>/predict."""
    return {"tasks": tasks, "project": "1.1718755146", "label_config": label_config,
            "params": {"login": None, "password": None, "context": None}}


# --- a stand-in for Label Studio's file endpoints ---------------------------------------------


class Server:
    """A threaded HTTP server on 127.0.0.1 recording (path, Authorization) per request."""

    def __init__(self, route) -> None:
        self.hits: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                outer.hits.append((self.path, self.headers.get("Authorization")))
                status, headers, body = route(self.path, self.headers.get("Authorization"))
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def photos(chelsea: np.ndarray) -> dict[str, np.ndarray]:
    """A non-square real photo (150 x 226), the same with one brightened block, and one of
    another size."""
    ref = np.ascontiguousarray(chelsea[::2, ::2])
    cand = ref.copy()
    y, x, h, w = EDIT
    cand[y:y + h, x:x + w] = np.clip(cand[y:y + h, x:x + w].astype(int) + 90, 0, 255)
    return {"ref": ref, "cand": cand, "small": np.ascontiguousarray(ref[:100, :100])}


@pytest.fixture(scope="module")
def cloud(photos) -> Iterator[Server]:
    """Another origin (a bucket a presigned URL points at): it must never see the token."""
    files = {"/bucket/cand.png": png(photos["cand"])}
    server = Server(lambda path, auth: (200, {"Content-Type": "image/png"},
                                        files[urlsplit(path).path])
                    if urlsplit(path).path in files else (404, {}, b"no such key"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def label_studio(photos, cloud) -> Iterator[Server]:
    """Label Studio's /data/upload, /data/local-files and /tasks/<id>/presign endpoints,
    answering 401 without 'Authorization: Token <TOKEN>'."""
    files = {"/data/upload/1/ref.png": png(photos["ref"]),
             "/data/upload/1/cand.png": png(photos["cand"]),
             "/data/upload/1/small.png": png(photos["small"]),
             "/data/upload/1/notes.txt": b"not an image at all"}
    local = {"dir/cand.png": png(photos["cand"])}

    def route(path: str, auth: str | None):
        if auth != f"Token {TOKEN}":
            return 401, {"Content-Type": "application/json"}, b'{"detail": "no token"}'
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        if parts.path in files:
            return 200, {"Content-Type": "image/png"}, files[parts.path]
        if parts.path == "/data/local-files/" and query.get("d", [""])[0] in local:
            return 200, {"Content-Type": "image/png"}, local[query["d"][0]]
        if parts.path == "/tasks/7/presign/":
            uri = base64.urlsafe_b64decode(query["fileuri"][0]).decode()
            if uri == "s3://bucket/cand.png":
                return 303, {"Location": f"{cloud.base}/bucket/cand.png?X-Amz-Signature=x"}, b""
        return 404, {}, b"not found"

    server = Server(route)
    yield server
    server.close()


@pytest.fixture(scope="module")
def client(label_studio) -> Iterator[TestClient]:
    """The service with the URL policy opened for loopback (this module only)."""
    settings = Settings(devices=["cpu"], cpu_workers=1, allow_private_urls=True,
                        label_studio_url=label_studio.base + "/",
                        label_studio_api_key=TOKEN)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def expected(photos):
    """What core finds for the pair under the default pipeline, computed directly."""
    result = Finder.from_config(PipelineConfig(), "cpu").analyze(photos["ref"],
                                                                 photos["cand"])[0]
    return result, region_mask(result.map, PipelineConfig().regions)


# --- the protocol's endpoints ----------------------------------------------------------------


def test_health_and_setup(client):
    r = client.get("/label-studio/health")
    assert r.status_code == 200 and r.json()["status"] == "UP"
    version = r.json()["model_version"]
    assert version == model_version(PipelineConfig())
    # what Label Studio sends when the backend is added to a project
    r = client.post("/label-studio/setup", json={
        "project": "1.1718755146", "schema": CONFIG, "hostname": "http://localhost:8080",
        "access_token": "abc", "extra_params": None})
    assert r.status_code == 200 and r.json() == {"model_version": version}
    assert client.get("/label-studio/").json()["status"] == "UP"  # the SDK's other path


def test_setup_refuses_a_config_it_cannot_fill(client):
    r = client.post("/label-studio/setup", json={
        "project": "1.1", "schema": '<View><Image name="img" value="$candidate"/>'
                                    '<Choices name="c" toName="img"/></View>'})
    body = assert_problem(r, 422, "validation-error")
    assert body["errors"][0]["pointer"] == "#/schema"
    assert "RectangleLabels" in body["detail"]


def test_predict_rectangles_land_on_the_edit(client, label_studio, photos, expected):
    label_studio.hits.clear()
    task = ls_task(reference="/data/upload/1/ref.png", candidate="/data/upload/1/cand.png")
    r = client.post("/label-studio/predict", json=predict_body([task]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 1
    pred = body["results"][0]
    assert pred["model_version"] == body["model_version"] == model_version(PipelineConfig())
    items = pred["result"]
    assert items and all(i["type"] == "rectanglelabels" for i in items)
    assert {(i["from_name"], i["to_name"]) for i in items} == {("changes", "after")}
    assert all(i["value"]["rectanglelabels"] == ["changed"] for i in items)  # first Label
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)  # strongest first
    h, w = photos["cand"].shape[:2]
    assert all(i["original_width"] == w and i["original_height"] == h for i in items)
    # percent of width and height (a non-square photo tells them apart) back to pixels
    boxes = [(i["value"]["x"] * w / 100, i["value"]["y"] * h / 100,
              i["value"]["width"] * w / 100, i["value"]["height"] * h / 100) for i in items]
    y, x, eh, ew = EDIT
    assert iou(boxes[0], (x, y, ew, eh)) > 0.5, boxes[0]
    assert all(b[0] >= 0 and b[0] + b[2] <= w + 1e-6 and b[1] + b[3] <= h + 1e-6
               for b in boxes)
    # the same regions core finds directly
    result, _ = expected
    want = result.regions  # core's ranking, strongest first
    assert len(boxes) == len(want)
    for got, reg, item in zip(boxes, want, items, strict=True):
        assert np.allclose(got, (reg.x, reg.y, reg.width, reg.height), atol=1e-6)
        # each score is the region's confidence: from its significance, 0.5 at regions.high
        high = PipelineConfig().regions.high
        assert item["score"] == pytest.approx(reg.significance / (reg.significance + high))
    assert pred["score"] == pytest.approx(max(confidence(r) for r in want))
    assert 0.5 <= pred["score"] < 1
    # both images came from Label Studio's storage, with the token
    assert sorted(label_studio.hits) == [("/data/upload/1/cand.png", f"Token {TOKEN}"),
                                         ("/data/upload/1/ref.png", f"Token {TOKEN}")]


def test_predict_brush_mask_round_trips(client, photos, expected):
    task = ls_task(reference="upload/1/ref.png",  # the form exports use: upload/<project>/
                   candidate="/data/local-files/?d=dir/cand.png")
    r = client.post("/label-studio/predict", json=predict_body([task], BRUSH_CONFIG))
    assert r.status_code == 200, r.text
    [item] = r.json()["results"][0]["result"]
    assert item["type"] == "brushlabels" and item["from_name"] == "paint"
    assert item["to_name"] == "after" and item["value"]["format"] == "rle"
    assert item["value"]["brushlabels"] == ["changed"]
    h, w = item["original_height"], item["original_width"]
    rgba = rle_decode(item["value"]["rle"]).reshape(h, w, 4)
    assert set(np.unique(rgba)) <= {0, 255}
    assert (rgba == rgba[..., :1]).all()  # all four channels alike, as mask2rle writes them
    mask = rgba[..., 3] > 0
    _, want = expected
    assert (mask == want).all()
    y, x, eh, ew = EDIT
    r = 6  # SSIM's window reaches 5 px past the edit
    assert mask[y - r:y + eh + r, x - r:x + ew + r].sum() == mask.sum()  # all at the edit
    assert mask[y:y + eh, x:x + ew].mean() > 0.25  # and over much of it (SSIM marks edges)


def test_both_controls_and_a_batch_in_task_order(client, photos):
    config = CONFIG.replace("</View>", '<BrushLabels name="paint" toName="after">'
                            "</BrushLabels></View>")
    tasks = [ls_task(1, reference="/data/upload/1/ref.png", candidate="/data/upload/1/cand.png"),
             ls_task(2, reference="/data/upload/1/ref.png", candidate="/data/upload/1/ref.png")]
    r = client.post("/label-studio/predict", json=predict_body(tasks, config))
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    kinds = [i["type"] for i in first["result"]]
    assert "brushlabels" in kinds and "rectanglelabels" in kinds
    brush = next(i for i in first["result"] if i["type"] == "brushlabels")
    assert brush["value"]["brushlabels"] == ["difference"]  # no <Label>: the default
    assert second == {"model_version": first["model_version"], "score": 0.0, "result": []}


def test_cloud_uri_goes_through_presign_and_the_token_stays_home(client, label_studio,
                                                                  cloud):
    label_studio.hits.clear()
    cloud.hits.clear()
    task = ls_task(7, reference="/data/upload/1/ref.png", candidate="s3://bucket/cand.png")
    r = client.post("/label-studio/predict", json=predict_body([task]))
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["result"]
    presign = [p for p, _ in label_studio.hits if p.startswith("/tasks/7/presign/")]
    assert len(presign) == 1
    assert cloud.hits == [("/bucket/cand.png?X-Amz-Signature=x", None)]  # no token leaked


def test_inline_data_url(client, photos):
    data = "data:image/png;base64," + base64.b64encode(png(photos["cand"])).decode()
    r = client.post("/label-studio/predict", json=predict_body(
        [ls_task(reference="/data/upload/1/ref.png", candidate=data)]))
    assert r.status_code == 200 and r.json()["results"][0]["result"]


def test_a_batch_reserves_one_task_at_a_time(photos):
    """Each task reserves its own images and releases them once its prediction is encoded:
    a batch of five under a budget that fits one task (not two) is answered in full, its
    peak reservation is one task's, nothing stays reserved; a task that alone exceeds the
    budget fails in its own entry (413), the others are predicted."""
    from service.budget import factor_for

    def data_url(a: np.ndarray) -> str:
        return "data:image/png;base64," + base64.b64encode(png(a)).decode()

    ref, cand = photos["ref"], photos["cand"]
    one_task = 2 * int(ref.shape[0] * ref.shape[1] * 3 * 4 * factor_for(PipelineConfig()))
    budget = one_task * 3 // 2
    big = np.zeros((2 * ref.shape[0], 2 * ref.shape[1], 3), np.uint8)
    tasks = [ls_task(i, reference=data_url(ref), candidate=data_url(cand)) for i in range(5)]
    tasks.insert(2, ls_task(99, reference=data_url(big), candidate=data_url(big)))
    with TestClient(create_app(Settings(devices=["cpu"], cpu_workers=1,
                                        memory_budget=budget))) as client:
        wait_ready(client)
        state = client.app.state.df
        peaks: list[int] = []
        reserve = state.budget.reserve

        def spy(nbytes: int, retry_after: int) -> None:
            reserve(nbytes, retry_after)
            peaks.append(state.budget.reserved)

        state.budget.reserve = spy
        r = client.post("/label-studio/predict", json=predict_body(tasks))
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [e.get("task") for e in results] == [None, None, 99, None, None, None]
        assert results[2]["problem"]["code"] == "over-memory-budget"
        assert results[2]["problem"]["budget_bytes"] == budget
        assert all(e["result"] for i, e in enumerate(results) if i != 2)
        assert peaks == [one_task] * 5
        assert state.budget.reserved == 0
        assert client.get("/readyz").json()["memory"][0]["reserved_bytes"] == 0


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "status", "code", "pointer"), [
    ({"reference": "/data/upload/1/ref.png"}, 422, "validation-error",
     "#/tasks/0/data/candidate"),
    ({"reference": "/data/upload/1/ref.png", "candidate": 5}, 422, "validation-error",
     "#/tasks/0/data/candidate"),
    ({"reference": "/data/upload/1/ref.png", "candidate": "ftp://x/y.png"}, 422,
     "validation-error", "#/tasks/0/data/candidate"),
    ({"reference": "/data/upload/1/ref.png", "candidate": "/data/upload/1/gone.png"}, 422,
     "url-fetch-failed", None),
    ({"reference": "/data/upload/1/ref.png", "candidate": "/data/upload/1/notes.txt"}, 422,
     "undecodable-image", None),
    ({"reference": "/data/upload/1/ref.png", "candidate": "/data/upload/1/small.png"}, 422,
     "shape-mismatch", None),
])
def test_bad_tasks_are_named_problems(client, data, status, code, pointer):
    """A bad task fails alone: its entry has no ``result`` (Label Studio stores nothing for
    it) but the reason; the good task of the same batch still gets its boxes."""
    good = ls_task(8, reference="/data/upload/1/ref.png", candidate="/data/upload/1/cand.png")
    r = client.post("/label-studio/predict", json=predict_body([ls_task(**data), good]))
    body = task_problem(r, 0, status, code)
    assert r.json()["results"][1]["result"]
    if pointer:
        assert body["errors"][0]["pointer"] == pointer
    else:
        assert "candidate" in body["detail"] or "tasks/0" in body["detail"]


def test_bad_bodies(client):
    r = client.post("/label-studio/predict", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert_problem(r, 400, "malformed-json")
    r = client.post("/label-studio/predict", json={"tasks": [], "label_config": CONFIG})
    assert assert_problem(r, 422, "validation-error")["errors"][0]["pointer"] == "#/tasks"
    task = ls_task(reference="/data/upload/1/ref.png", candidate="/data/upload/1/cand.png")
    r = client.post("/label-studio/predict", json=predict_body([task], "<View><Image"))
    body = assert_problem(r, 422, "validation-error")
    assert body["errors"][0]["pointer"] == "#/label_config" and "XML" in body["detail"]
    bomb = ('<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaaaaaa">]><View>&a;</View>')
    assert_problem(client.post("/label-studio/predict", json=predict_body([task], bomb)),
                   422, "validation-error")


def task_problem(r, i: int, status: int, code: str) -> dict:
    """Task ``i`` of a 200 /predict answer failed with this problem; return the problem."""
    assert r.status_code == 200, r.text
    entry = r.json()["results"][i]
    assert "result" not in entry, entry
    problem = entry["problem"]
    assert (problem["status"], problem["code"]) == (status, code), problem
    assert problem["type"] == "urn:difference-finder:problem:" + code
    assert entry["error"] == problem["detail"] and entry["error"].startswith(
        f"task {entry['task']}: tasks/{i}")
    return problem


def test_wrong_token_is_reported(label_studio, photos):
    settings = Settings(devices=["cpu"], cpu_workers=1, allow_private_urls=True,
                        label_studio_url=label_studio.base, label_studio_api_key="wrong")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.post("/label-studio/predict", json=predict_body(
            [ls_task(reference="/data/upload/1/ref.png", candidate="/data/upload/1/cand.png")]))
    body = task_problem(r, 0, 422, "url-fetch-failed")
    assert "401" in body["detail"] and body["upstream_status"] == 401
    assert "refused the token" in body["detail"] and "wrong" not in body["detail"]


def test_the_url_policy_still_applies(label_studio):
    """Without opening the policy, Label Studio on loopback is refused before any request."""
    label_studio.hits.clear()
    settings = Settings(devices=["cpu"], cpu_workers=1, label_studio_url=label_studio.base,
                        label_studio_api_key=TOKEN)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        task = ls_task(reference="/data/upload/1/ref.png", candidate="/data/upload/1/cand.png")
        task_problem(c.post("/label-studio/predict", json=predict_body([task])), 0, 422,
                     "url-refused")
        task = ls_task(reference="http://169.254.169.254/latest/meta-data/x.png",
                       candidate="/data/upload/1/cand.png")
        task_problem(c.post("/label-studio/predict", json=predict_body([task])), 0, 422,
                     "url-refused")
    # a Label Studio path with no Label Studio configured is a clear 422
    settings = Settings(devices=["cpu"], cpu_workers=1, label_studio_url=None)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        task = ls_task(reference="/data/upload/1/ref.png", candidate="/data/upload/1/cand.png")
        r = c.post("/label-studio/predict", json=predict_body([task]))
        assert "LABEL_STUDIO_URL" in task_problem(r, 0, 422, "validation-error")["detail"]
    assert label_studio.hits == []


def test_api_keys_with_basic_auth_under_label_studio_only_and_the_webhook_open():
    """With DF_API_KEYS, /label-studio/* takes Basic auth with a key as the password (any
    user); other paths Bearer only; /label-studio/webhook needs nothing."""
    settings = Settings(devices=["cpu"], cpu_workers=1, api_keys=["key-one", "key-two"])
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert c.get("/label-studio/health", auth=("label-studio", "key-two")).status_code == 200
        assert c.get("/label-studio/health", auth=("", "key-one")).status_code == 200
        assert c.get("/label-studio/health",
                     headers={"Authorization": "Bearer key-one"}).status_code == 200
        r = c.get("/label-studio/health", auth=("label-studio", "wrong"))
        body = assert_problem(r, 401, "unauthorized")
        assert "Basic auth" in body["detail"]
        assert 'Basic realm="difference-finder"' in r.headers["www-authenticate"]
        for bad in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):
            assert c.get("/label-studio/health",
                         headers={"Authorization": bad}).status_code == 401
        r = c.get("/v1/capabilities", auth=("label-studio", "key-two"))
        assert "Basic" not in assert_problem(r, 401, "unauthorized")["detail"]
        assert "Basic" not in r.headers["www-authenticate"]
        r = c.post("/label-studio/webhook", json={"action": "TASKS_CREATED"})
        assert r.status_code == 200 and r.json() == {"status": "ignored"}


# --- the label config ------------------------------------------------------------------------


def test_label_config_picks_the_candidate_image_and_first_label():
    xml = """<View>
      <Image name="a" value="$reference"/><Image name="b" value="$candidate"/>
      <RectangleLabels name="on_ref" toName="a"><Label value="x"/></RectangleLabels>
      <RectangleLabels name="on_cand" toName="b"><Label value="y"/><Label value="z"/>
      </RectangleLabels>
      <BrushLabels name="brush" toName="a"/>
    </View>"""
    rect, brush = parse_label_config(xml)
    assert (rect.type, rect.from_name, rect.to_name, rect.label) == (
        "rectanglelabels", "on_cand", "b", "y")
    assert (brush.type, brush.from_name, brush.to_name, brush.label) == (
        "brushlabels", "brush", "a", "difference")
    # other field names: the settings choose which Image is the candidate
    [rect] = parse_label_config(xml.replace("<BrushLabels name=\"brush\" toName=\"a\"/>", ""),
                                reference_field="candidate", candidate_field="reference")
    assert rect.from_name == "on_ref"


@pytest.mark.parametrize("xml", [
    "<View><Image name='i' value='$candidate'/></View>",
    "<View><RectangleLabels name='r' toName='nowhere'><Label value='x'/></RectangleLabels>"
    "</View>",
    "<View><Image name='i' value='$candidate'/><Choices name='c' toName='i'/></View>",
])
def test_label_config_without_a_usable_control(xml):
    with pytest.raises(ServiceProblem) as err:
        parse_label_config(xml)
    assert err.value.status == 422 and "RectangleLabels" in err.value.detail


# --- image references --------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "url"), [
    ("/data/upload/3/a.png", "http://ls:8080/data/upload/3/a.png"),
    ("upload/3/a.png", "http://ls:8080/data/upload/3/a.png"),
    ("/upload/3/a.png", "http://ls:8080/data/upload/3/a.png"),
    ("/data/local-files/?d=imgs/a.png", "http://ls:8080/data/local-files/?d=imgs/a.png"),
    ("s3://b/k.png", "http://ls:8080/tasks/9/presign/?fileuri="
     + base64.urlsafe_b64encode(b"s3://b/k.png").decode()),
    ("http://ls:8080/storage-data/uploaded/?filepath=upload/3/a.png",
     "http://ls:8080/storage-data/uploaded/?filepath=upload/3/a.png"),
])
def test_label_studio_paths_resolve_with_the_token(value, url):
    got, headers = resolve_task_url(value, 9, "http://ls:8080", "abc", "tasks/0/data/x")
    assert got == url and headers == {"Authorization": "Token abc"}


def test_token_only_for_label_studio_and_jwt_as_bearer():
    url, headers = resolve_task_url("https://elsewhere.example/a.png", 1, "http://ls:8080",
                                    "abc", "w")
    assert url == "https://elsewhere.example/a.png" and headers == {}
    _, headers = resolve_task_url("http://ls:8081/a.png", 1, "http://ls:8080", "abc", "w")
    assert headers == {}  # another port is another origin
    head = base64.urlsafe_b64encode(json.dumps({"alg": "HS256"}).encode()).decode().rstrip("=")
    jwt = f"{head}.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2ln"
    _, headers = resolve_task_url("/data/upload/1/a.png", 1, "http://ls:8080", jwt, "w")
    assert headers == {"Authorization": f"Bearer {jwt}"}


# --- the RLE ---------------------------------------------------------------------------------


def test_rle_bits_match_a_hand_worked_example():
    # 8 values (a 1x2 mask, RGBA): two runs of 4. Header: count 8 in 32 bits, word size
    # 8-1 in 5 bits, run-length sizes 3,4,8,16 minus 1 in 4 bits each; then per run
    # repeat flag 1, size index 00, length-1 = 3 in 3 bits, the value in 8 bits; then
    # 7 zero bits of padding (81 bits -> 88).
    bits = (f"{8:032b}" + "00111" + "0010" "0011" "0111" "1111"
            + "1" "00" "011" "00000000" + "1" "00" "011" "11111111" + "0" * 7)
    want = [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]
    assert encode_rle(np.array([0, 0, 0, 0, 255, 255, 255, 255], np.uint8)) == want
    assert mask_to_rle(np.array([[False, True]])) == want


def test_rle_round_trips():
    rng = np.random.default_rng(3)
    long = np.zeros(3 * 2**16 + 5, np.uint8)  # runs past 2**16 are split
    long[70_000:70_001] = 9
    cases = [np.array([5], np.uint8), np.arange(256, dtype=np.uint8),
             np.repeat(rng.integers(0, 256, 300).astype(np.uint8), rng.integers(1, 300, 300)),
             (rng.random(5000) < 0.3).astype(np.uint8) * 255, long]
    for arr in cases:
        assert (rle_decode(encode_rle(arr)) == arr).all()
    mask = rng.random((37, 53)) < 0.4
    assert (rle_decode(mask_to_rle(mask)) == np.repeat(mask.ravel() * 255, 4)).all()


# --- end to end ------------------------------------------------------------------------------


def test_real_server_as_label_studio_configures_it(label_studio, tmp_path, photos, expected):
    """``python -m service`` on a free port, set up with the environment names Label Studio's
    ML backend docs use, answering /health and /predict over HTTP."""
    import httpx

    from tests.e2e.conftest import Server

    label_studio.hits.clear()
    server = Server(tmp_path, LABEL_STUDIO_URL=label_studio.base, LABEL_STUDIO_API_KEY=TOKEN,
                    DF_ALLOW_PRIVATE_URLS="true", DF_CPU_WORKERS="1")
    try:
        server.wait_ready()
        backend = server.url + "/label-studio"  # the URL given to Label Studio
        assert httpx.get(backend + "/health", timeout=10).json()["status"] == "UP"
        task = ls_task(reference="/data/upload/1/ref.png", candidate="/data/upload/1/cand.png")
        r = httpx.post(backend + "/predict", json=predict_body([task]), timeout=60)
        assert r.status_code == 200, r.text
        items = r.json()["results"][0]["result"]
        h, w = photos["cand"].shape[:2]
        result, _ = expected
        best = result.regions[0]  # core ranks them, strongest first
        assert items[0]["value"]["x"] == pytest.approx(100 * best.x / w)
        assert items[0]["value"]["height"] == pytest.approx(100 * best.height / h)
        assert {auth for _, auth in label_studio.hits} == {f"Token {TOKEN}"}
    finally:
        server.stop()

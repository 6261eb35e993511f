"""The ML backend against a real Label Studio 1.23 server, driven as a user would: a
two-image project, both images uploaded (the pair project refuses that, so into an uploads
project) and a JSON task referencing them, the backend connected, predictions retrieved by the
Data Manager action and when a task opens; with a legacy token, a personal access token, and
``DF_API_KEYS`` plus Basic auth on Label Studio's side."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.e2e.conftest import Server
from tests.e2e.label_studio_server import LabelStudio

CONFIG = """<View>
  <Image name="before" value="$reference"/>
  <Image name="after" value="$candidate"/>
  <RectangleLabels name="changes" toName="after"><Label value="changed"/></RectangleLabels>
  <BrushLabels name="paint" toName="after"><Label value="changed"/></BrushLabels>
</View>"""
UPLOAD_CONFIG = '<View><Image name="image" value="$image"/></View>'
EDIT = (200, 100, 80, 60)  # x, y, w, h of the painted patch in the e2e photos (512 x 512)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def upload(ls: LabelStudio, files: dict[str, bytes], token: str | None = None) -> list[str]:
    """Upload image files as a user does; their /data/upload/... URLs, in order."""
    project = ls.api("POST", "/api/projects", token,
                     json={"title": "uploads", "label_config": UPLOAD_CONFIG}).json()["id"]
    ls.api("POST", f"/api/projects/{project}/import", token,
           files=[(f"file{i}", (name, data, "image/png"))
                  for i, (name, data) in enumerate(files.items())])
    tasks = ls.api("GET", f"/api/tasks?project={project}", token).json()["tasks"]
    urls = {t["data"]["image"].rsplit("-", 1)[1]: t["data"]["image"] for t in tasks}
    return [urls[name] for name in files]


def pair_project(ls: LabelStudio, photo_png: dict[str, bytes], token: str | None = None
                 ) -> tuple[int, list[str]]:
    """A two-image project; direct upload into it is refused, as users find out."""
    project = ls.api("POST", "/api/projects", token,
                     json={"title": "pairs", "label_config": CONFIG}).json()["id"]
    r = ls.api("POST", f"/api/projects/{project}/import", token, ok=False,
               files=[("file", ("ref.png", photo_png["ref"], "image/png"))])
    assert r.status_code == 400 and "more than one data key" in r.text, r.text
    return project, upload(ls, {"ref.png": photo_png["ref"], "cand.png": photo_png["cand"]},
                           token)


def connect(ls: LabelStudio, project: int, backend: str, token: str | None = None,
            ok: bool = True, **auth: str) -> httpx.Response:
    return ls.api("POST", "/api/ml", token, ok=ok, json={
        "project": project, "url": backend + "/label-studio", "title": "difference finder",
        "is_interactive": False, **auth})


def import_tasks(ls: LabelStudio, project: int, tasks: list[dict], token: str | None = None
                 ) -> list[int]:
    before = {t["id"] for t in ls.api("GET", f"/api/tasks?project={project}", token)
              .json()["tasks"]}
    ls.api("POST", f"/api/projects/{project}/import", token, json=tasks)
    got = ls.api("GET", f"/api/tasks?project={project}", token).json()["tasks"]
    return sorted(t["id"] for t in got if t["id"] not in before)


def retrieve_predictions(ls: LabelStudio, project: int, token: str | None = None) -> dict:
    """The Data Manager's "Retrieve Predictions" action on all tasks."""
    return ls.api("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
                  token, json={"selectedItems": {"all": True, "excluded": []}}).json()


def predictions(ls: LabelStudio, task: int, token: str | None = None) -> list[dict]:
    return ls.api("GET", f"/api/predictions?task={task}", token).json()


def assert_boxes_on_the_edit(prediction: dict) -> None:
    result = prediction["result"]
    boxes = [r for r in result if r["type"] == "rectanglelabels"]
    brush = [r for r in result if r["type"] == "brushlabels"]
    assert boxes and brush, result
    assert {(r["from_name"], r["to_name"]) for r in boxes} == {("changes", "after")}
    assert {(r["from_name"], r["to_name"]) for r in brush} == {("paint", "after")}
    v = boxes[0]["value"]  # strongest first
    w, h = boxes[0]["original_width"], boxes[0]["original_height"]
    box = (v["x"] * w / 100, v["y"] * h / 100, v["width"] * w / 100, v["height"] * h / 100)
    assert iou(box, EDIT) >= 0.5, (box, EDIT)
    assert v["rectanglelabels"] == ["changed"] and brush[0]["value"]["format"] == "rle"


def service(start_server, ls: LabelStudio, token: str, **env: str) -> Server:
    s = start_server(DF_LABEL_STUDIO_URL=ls.url, DF_LABEL_STUDIO_API_KEY=token,
                     DF_URL_ALLOWLIST=f"127.0.0.1:{ls.port}", DF_LOG_LEVEL="info",
                     DF_CPU_WORKERS="1", **env)
    s.wait_ready()
    return s


def test_legacy_token_uploads_storage_and_local_files(label_studio_real, start_server,
                                                      photo_png):
    """Uploaded files by /data/upload/ and /storage-data/, local files, a missing file and
    a cloud URI no storage holds: the good tasks get boxes on the edit, the bad ones fail
    alone, and the service's log says which task, which URL and what Label Studio answered."""
    ls = label_studio_real
    project, (ref, cand) = pair_project(ls, photo_png)
    (ls.files_root / "pairs").mkdir(exist_ok=True)
    (ls.files_root / "pairs" / "ref.png").write_bytes(photo_png["ref"])
    (ls.files_root / "pairs" / "cand.png").write_bytes(photo_png["cand"])
    ls.api("POST", "/api/storages/localfiles", json={
        "project": project, "path": str(ls.files_root / "pairs"), "title": "pairs",
        "use_blob_urls": False})
    storage = "/storage-data/uploaded/?filepath="
    ids = import_tasks(ls, project, [
        {"reference": ref, "candidate": cand},
        {"reference": storage + ref.removeprefix("/data/"),
         "candidate": storage + cand.removeprefix("/data/")},
        {"reference": "/data/local-files/?d=pairs/ref.png",
         "candidate": "/data/local-files/?d=pairs/cand.png"},
        {"reference": ref, "candidate": ref.rsplit("/", 1)[0] + "/gone.png"},
        {"reference": ref, "candidate": "s3://no-such-bucket/cand.png"},
    ])
    s = service(start_server, ls, ls.legacy_token)
    connect(ls, project, s.url)
    hooks = ls.api("GET", f"/api/webhooks/?project={project}").json()
    assert [h["url"] for h in hooks] == [s.url + "/label-studio/webhook"]
    r = httpx.post(hooks[0]["url"], json={"action": "TASKS_CREATED", "project": {"id": 1}})
    assert r.status_code == 200, r.text

    retrieve_predictions(ls, project)
    for task in ids[:3]:
        got = predictions(ls, task)
        assert len(got) == 1, (task, got, s.log())
        assert_boxes_on_the_edit(got[0])
    assert predictions(ls, ids[3]) == [] and predictions(ls, ids[4]) == []
    log = s.log()
    gone = f"{ls.url}{ref.rsplit('/', 1)[0]}/gone.png"
    # Label Studio 1.23 answers 500 (not 404) for an upload that does not exist
    assert f"task {ids[3]}: tasks/3/data/candidate: the server answered 500 for {gone}" in log
    fileuri = base64.urlsafe_b64encode(b"s3://no-such-bucket/cand.png").decode()
    assert (f"task {ids[4]}: tasks/4/data/candidate: the server answered 404 for "
            f"{ls.url}/tasks/{ids[4]}/presign/?fileuri={fileuri}") in log
    assert "no storage of the task's project holds it" in log
    assert ls.legacy_token not in log


def test_auto_annotation_when_a_task_opens(label_studio_real, start_server, photo_png):
    """Opening a task in the labeling view (GET /api/tasks/<id>?project=<id>) asks the backend
    for a prediction of a task that has none."""
    ls = label_studio_real
    project, (ref, cand) = pair_project(ls, photo_png)
    ls.api("PATCH", f"/api/projects/{project}", json={"evaluate_predictions_automatically": True})
    s = service(start_server, ls, ls.legacy_token)
    connect(ls, project, s.url)
    (task,) = import_tasks(ls, project, [{"reference": ref, "candidate": cand}])
    opened = ls.api("GET", f"/api/tasks/{task}?project={project}").json()
    assert len(opened["predictions"]) == 1, (opened, s.log())
    assert_boxes_on_the_edit(opened["predictions"][0])


def test_personal_access_token_with_legacy_tokens_off(label_studio_real, start_server,
                                                      photo_png):
    """The organisation's legacy tokens off, as in new organisations: the backend exchanges
    the PAT for access tokens."""
    ls = label_studio_real
    pat = ls.create_pat()
    ls.set_legacy_tokens(False, pat)
    try:
        assert ls.api("GET", "/api/projects", ok=False).status_code == 401  # legacy refused
        access = ls.access_token(pat)
        project, (ref, cand) = pair_project(ls, photo_png, access)
        (task,) = import_tasks(ls, project, [{"reference": ref, "candidate": cand}], access)
        s = service(start_server, ls, pat)
        connect(ls, project, s.url, access)
        retrieve_predictions(ls, project, access)
        got = predictions(ls, task, access)
        assert len(got) == 1, s.log()
        assert_boxes_on_the_edit(got[0])
        assert pat not in s.log()
    finally:
        ls.set_legacy_tokens(True, pat)


def test_api_keys_with_basic_auth(label_studio_real, start_server, photo_png):
    """DF_API_KEYS on the service; Label Studio connects with Basic auth, the key as the
    password. Without it Label Studio cannot connect."""
    ls = label_studio_real
    project, (ref, cand) = pair_project(ls, photo_png)
    (task,) = import_tasks(ls, project, [{"reference": ref, "candidate": cand}])
    s = service(start_server, ls, ls.legacy_token, DF_API_KEYS="key-one,key-two")
    refused = connect(ls, project, s.url, ok=False)
    assert refused.status_code == 400, refused.text
    assert httpx.post(s.url + "/label-studio/predict", json={},
                      auth=("anyone", "wrong")).status_code == 401
    connect(ls, project, s.url, auth_method="BASIC_AUTH", basic_auth_user="label-studio",
            basic_auth_pass="key-two")
    retrieve_predictions(ls, project)
    got = predictions(ls, task)
    assert len(got) == 1, s.log()
    assert_boxes_on_the_edit(got[0])
    # Basic auth is for the Label Studio endpoints only
    assert httpx.get(s.url + "/v1/capabilities",
                     auth=("anyone", "key-two")).status_code == 401


@pytest.mark.parametrize("token", ["legacy", "pat"])
def test_the_real_presign_endpoint_answers_the_sdk_url(label_studio_real, photo_png, token):
    """/tasks/<id>/presign/?fileuri=<base64>, as label-studio-sdk builds it, is Label
    Studio's resolver: 404 for a URI no storage holds, 406 to Accept: image/*, 401 without
    a token."""
    from service.label_studio.urls import presign_url

    ls = label_studio_real
    project, (ref, cand) = pair_project(ls, photo_png)
    (task,) = import_tasks(ls, project, [{"reference": ref, "candidate": cand}])
    url = presign_url(ls.url, task, "s3://bucket/a.png")
    auth = ls.headers(ls.legacy_token if token == "legacy" else ls.access_token(ls.create_pat()))
    assert httpx.get(url, headers={**auth, "Accept": "*/*"}).status_code == 404
    assert httpx.get(url, headers={**auth, "Accept": "image/*"}).status_code == 406
    assert httpx.get(url).status_code == 401
    assert httpx.get(ls.url + cand, headers={**auth, "Accept": "*/*"}).status_code == 200

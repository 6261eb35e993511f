"""A task's image reference -> the URL to fetch and its headers, as label-studio-sdk's
``get_local_path`` resolves it (``/data/...`` and ``upload/...`` against Label Studio's
URL, cloud URIs through the task's presign endpoint; the token to that origin only)."""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import urlsplit

from ..errors import ValidationProblem

__all__ = ["resolve_task_url", "task_field_problem"]

_CLOUD_SCHEMES = ("s3://", "gs://", "azure-blob://")


def _is_jwt(token: str) -> bool:
    """Label Studio's personal access tokens are JWTs (sent as Bearer), legacy ones not."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        head = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(head, dict) and "alg" in head


def _same_origin(a: str, b: str) -> bool:
    try:
        pa, pb = urlsplit(a), urlsplit(b)
        return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)
    except ValueError:
        return False


def resolve_task_url(value: str, task_id: int | str | None, base: str | None,
                     api_key: str | None, what: str) -> tuple[str, dict[str, str]]:
    """A task's image reference -> (absolute URL, headers), as label-studio-sdk resolves it:
    ``/data/...`` and other absolute paths against ``base``, ``upload/...`` as
    ``/data/upload/...``, ``s3://``/``gs://``/``azure-blob://`` through
    ``/tasks/<id>/presign/``. The token goes only to ``base``'s origin."""
    text = value.strip()
    if text.startswith("upload/"):
        text = "/data/" + text
    elif text.startswith("/upload/"):
        text = "/data" + text
    if text.startswith(_CLOUD_SCHEMES):
        if task_id is None:
            raise task_field_problem(what, "a cloud storage URI needs the task's id (Label "
                                 "Studio presigns it per task)")
        uri = base64.urlsafe_b64encode(text.encode()).decode("ascii")
        text = f"/tasks/{task_id}/presign/?fileuri={uri}"
    if text.startswith("/"):
        if base is None:
            raise task_field_problem(what, f"{value[:200]!r} is a Label Studio path; set "
                                 "DF_LABEL_STUDIO_URL (or LABEL_STUDIO_URL) so it can be "
                                 "fetched")
        text = base + text
    elif not text.lower().startswith(("http://", "https://")):
        raise task_field_problem(what, f"{value[:200]!r} is neither an http(s) URL, a Label "
                             "Studio path (/data/..., upload/...), a cloud URI nor a data: URL")
    headers: dict[str, str] = {}
    if api_key and base and _same_origin(text, base):
        scheme = "Bearer" if _is_jwt(api_key) else "Token"
        headers["Authorization"] = f"{scheme} {api_key}"
    return text, headers


def task_field_problem(what: str, message: str) -> ValidationProblem:
    """A 422 at a task's image field ``what`` (``tasks/0/data/candidate``)."""
    loc: list[str | int] = [int(p) if p.isdigit() else p for p in what.split("/")]
    return ValidationProblem.at(loc, message, "image_reference")

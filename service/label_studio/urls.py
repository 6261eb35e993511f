"""A task's image reference -> the URL to fetch, as label-studio-sdk resolves it; and that
URL as it may be shown and logged (no secrets).

Followed: label-studio-sdk ``_extensions/label_studio_tools/core/utils/io.py``
(``get_local_path``/``download_and_cache``): ``/data/upload/...``, ``/data/local-files/?d=...``
and ``/storage-data/...`` against ``LABEL_STUDIO_URL``; ``upload/...`` as ``/data/upload/...``;
``s3://``/``gs://``/``azure-blob://`` through ``/tasks/<id>/presign/?fileuri=<urlsafe base64
of the URI>`` (``encode_presign_fileuri``), which redirects to the storage's presigned URL;
the token only to Label Studio's own origin (``_build_headers``). The fetching itself, with
the headers Label Studio accepts, is :mod:`service.label_studio.files`.
"""

from __future__ import annotations

import base64
from urllib.parse import urlsplit, urlunsplit

from ..errors import ValidationProblem
from .auth import jwt_claims

__all__ = ["CLOUD_SCHEMES", "presign_url", "public_url", "resolve_task_url", "same_origin",
           "task_field_problem", "task_url"]

CLOUD_SCHEMES = ("s3://", "gs://", "azure-blob://")


def task_field_problem(what: str, message: str) -> ValidationProblem:
    """A 422 at a task's image field ``what`` (``tasks/0/data/candidate``)."""
    loc: list[str | int] = [int(p) if p.isdigit() else p for p in what.split("/")]
    return ValidationProblem.at(loc, message, "image_reference")


def presign_url(base: str, task_id: int | str, uri: str) -> str:
    """Label Studio's endpoint that resolves a cloud URI of task ``task_id``."""
    encoded = base64.urlsafe_b64encode(uri.encode()).decode("ascii")
    return f"{base}/tasks/{task_id}/presign/?fileuri={encoded}"


def task_url(value: str, task_id: int | str | None, base: str | None, what: str) -> str:
    """A task's image reference -> an absolute URL (see the module docstring); a 422 at
    ``what`` when it cannot be resolved."""
    text = value.strip()
    if text.startswith("upload/"):
        text = "/data/" + text
    elif text.startswith("/upload/"):
        text = "/data" + text
    if text.startswith(CLOUD_SCHEMES):
        if task_id is None:
            raise task_field_problem(what, "a cloud storage URI needs the task's id (Label "
                                     "Studio presigns it per task)")
        if base is None:
            raise task_field_problem(what, f"{value[:200]!r} is a cloud storage URI, resolved "
                                     "by Label Studio; set DF_LABEL_STUDIO_URL (or "
                                     "LABEL_STUDIO_URL)")
        return presign_url(base, task_id, text)
    if text.startswith("/"):
        if base is None:
            raise task_field_problem(what, f"{value[:200]!r} is a Label Studio path; set "
                                     "DF_LABEL_STUDIO_URL (or LABEL_STUDIO_URL) so it can be "
                                     "fetched")
        return base + text
    if not text.lower().startswith(("http://", "https://")):
        raise task_field_problem(what, f"{value[:200]!r} is neither an http(s) URL, a Label "
                                 "Studio path (/data/..., upload/...), a cloud URI nor a data: "
                                 "URL")
    return text


def same_origin(a: str, b: str) -> bool:
    """Whether URLs ``a`` and ``b`` have one scheme, host and port."""
    try:
        pa, pb = urlsplit(a), urlsplit(b)
        return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)
    except ValueError:
        return False


def public_url(url: str, base: str | None) -> str:
    """``url`` safe to show and log: no user info; the query kept only for Label Studio's
    own URLs (``?d=``, ``?filepath=``, ``?fileuri=`` name files, not secrets), else cut
    (presigned and other URLs carry signatures there)."""
    try:
        p = urlsplit(url)
        port = p.port
    except ValueError:
        return url[:200]
    host = p.hostname or ""
    netloc = f"{host}:{port}" if port else host
    query = p.query if base and same_origin(url, base) else ("…" if p.query else "")
    return urlunsplit((p.scheme, netloc, p.path, query, ""))[:500]


def resolve_task_url(value: str, task_id: int | str | None, base: str | None,
                     api_key: str | None, what: str) -> tuple[str, dict[str, str]]:
    """A task's image reference -> (absolute URL, headers), as label-studio-sdk resolves it
    (:func:`task_url`); the token, as label-studio-sdk's ``_build_headers`` sends it (a JWT
    as ``Bearer``, else ``Token``), only to ``base``'s origin. The service itself fetches
    through :class:`service.label_studio.files.LabelStudioFiles`, which also exchanges
    personal access tokens."""
    url = task_url(value, task_id, base, what)
    headers: dict[str, str] = {}
    if api_key and base and same_origin(url, base):
        scheme = "Bearer" if jwt_claims(api_key) is not None else "Token"
        headers["Authorization"] = f"{scheme} {api_key}"
    return url, headers

"""Label Studio task images fetched with headers Label Studio accepts: its own files with
``Accept: */*`` and its token (a personal access token exchanged, see
:mod:`service.label_studio.auth`), any other URL as the URL fetcher fetches it; a failure
names the URL (without secrets) and what Label Studio's answer means.

Verified against Label Studio 1.23.2: its file views (``/data/upload/``,
``/data/local-files/``, ``/storage-data/uploaded/``, ``/tasks/<id>/presign/``) answer 406 to
``Accept: image/*`` and 200 to ``*/*`` (Django REST framework negotiates a JSON renderer for
them), 401 without a token, and the presign view 404 when no storage of the task's project
holds the URI.
"""

from __future__ import annotations

from ..errors import ServiceProblem
from ..urlfetch import Fetcher
from .auth import LabelStudioAuth
from .urls import public_url, same_origin, task_url

__all__ = ["ACCEPT", "LabelStudioFiles"]

#: what Label Studio's file views accept (image/* alone gets 406)
ACCEPT = "*/*"


class LabelStudioFiles:
    """Fetches task images: Label Studio's own with ``Accept: */*`` and its token (a PAT
    exchanged, renewed before expiry, and exchanged again once on 401); others as any URL."""

    def __init__(self, fetcher: Fetcher, base: str | None, token: str | None) -> None:
        self.fetcher = fetcher
        self.base = base
        self.auth = LabelStudioAuth(base, token) if base and token else None

    async def fetch(self, value: str, task_id: int | str | None, what: str) -> bytes:
        """The bytes of task ``task_id``'s image reference ``value`` (field ``what``)."""
        url = task_url(value, task_id, self.base, what)
        if not (self.base and same_origin(url, self.base)):
            return await self.fetcher.fetch(url, what)
        for attempt in (1, 2):
            headers = {"Accept": ACCEPT}
            if self.auth is not None:
                headers.update(await self.auth.header())
            try:
                return await self.fetcher.fetch(url, what, headers)
            except ServiceProblem as exc:
                status = exc.extra.get("upstream_status")
                if (status == 401 and attempt == 1 and self.auth is not None
                        and self.auth.renewable):
                    self.auth.invalidate()
                    continue
                raise self._explained(exc, url, status) from None
        raise AssertionError("unreachable")

    def _explained(self, exc: ServiceProblem, url: str, status: object) -> ServiceProblem:
        """``exc`` with the URL (without secrets) and what Label Studio's answer means."""
        hint = {
            401: "Label Studio refused the token: set DF_LABEL_STUDIO_API_KEY to a personal "
                 "access token or a legacy token of a user of this project's organisation"
                 if self.auth else "Label Studio needs a token: set DF_LABEL_STUDIO_API_KEY",
            403: "the token's user has no access to this file's project",
            404: "Label Studio has no such file (for a cloud URI: no storage of the task's "
                 "project holds it)",
            406: "Label Studio refused the Accept header",
            500: "Label Studio failed on it (1.23 answers 500 for an upload that does not "
                 "exist)",
        }.get(status if isinstance(status, int) else -1)
        shown = public_url(url, self.base)
        detail = f"{exc.detail} for {shown}" + (f"; {hint}" if hint else "")
        return ServiceProblem(exc.status, exc.code, detail, title=exc.title,
                              headers=exc.headers, **{**exc.extra, "url": shown})

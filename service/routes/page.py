"""The web page: ``GET /`` and its files under ``/static`` (Starlette's StaticFiles),
never cached, open even when API keys are set (the page asks for a key itself)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ..errors import NotFound

__all__ = ["PAGE_FILES", "PAGE_PATHS", "STATIC", "PageFiles", "router"]

STATIC = Path(__file__).resolve().parent.parent / "static"
#: the page's files and their media types
PAGE_FILES = {"index.html": "text/html; charset=utf-8",
              "app.js": "text/javascript; charset=utf-8",
              "style.css": "text/css; charset=utf-8"}
#: the page's paths: open even when API keys are set
PAGE_PATHS = frozenset({"/", *(f"/static/{name}" for name in PAGE_FILES)})
_NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter()


class PageFiles(StaticFiles):
    """The page's files only, with their media types, ``no-cache``, problem+json 404s."""

    def __init__(self) -> None:
        super().__init__(directory=STATIC)

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in PAGE_FILES:
            raise NotFound(f"no such file: /static/{path}")
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code == 404:
                raise NotFound(f"no such file: /static/{path}") from None
            raise
        response.headers.update({**_NO_CACHE, "content-type": PAGE_FILES[path]})
        return response


@router.get("/", include_in_schema=False)
@router.head("/", include_in_schema=False)
async def page() -> FileResponse:
    """The web page: upload or link images, choose the pipeline, see maps and scores."""
    return FileResponse(STATIC / "index.html", media_type=PAGE_FILES["index.html"],
                        headers=_NO_CACHE)

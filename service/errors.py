"""Every error the service raises on purpose, in one tree; each one becomes an RFC 9457
``application/problem+json`` response (:mod:`service.problems` renders it).

The hierarchy (status and ``code`` of each)::

    ServiceProblem                  any status: a core error mapped (from_core), a task's
    │                               error renamed, ...
    ├── MalformedJson               400 malformed-json
    ├── Unauthorized                401 unauthorized
    ├── NotFound                    404 not-found
    ├── NotAcceptable               406 not-acceptable
    ├── PayloadTooLarge             413 payload-too-large: the body, an image or a form part
    ├── OverMemoryBudget            413 over-memory-budget: needs more than the whole budget
    ├── UnsupportedMediaType        415 unsupported-media-type
    ├── ValidationProblem           422 validation-error: ``errors`` lists the fields
    ├── UrlRefused                  422 url-refused: the URL policy said no
    ├── FetchFailed                 422 url-fetch-failed (or another status given)
    ├── NotAnImage                  422 undecodable-image: a URL's bytes are no image
    ├── ClientDisconnected          499 client-closed-request
    ├── LabelStudioAuthFailed       502 label-studio-auth-failed: a PAT exchange refused
    ├── QueueFull                   503 queue-full (Retry-After)
    ├── WaitTooLong                 503 wait-too-long: the queue outlasts the deadline
    ├── MemoryFull                  503 memory-full: the memory budget is taken (Retry-After)
    ├── OutOfMemory                 503 out-of-memory (Retry-After)
    ├── NotReady                    503 not-ready (Retry-After)
    └── DeadlineExceeded            504 deadline-exceeded

The HTTP client (:mod:`service.client`) has its own exceptions for what it receives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from core.errors import DifferenceFinderError

__all__ = [
    "TITLES",
    "ClientDisconnected",
    "DeadlineExceeded",
    "FetchFailed",
    "LabelStudioAuthFailed",
    "MalformedJson",
    "MemoryFull",
    "NotAcceptable",
    "NotAnImage",
    "NotFound",
    "NotReady",
    "OutOfMemory",
    "OverMemoryBudget",
    "PayloadTooLarge",
    "QueueFull",
    "ServiceProblem",
    "Unauthorized",
    "UnsupportedMediaType",
    "UrlRefused",
    "ValidationProblem",
    "WaitTooLong",
]

#: Titles for problem codes (a title is the same for every problem of a type).
TITLES = {
    "error": "Difference Finder error",
    "invalid-input": "Invalid input",  # images, and a compare's labels or baseline
    "undecodable-image": "Image cannot be decoded",
    "shape-mismatch": "Images differ in size or channels",
    "unpaired-files": "Unpaired files",
    "invalid-config": "Invalid pipeline configuration",
    "metric-not-applicable": "Metric not applicable to these images",
    "weights-missing": "Model weights missing",
    "device-unavailable": "Compute device unavailable",
    "validation-error": "Invalid request",
    "internal-error": "Internal server error",
}


def title_for(status: int, code: str) -> str:
    """The title of a problem type: ours, else the status phrase."""
    return TITLES.get(code) or HTTPStatus(status).phrase


class ServiceProblem(Exception):
    """An error the service raises on purpose; becomes a problem response."""

    def __init__(self, status: int, code: str, detail: str, *, title: str | None = None,
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or title_for(status, code)
        self.headers = dict(headers or {})
        self.extra = extra

    @classmethod
    def from_core(cls, exc: DifferenceFinderError) -> ServiceProblem:
        """Core's typed exceptions carry their ``code`` and ``status``."""
        return cls(exc.status, exc.code, exc.message, **exc.extra)


class MalformedJson(ServiceProblem):
    def __init__(self, detail: str) -> None:
        super().__init__(400, "malformed-json", detail, title="Malformed JSON")


class Unauthorized(ServiceProblem):
    """No valid API key; ``basic``: Basic auth with the key as the password works too;
    ``given``: credentials were sent but match no key (said so, not "needs a key")."""

    def __init__(self, basic: bool = False, given: bool = False) -> None:
        how = "'Authorization: Bearer <key>'" + (
            " or Basic auth with the key as the password (Label Studio: ML backend > Basic "
            "auth)" if basic else "")
        challenge = 'Bearer realm="difference-finder"' + (
            ', Basic realm="difference-finder"' if basic else "")
        detail = ("the credentials sent are not a valid API key for this server; send "
                  f"{how} with one of its keys (DF_API_KEYS)" if given
                  else f"this server needs an API key: send {how}")
        super().__init__(401, "unauthorized", detail,
                         title="Unauthorized", headers={"WWW-Authenticate": challenge})


class NotFound(ServiceProblem):
    def __init__(self, detail: str) -> None:
        super().__init__(404, "not-found", detail)


class NotAcceptable(ServiceProblem):
    def __init__(self, accept: str, offered: Sequence[str]) -> None:
        super().__init__(406, "not-acceptable", f"cannot answer with {accept!r}; "
                         f"available: {', '.join(offered)}", available=list(offered))


class PayloadTooLarge(ServiceProblem):
    """413 for the whole body (no ``what``), an image of ``size`` bytes, an image found
    too large while streaming (no ``size``), or a text ``part`` of a form."""

    def __init__(self, limit: int, what: str | None = None, *, size: int | None = None,
                 part: bool = False) -> None:
        if what is None:
            detail = f"the request body exceeds the limit of {limit} bytes"
        elif part:
            detail = f"{what}: more than {limit} bytes"
        elif size is None:
            detail = f"{what}: the image is larger than the limit of {limit} bytes"
        else:
            detail = f"{what}: {size} bytes exceeds the limit of {limit} bytes per image"
        where = {"field": what} if what is not None else {}
        super().__init__(413, "payload-too-large", detail, **where, limit=limit)


class UnsupportedMediaType(ServiceProblem):
    def __init__(self, detail: str, accepted: Sequence[str]) -> None:
        super().__init__(415, "unsupported-media-type", detail, accepted=list(accepted))


class ValidationProblem(ServiceProblem):
    """A 422 naming every invalid field; ``detail`` spells out the first ones."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        shown = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['message']}"
                 for e in errors[:3]]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(422, "validation-error", "; ".join(shown) + more, errors=errors)
        self.errors = errors

    @classmethod
    def at(cls, loc: Sequence[str | int], message: str, type: str,
           pointer: str | None = None) -> ValidationProblem:
        """One invalid field at ``loc`` (its pointer: the parts joined, unless given)."""
        where = pointer or "#/" + "/".join(map(str, loc))
        return cls([{"pointer": where, "loc": list(loc), "message": message, "type": type}])


class UrlRefused(ServiceProblem):
    def __init__(self, what: str, detail: str) -> None:
        super().__init__(422, "url-refused", f"{what}: {detail}", title="URL refused",
                         field=what)


class FetchFailed(ServiceProblem):
    """A URL could not be fetched; ``upstream_status`` (an extra) when the server answered."""

    def __init__(self, what: str, detail: str, status: int = 422, **extra: Any) -> None:
        super().__init__(status, "url-fetch-failed", f"{what}: {detail}",
                         title="URL could not be fetched", field=what, **extra)


class NotAnImage(ServiceProblem):
    """A URL's content is not a supported image (the code of an undecodable upload)."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(422, "undecodable-image", f"{what}: {detail}", field=what)


class ClientDisconnected(ServiceProblem):
    def __init__(self) -> None:
        super().__init__(499, "client-closed-request", "the client went away; its work was "
                         "dropped", title="Client closed request")


class LabelStudioAuthFailed(ServiceProblem):
    """Label Studio refused to exchange the configured personal access token (or could not
    be reached to exchange it)."""

    def __init__(self, detail: str, upstream_status: int | None = None) -> None:
        super().__init__(502, "label-studio-auth-failed", detail,
                         title="Label Studio refused the token",
                         upstream_status=upstream_status)


class QueueFull(ServiceProblem):
    def __init__(self, retry_after: int) -> None:
        super().__init__(503, "queue-full", "the server is at capacity; retry after "
                         f"{retry_after} s", title="Server busy",
                         headers={"Retry-After": str(retry_after)}, retry_after=retry_after)


class WaitTooLong(ServiceProblem):
    def __init__(self, wait: float, deadline: float, retry_after: int) -> None:
        super().__init__(503, "wait-too-long", f"the queue ahead would take about {wait:.0f} s, "
                         f"more than the deadline of {deadline:g} s; retry after "
                         f"{retry_after} s", title="Server busy",
                         headers={"Retry-After": str(retry_after)}, retry_after=retry_after,
                         expected_wait_s=round(wait, 1))


class MemoryFull(ServiceProblem):
    def __init__(self, needed: int, budget: int, device: str, retry_after: int) -> None:
        super().__init__(503, "memory-full", f"this request needs about {needed} bytes of "
                         f"working memory on {device} and the budget of {budget} bytes is "
                         f"taken by other requests; retry after {retry_after} s",
                         title="Server busy", headers={"Retry-After": str(retry_after)},
                         retry_after=retry_after, needed_bytes=needed, budget_bytes=budget,
                         device=device)


class OverMemoryBudget(ServiceProblem):
    def __init__(self, needed: int, budget: int, device: str) -> None:
        super().__init__(413, "over-memory-budget", f"this request needs about {needed} bytes "
                         f"of working memory on {device}, more than the whole budget of "
                         f"{budget} bytes; send smaller images", title="Request too large",
                         needed_bytes=needed, budget_bytes=budget, device=device)


class OutOfMemory(ServiceProblem):
    def __init__(self, device: str) -> None:
        super().__init__(503, "out-of-memory", f"{device} ran out of memory on this request; "
                         "try smaller images or retry later", title="Out of memory",
                         headers={"Retry-After": "5"}, device=device)


class NotReady(ServiceProblem):
    def __init__(self, reason: str, **detail: Any) -> None:
        super().__init__(503, "not-ready", f"not ready: {reason}", title="Not ready",
                         headers={"Retry-After": "1"}, **detail)


class DeadlineExceeded(ServiceProblem):
    def __init__(self, timeout: float) -> None:
        super().__init__(504, "deadline-exceeded", f"the request was not done within its "
                         f"deadline of {timeout:g} s", title="Request deadline exceeded")

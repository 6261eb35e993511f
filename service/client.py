"""Python client for the Difference Finder service, for lab tooling (sync and async).

>>> from service.client import Client
>>> with Client("http://gpu-box:8000") as c:
...     result = c.diff("ref.png", "out.png", config={"metric": "ssim"})
...     result.map.shape, result.metrics

It needs only httpx, numpy and tqdm (Pillow to send numpy arrays): no FastAPI, no
torch. Busy answers (503, 429) are retried, waiting as ``Retry-After`` says (up to
a cap); every other error is raised as a :class:`ServiceError` carrying the
RFC 9457 problem body.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import numpy as np

__all__ = [
    "AsyncClient",
    "CandidateResult",
    "Client",
    "ClientRequestError",
    "CompareResult",
    "DiffResult",
    "Improvement",
    "ServerError",
    "ServiceBusyError",
    "ServiceConnectionError",
    "ServiceError",
    "decode_map",
]

#: an image to send: a path, encoded file bytes, an ``http(s)://`` URL the server
#: fetches, a uint8/uint16 numpy array (H, W) or (H, W, 3|4), or a PIL image
ImageInput = Any
T = TypeVar("T")

_sleep = time.sleep  # module attributes so tests can watch the waits
_asleep = asyncio.sleep


# --- errors ---------------------------------------------------------------------------


class ServiceError(Exception):
    """The service answered with an error, or could not be reached.

    ``problem`` is the RFC 9457 body (``type``, ``title``, ``status``, ``detail`` and
    any extension members such as the JSON path of an invalid config field).
    """

    def __init__(self, message: str, *, status: int | None = None,
                 problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem or {}

    @property
    def type(self) -> str | None:
        return self.problem.get("type")

    @property
    def code(self) -> str | None:
        """The last segment of the problem ``type`` URI or URN (e.g. ``weights-missing``)."""
        t = self.type
        return re.split(r"[/:#]", t.rstrip("/"))[-1] if t else None

    @property
    def title(self) -> str | None:
        return self.problem.get("title")

    @property
    def detail(self) -> str | None:
        return self.problem.get("detail")


class ClientRequestError(ServiceError):
    """A 4xx answer: the request was wrong (bad image, invalid config, too large...)."""


class ServerError(ServiceError):
    """A 5xx answer: the service failed (missing weights, deadline passed, ...)."""


class ServiceBusyError(ServerError):
    """Still busy (429, or 503 with Retry-After) after every retry: the queue stayed full."""


class ServiceConnectionError(ServiceError):
    """The service could not be reached (after retrying the connection)."""


def _error_for(resp: httpx.Response, attempts: int = 1) -> ServiceError:
    try:
        problem = resp.json()
        if not isinstance(problem, dict):
            problem = {"detail": problem}
    except ValueError:
        problem = {"detail": resp.text[:1000]}
    status = resp.status_code
    what = problem.get("detail") or problem.get("title") or resp.reason_phrase
    message = f"{resp.request.method} {resp.request.url.path}: HTTP {status}: {what}"
    if _should_retry(resp):
        return ServiceBusyError(f"{message} (after {attempts} attempt(s))", status=status,
                                problem=problem)
    cls = ClientRequestError if 400 <= status < 500 else ServerError
    return cls(message, status=status, problem=problem)


# --- results --------------------------------------------------------------------------


def decode_map(obj: dict[str, Any]) -> np.ndarray:
    """``{"dtype": "float32", "shape": [H, W], "data": base64}`` -> a float32 array."""
    if obj.get("dtype") != "float32":
        raise ValueError(f"unsupported map dtype {obj.get('dtype')!r} (expected float32)")
    shape = tuple(int(n) for n in obj["shape"])
    raw = base64.b64decode(obj["data"])
    if len(raw) != 4 * int(np.prod(shape)):
        raise ValueError(f"map data has {len(raw)} bytes, shape {list(shape)} needs "
                         f"{4 * int(np.prod(shape))}")
    return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)


@dataclass
class DiffResult:
    """One pair's answer from ``/v1/diff``: the map as float32 (H, W) and the rest."""

    map: np.ndarray
    metrics: dict[str, float | None]
    regions: list[dict[str, Any]]
    config: dict[str, Any]
    timing_ms: dict[str, float] = field(default_factory=dict)
    summary: str = ""  # "no significant difference found", "2 significant regions"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> DiffResult:
        return cls(map=decode_map(body["map"]), metrics=body.get("metrics", {}),
                   regions=body.get("regions", []), config=body.get("config", {}),
                   timing_ms=body.get("timing_ms", {}), summary=body.get("summary", ""))


@dataclass
class CandidateResult:
    """One candidate of a ``/v1/compare`` answer (its map is on the shared scale)."""

    label: str
    map: np.ndarray
    metrics: dict[str, float | None]
    regions: list[dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)  # metrics left out, and why
    summary: str = ""  # "no significant difference found", "regions not computed", ...


@dataclass
class Improvement:
    """Signed map of where a candidate is closer to the reference than the baseline."""

    label: str
    map: np.ndarray
    improved_fraction: float
    worsened_fraction: float


@dataclass
class CompareResult:
    """The answer of ``/v1/compare``: candidates in request order, one shared scale.

    ``raw`` is the whole JSON body (maps still encoded) for fields not lifted here.
    """

    scale: dict[str, float]
    candidates: list[CandidateResult]
    improvement: list[Improvement]
    baseline: str | None = None
    metric: str | None = None  # which metrics key is the pipeline's own metric
    config: dict[str, Any] = field(default_factory=dict)
    timing_ms: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> CompareResult:
        return cls(
            scale=body.get("scale", {}),
            candidates=[CandidateResult(c["label"], decode_map(c["map"]), c.get("metrics", {}),
                                        c.get("regions", []), c.get("skipped", {}),
                                        c.get("summary", ""))
                        for c in body["candidates"]],
            improvement=[Improvement(i["label"], decode_map(i["map"]), i["improved_fraction"],
                                     i["worsened_fraction"])
                         for i in body.get("improvement") or []],
            baseline=body.get("baseline"), metric=body.get("metric"),
            config=body.get("config", {}), timing_ms=body.get("timing_ms", {}), raw=body,
        )

    def __getitem__(self, label: str) -> CandidateResult:
        for c in self.candidates:
            if c.label == label:
                return c
        raise KeyError(label)


# --- request bodies -------------------------------------------------------------------


def _is_url(x: Any) -> bool:
    return isinstance(x, str) and x.startswith(("http://", "https://"))


def _encode(image: ImageInput, what: str) -> tuple[str, bytes]:
    """An image input as ``(file name, encoded bytes)``."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():  # named as the library names it, not as a raw errno
            raise FileNotFoundError(f"{path}: no such file")
        return path.name, path.read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"{what}.bin", bytes(image)
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype not in (np.uint8, np.uint16) or not (
                image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise TypeError(f"{what}: send uint8 (H, W[, 3|4]) or uint16 (H, W) arrays; got "
                            f"{image.dtype} {image.shape} (encode other data as a file first)")
        if image.dtype == np.uint16 and image.ndim != 2:
            raise TypeError(f"{what}: uint16 arrays must be grayscale (H, W)")
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return f"{what}.png", buf.getvalue()
    raise TypeError(f"{what}: cannot send a {type(image).__name__}; give a path, bytes, a URL, "
                    f"a numpy array or a PIL image")


def _json_image(image: ImageInput, what: str) -> dict[str, str]:
    if _is_url(image):
        return {"url": image}
    return {"data": base64.b64encode(_encode(image, what)[1]).decode("ascii")}


def _config_dict(config: Any) -> dict[str, Any] | None:
    if config is None:
        return None
    if hasattr(config, "model_dump"):  # a core.PipelineConfig: what it was told, as core does
        return config.chosen(mode="json")
    return dict(config)


#: what ``metrics=`` of :meth:`Client.diff` takes: "auto", True, False or metric names
Metrics = str | bool | Sequence[str] | None


def _metrics_value(metrics: Metrics) -> Any:
    """The request's ``metrics`` value (None: leave it out, the server's "auto")."""
    if metrics is None or isinstance(metrics, (bool, str)):
        return metrics
    return list(metrics)


def _diff_request(reference: ImageInput, candidate: ImageInput, config: Any,
                  metrics: Metrics = None) -> dict[str, Any]:
    """httpx keyword arguments for one /v1/diff POST (multipart, or JSON when a URL is given)."""
    cfg = _config_dict(config)
    scores = _metrics_value(metrics)
    if _is_url(reference) or _is_url(candidate):
        body: dict[str, Any] = {"reference": _json_image(reference, "reference"),
                                "candidate": _json_image(candidate, "candidate")}
        if cfg is not None:
            body["config"] = cfg
        if scores is not None:
            body["metrics"] = scores
        return {"json": body}
    files = [("reference", _encode(reference, "reference")),
             ("candidate", _encode(candidate, "candidate"))]
    data = {"config": json.dumps(cfg)} if cfg is not None else {}
    if scores is not None:
        data["metrics"] = json.dumps(scores)
    return {"files": files, "data": data}


def _compare_request(reference: ImageInput, candidates: Sequence[ImageInput],
                     labels: Sequence[str] | None, baseline: str | None,
                     config: Any) -> dict[str, Any]:
    cfg = _config_dict(config)
    if labels is not None and len(labels) != len(candidates):
        raise ValueError(f"{len(labels)} labels for {len(candidates)} candidates")
    if _is_url(reference) or any(_is_url(c) for c in candidates):
        body: dict[str, Any] = {
            "reference": _json_image(reference, "reference"),
            "candidates": [_json_image(c, f"candidate{i}") for i, c in enumerate(candidates)],
        }
        for key, value in (("labels", labels and list(labels)), ("baseline", baseline),
                           ("config", cfg)):
            if value is not None:
                body[key] = value
        return {"json": body}
    files = [("reference", _encode(reference, "reference"))]
    files += [("candidates", _encode(c, f"candidate{i}")) for i, c in enumerate(candidates)]
    data: dict[str, str] = {}
    if labels is not None:
        data["labels"] = json.dumps(list(labels))
    if baseline is not None:
        data["baseline"] = baseline
    if cfg is not None:
        data["config"] = json.dumps(cfg)
    return {"files": files, "data": data}


ACCEPT = {"json": "application/json", "png": "image/png", "npy": "application/x-npy",
          "svg": "image/svg+xml", "pdf": "application/pdf"}
FIGURE_FORMATS = ("png", "svg", "pdf")


def _figure_params(fmt: str, dpi: int | None, insets: int | None) -> dict[str, int]:
    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"figure format {fmt!r}: choose one of {', '.join(FIGURE_FORMATS)}")
    return {k: v for k, v in (("dpi", dpi), ("insets", insets)) if v is not None}


def _parse_npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


# --- retry policy ---------------------------------------------------------------------


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    value = resp.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _should_retry(resp: httpx.Response) -> bool:
    """429 always; 503 when it says when to come back (Retry-After) or is not the service's
    own problem answer (a proxy or load balancer with no ready backend). A deliberate 503
    problem without Retry-After (missing weights, no such device) will not heal by waiting.
    """
    if resp.status_code == 429:
        return True
    if resp.status_code != 503:
        return False
    return ("retry-after" in resp.headers
            or not resp.headers.get("content-type", "").startswith("application/problem+json"))


@dataclass(frozen=True)
class _Policy:
    retries: int
    max_wait: float
    backoff: float

    def delay(self, attempt: int, resp: httpx.Response | None) -> float:
        """How long to wait before retry number ``attempt`` (1-based)."""
        hinted = _retry_after(resp) if resp is not None else None
        wait_s = hinted if hinted is not None else self.backoff * 2 ** (attempt - 1)
        return min(wait_s, self.max_wait)


def _headers(api_key: str | None, headers: dict[str, str] | None) -> dict[str, str]:
    out = {"User-Agent": "difference-finder-client"}
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"  # the service's DF_API_KEYS scheme
    out.update(headers or {})
    return out


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="pair", disable=not enabled, file=sys.stderr)


# --- what both clients share: request building and retry decisions ---------------------


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One endpoint call: where, the answer type, how to build the body, how to read it."""

    path: str
    accept: str
    build: Callable[[], dict[str, Any]]  # httpx keyword arguments (reads files: off the loop)
    parse: Callable[[httpx.Response], T]
    params: dict[str, int] | None = None


class _BaseClient:
    """Everything but I/O: connection options, the retry policy, the endpoint calls.

    ``retries`` is how often a busy answer (429, 503 with Retry-After or from a proxy)
    or a refused connection is retried; each wait is the server's ``Retry-After``
    (else exponential backoff from ``backoff`` seconds), never more than
    ``max_retry_wait`` seconds.
    """

    def __init__(self, base_url: str, *, api_key: str | None, timeout: float, retries: int,
                 max_retry_wait: float, backoff: float, headers: dict[str, str] | None,
                 max_connections: int) -> None:
        self._policy = _Policy(retries, max_retry_wait, backoff)
        self._options: dict[str, Any] = {
            "base_url": base_url.rstrip("/"), "timeout": timeout,
            "headers": _headers(api_key, headers),
            "limits": httpx.Limits(max_connections=max_connections)}

    # retry decisions

    def _connect_retry(self, attempt: int, exc: httpx.ConnectError) -> float:
        """The wait before retrying a refused connection, or the error after the last."""
        if attempt == self._policy.retries:
            raise ServiceConnectionError(
                f"cannot reach {self._http.base_url}: {exc}") from exc
        return self._policy.delay(attempt + 1, None)

    def _answer_retry(self, attempt: int, resp: httpx.Response) -> float | None:
        """None to take ``resp`` (2xx), a wait before retrying it, or its error."""
        if _should_retry(resp) and attempt < self._policy.retries:
            return self._policy.delay(attempt + 1, resp)
        if resp.is_success:
            return None
        raise _error_for(resp, attempt + 1)

    # the endpoint calls

    def _diff(self, reference: ImageInput, candidate: ImageInput, config: Any,
              accept: str, parse: Callable[[httpx.Response], T],
              metrics: Metrics = None) -> _Call[T]:
        return _Call("/v1/diff", accept,
                     lambda: _diff_request(reference, candidate, config, metrics), parse)

    def _compare(self, reference: ImageInput, candidates: Sequence[ImageInput],
                 labels: Sequence[str] | None, baseline: str | None, config: Any,
                 accept: str, parse: Callable[[httpx.Response], T],
                 params: dict[str, int] | None = None) -> _Call[T]:
        return _Call("/v1/compare", accept, lambda: _compare_request(
            reference, candidates, labels, baseline, config), parse, params)

    def _compare_figure(self, reference: ImageInput, candidates: Sequence[ImageInput],
                        labels: Sequence[str] | None, baseline: str | None, config: Any,
                        format: str, dpi: int | None, insets: int | None) -> _Call[bytes]:
        params = _figure_params(format, dpi, insets)
        return self._compare(reference, candidates, labels, baseline, config, format,
                             _content, params)


def _diff_result(resp: httpx.Response) -> DiffResult:
    return DiffResult.from_json(resp.json())


def _compare_result(resp: httpx.Response) -> CompareResult:
    return CompareResult.from_json(resp.json())


def _content(resp: httpx.Response) -> bytes:
    return resp.content


def _npy(resp: httpx.Response) -> np.ndarray:
    return _parse_npy(resp.content)


def _check_concurrency(concurrency: int) -> None:
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")


# --- the synchronous client -----------------------------------------------------------


class Client(_BaseClient):
    """Blocking client; safe to share between threads (``diff_many`` does).

    ``retries`` is how often a busy answer (429, 503 with Retry-After or from a proxy)
    or a refused connection is retried; each wait is the server's ``Retry-After``
    (else exponential backoff from ``backoff`` seconds), never more than
    ``max_retry_wait`` seconds.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 120.0,
                 retries: int = 5, max_retry_wait: float = 30.0, backoff: float = 0.5,
                 headers: dict[str, str] | None = None, max_connections: int = 16,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key=api_key, timeout=timeout, retries=retries,
                         max_retry_wait=max_retry_wait, backoff=backoff, headers=headers,
                         max_connections=max_connections)
        self._http = httpx.Client(**self._options, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send with retries; return a 2xx response or raise a :class:`ServiceError`."""
        for attempt in range(self._policy.retries + 1):
            try:
                resp = self._http.request(method, path, **kwargs)
            except httpx.ConnectError as exc:
                _sleep(self._connect_retry(attempt, exc))
                continue
            wait_s = self._answer_retry(attempt, resp)
            if wait_s is None:
                return resp
            _sleep(wait_s)
        raise AssertionError("unreachable")

    def _send(self, call: _Call[T]) -> T:
        return call.parse(self.request("POST", call.path, headers={"Accept": ACCEPT[call.accept]},
                                       params=call.params, **call.build()))

    # endpoints

    def diff(self, reference: ImageInput, candidate: ImageInput,
             config: Any = None, *, metrics: Metrics = None) -> DiffResult:
        """POST /v1/diff and return the map, metrics and regions. ``metrics``: which
        scores ("auto", the server's default; True: the configured metric; False: none; or
        metric names)."""
        return self._send(self._diff(reference, candidate, config, "json", _diff_result,
                                     metrics))

    def diff_png(self, reference: ImageInput, candidate: ImageInput,
                 config: Any = None) -> bytes:
        """The map rendered by the service as a heatmap PNG."""
        return self._send(self._diff(reference, candidate, config, "png", _content))

    def diff_npy(self, reference: ImageInput, candidate: ImageInput,
                 config: Any = None) -> np.ndarray:
        """The float map only, sent by the service as .npy."""
        return self._send(self._diff(reference, candidate, config, "npy", _npy))

    def compare(self, reference: ImageInput, candidates: Sequence[ImageInput], *,
                labels: Sequence[str] | None = None, baseline: str | None = None,
                config: Any = None) -> CompareResult:
        """POST /v1/compare: every candidate against one reference, maps on one scale."""
        return self._send(self._compare(reference, candidates, labels, baseline, config,
                                        "json", _compare_result))

    def compare_figure(self, reference: ImageInput, candidates: Sequence[ImageInput], *,
                       labels: Sequence[str] | None = None, baseline: str | None = None,
                       config: Any = None, format: str = "png", dpi: int | None = None,
                       insets: int | None = None) -> bytes:
        """The paper figure (reference, candidates, maps, colorbar, insets) as PNG/SVG/PDF."""
        return self._send(self._compare_figure(reference, candidates, labels, baseline,
                                               config, format, dpi, insets))

    def diff_many(self, pairs: Iterable[tuple[ImageInput, ImageInput]], config: Any = None, *,
                  concurrency: int = 4, progress: bool = True, return_exceptions: bool = False,
                  metrics: Metrics = None) -> list[DiffResult | ServiceError]:
        """Diff many pairs, at most ``concurrency`` in flight, results in input order.

        With ``return_exceptions`` a failed pair gives its :class:`ServiceError` in
        its place; otherwise the first failure stops the rest and is raised.
        """
        pairs = list(pairs)
        _check_concurrency(concurrency)
        results: list[Any] = [None] * len(pairs)
        bar = _progress(len(pairs), progress, "diff")
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = {pool.submit(self.diff, a, b, config, metrics=metrics): i
                       for i, (a, b) in enumerate(pairs)}
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        exc = fut.exception()
                        if exc is not None and not (return_exceptions
                                                    and isinstance(exc, ServiceError)):
                            raise exc
                        results[futures[fut]] = exc if exc is not None else fut.result()
                        bar.update(1)
            finally:
                for fut in pending:
                    fut.cancel()
                bar.close()
        return results

    def capabilities(self) -> dict[str, Any]:
        return self.request("GET", "/v1/capabilities").json()

    def _status(self, path: str) -> int | None:
        """One GET's status (no retries), None when unreachable."""
        try:
            return self._http.get(path).status_code
        except httpx.TransportError:
            return None

    def healthy(self) -> bool:
        """Whether /healthz answers 200 (no retries)."""
        return self._status("/healthz") == 200

    def ready(self) -> bool:
        """Whether /readyz answers 200: workers up, models loaded and warmed."""
        return self._status("/readyz") == 200

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Block until /readyz is 200, or raise :class:`ServiceConnectionError`."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise ServiceConnectionError(
                    f"{self._http.base_url} not ready after {timeout:.0f} s")
            _sleep(interval)


# --- the asynchronous client ----------------------------------------------------------


class AsyncClient(_BaseClient):
    """The asyncio twin of :class:`Client` (same arguments, same results)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 120.0,
                 retries: int = 5, max_retry_wait: float = 30.0, backoff: float = 0.5,
                 headers: dict[str, str] | None = None, max_connections: int = 16,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key=api_key, timeout=timeout, retries=retries,
                         max_retry_wait=max_retry_wait, backoff=backoff, headers=headers,
                         max_connections=max_connections)
        self._http = httpx.AsyncClient(**self._options, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send with retries; return a 2xx response or raise a :class:`ServiceError`."""
        for attempt in range(self._policy.retries + 1):
            try:
                resp = await self._http.request(method, path, **kwargs)
            except httpx.ConnectError as exc:
                await _asleep(self._connect_retry(attempt, exc))
                continue
            wait_s = self._answer_retry(attempt, resp)
            if wait_s is None:
                return resp
            await _asleep(wait_s)
        raise AssertionError("unreachable")

    async def _send(self, call: _Call[T]) -> T:
        kwargs = await asyncio.to_thread(call.build)  # file reads and PNG encoding off the loop
        return call.parse(await self.request("POST", call.path,
                                             headers={"Accept": ACCEPT[call.accept]},
                                             params=call.params, **kwargs))

    async def diff(self, reference: ImageInput, candidate: ImageInput,
                   config: Any = None) -> DiffResult:
        return await self._send(self._diff(reference, candidate, config, "json", _diff_result))

    async def diff_png(self, reference: ImageInput, candidate: ImageInput,
                       config: Any = None) -> bytes:
        return await self._send(self._diff(reference, candidate, config, "png", _content))

    async def diff_npy(self, reference: ImageInput, candidate: ImageInput,
                       config: Any = None) -> np.ndarray:
        return await self._send(self._diff(reference, candidate, config, "npy", _npy))

    async def compare(self, reference: ImageInput, candidates: Sequence[ImageInput], *,
                      labels: Sequence[str] | None = None, baseline: str | None = None,
                      config: Any = None) -> CompareResult:
        return await self._send(self._compare(reference, candidates, labels, baseline, config,
                                              "json", _compare_result))

    async def compare_figure(self, reference: ImageInput, candidates: Sequence[ImageInput], *,
                             labels: Sequence[str] | None = None, baseline: str | None = None,
                             config: Any = None, format: str = "png", dpi: int | None = None,
                             insets: int | None = None) -> bytes:
        return await self._send(self._compare_figure(reference, candidates, labels, baseline,
                                                     config, format, dpi, insets))

    async def diff_many(self, pairs: Iterable[tuple[ImageInput, ImageInput]], config: Any = None,
                        *, concurrency: int = 4, progress: bool = True,
                        return_exceptions: bool = False) -> list[DiffResult | ServiceError]:
        """As :meth:`Client.diff_many`, with at most ``concurrency`` requests in flight."""
        pairs = list(pairs)
        _check_concurrency(concurrency)
        gate = asyncio.Semaphore(concurrency)
        bar = _progress(len(pairs), progress, "diff")

        async def one(a: ImageInput, b: ImageInput) -> DiffResult | ServiceError:
            async with gate:
                try:
                    return await self.diff(a, b, config)
                except ServiceError as exc:
                    if return_exceptions:
                        return exc
                    raise
                finally:
                    bar.update(1)

        try:
            return await _gather_or_cancel([one(a, b) for a, b in pairs])
        finally:
            bar.close()

    async def capabilities(self) -> dict[str, Any]:
        return (await self.request("GET", "/v1/capabilities")).json()

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False


async def _gather_or_cancel(coros: list[Awaitable[T]]) -> list[T]:
    """Like gather, but the first exception cancels the rest before it is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

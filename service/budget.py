"""Admission by memory: each request's working memory is estimated from its images'
headers (pixels x channels x 4 bytes x the pipeline's measured factor) and reserved before
any pixel is decoded, released once the answer is encoded.

How a request is reserved, the same for every route (:meth:`ImageLoader.decode_all`):

1. Every image's bytes are gathered first: a multipart body is parsed whole (Starlette
   spools its parts, within the body limit) before any image is looked at, so all its
   images are at hand together; base64 images are unpacked; URL images are fetched
   concurrently and arrive one by one.
2. As each image's bytes arrive its header is read (no decoding) and its estimate added
   to the request's :class:`Reservation` (:meth:`Reservation.add`). Nothing is taken from
   the budget yet, but as soon as the images known so far need more than the whole budget
   the request is refused with 413 naming both numbers (the other fetches are cancelled):
   it could never fit, so it must not be told to retry.
3. With every header read, the whole estimate is taken from the budget in one step
   (:meth:`Reservation.take`): 503 with Retry-After at once when it does not fit now.
   Taking it whole, not image by image, means a request never holds part of the budget
   while it waits for its other images, and two half-admitted requests cannot starve
   each other.
4. Only then are the images decoded; the reservation is released when the answer is
   encoded (or the request failed). A Label Studio batch reserves each task on its own
   and releases it once that task's prediction is encoded, so its peak is one task's.

The image count need not be known in advance (a compare's candidates, a batch's tasks):
the decision rests on the headers themselves, never on a guess about images not yet seen.

The host budget defaults to a share of the memory this process may use (the cgroup v2 or
v1 limit in a container, else the machine's RAM); each CUDA device gets its own share of
its memory (``torch.cuda.mem_get_info``).
"""

from __future__ import annotations

import contextvars
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from core import PipelineConfig
from core.finder import CHEAP_SCORES, Scores, score_names
from core.images import Limits, open_header

from .errors import MemoryFull, OverMemoryBudget
from .prometheus import Metrics

__all__ = [
    "FACTORS",
    "ImageHeader",
    "MemoryBudget",
    "Reservation",
    "current_reservation",
    "factor_for",
    "memory_limit",
    "peek_header",
    "use_pipeline",
]

#: Peak resident memory a request adds over its input units (pixels x channels x 4 bytes,
#: summed over its images), per ``strategy/metric`` with the default pre/post-processing:
#: decoding, the pipeline, regions and encoding (JSON and PNG heatmap) together. Measured
#: by ``python -m benchmarks.memory_factors`` (a fresh process per case; VmHWM after
#: resetting it, minus VmRSS before; max over 1024² and 2048² RGB pairs; torch 2.x CPU,
#: 1 thread; the significance, difference and compare rows remeasured 2026-12-03, since a
#: metric named beside a metric-free map is its score: SSIM's score needs ~4x the map's).
#: "compare/ssim" is /v1/compare (1 reference, 2 candidates, standard scores).
FACTORS: dict[str, float] = {
    "significance/mse": 2.71, "significance/psnr": 2.66, "significance/ssim": 10.75,
    "significance/ms-ssim": 9.56,
    "difference/mse": 2.42, "difference/psnr": 2.60, "difference/ssim": 10.49,
    "difference/ms-ssim": 9.47,
    "gradient/mse": 4.78, "gradient/psnr": 5.67, "gradient/ssim": 23.18,
    "gradient/ms-ssim": 12.04,
    "map/mse": 6.17, "map/psnr": 6.17, "map/ssim": 11.06,
    "compare/ssim": 10.01,
}
#: LPIPS could not be measured here (no weights on the measuring machine): its factor is
#: the largest measured one, doubled. Unknown strategies and metrics get the largest.
LPIPS_FACTOR = 2 * max(FACTORS.values())
#: headroom over the measured factors (allocator fragmentation, threads' buffers)
MARGIN = 1.25

_CURRENT: contextvars.ContextVar[Reservation | None] = contextvars.ContextVar(
    "df_reservation", default=None)


def factor_for(config: PipelineConfig | None, route: str = "diff",
               metrics: Scores = "auto") -> float:
    """The working-memory factor of ``config`` on ``route`` ("diff" or "compare"), with the
    scores ``metrics`` asks for (a costly score such as SSIM beside the significance map
    costs more memory than the map; the default answer's MSE/PSNR nearly nothing). Each
    ``strategy/metric`` row is that strategy with that metric's score; a request's factor is
    the largest row among the scores it computes (they run one after another)."""
    if config is None:
        return max(max(FACTORS.values()), LPIPS_FACTOR) * MARGIN
    metric = config.metric["name"]
    if route == "compare":
        found = LPIPS_FACTOR if metric == "lpips" else FACTORS.get(f"compare/{metric}",
                                                                   FACTORS["compare/ssim"])
        return found * MARGIN
    strategy = config.strategy["name"]
    uses = [metric] if config.uses_metric else []  # computed whatever the scores
    names = list(dict.fromkeys(uses + score_names(config, metrics))) or [CHEAP_SCORES[0]]
    if "lpips" in names:
        return LPIPS_FACTOR * MARGIN
    rows = [FACTORS.get(f"{strategy}/{name}") for name in names]
    return (max(rows) if None not in rows else max(FACTORS.values())) * MARGIN


def _cgroup_limit() -> int | None:
    """This process's cgroup memory limit in bytes (v2, else v1), or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            candidates = [Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max",
                          Path("/sys/fs/cgroup/memory.max")]
        elif "memory" in controllers.split(","):
            candidates = [Path("/sys/fs/cgroup/memory") / path.lstrip("/")
                          / "memory.limit_in_bytes",
                          Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")]
        else:
            continue
        for f in candidates:
            try:
                text = f.read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 1 << 60:  # v1 "unlimited" is a huge number
                return int(text)
    return None


def memory_limit() -> int:
    """The memory this process may use: its cgroup limit, else the machine's RAM."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    return min(total, limit) if limit else total


@dataclass(frozen=True)
class ImageHeader:
    width: int
    height: int
    channels: int  # as computed: alpha is composited away, palettes become RGB

    @property
    def units(self) -> int:
        """Input units: pixels x channels x 4 bytes (the float32 tensor)."""
        return self.width * self.height * self.channels * 4


def peek_header(data: bytes, limits: Limits | None = None) -> ImageHeader | None:
    """Size and channels from the header alone (:func:`core.images.open_header`, the rule
    decoding uses), or None when the bytes are no image or exceed ``limits`` (decoding then
    refuses them with the typed error)."""
    try:
        with open_header(io.BytesIO(data), limits) as img:
            width, height = img.size
            bands = img.getbands()
    except Exception:  # any decoder complaint: decode_image gives the typed error
        return None
    if limits is not None and (
            (limits.max_pixels is not None and width * height > limits.max_pixels)
            or (limits.max_side is not None and max(width, height) > limits.max_side)):
        return None
    colour = len([b for b in bands if b != "A"]) > 1 or bands == ("P",)
    return ImageHeader(width, height, 3 if colour else 1)


class MemoryBudget:
    """Bytes of one device's memory that admitted requests may reserve (thread-safe)."""

    def __init__(self, total: int, device: str = "host", metrics: Metrics | None = None
                 ) -> None:
        self.total = total
        self.device = device
        self.reserved = 0
        # bytes released since the C heap was last trimmed: freed memory the allocator may
        # still hold (it keeps it for reuse, core.memory), which fragmentation can keep from
        # fitting the next request: resident memory grew past the budget under a steady
        # stream of big requests (benchmarks/load.py big) without it being counted
        self.retained = 0
        self.lock = threading.Lock()
        self.metrics = metrics
        if metrics is not None:
            metrics.memory_budget.labels(device).set(total)

    def reserve(self, nbytes: int, retry_after: int) -> bool:
        """Take ``nbytes``: 413 when more than the whole budget, 503 when it is full now.
        True when the caller should first give freed memory back (``release_freed_memory``,
        off the event loop): what is reserved and what may still be retained would together
        exceed the budget."""
        if nbytes > self.total:
            raise OverMemoryBudget(nbytes, self.total, self.device)
        with self.lock:
            fits = self.reserved + nbytes <= self.total
            trim = fits and self.reserved + nbytes + self.retained > self.total
            if fits:
                self.reserved += nbytes
            if trim:
                self.retained = 0  # the caller trims before it allocates
        if not fits:
            if self.metrics is not None:
                self.metrics.rejected.labels("memory_full").inc()
            raise MemoryFull(nbytes, self.total, self.device, retry_after)
        self._gauge()
        return trim

    def release(self, nbytes: int) -> None:
        with self.lock:
            released = min(nbytes, self.reserved)
            self.reserved -= released
            self.retained += released
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.memory_reserved.labels(self.device).set(self.reserved)

    def snapshot(self) -> dict[str, int | str]:
        with self.lock:
            return {"device": self.device, "budget_bytes": self.total,
                    "reserved_bytes": self.reserved}


class Reservation:
    """One request's (or one Label Studio task's) share of the host budget: its images'
    estimates are added as their headers are read, the whole is taken at once before any
    of them is decoded, and all of it is released together (answer encoded, or failed)."""

    def __init__(self, budget: MemoryBudget, retry_after: int | None = None) -> None:
        self.budget = budget
        self.retry_after = retry_after or 1
        self.factor = factor_for(None)
        self.units = 0  # input units of the images added so far
        self.known = 0  # bytes the images added so far need (taken or not)
        self.nbytes = 0  # bytes taken from the budget
        self.images = 0  # images added so far
        self.refusal: Exception | None = None  # once refused, later calls get the same
        self.trim = False  # give freed memory back before decoding (MemoryBudget.reserve)

    def use(self, config: PipelineConfig, route: str = "diff", metrics: Scores = "auto"
            ) -> None:
        """The pipeline is known: images are estimated at its factor on ``route``, with the
        scores ``metrics`` asks for."""
        self.factor = factor_for(config, route, metrics)

    def _refuse(self, exc: Exception) -> Exception:
        self.refusal = exc
        return exc

    def add(self, header: ImageHeader, check: bool = True) -> None:
        """Count one more image of the request (nothing is taken yet); with ``check``, 413
        as soon as the images known so far need more than the whole budget (see check)."""
        if self.refusal is not None:
            raise self.refusal
        self.units += header.units
        self.images += 1
        self.known += int(header.units * self.factor)
        if check:
            self.check()

    def check(self) -> None:
        """413 when the images counted so far need more than the whole budget, whatever
        else is running (it could never fit), naming what they need together."""
        if self.refusal is not None:
            raise self.refusal
        if self.known > self.budget.total:
            raise self._refuse(OverMemoryBudget(self.known, self.budget.total,
                                                self.budget.device))

    def take(self) -> None:
        """Take what the images added so far need and is not taken yet, at once: 503
        (Retry-After) when it does not fit now. Called before any image is decoded."""
        if self.refusal is not None:
            raise self.refusal
        more = self.known - self.nbytes
        if more <= 0:
            return
        try:
            self.trim = self.budget.reserve(more, self.retry_after)
        except (OverMemoryBudget, MemoryFull) as exc:
            raise self._refuse(exc) from None
        self.nbytes = self.known

    def release(self) -> None:
        if self.nbytes:
            self.budget.release(self.nbytes)
            self.nbytes = 0

    def enter(self) -> contextvars.Token[Reservation | None]:
        """Make this the current request's reservation (for the image loader)."""
        return _CURRENT.set(self)

    @staticmethod
    def leave(token: contextvars.Token[Reservation | None]) -> None:
        _CURRENT.reset(token)


def current_reservation() -> Reservation | None:
    """The reservation of the request being prepared in this task, if any."""
    return _CURRENT.get()


def use_pipeline(config: PipelineConfig, route: str = "diff", metrics: Scores = "auto"
                 ) -> None:
    """Routes call this once the pipeline (and the scores asked for) are parsed, before
    images are decoded."""
    reservation = _CURRENT.get()
    if reservation is not None:
        reservation.use(config, route, metrics)

"""The worker pool: one thread per compute device, fed by a bounded admission count.

Requests are *admitted* first (a counter capped at ``queue_size`` plus one per worker,
checked before the body is read: 503 with Retry-After at once when full), then decoded,
then queued on the least-loaded device's lane: the workers of one device (several on the
CPU) take jobs from one shared queue, so a job never waits behind a slow one while another
worker of its device idles. The event loop only awaits futures; a job
whose waiter gave up (deadline, client gone) is skipped by its worker, and a running one
stops at its next pipeline step (the compute function passes :func:`cancel_check` to
core). A request whose predictable wait (requests ahead per worker x the recent median
service time) exceeds its deadline gets 503 at admission. A job that raises fails only
its own request; its worker goes on serving. CUDA workers reserve the job's working
memory on their device's budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch

from core.errors import Cancelled
from core.finder import CancelCheck, resolve_device
from core.memory import release_freed_memory

from .budget import MemoryBudget
from .errors import ClientDisconnected, DeadlineExceeded, OutOfMemory, QueueFull, WaitTooLong
from .prometheus import Metrics

__all__ = ["Admission", "WorkerPool", "cancel_check", "lower_priority", "resolve_devices"]

log = logging.getLogger("service.workers")
T = TypeVar("T")
_running = threading.local()  # .job: the job this worker thread is running
IDLE_TRIM_S = 5.0  # seconds without work before freed memory goes back to the kernel


def cancel_check() -> CancelCheck | None:
    """For compute functions: ``cancel()`` of the job running on this worker thread
    (True once its waiter gave up or its deadline passed); None off the pool."""
    job = getattr(_running, "job", None)
    return job.cancelled if job is not None else None


def resolve_devices(names: list[str], cpu_workers: int = 1) -> list[torch.device]:
    """Settings' device names -> one torch device per worker.

    ``auto`` is every GPU, else the CPU; the CPU named as ``cpu`` gets ``cpu_workers``
    workers (explicit ``cpu:N`` entries get one each).
    """
    if names == ["auto"]:
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        names = ["cpu"]
    devices = [resolve_device(n) for n in names]
    devices = [torch.device("cuda", 0) if d.type == "cuda" and d.index is None else d
               for d in devices]
    if len(set(map(str, devices))) != len(devices):
        raise ValueError(f"a device is listed twice: {names}")
    out: list[torch.device] = []
    for d in devices:
        out += [d] * (cpu_workers if str(d) == "cpu" else 1)
    return out


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


@dataclass(eq=False)
class Job(Generic[T]):
    """One unit of compute, and the asyncio future its request awaits."""

    fn: Callable[[torch.device], T]
    deadline: float  # time.monotonic() value
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    enqueued: float = field(default_factory=time.monotonic)
    abandoned: bool = False  # the waiter gave up: skip it, or stop it at its next step
    device_bytes: int = 0  # reserved on the worker's device budget; released when done

    def cancelled(self) -> bool:
        return self.abandoned or time.monotonic() > self.deadline

    def settle(self, result: Any = None, exc: BaseException | None = None) -> None:
        """Resolve the future from a worker thread (thread-safe)."""
        def _set() -> None:
            if self.future.done():
                return
            if exc is not None:
                self.future.set_exception(exc)
            else:
                self.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
            self.loop.call_soon_threadsafe(_set)


def lower_priority(increment: int) -> None:
    """Lower this thread's CPU priority by ``increment`` (Linux: nice is per thread, and
    threads it starts inherit it), so the event loop wins the CPU from compute."""
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid)
                                                 + increment))
    except OSError as exc:  # e.g. a sandbox that forbids it: compute still runs
        log.warning("could not lower the worker's priority: %s", exc)


class Lane:
    """The jobs of one device, in order, shared by its workers (whichever is free first
    takes the next): one FIFO per device, not per worker."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.jobs: queue.SimpleQueue[Job[Any] | None] = queue.SimpleQueue()
        self.pending = 0  # queued, not started (guarded by pool.lock)
        self.workers: list[Worker] = []

    @property
    def load(self) -> float:
        """Queued and running jobs per ready worker (all workers while none is ready)."""
        ready = sum(w.ready.is_set() for w in self.workers)
        busy = sum(w.busy for w in self.workers)
        return (self.pending + busy) / (ready or len(self.workers) or 1)


class Worker:
    """A thread owning one device; runs jobs from its device's lane in order."""

    def __init__(self, pool: WorkerPool, lane: Lane, index: int) -> None:
        self.pool = pool
        self.lane = lane
        self.device = lane.device
        self.index = index
        lane.workers.append(self)
        self.busy = False
        self.ready = threading.Event()
        self.warmup_error: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"df-worker-{index}-{self.device}",
                                       daemon=True)

    def _configure(self) -> None:
        if self.device.type == "cpu":
            lower_priority(self.pool.nice)  # before torch starts its threads: they inherit it
            torch.set_num_threads(self.pool.cpu_threads)
        elif self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def _run(self) -> None:
        try:
            self._configure()
            if self.pool.warmup is not None:
                self.pool.warmup(self.device)
        except Exception as exc:  # the worker still serves; readiness reports it
            log.exception("warm-up failed on %s", self.device)
            self.warmup_error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()
            self.pool._worker_ready()
        while True:
            try:  # after work, wait at most IDLE_TRIM_S before giving freed memory back
                job = self.lane.jobs.get(timeout=IDLE_TRIM_S if self.pool.unreleased
                                         else None)
            except queue.Empty:
                self.pool.release_if_idle()
                continue
            if job is None:
                return
            try:
                self._handle(job)
            except Exception as exc:  # a bug around the job must not kill the worker
                log.exception("worker %s failed around a job", self.device)
                job.settle(exc=exc)  # no-op if the job was already settled
                with self.pool.lock:
                    self.busy = False
            self.pool.unreleased = True

    def _handle(self, job: Job[Any]) -> None:
        try:
            self._run_job(job)
        finally:
            budget = self.pool.device_budgets.get(str(self.device))
            if budget is not None and job.device_bytes:
                budget.release(job.device_bytes)

    def _run_job(self, job: Job[Any]) -> None:
        pool, m = self.pool, self.pool.metrics
        with pool.lock:
            self.lane.pending -= 1
            self.busy = not job.abandoned
        m.queue_depth.dec()
        if job.abandoned:
            return
        start = time.monotonic()
        if start > job.deadline:
            self.busy = False
            job.settle(exc=DeadlineExceeded(pool.request_timeout))
            return
        m.queue_wait.observe(start - job.enqueued)
        outcome, result, error = "ok", None, None
        _running.job = job
        try:
            result = job.fn(self.device)
        except Cancelled as exc:  # its waiter is gone: nobody reads the answer
            outcome, error = "cancelled", exc
        except Exception as exc:
            outcome, error = "error", exc
            if _is_oom(exc):
                outcome = "oom"
                log.warning("out of memory on %s: %s", self.device, exc)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                error = OutOfMemory(str(self.device))
        finally:
            _running.job = None
            with pool.lock:
                self.busy = False
        # bookkeeping before the answer, so /metrics agrees with answers already sent
        seconds = time.monotonic() - start
        try:
            pool._observe_seconds(seconds)
            m.busy.labels(str(self.device), str(self.index)).inc(seconds)
            m.jobs.labels(str(self.device), str(self.index), outcome).inc()
        except Exception:
            log.exception("worker bookkeeping failed on %s", self.device)
        job.settle(result, error)


class Admission:
    """A place in the service, held from arrival until the response is built."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._pool._release()

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class WorkerPool:
    """Worker threads (one per device), admission control and least-loaded dispatch."""

    def __init__(self, devices: list[torch.device], queue_size: int, *, metrics: Metrics,
                 request_timeout: float, cpu_threads: int = 1, nice: int = 0,
                 warmup: Callable[[torch.device], None] | None = None,
                 device_budgets: dict[str, MemoryBudget] | None = None) -> None:
        if not devices:
            raise ValueError("the pool needs at least one device")
        self.metrics = metrics
        self.queue_size = queue_size
        self.request_timeout = request_timeout
        self.cpu_threads = cpu_threads
        self.nice = nice
        self.warmup = warmup
        self.lock = threading.Lock()
        lanes: dict[str, Lane] = {}
        for d in devices:
            lanes.setdefault(str(d), Lane(d))
        self.lanes = list(lanes.values())
        self.workers = [Worker(self, lanes[str(d)], i) for i, d in enumerate(devices)]
        self.capacity = queue_size + len(self.workers)
        self.admitted = 0
        self._job_seconds = 1.0  # moving average, for Retry-After
        self._recent: deque[float] = deque(maxlen=64)  # recent jobs' seconds, for the median
        self.device_budgets = device_budgets or {}  # str(device) -> its budget (CUDA)
        self._next = 0
        self._started = False
        self.closing = False
        self.unreleased = False  # jobs ran since the last release_if_idle

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        if not self._started:
            self._started = True
            for w in self.workers:
                w.thread.start()

    @property
    def ready(self) -> bool:
        return self._started and not self.closing and all(w.ready.is_set()
                                                          for w in self.workers)

    def release_if_idle(self) -> None:
        """Give the C heap's freed memory back (core.memory) when no job is queued or
        running: a trim holds the allocator's lock (tens of ms for GBs), so it waits for a
        quiet spell (IDLE_TRIM_S) rather than running between two jobs of a burst."""
        with self.lock:
            if not self.unreleased or self._in_flight():
                return
            self.unreleased = False
        release_freed_memory()

    def _worker_ready(self) -> None:
        if all(w.ready.is_set() for w in self.workers):
            gc.freeze()  # warmed models leave the collector's full passes (see service.app)
            self.metrics.ready.set(1)

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Finish queued jobs, stop the threads; True if all stopped within ``timeout``."""
        self.closing = True
        self.metrics.ready.set(0)
        for w in self.workers:  # one stop each, after the jobs already queued
            w.lane.jobs.put(None)
        end = time.monotonic() + timeout
        for w in self.workers:
            if w.thread.is_alive():
                w.thread.join(max(0.0, end - time.monotonic()))
        return not any(w.thread.is_alive() for w in self.workers)

    # -- admission --------------------------------------------------------------------

    def retry_after(self) -> int:
        """Seconds until a place is likely free: queued work over the worker count."""
        with self.lock:
            waiting = self._in_flight() + 1
            est = self._job_seconds * waiting / len(self.workers)
        return int(min(60, max(1, math.ceil(est))))

    def expected_wait(self) -> float:
        """Seconds a request admitted now would likely wait and compute: the requests
        ahead per worker, plus its own, times the recent median service time (0 until a
        few jobs have run)."""
        with self.lock:
            if len(self._recent) < 3:
                return 0.0
            median = statistics.median(self._recent)
            ahead = self.admitted
        return (ahead // len(self.workers) + 1) * median

    def admit(self, deadline_s: float | None = None) -> Admission:
        """Take a place or raise :class:`QueueFull` (503 with Retry-After) at once; also
        :class:`WaitTooLong` when the predictable wait exceeds ``deadline_s``."""
        if deadline_s is not None:
            wait = self.expected_wait()
            if wait > deadline_s:
                self.metrics.rejected.labels("wait_too_long").inc()
                raise WaitTooLong(wait, deadline_s, self.retry_after())
        with self.lock:
            full = self.admitted >= self.capacity or self.closing
            if not full:
                self.admitted += 1
        if full:
            self.metrics.rejected.labels("queue_full").inc()
            raise QueueFull(self.retry_after())
        self.metrics.admitted.inc()
        return Admission(self)

    def _release(self) -> None:
        with self.lock:
            self.admitted -= 1
        self.metrics.admitted.dec()

    def _observe_seconds(self, seconds: float) -> None:
        with self.lock:
            self._job_seconds = 0.8 * self._job_seconds + 0.2 * seconds
            self._recent.append(seconds)

    # -- dispatch ---------------------------------------------------------------------

    def _in_flight(self) -> int:
        """Jobs queued or running (under ``self.lock``)."""
        return sum(lane.pending for lane in self.lanes) + sum(w.busy for w in self.workers)

    def _pick(self) -> Lane:
        """The least-loaded lane (with a ready worker first); ties go round-robin."""
        n = len(self.lanes)
        order = [self.lanes[(self._next + i) % n] for i in range(n)]
        self._next = (self._next + 1) % n
        return min(order, key=lambda lane: (not any(w.ready.is_set() for w in lane.workers),
                                            lane.load))

    async def run(self, fn: Callable[[torch.device], T], *, deadline: float,
                  disconnected: Callable[[], Awaitable[Any]] | None = None,
                  memory: int = 0) -> T:
        """Run ``fn(device)`` on a worker and await its result.

        Raises :class:`DeadlineExceeded` past ``deadline`` (``time.monotonic()``) and
        :class:`ClientDisconnected` when ``disconnected()`` finishes first; either way
        the job is dropped if it has not started, or stopped at its next step. ``memory``
        bytes are reserved on a CUDA worker's device budget (503/413 when they don't fit).
        """
        if self.closing:
            raise QueueFull(self.retry_after())
        if time.monotonic() > deadline:
            self.metrics.rejected.labels("deadline").inc()
            raise DeadlineExceeded(self.request_timeout)
        loop = asyncio.get_running_loop()
        job: Job[T] = Job(fn, deadline, loop, loop.create_future())
        with self.lock:
            lane = self._pick()
        budget = self.device_budgets.get(str(lane.device))
        if budget is not None and memory:
            budget.reserve(memory, self.retry_after())
            job.device_bytes = memory
        with self.lock:
            lane.pending += 1
        self.metrics.queue_depth.inc()
        lane.jobs.put(job)
        watcher = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        waits: set[asyncio.Future[Any]] = {job.future}
        if watcher is not None:
            waits.add(watcher)
        try:
            remaining = max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait(waits, timeout=remaining,
                                         return_when=asyncio.FIRST_COMPLETED)
            if job.future in done:
                return job.future.result()
            if watcher is not None and watcher in done:
                self.metrics.rejected.labels("disconnected").inc()
                raise ClientDisconnected()
            self.metrics.rejected.labels("deadline").inc()
            raise DeadlineExceeded(self.request_timeout)
        finally:
            if not job.future.done():
                job.abandoned = True
                job.future.cancel()
            if watcher is not None:
                watcher.cancel()

    def snapshot(self) -> list[dict[str, Any]]:
        """Per-worker state for /readyz."""
        with self.lock:
            return [{"device": str(w.device), "worker": w.index, "ready": w.ready.is_set(),
                     "busy": w.busy,
                     "queued": w.lane.pending, "warmup_error": w.warmup_error}
                    for w in self.workers]

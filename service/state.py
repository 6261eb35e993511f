"""What the routes share, built once from the settings: the worker pool, the memory
budgets, the I/O thread pool, the URL fetcher, the image loader, Label Studio's files,
metrics and warm-up state."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from core.images import Limits
from core.memory import configure as configure_memory

from .budget import MemoryBudget, memory_limit
from .images import ImageLoader
from .label_studio.files import LabelStudioFiles
from .prometheus import Metrics
from .settings import Settings
from .urlfetch import Fetcher, UrlPolicy
from .warmup import Warmup
from .workers import WorkerPool, lower_priority, resolve_devices

__all__ = ["ServiceState"]

#: threads that read image headers for the memory budget (apart from the decoding pool)
_HEADER_THREADS = 2


@dataclass
class ServiceState:
    """The service's parts; lives on ``app.state.df`` (routes get it from deps)."""

    settings: Settings
    metrics: Metrics
    pool: WorkerPool
    warmup: Warmup
    executor: ThreadPoolExecutor
    header_executor: ThreadPoolExecutor  # image headers only (Pillow's lazy open): queued
    # behind other headers (sub-millisecond each), never behind decodes
    fetcher: Fetcher
    loader: ImageLoader
    budget: MemoryBudget  # host memory; CUDA devices' budgets are the pool's
    ls_files: LabelStudioFiles
    draining: bool = False  # SIGTERM received: /readyz answers 503 from then on

    @classmethod
    def build(cls, settings: Settings) -> ServiceState:
        """Every part configured from ``settings``; workers start in :meth:`start`."""
        # before any worker thread exists: one heap (core.memory), as DF_RETAIN_MEMORY says
        configure_memory(settings.retain_memory)
        devices = resolve_devices(settings.devices, settings.cpu_worker_count)
        metrics = Metrics()
        warmup = Warmup(settings.preload, settings.warmup_size, metrics)
        cpu_workers = sum(d.type == "cpu" for d in devices)
        share = settings.memory_budget_fraction
        budget = MemoryBudget(settings.memory_budget or int(memory_limit() * share),
                              "host", metrics)
        device_budgets = {str(d): MemoryBudget(int(torch.cuda.mem_get_info(d)[1] * share),
                                               str(d), metrics)
                          for d in dict.fromkeys(devices) if d.type == "cuda"}
        pool = WorkerPool(devices, settings.queue_size, metrics=metrics,
                          request_timeout=settings.request_timeout,
                          cpu_threads=settings.cpu_threads(cpu_workers),
                          nice=settings.worker_nice, warmup=warmup,
                          device_budgets=device_budgets)
        executor = ThreadPoolExecutor(settings.io_pool_size, thread_name_prefix="df-io",
                                      initializer=lower_priority,  # decoding yields to the loop
                                      initargs=(settings.worker_nice,))
        # headers apart from the decoding pool: a budget refusal never waits behind decodes
        headers = ThreadPoolExecutor(_HEADER_THREADS, thread_name_prefix="df-header")
        fetcher = Fetcher(UrlPolicy(allow_private=settings.allow_private_urls,
                                    allowlist=tuple(settings.url_allowlist)),
                          max_bytes=settings.max_upload_bytes, timeout=settings.url_timeout,
                          connect_timeout=settings.url_connect_timeout,
                          max_redirects=settings.url_max_redirects)
        loader = ImageLoader(max_bytes=settings.max_upload_bytes,
                             limits=Limits(max_pixels=settings.max_pixels,
                                           max_side=settings.max_side),
                             executor=executor, fetcher=fetcher,
                             header_executor=headers)
        ls_key = settings.label_studio_api_key
        ls_files = LabelStudioFiles(fetcher, settings.label_studio_url,
                                    ls_key.get_secret_value() if ls_key else None)
        return cls(settings, metrics, pool, warmup, executor, headers, fetcher, loader, budget,
                   ls_files)

    def start(self) -> None:
        self.pool.start()

    def drain(self) -> None:
        """SIGTERM: not ready from now on (requests are still served until uvicorn's
        shutdown refuses new connections and finishes the in-flight ones)."""
        self.draining = True
        self.metrics.ready.set(0)

    async def aclose(self) -> None:
        """Finish queued work, stop the workers, close the fetcher and the I/O pool."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.pool.shutdown, self.settings.shutdown_timeout)
        await self.fetcher.aclose()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.header_executor.shutdown(wait=False, cancel_futures=True)

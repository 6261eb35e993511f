"""Worker warm-up: load the preloaded LPIPS nets into the model cache on each device,
run one dummy pass through them and through the default pipeline, and record what
happened for /readyz and /metrics. Missing weight files are reported, not fatal."""

from __future__ import annotations

import logging
import threading

import numpy as np
import torch

from core import MODEL_CACHE, Finder, WeightsMissingError

from .prometheus import Metrics

__all__ = ["Warmup"]

log = logging.getLogger("service.warmup")


class Warmup:
    """Callable run by each worker thread on its device before it takes requests."""

    def __init__(self, nets: list[str], size: int, metrics: Metrics) -> None:
        self.nets = nets
        self.size = size
        self.metrics = metrics
        self._lock = threading.Lock()
        #: "net@device" -> "loaded" | "missing" | "failed"
        self.models: dict[str, str] = {}
        #: net -> the missing weight file's path
        self.missing: dict[str, str] = {}

    def _set(self, net: str, device: torch.device, state: str) -> None:
        with self._lock:
            self.models[f"{net}@{device}"] = state

    def __call__(self, device: torch.device) -> None:
        for net in self.nets:
            try:
                MODEL_CACHE.warm(net, device, size=self.size)
            except WeightsMissingError as exc:
                log.warning("not preloading LPIPS %s on %s: %s", net, device, exc.message)
                with self._lock:
                    self.missing[net] = str(exc.extra.get("file", ""))
                self._set(net, device, "missing")
                continue
            except Exception:
                log.exception("preloading LPIPS %s on %s failed", net, device)
                self._set(net, device, "failed")
                continue
            seconds = MODEL_CACHE.load_seconds.get((net, str(device)))
            if seconds is not None:
                self.metrics.model_load.labels(net, str(device)).set(seconds)
            self._set(net, device, "loaded")
        dummy = np.zeros((self.size, self.size, 3), np.uint8)
        Finder(device=device).analyze(dummy, dummy)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {"models": dict(self.models), "missing_weights": dict(self.missing)}

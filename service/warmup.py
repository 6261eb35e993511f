"""Worker warm-up: load the preloaded LPIPS nets into the model cache on each device,
run one dummy pass through them and one through the default pipeline on a pair that takes
its every step, and record what happened for /readyz and /metrics. Missing weight files
are reported, not fatal."""

from __future__ import annotations

import logging
import threading

import numpy as np
import torch

from core import MODEL_CACHE, Finder, WeightsMissingError

from .prometheus import Metrics

__all__ = ["Warmup", "warmup_pair"]

log = logging.getLogger("service.warmup")


def warmup_pair(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured RGB pair, the candidate slightly noisy with one brightened square: it takes
    every step of the default pipeline (filter fit and apply, tone curve, labelling), where
    an identical pair skips most of them and the first real request paid their first calls
    (a first 512² request: 146 ms after a 64² pair of zeros, 45 ms after this pair at 256²,
    32 ms steady)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    grey = 128 + 60 * np.sin(x / 3.0) * np.cos(y / 5.0) + 30 * np.sin((x + y) / 17.0)
    ref = np.stack([grey, grey * 0.8 + 20, 255 - grey], axis=-1)
    cand = ref + np.random.default_rng(0).normal(0.0, 2.0, ref.shape)
    q = max(1, size // 4)
    cand[q : 2 * q, q : 2 * q] += 40
    return (np.clip(ref, 0, 255).astype(np.uint8), np.clip(cand, 0, 255).astype(np.uint8))


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
        finder = Finder(device=device)
        ref, cand = warmup_pair(self.size)
        # the default scores and the configured metric (SSIM: what requests name most)
        names = sorted({*finder.score_names(), *finder.score_names(True)})
        finder.analyze(ref, cand, metrics=names)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {"models": dict(self.models), "missing_weights": dict(self.missing)}

"""The Finder: runs a :class:`PipelineConfig` on image pairs.

``Finder(...).run(a, b)`` is the seed-compatible call returning numpy maps;
``Finder(...).analyze(a, b)`` returns full :class:`PairResult` objects (map,
metric scores, regions, timings) and is what the CLI and the service use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ValidationError

from .config import PipelineConfig, Step
from .errors import Cancelled, ConfigError, DeviceError, InputError
from .images import (
    ImageLike,
    Limits,
    align_pair,
    directory_pair,
    pair_directories,
    to_tensor,
)
from .memory import configure as configure_memory
from .memory import retained_memory
from .metrics import METRICS
from .numeric import reduce_channels, squared_error_sum
from .postprocess import POST_PROCESSORS
from .preprocess import PRE_PROCESSORS
from .regions import find_regions
from .results import PairResult
from .strategies import STRATEGIES, BoundMetric

__all__ = ["CHEAP_SCORES", "CancelCheck", "Finder", "PairResult", "Scores", "check_cancel",
           "resolve_device", "score_names"]

#: ``cancel()`` -> True when the caller no longer wants the result (checked between steps)
CancelCheck = Callable[[], bool]


def check_cancel(cancel: CancelCheck | None, step: str) -> None:
    """Raise :class:`Cancelled` before ``step`` when ``cancel()`` says stop."""
    if cancel is not None and cancel():
        raise Cancelled(f"stopped before {step}", step=step)

#: scores ``analyze`` gives by default when the configured metric is costly: one banded
#: pass over the pair, small next to any map
CHEAP_SCORES = ("mse", "psnr")

#: which scores ``analyze`` computes: ``"auto"`` (the default), True (the configured
#: metric), False (none) or a list of metric names
Scores = bool | Literal["auto"] | Sequence[str]


_DEVICE_TYPES = ("cpu", "cuda", "mps")  # what the pipeline runs on


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` (or None) picks the first GPU when there is one, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in _DEVICE_TYPES:
        raise DeviceError(f"invalid device {device!r}: give auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r} requested but MPS is not available here")
    return dev


def score_names(config: PipelineConfig, metrics: Scores = "auto") -> list[str]:
    """Which metrics ``Finder(config).analyze(metrics=...)`` computes (the service sizes a
    request's memory by them before running it).

    ``"auto"``: the configured metric when the strategy computes it anyway, the pipeline
    names it (a metric-free strategy such as the default then still honours it, as the
    score), or it is not marked ``costly`` (MSE, PSNR and plugins); else
    :data:`CHEAP_SCORES`.
    ``True``: the configured metric. ``False``: none. A list: those metric names.
    """
    metric = METRICS.get(config.metric["name"]).name
    if metrics is False:
        return []
    if metrics is True:
        return [metric]
    if metrics == "auto":
        named = "metric" in config.model_fields_set
        if config.uses_metric or named or not METRICS.get(metric).meta.get("costly"):
            return [metric]
        return list(CHEAP_SCORES)
    if isinstance(metrics, str):
        raise ConfigError(f"metrics must be 'auto', True, False or a list of metric names, "
                          f"got {metrics!r}")
    names = list(dict.fromkeys(metrics))
    for name in names:
        METRICS.get(name)  # an unknown name lists the valid ones
    return names


class Finder:
    """Find where two images differ.

    Parameters are the seed's (names or ``{"name": ..., **params}`` dicts),
    plus any other :class:`PipelineConfig` field as a keyword; or pass a
    ready ``config``. ``device`` is ``"auto"``, ``"cpu"``, ``"cuda:1"``, ...
    """

    def __init__(
        self,
        pre_processor: Step | None = None,
        post_processor: Step | list[Step] | None = None,
        strategy: Step | None = None,
        metric: Step | None = None,
        device: str | torch.device | None = "auto",
        *,
        config: PipelineConfig | dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        given = {"pre_processor": pre_processor, "post_processor": post_processor,
                 "strategy": strategy, "metric": metric}
        fields = {k: v for k, v in given.items() if v is not None}
        if config is not None:
            # what the given config was told, not its defaults: the same model again, and
            # still aware of what its user named (an explicit metric is the score, ...)
            base = (config.chosen() if isinstance(config, PipelineConfig)
                    else dict(config))
            fields = {**base, **fields}
        try:
            self.config = PipelineConfig.model_validate({**fields, **options})
        except ValidationError as exc:  # a typed error for Python callers, paths kept
            raise ConfigError.from_validation(exc) from None
        self.device = resolve_device(device)
        configure_memory()  # threads started later share the heap (core.memory)
        cfg = self.config
        self._pre = self._bind(PRE_PROCESSORS, cfg.pre_processor)
        self._strategy = STRATEGIES.get(cfg.strategy["name"])
        self._strategy_params = {k: v for k, v in cfg.strategy.items() if k != "name"}
        metric_entry = METRICS.get(cfg.metric["name"])
        metric_params = {k: v for k, v in cfg.metric.items() if k != "name"}
        self.metric_name = metric_entry.name
        self._metric: BoundMetric = lambda x, y, want_map: metric_entry.func(
            x, y, cfg.data_range, want_map, **metric_params)
        self._post = [self._bind(POST_PROCESSORS, step) for step in cfg.post_processors]

    @classmethod
    def from_config(cls, config: PipelineConfig | dict[str, Any],
                    device: str | torch.device | None = "auto") -> Finder:
        return cls(config=config, device=device)

    def _bind(self, registry, step: dict[str, Any]) -> Callable[..., torch.Tensor]:
        entry = registry.get(step["name"])
        params = {k: v for k, v in step.items() if k != "name"}
        if registry is PRE_PROCESSORS:
            data_range = self.config.data_range
            return lambda x: entry.func(x, data_range, **params)
        return lambda m: entry.func(m, **params)

    # -- tensors in, tensors out -------------------------------------------------

    def compute(self, reference: torch.Tensor, candidate: torch.Tensor, *,
                with_score: bool = False, cancel: CancelCheck | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Maps for (N, C, H, W) float tensors: ``(maps, scores or None)``.

        Maps are (N, H, W), or (N, C, H, W) with reduction ``"none"``; scores
        are the configured metric's per-sample values. ``cancel()`` is checked
        before each step (pre-processor, scores, strategy, post-processors);
        True raises :class:`~core.errors.Cancelled`.
        """
        names = [self.metric_name] if with_score else []
        with retained_memory():  # large temporaries reused, not page-faulted anew
            maps, scores = self.compute_scores(reference, candidate, names, cancel=cancel)
        return maps, scores.get(self.metric_name)

    def compute_scores(self, reference: torch.Tensor, candidate: torch.Tensor,
                       names: Sequence[str] = (), *, cancel: CancelCheck | None = None,
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Maps for (N, C, H, W) float tensors and the per-sample scores of the metrics
        ``names`` (``{name: (N,)}``, all on the pipeline's device); the configured metric
        comes from the strategy when it computed it anyway."""
        needs_grad = bool(self._strategy.meta.get("needs_grad"))
        ref = reference.to(self.device, non_blocking=True)
        cand = candidate.to(self.device, non_blocking=True)
        ref, cand = align_pair(ref, cand, self.config.size_policy)
        with torch.inference_mode(not needs_grad):
            if needs_grad:  # tensors made under inference mode cannot join autograd
                ref = ref.clone() if ref.is_inference() else ref
                cand = cand.clone() if cand.is_inference() else cand
            check_cancel(cancel, "pre-processor")
            ref, cand = self._pre(ref), self._pre(cand)
            check_cancel(cancel, "scores")
            with torch.no_grad():  # before the map: their temporaries are gone when it is made
                scores = self._other_scores(ref, cand, names)
            check_cancel(cancel, "strategy")
            maps, out = self._strategy.func(ref, cand, self._metric, **self._strategy_params)
            if self.metric_name in names:
                if out is None:
                    with torch.no_grad():
                        out = self._metric(ref, cand, False)
                scores[self.metric_name] = out.score.detach()
            del ref, cand, out
            maps = maps.detach()
            maps = reduce_channels(maps, self.config.reduction, axis=1)
            for post in self._post:
                check_cancel(cancel, "post-processor")
                maps = post(maps)
        return maps, {name: scores[name] for name in names}

    def _other_scores(self, ref: torch.Tensor, cand: torch.Tensor,
                      names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Scores other than the configured metric: MSE/PSNR from one banded pass,
        any other registered metric with its default parameters."""
        out: dict[str, torch.Tensor] = {}
        wanted = [n for n in names if n != self.metric_name]
        if any(n in CHEAP_SCORES for n in wanted):
            mse = squared_error_sum(ref, cand) / (ref[0].numel())
            out["mse"] = mse.float()
            out["psnr"] = (10.0 * torch.log10(self.config.data_range**2 / mse)).float()
        for name in wanted:
            if name not in out:
                out[name] = METRICS.get(name).func(ref, cand, self.config.data_range,
                                                   False).score.detach()
        return out

    def score_names(self, metrics: Scores = "auto") -> list[str]:
        """Which metrics ``analyze(metrics=...)`` computes: :func:`score_names`."""
        return score_names(self.config, metrics)

    # -- anything in, numpy out ---------------------------------------------------

    def _load(self, image: ImageLike, what: str, limits: Limits | None) -> torch.Tensor:
        return to_tensor(image, what=what, limits=limits, device=self.device)[0]

    def analyze(
        self, reference: ImageLike, candidate: ImageLike, *, metrics: Scores = "auto",
        regions: bool = True, limits: Limits | None = None, cancel: CancelCheck | None = None,
    ) -> list[PairResult]:
        """Full results for one pair or a batch (one :class:`PairResult` per sample).

        ``metrics`` chooses the scores (see :meth:`score_names`): by default only those
        whose cost is small next to the map's. ``cancel`` as in :meth:`compute`, also
        checked before regions.
        """
        with retained_memory():  # large temporaries reused, not page-faulted anew
            return self._analyze(reference, candidate, metrics=metrics, regions=regions,
                                 limits=limits, cancel=cancel)

    def _analyze(self, reference: ImageLike, candidate: ImageLike, *, metrics: Scores,
                 regions: bool, limits: Limits | None, cancel: CancelCheck | None,
                 ) -> list[PairResult]:
        t0 = time.perf_counter()
        if directory_pair(reference, candidate):
            raise InputError("analyze takes one pair; for two directories use run() or "
                             "pair_directories()")
        ref = self._load(reference, "reference", limits)
        cand = self._load(candidate, "candidate", limits)
        t1 = time.perf_counter()
        names = self.score_names(metrics)
        maps, scores = self.compute_scores(ref, cand, names, cancel=cancel)
        del ref, cand
        maps_np = maps.float().cpu().numpy()  # the one copy back: the final map
        scores_np = {k: v.double().cpu().numpy() for k, v in scores.items()}
        t2 = time.perf_counter()
        results = []
        for i, m in enumerate(maps_np):
            if regions:
                check_cancel(cancel, "regions")
            found = find_regions(m, self.config.regions) if regions else []
            results.append(PairResult(
                map=np.ascontiguousarray(m, dtype=np.float32),
                metrics={k: float(v[i]) for k, v in scores_np.items()},
                regions=found,
                regions_computed=bool(regions) and self.config.regions.enabled,
            ))
        t3 = time.perf_counter()
        timing = {"load": (t1 - t0) * 1e3, "compute": (t2 - t1) * 1e3,
                  "regions": (t3 - t2) * 1e3}
        for r in results:
            r.timing_ms = dict(timing)
        return results

    def run(self, img1: ImageLike, img2: ImageLike, return_metric: bool = False,
            progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None) -> Any:
        """Seed-compatible: the difference map(s) as float32 numpy.

        - one pair: (H, W) (or (C, H, W) with reduction "none");
        - a batch of N > 1 pairs (4-D inputs): (N, H, W) - every sample;
        - two directories: a list of (H, W) maps in file-name order.

        With ``return_metric=True`` returns ``(maps, metric)``: a float for one
        pair, an (N,) array for a batch, a list of floats for directories.
        """
        if directory_pair(img1, img2):
            pairs = pair_directories(img1, img2)
            iterator = progress(pairs) if progress is not None else pairs
            maps, values = [], []
            for a, b in iterator:
                res = self.analyze(a, b, metrics=return_metric, regions=False)[0]
                maps.append(res.map)
                values.append(res.metrics.get(self.metric_name, float("nan")))
            return (maps, values) if return_metric else maps
        results = self.analyze(img1, img2, metrics=return_metric, regions=False)
        if len(results) == 1:
            out = results[0].map
            value: Any = results[0].metrics.get(self.metric_name)
        else:
            out = np.stack([r.map for r in results])
            value = np.array([r.metrics.get(self.metric_name, np.nan) for r in results],
                             dtype=np.float64)
        return (out, value) if return_metric else out

    def __repr__(self) -> str:
        return f"Finder(device={str(self.device)!r}, config={self.config.model_dump()!r})"

"""The systems the quality benchmark scores: this project's pipelines and its peers.

Every system maps a uint8 pair (H, W, C) to a float (H, W) map (higher = more different) and to
regions, boxes (x, y, width, height). This project's pipelines go through ``Finder.analyze``,
as users call it, so their regions are the pipeline's own. Peers are run from benchmark-only
directories, never dependencies of the project:

    pip install --no-deps --target .bench/peers flip-evaluator pixelmatch-fast numba llvmlite \\
        click PyWavelets      # PEERS_DIR overrides the place; PyWavelets is for the denoiser
    pip install --no-deps --target .bench/seed difference-finder==0.0.4   # see benchmarks/seed.py

Peers without regions get them from their map with this project's regions code (see
``peer_regions``). A peer that cannot be imported is listed as missing with the reason.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core import DEFAULT_PIPELINE, STRATEGIES, Finder, PipelineConfig, RegionsConfig, find_regions

__all__ = [
    "OLD_DEFAULT",
    "PEERS_DIR",
    "System",
    "peer_regions",
    "peer_systems",
    "pipeline_system",
    "project_systems",
]

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(os.environ.get("PEERS_DIR", ROOT / ".bench" / "peers"))
if PEERS_DIR.is_dir() and str(PEERS_DIR) not in sys.path:
    sys.path.append(str(PEERS_DIR))  # appended: the project's .venv wins on shared packages

Boxes = list[tuple[int, int, int, int]]
MapFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: The default before issue 11 (commit 1faf471): smoothed absolute difference, p98 regions.
OLD_DEFAULT: dict = {
    "strategy": "difference", "post_processor": [{"name": "smooth", "sigma": 2.0}],
    "regions": {"threshold": "percentile", "percentile": 98.0},
}


@dataclass
class System:
    """A scored system: ``run(ref, cand) -> (map, region boxes)``; ``peer`` marks a peer."""

    label: str
    run: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, Boxes]]
    peer: bool
    regions_note: str = ""
    extra: dict = field(default_factory=dict)


def _boxes(regions) -> Boxes:
    return [(r.x, r.y, r.width, r.height) for r in regions]


def _squeeze(img: np.ndarray) -> np.ndarray:
    return img[..., 0] if img.shape[-1] == 1 else img


def pipeline_system(label: str, config: PipelineConfig | dict) -> System:
    """One of this project's pipelines, called as users call it (``Finder.analyze``)."""
    finder = Finder.from_config(config, device="cpu")

    def run(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, Boxes]:
        res = finder.analyze(_squeeze(ref), _squeeze(cand), metrics=False)[0]
        m = res.map if res.map.ndim == 2 else res.map.max(axis=0)
        return m, _boxes(res.regions)

    cfg = finder.config
    note = f"its own regions ({cfg.regions.threshold})"
    return System(label, run, peer=False, regions_note=note,
                  extra={"config": cfg.model_dump(mode="json")})


def _same(a: PipelineConfig, b: PipelineConfig) -> bool:
    return a.model_dump(mode="json") == b.model_dump(mode="json")


def project_systems(extra: list[tuple[str, dict]] | None = None) -> list[System]:
    """The current default, the old default, ``significance`` when registered, and ``extra``."""
    default = DEFAULT_PIPELINE
    old = PipelineConfig.model_validate(OLD_DEFAULT)
    out = []
    if _same(default, old):
        out.append(pipeline_system("this project: default (= old default)", default))
    else:
        out.append(pipeline_system("this project: default", default))
        out.append(pipeline_system("this project: old default (difference > smooth 2, p98)",
                                   old))
    if "significance" in STRATEGIES and default.strategy["name"] != "significance":
        out.append(pipeline_system("this project: significance",
                                   {"strategy": "significance", "post_processor": []}))
    for label, cfg in extra or []:
        out.append(pipeline_system(f"this project: {label}", cfg))
    return out


def peer_regions() -> tuple[RegionsConfig, str]:
    """Regions settings for a peer's map: this project's default regions when they are
    unit-free (a percentile or Otsu threshold), else the old default's 98th percentile
    (a threshold in the project's own map units means nothing on a peer's map)."""
    cfg = DEFAULT_PIPELINE.regions
    if cfg.threshold in ("percentile", "otsu"):
        return cfg, f"project default regions ({cfg.threshold})"
    old = cfg.model_copy(update={"threshold": "percentile", "percentile": 98.0})
    return old, "project regions at the old default (98th percentile)"


def _with_regions(label: str, fn: MapFn, cfg: RegionsConfig, note: str) -> System:
    def run(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, Boxes]:
        m = np.asarray(fn(ref, cand), dtype=np.float32)
        return m, _boxes(find_regions(m, cfg))
    return System(label, run, peer=True, regions_note=note)


def _float(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / 255.0


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def _ssim_map() -> MapFn:
    from skimage.metrics import structural_similarity

    def fn(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
        _, m = structural_similarity(_float(ref), _float(cand), channel_axis=-1, data_range=1.0,
                                     full=True, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
        return 1.0 - m.mean(axis=-1)
    return fn


def _flip_map() -> MapFn:
    import flip_evaluator  # type: ignore[import-not-found]

    def fn(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
        m, _, _ = flip_evaluator.evaluate(_float(_rgb(ref)), _float(_rgb(cand)), "LDR",
                                          applyMagma=False, computeMeanError=False)
        return np.asarray(m)[..., 0]
    return fn


def _pixelmatch_map() -> MapFn:
    from PIL import Image
    from pixelmatch import pixelmatch  # type: ignore[import-not-found]

    def fn(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
        a, b = Image.fromarray(_rgb(ref)), Image.fromarray(_rgb(cand))
        out = Image.new("RGBA", a.size)
        pixelmatch(a, b, output=out, diff_mask=True)  # defaults: threshold 0.1, AA excluded
        px = np.asarray(out)
        return ((px[..., 3] > 0) & (px[..., 0] == 255) & (px[..., 1] == 0)).astype(np.float32)
    return fn


def _seed_map(strategy: str, metric: str) -> MapFn:
    from benchmarks.seed import seed_finder

    run = seed_finder("identity", "identity", strategy, metric, device="cpu")

    def fn(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
        a = torch.from_numpy(_float(ref)).permute(2, 0, 1)[None]
        b = torch.from_numpy(_float(cand)).permute(2, 0, 1)[None]
        return np.abs(run(a, b))  # signed gradient: its magnitude is the difference
    return fn


PEERS: dict[str, Callable[[], MapFn]] = {
    "seed 0.0.4: default (gradient of MSE), |map|": lambda: _seed_map("gradient", "mse"),
    "seed 0.0.4: best (gradient of SSIM), |map|": lambda: _seed_map("gradient", "ssim"),
    "NVIDIA FLIP (flip-evaluator), default": _flip_map,
    "scikit-image 1 - SSIM map": _ssim_map,
    "pixelmatch mask (pixelmatch-fast), default": _pixelmatch_map,
}
#: Peers whose map is a 0/1 mask: their regions are the mask's components.
MASK_PEERS = {"pixelmatch mask (pixelmatch-fast), default"}


def peer_systems() -> tuple[list[System], dict[str, str]]:
    """The peers that run here, and {label: why} for those that do not."""
    cfg, note = peer_regions()
    mask_cfg = cfg.model_copy(update={"threshold": "value", "value": 0.5})
    out, missing = [], {}
    for label, build in PEERS.items():
        try:
            fn = build()
            probe = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
            fn(probe, probe[::-1].copy())
        except Exception as exc:  # any failure: report the peer as missing
            missing[label] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            continue
        if label in MASK_PEERS:
            out.append(_with_regions(label, fn, mask_cfg, "mask components"))
        else:
            out.append(_with_regions(label, fn, cfg, note))
    return out, missing

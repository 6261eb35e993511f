"""Speed benchmark: each strategy/metric of core next to the raw library call it
wraps and next to the seed package (difference-finder 0.0.4), 512x512, CPU.

Run: ``.venv/bin/python -m benchmarks.speed`` (a few minutes on 2 cores; the
seed must be installed first, see benchmarks/README.md). Prints a markdown table
of median milliseconds per pair. Core, raw and seed calls run interleaved in one
loop so machine noise hits them alike.

LPIPS backbone weights are not downloadable here: stand-in files of the right
names and shapes go into a temporary TORCH_HOME. Timing depends only on shapes,
so it is the same as with the real ImageNet weights.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

Fn = Callable[[], object]


# -- inputs -------------------------------------------------------------------------


def photo_pair() -> tuple[np.ndarray, np.ndarray]:
    """skimage's astronaut (512x512 RGB uint8) and a locally edited copy."""
    from skimage import data
    from skimage.filters import gaussian

    ref = data.astronaut()
    cand = ref.astype(np.float32) / 255
    cand[100:140, 300:340] += 0.15  # brighter patch
    cand[350:390, 60:100] = cand[350:390, 60:100][:, ::-1]  # mirrored patch
    region = cand[200:260, 200:260]
    cand[200:260, 200:260] = gaussian(region, sigma=2, channel_axis=-1)  # blurred detail
    cand[420:432, 400:412] = (0.9, 0.1, 0.1)  # small added object
    cand += np.random.default_rng(0).normal(0, 0.01, cand.shape)  # faint global noise
    return ref, (np.clip(cand, 0, 1) * 255).round().astype(np.uint8)


def as_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) -> contiguous float32 (1, C, H, W) in [0, 1]."""
    return torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).contiguous()


# -- raw library calls --------------------------------------------------------------


def grad_of(distance: Callable[[torch.Tensor], torch.Tensor], cand: torch.Tensor) -> Fn:
    """Forward + backward of ``distance(candidate)`` w.r.t. the candidate."""

    def call() -> torch.Tensor:
        var = cand.detach().requires_grad_(True)  # an alias, no copy: the leanest caller
        (g,) = torch.autograd.grad(distance(var).sum(), var)
        return g

    return call


def inference(fn: Fn) -> Fn:
    def call() -> object:
        with torch.inference_mode():
            return fn()

    return call


def raw_lpips(spatial: bool) -> torch.nn.Module:
    """lpips.LPIPS(alex), built once, frozen (as any caller would for speed)."""
    import lpips

    return lpips.LPIPS(net="alex", spatial=spatial, verbose=False).eval().requires_grad_(False)


def raw_calls(ref: torch.Tensor, cand: torch.Tensor, ref_np: np.ndarray,
              cand_np: np.ndarray) -> dict[tuple[str, str], tuple[str, Fn]]:
    """(strategy, metric) -> (what the raw call is, the call)."""
    from pytorch_msssim import ms_ssim, ssim
    from skimage.metrics import structural_similarity

    net, net_spatial = raw_lpips(False), raw_lpips(True)

    def sk_ssim_map() -> np.ndarray:
        return structural_similarity(ref_np, cand_np, channel_axis=-1, data_range=1.0,
                                     gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, full=True)[1]

    def neg_psnr(v: torch.Tensor) -> torch.Tensor:
        return -10 * torch.log10(1.0 / F.mse_loss(v, ref))

    return {
        ("difference", "-"): ("torch `(b - a).abs()`", inference(lambda: (cand - ref).abs())),
        ("gradient", "mse"): ("torch `mse_loss` fwd+bwd",
                              grad_of(lambda v: F.mse_loss(v, ref), cand)),
        ("gradient", "psnr"): ("torch -psnr fwd+bwd", grad_of(neg_psnr, cand)),
        ("gradient", "ssim"): ("pytorch_msssim.ssim fwd+bwd", grad_of(
            lambda v: 1 - ssim(ref, v, data_range=1.0, size_average=False), cand)),
        ("gradient", "ms-ssim"): ("pytorch_msssim.ms_ssim fwd+bwd", grad_of(
            lambda v: 1 - ms_ssim(ref, v, data_range=1.0, size_average=False), cand)),
        ("gradient", "lpips"): ("lpips.LPIPS fwd+bwd", grad_of(
            lambda v: net(ref, v, normalize=True), cand)),
        ("map", "mse"): ("torch `(b - a)**2`", inference(lambda: (cand - ref).pow(2))),
        ("map", "ssim"): ("skimage SSIM full=True ¹", sk_ssim_map),
        ("map", "lpips"): ("lpips.LPIPS(spatial) fwd", inference(
            lambda: net_spatial(ref, cand, normalize=True))),
    }


# -- the seed -----------------------------------------------------------------------


def seed_calls(ref: torch.Tensor, cand: torch.Tensor) -> dict[tuple[str, str], tuple[str, Fn]]:
    """(strategy, metric) -> (note, the seed's Finder.run on the same float tensors).

    The seed hard-codes LPIPS-VGG and builds the net on every call. The like-for-like
    ``gradient / lpips`` row registers an AlexNet copy of the seed's own LPIPS metric
    through the seed's ``register_metric`` (still built per call, as the seed does);
    the ``lpips-vgg`` row is the seed as shipped.
    """
    from benchmarks.seed import seed_finder  # the one seed runner

    seed_finder()  # imports the seed package
    import lpips
    from difference_finder.metrics import METRICS, register_metric  # type: ignore

    if "lpips-alex" not in METRICS:
        @register_metric(name="lpips-alex")
        def _lpips_alex(img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
            fn = lpips.LPIPS(net="alex").to(img1.device).to(img1.dtype)
            return fn(img1, img2)

    names = {("difference", "-"): ("difference", "mse", ""),
             ("gradient", "lpips"): ("gradient", "lpips-alex", "alex, net built per call ²"),
             ("gradient", "lpips-vgg"): ("gradient", "lpips", "as shipped: VGG, built per call ³")}
    calls: dict[tuple[str, str], tuple[str, Fn]] = {}
    for strategy, metric in CASES:
        if strategy == "map":
            continue  # the seed has no map strategy
        s, m, note = names.get((strategy, metric), (strategy, metric, ""))
        run = seed_finder(strategy=s, metric=m, copy_inputs=False)  # the bare call
        # The seed sets requires_grad on the tensors it is given: each row gets its own.
        calls[(strategy, metric)] = (note, lambda run=run, a=ref.clone(), b=cand.clone(): run(a, b))
    return calls


# -- timing -------------------------------------------------------------------------

CASES: list[tuple[str, str]] = [
    ("difference", "-"),
    ("gradient", "mse"), ("gradient", "psnr"), ("gradient", "ssim"), ("gradient", "ms-ssim"),
    ("gradient", "lpips"), ("gradient", "lpips-vgg"),
    ("map", "mse"), ("map", "ssim"), ("map", "lpips"),
]


@dataclass
class Row:
    case: str
    raw_label: str
    seed_note: str
    calls: dict[str, Fn]  # column -> call
    times: dict[str, list[float]] = field(default_factory=dict)

    def median_ms(self, col: str) -> float | None:
        t = self.times.get(col)
        return statistics.median(t) * 1e3 if t else None


def time_row(row: Row, warmup: int, repeats: int, budget_s: float) -> None:
    """Warm up, then time all calls interleaved (rotating order) ``repeats`` times,
    fewer (at least 3) when that would blow the row's time budget."""
    cols = list(row.calls)
    round_s = 0.0
    for col in cols:
        for _ in range(max(warmup, 1)):
            t0 = time.perf_counter()
            row.calls[col]()
            took = time.perf_counter() - t0
            if took > 1.0:  # slow calls need no second warm-up
                break
        round_s += took
    n = max(3, min(repeats, int(budget_s / max(round_s, 1e-9))))
    row.times = {c: [] for c in cols}
    for i in range(n):
        for col in cols[i % len(cols):] + cols[: i % len(cols)]:
            t0 = time.perf_counter()
            row.calls[col]()
            row.times[col].append(time.perf_counter() - t0)


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None else f"{a / b:.2f}"


def table(rows: list[Row]) -> str:
    head = ("| strategy / metric | core `compute` | core `run` (uint8) | raw call | raw | "
            "core − raw | core/raw | seed | seed/core |")
    lines = [head, "|---|" + "--:|" * 2 + "---|" + "--:|" * 5]
    for r in rows:
        core, run, raw, seed = (r.median_ms(c) for c in ("core", "run", "raw", "seed"))
        diff = None if core is None or raw is None else core - raw
        seed_txt = fmt(seed) + (f" ({r.seed_note})" if r.seed_note and seed else "")
        lines.append(f"| {r.case} | {fmt(core)} | {fmt(run)} | {r.raw_label or '—'} | "
                     f"{fmt(raw)} | {fmt(diff)} | {ratio(core, raw)} | {seed_txt} | "
                     f"{ratio(seed, core)} |")
    return "\n".join(lines)


NOTES = """\
¹ pytorch_msssim has no SSIM map; the reference point is scikit-image's
  structural_similarity(full=True), the map core's is cross-checked against.
² The seed only offers LPIPS-VGG; this row registers an AlexNet twin of the seed's own
  LPIPS metric with its register_metric (built per call, as the seed does).
³ The seed as shipped (LPIPS-VGG, built per call) against core's LPIPS-AlexNet.
LPIPS uses stand-in backbone weights (same shapes as the ImageNet files, so the same
time). The seed has no map strategy. core − raw is in ms; seed/core uses core `compute`."""


def wait_for_quiet(max_load: float, patience_s: float = 600) -> None:
    """Shared machines: timings of multi-threaded torch suffer most from other load."""
    deadline = time.monotonic() + patience_s
    while (load := os.getloadavg()[0]) >= max_load and time.monotonic() < deadline:
        print(f"  load average {load:.2f} >= {max_load}: waiting", file=sys.stderr)
        time.sleep(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per row (max)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget", type=float, default=10.0,
                        help="seconds of timed rounds per row before repeats are cut (min 3)")
    parser.add_argument("--only", default="", help="comma-separated case filter, e.g. ssim,lpips")
    parser.add_argument("--no-seed", action="store_true", help="skip the seed package")
    parser.add_argument("--max-load", type=float, default=None,
                        help="first wait (up to 10 min) for the 1-min load average to fall below")
    args = parser.parse_args()
    if args.max_load is not None:
        wait_for_quiet(args.max_load)

    home = Path(tempfile.mkdtemp(prefix="speed_torch_home_"))
    os.environ["TORCH_HOME"] = str(home)
    try:
        _bench(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)  # the VGG stand-in alone is 528 MB


def _bench(args: argparse.Namespace, home: Path) -> None:
    started = time.perf_counter()
    load_before = os.getloadavg()
    warnings.filterwarnings("ignore")
    from tests.conftest import write_standin_weights

    write_standin_weights(home, ("alex",) if args.no_seed else ("alex", "vgg"))

    from core import Finder

    ref_u8, cand_u8 = photo_pair()
    ref, cand = as_tensor(ref_u8), as_tensor(cand_u8)
    ref_np, cand_np = ref_u8.astype(np.float32) / 255, cand_u8.astype(np.float32) / 255
    raws = raw_calls(ref, cand, ref_np, cand_np)
    with contextlib.redirect_stdout(io.StringIO()):  # the seed's lpips prints on every build
        seeds = {} if args.no_seed else seed_calls(ref, cand)

    only = [s for s in args.only.split(",") if s]
    rows: list[Row] = []
    core_calls: dict[tuple[str, str], dict[str, Fn]] = {}
    for strategy, metric in CASES:
        label = f"{strategy} / {metric}" if metric != "-" else strategy
        if only and not any(s in label for s in only):
            continue
        calls: dict[str, Fn] = {}
        raw_label = ""
        if metric == "lpips-vgg":  # the seed as shipped, against core's default LPIPS
            if (strategy, metric) not in seeds:
                continue
            label = "gradient / lpips ³"
            calls = {"core": core_calls[("gradient", "lpips")]["core"]}
        else:
            core_metric = {"name": "lpips", "net": "alex"} if metric == "lpips" else (
                "mse" if metric == "-" else metric)
            finder = Finder(strategy=strategy, metric=core_metric, pre_processor="identity",
                            post_processor="identity", device="cpu")
            calls["core"] = lambda f=finder: f.compute(ref, cand)
            calls["run"] = lambda f=finder: f.run(ref_u8, cand_u8)
            raw_label, calls["raw"] = raws[(strategy, metric)]
            core_calls[(strategy, metric)] = calls
            if metric == "lpips":
                label += " (alex)"
        note = ""
        if (strategy, metric) in seeds:
            note, calls["seed"] = seeds[(strategy, metric)]
        row = Row(label, raw_label, note, calls)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            time_row(row, args.warmup, args.repeats, args.budget)
        n = len(next(iter(row.times.values())))
        print(f"  {label}: {n} rounds, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        rows.append(row)

    load = os.getloadavg()
    print(table(rows))
    print()
    print(NOTES)
    print(f"\nMedian ms per 512x512 RGB pair (astronaut vs an edited copy), CPU, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads. 1-min load average "
          f"{load_before[0]:.2f} at start, {load[0]:.2f} at end; "
          f"{time.perf_counter() - started:.0f} s in all.")


if __name__ == "__main__":
    main()

"""GPU benchmark: the scale tables on ``cuda:0`` in one go (a few minutes).

Run: ``python -m benchmarks.gpu`` on a CUDA machine. Without CUDA it prints why and
exits 0. Prints, per pipeline (default, LPIPS alex, LPIPS vgg; a missing weight file is
reported in the table), per size (512², 2048², 36 MP) and batch (1, 8, 32, each limited
by memory: a batch that does not fit is reported, not crashed on): median milliseconds
per pair of ``Finder.analyze``, peak device memory (``torch.cuda.max_memory_allocated``)
and the CPU<->GPU copies per request (counted by the torch profiler's memcpy events).
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

__all__ = ["main"]

SIZES = (512, 2048, 6000)
BATCHES = (1, 8, 32)
PIPELINES = {"default": {}, "lpips-alex": {"metric": {"name": "lpips", "net": "alex"},
                                           "strategy": "map"},
             "lpips-vgg": {"metric": {"name": "lpips", "net": "vgg"}, "strategy": "map"}}
#: the whole run should stay under 5 minutes: fewer repeats on big inputs
BUDGET_PIXELS = 36e6 * 8


def count_copies(fn) -> tuple[int, int]:
    """(host->device, device->host) memcpy kernels while ``fn`` runs (torch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
    h2d = d2h = 0
    for e in prof.events():
        name = e.name.lower()
        if "memcpy" in name and "htod" in name:
            h2d += 1
        elif "memcpy" in name and "dtoh" in name:
            d2h += 1
    return h2d, d2h


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("benchmarks.gpu: no CUDA device here; skipped (nothing measured)")
        return 0
    from benchmarks.scale import make_pair
    from core import Finder
    from core.errors import WeightsMissingError

    device = "cuda:0"
    print(f"# GPU benchmark on {torch.cuda.get_device_name(0)} ({device})\n")
    print("| pipeline | size | batch | ms per pair | peak device memory (MB) | "
          "copies per request (H2D/D2H) |")
    print("|---|---|---|---|---|---|")
    started = time.perf_counter()
    for name, cfg in PIPELINES.items():
        try:
            finder = Finder(config=cfg, device=device)
            finder.analyze(*make_pair(64))
        except WeightsMissingError as exc:
            print(f"| {name} | - | - | weights missing: {exc.message.split('.')[0]} | - | - |")
            continue
        for n in SIZES:
            ref, cand = make_pair(n)
            for batch in BATCHES:
                if n * n * batch > BUDGET_PIXELS:
                    print(f"| {name} | {n}² | {batch} | skipped (time budget) | - | - |")
                    continue
                a = np.repeat(ref[None], batch, 0) if batch > 1 else ref
                b = np.repeat(cand[None], batch, 0) if batch > 1 else cand
                try:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    finder.analyze(a, b)
                    times = []
                    for _ in range(3 if n * n * batch < 40e6 else 1):
                        torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        finder.analyze(a, b)
                        torch.cuda.synchronize()
                        times.append((time.perf_counter() - t0) * 1e3 / batch)
                    peak = torch.cuda.max_memory_allocated() / 1e6
                    h2d, d2h = count_copies(lambda f=finder, a=a, b=b: f.analyze(a, b))
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    print(f"| {name} | {n}² | {batch} | out of device memory | - | - |")
                    continue
                print(f"| {name} | {n}² | {batch} | {statistics.median(times):.2f} | "
                      f"{peak:.0f} | {h2d}/{d2h} |")
                del a, b
                torch.cuda.empty_cache()
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

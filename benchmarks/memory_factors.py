"""Measures the service's memory factor per strategy and metric: the peak resident memory a
request adds, over its *input units* (pixels x channels x 4 bytes, summed over its images).

Each case runs in a fresh subprocess: imports, a warm-up on 256x256 images (so caches and
allocator pools count as baseline), then the peak RSS is reset (``/proc/self/clear_refs``)
and one request's whole path runs as the service runs it: header peek, decoding both PNGs,
``Finder.analyze`` (or ``compare``), then encoding the answer (JSON and the PNG heatmap).
Factor = (VmHWM - VmRSS before) / input units. Printed as a table and as the Python dict
that ``service/budget.py`` stores.

    python -m benchmarks.memory_factors [--sizes 1024 2048] [--only significance,compare]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = [(s, m) for s in ("significance", "difference", "gradient", "map")
         for m in ("mse", "psnr", "ssim", "ms-ssim")
         if not (s == "map" and m == "ms-ssim")] + [("compare", "ssim")]

CHILD = r"""
import io, json, sys, time
import numpy as np
from PIL import Image
from core import Finder, PipelineConfig
from core.compare import compare
from core.images import decode_image
from service.encoding import JSON, PNG, encode, comparison_bytes

strategy, metric, size = sys.argv[1], sys.argv[2], int(sys.argv[3])

def pngs(n):
    rng = np.random.default_rng(0)
    a = (rng.random((n // 8, n // 8, 3)) * 255).astype(np.uint8)
    a = np.kron(a, np.ones((8, 8, 1), np.uint8))  # blocky: a realistic, compressible image
    b = a.copy(); b[n // 4: n // 2, n // 3: n // 2] = (250, 20, 20)
    out = []
    for x in (a, b):
        buf = io.BytesIO(); Image.fromarray(x).save(buf, format="PNG"); out.append(buf.getvalue())
    return out

def field(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024

def once(n, files):
    ref_png, cand_png = files
    if strategy == "compare":
        ref, cand = decode_image(ref_png), decode_image(cand_png)
        c = compare(ref, [cand, cand.copy()], ["a", "b"], None, PipelineConfig(), device="cpu")
        comparison_bytes(JSON, c, {}, time.perf_counter(), 100, 2, False)
        return 3
    cfg = PipelineConfig.model_validate({"strategy": strategy, "metric": metric})
    ref, cand = decode_image(ref_png), decode_image(cand_png)
    result = Finder.from_config(cfg, "cpu").analyze(ref, cand)[0]
    encode(JSON, result, cfg, {}, time.perf_counter())
    encode(PNG, result, cfg, {}, time.perf_counter())
    return 2

once(256, pngs(256))
files = pngs(size)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = field("VmRSS")
images = once(size, files)
peak = field("VmHWM")
units = images * size * size * 3 * 4
print(json.dumps({"peak_added": peak - before, "units": units, "factor": (peak - before) / units}))
"""


def measure(strategy: str, metric: str, size: int, python: str) -> dict[str, float]:
    out = subprocess.run([python, "-c", CHILD, strategy, metric, str(size)], cwd=ROOT,
                         capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    if out.returncode:
        raise RuntimeError(f"{strategy}/{metric} at {size}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--only", default="", help="comma-separated strategies to measure")
    args = parser.parse_args(argv)
    table: dict[str, float] = {}
    print(f"| strategy | metric | {' | '.join(f'factor @ {s}²' for s in args.sizes)} |")
    print("|---|---|" + "---|" * len(args.sizes))
    only = set(filter(None, args.only.split(",")))
    for strategy, metric in CASES:
        if only and strategy not in only:
            continue
        factors = [measure(strategy, metric, s, args.python)["factor"] for s in args.sizes]
        table[f"{strategy}/{metric}"] = round(max(factors), 2)
        print(f"| {strategy} | {metric} | {' | '.join(f'{f:.2f}' for f in factors)} |",
              flush=True)
    buf = io.StringIO()
    json.dump(table, buf, indent=1)
    print("\nFACTORS =", buf.getvalue())


if __name__ == "__main__":
    main()

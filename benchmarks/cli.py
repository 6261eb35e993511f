"""The command line against the library (issue 12): start-up, one pair, two directories.

Run: ``python -m benchmarks.cli [--pairs 120] [--size 256] [--repeats 5]``.

Prints medians of interleaved runs of whole processes (``subprocess``, this Python):

- ``difference-finder --help`` and ``weights list`` (target <= 0.3 s: they import no torch);
- one 512² pair with ``-o heatmap.png`` against ``python -c "import torch"`` (target 1.2x);
- two directories of ``--pairs`` pairs with ``-o DIR`` against the Python API doing the same
  work in one process (``Finder().run`` per pair and a heatmap PNG each, core.render), both
  per pair after start-up: the CLI's time minus its one-pair time over the extra pairs
  (target 1.3x).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .scale import load_average, make_pair

__all__ = ["main"]

CLI = [str(Path(sys.executable).with_name("difference-finder"))]  # the installed command
ROOT = Path(__file__).resolve().parents[1]


def _seconds(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def _api_dirs(a: Path, b: Path, out: Path) -> float:
    """Seconds for the Python API's directory work, in this (warm) process."""
    from core import Finder
    from core.render import RenderConfig, heatmap_png

    finder = Finder(device="cpu")
    render = RenderConfig(**finder.config.render.model_dump())
    t = time.perf_counter()
    for ref in sorted(a.iterdir()):
        m = finder.run(str(ref), str(b / ref.name))
        (out / ref.name).write_bytes(heatmap_png(m, render))
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=120)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="df-cli-"))
    one = [tmp / "a.png", tmp / "b.png"]
    for arr, path in zip(make_pair(512), one, strict=True):
        Image.fromarray(arr).save(path)
    da, db, dout, dapi = (tmp / n for n in ("ref", "cand", "out", "api"))
    for d in (da, db, dout, dapi):
        d.mkdir()
    ref, cand = make_pair(max(args.size * 4, 1024))
    rng = np.random.default_rng(0)
    for i in range(args.pairs):
        y, x = rng.integers(0, ref.shape[0] - args.size, 2)
        crop = (slice(y, y + args.size), slice(x, x + args.size))
        Image.fromarray(ref[crop]).save(da / f"{i:04d}.png")
        Image.fromarray(cand[crop]).save(db / f"{i:04d}.png")

    cases = {
        "--help": [*CLI, "--help"],
        "weights list": [*CLI, "weights", "list"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "one 512² pair": [*CLI, "diff", str(one[0]), str(one[1]), "-o", str(tmp / "h.png"), "-q"],
        f"{args.pairs} pairs": [*CLI, "diff", str(da), str(db), "-o", str(dout), "-q"],
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    api: list[float] = []
    _api_dirs(da, db, dapi)  # warm
    for _ in range(args.repeats):  # interleaved
        for name, cmd in cases.items():
            times[name].append(_seconds(cmd))
        api.append(_api_dirs(da, db, dapi))
    med = {k: statistics.median(v) for k, v in times.items()}
    per_pair_cli = (med[f"{args.pairs} pairs"] - med["one 512² pair"]) / (args.pairs - 1)
    per_pair_api = statistics.median(api) / args.pairs
    print(f"# CLI (whole processes, medians of {args.repeats})\nload average: "
          f"{load_average()}\n")
    print("| case | seconds |\n|---|---|")
    for k, v in med.items():
        print(f"| `{k}` | {v:.2f} |")
    ratio = med["one 512² pair"] / med['python -c "import torch"']
    dirs = per_pair_cli / per_pair_api
    rows = [
        ("`--help`, `weights list` <= 0.3 s", max(med["--help"], med["weights list"]) <= 0.3,
         f"{med['--help']:.2f} / {med['weights list']:.2f} s"),
        ("one pair <= 1.2x `import torch`", ratio <= 1.2, f"{ratio:.2f}x"),
        ("directories per pair <= 1.3x the API", dirs <= 1.3,
         f"{per_pair_cli * 1e3:.1f} vs {per_pair_api * 1e3:.1f} ms: {dirs:.2f}x"),
    ]
    print("\n| target | result | measured |\n|---|---|---|")
    for label, ok, text in rows:
        print(f"| {label} | {'PASS' if ok else 'FAIL'} | {text} |")
    return 0 if all(ok for _, ok, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

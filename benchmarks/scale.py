"""Scale benchmark: how time and memory grow from thumbnails to 36-megapixel pairs.

Run: ``python -m benchmarks.scale [--quick] [--pipeline JSON] [--repeats N]``.

Prints, for the default pipeline and any ``--pipeline`` given (repeatable):

- ``Finder().run`` and ``Finder().analyze`` (map, scores, regions) at 512², 2048² (4 MP)
  and 6000² (36 MP) RGB, median milliseconds of runs interleaved across sizes and
  pipelines, so machine noise hits them alike; ``--quick`` skips 36 MP;
- the growth test: time(36 MP) / time(4 MP) against 1.15 x the pixel ratio (PASS/FAIL);
- the default ``analyze`` at 2048² against pixelmatch-fast in the same loop (target
  <= 0.8x), when pixelmatch-fast is installed in the benchmark-only directory
  ``.bench/peers`` (``pip install --target .bench/peers pixelmatch-fast``);
- peak RSS per size, each in a fresh subprocess: the extra peak over the loaded process
  (imports done, pair decoded, one small warm-up) against the decoded pair in float32
  (target <= 3x);
- the load average, since the numbers come from whatever machine this runs on.

Inputs are skimage photos tiled and resized to the size, with a few local edits (a
brightened patch, a mirrored patch, a small added object), not flat noise.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / ".bench" / "peers"
SIZES = (512, 2048, 6000)
GROWTH_SLACK = 1.15  # time ratio allowed over the pixel ratio
PEER_TARGET = 0.8  # analyze at 4 MP / pixelmatch-fast
MEMORY_TARGET = 3.0  # extra peak / decoded pair in float32

__all__ = ["main", "make_pair", "peak_rss_child"]


def make_pair(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An (n, n, 3) uint8 photo mosaic and a copy with local edits at proportional places."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    tile = min(n, 768)
    k = -(-n // tile)
    out = np.empty((k * tile, k * tile, 3), dtype=np.uint8)
    for i in range(k):
        for j in range(k):
            photo = Image.fromarray(photos[(i * k + j) % len(photos)])
            out[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile] = np.asarray(
                photo.resize((tile, tile), Image.Resampling.BILINEAR))
    ref = np.ascontiguousarray(out[:n, :n])
    cand = ref.copy()
    s = max(8, n // 24)
    y, x = n // 5, n // 3
    cand[y:y + s, x:x + s] = np.clip(cand[y:y + s, x:x + s].astype(np.int16) + 40, 0, 255)
    y, x = (2 * n) // 3, n // 8
    cand[y:y + s, x:x + s] = cand[y:y + s, x:x + s, :][:, ::-1]
    y, x = (4 * n) // 5, (3 * n) // 4
    cand[y:y + s // 3, x:x + s // 3] = (230, 25, 25)
    return ref, cand


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"


def pixelmatch_fn() -> Callable[..., int] | None:
    """pixelmatch-fast from the benchmark-only directory, or None when missing."""
    if PEERS.is_dir() and str(PEERS) not in sys.path:
        sys.path.append(str(PEERS))  # appended: the project's numpy/Pillow stay first
    # numba's default OpenMP pool keeps spinning after each call and would slow whatever
    # case runs next in the interleaved loop; its workqueue layer sleeps instead
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    try:
        from pixelmatch import pixelmatch
    except ImportError:
        return None
    return pixelmatch


def time_interleaved(cases: dict[str, Callable[[], object]], repeats: int,
                     warmup: int = 1) -> dict[str, float]:
    """Median milliseconds of each case, cases run round-robin ``repeats`` times."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


# -- memory: one fresh process per size --------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_child(n: int, pipeline: dict) -> dict[str, float]:
    """In this process: the extra peak RSS of one ``analyze`` of an n x n pair (VmHWM
    reset after loading, through /proc/self/clear_refs), in bytes and as a multiple of
    the decoded pair in float32."""
    from core import Finder

    finder = Finder(config=pipeline, device="cpu")
    ref, cand = make_pair(n)
    small = make_pair(64)
    finder.analyze(*small)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _status_kib("VmRSS") * 1024
    finder.analyze(ref, cand)
    peak = _status_kib("VmHWM") * 1024
    f32 = 2 * ref.size * 4
    return {"size": n, "base_rss": base, "peak_rss": peak, "extra": peak - base,
            "pair_f32": f32, "ratio": (peak - base) / f32}


def peak_rss(n: int, pipeline: dict) -> dict[str, float] | str:
    """:func:`peak_rss_child` in a fresh interpreter (so sizes do not share a heap)."""
    if not Path("/proc/self/clear_refs").exists():
        return "needs Linux /proc"
    cmd = [sys.executable, "-m", "benchmarks.scale", "--rss-child", str(n),
           "--pipeline", json.dumps(pipeline)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    if proc.returncode != 0:
        return f"failed: {proc.stderr.strip().splitlines()[-1:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the tables ---------------------------------------------------------------------------


def label(pipeline: dict) -> str:
    return "default" if not pipeline else json.dumps(pipeline, separators=(",", ":"))


def run_benchmark(pipelines: list[dict], sizes: tuple[int, ...], repeats: int) -> int:
    from core import Finder

    print(f"# Scale benchmark (CPU, torch threads: {__import__('torch').get_num_threads()})")
    print(f"load average before: {load_average()}\n")
    finders = [Finder(config=p, device="cpu") for p in pipelines]
    pairs = {n: make_pair(n) for n in sizes}
    cases: dict[str, Callable[[], object]] = {}
    for i, finder in enumerate(finders):
        for n in sizes:
            ref, cand = pairs[n]
            cases[f"{i}|run|{n}"] = lambda f=finder, a=ref, b=cand: f.run(a, b)
            cases[f"{i}|analyze|{n}"] = lambda f=finder, a=ref, b=cand: f.analyze(a, b)
    peer = pixelmatch_fn()
    if peer is not None and 2048 in pairs:
        from PIL import Image

        pa, pb = (Image.fromarray(x) for x in pairs[2048])
        cases["peer|2048"] = lambda: peer(pa, pb, Image.new("RGBA", pa.size))
    small = {k: v for k, v in cases.items() if not k.endswith("|6000")}
    large = {k: v for k, v in cases.items() if k.endswith("|6000")}
    medians = time_interleaved(small, repeats)
    if large:
        medians.update(time_interleaved(large, max(3, repeats // 2)))
    status = 0
    for i, pipeline in enumerate(pipelines):
        print(f"## pipeline: {label(pipeline)}\n")
        print("| size | pixels | run (ms) | analyze (ms) | ms per MP (analyze) |")
        print("|---|---|---|---|---|")
        for n in sizes:
            r, a = medians[f"{i}|run|{n}"], medians[f"{i}|analyze|{n}"]
            print(f"| {n}x{n} | {n * n / 1e6:.2f} MP | {r:.1f} | {a:.1f} | "
                  f"{a / (n * n / 1e6):.1f} |")
        print()
        if 2048 in sizes and 6000 in sizes:
            limit = GROWTH_SLACK * (6000**2 / 2048**2)
            for what in ("run", "analyze"):
                ratio = medians[f"{i}|{what}|6000"] / medians[f"{i}|{what}|2048"]
                ok = ratio <= limit
                status |= not ok
                print(f"- growth {what}: time(36 MP)/time(4 MP) = {ratio:.2f}, limit "
                      f"{limit:.2f} (1.15 x pixel ratio): {'PASS' if ok else 'FAIL'}")
        if i == 0 and 2048 in sizes:
            if "peer|2048" in medians:
                ours, theirs = medians["0|analyze|2048"], medians["peer|2048"]
                ok = ours <= PEER_TARGET * theirs
                status |= not ok
                print(f"- analyze at 2048² = {ours:.1f} ms, pixelmatch-fast = {theirs:.1f} ms: "
                      f"{ours / theirs:.2f}x (target <= {PEER_TARGET}x): "
                      f"{'PASS' if ok else 'FAIL'}")
            else:
                print("- pixelmatch-fast: missing (pip install --target .bench/peers "
                      "pixelmatch-fast)")
        print()
        print("| size | decoded pair f32 (MB) | extra peak RSS (MB) | ratio | target <= 3x |")
        print("|---|---|---|---|---|")
        for n in sizes:
            mem = peak_rss(n, pipeline)
            if isinstance(mem, str):
                print(f"| {n}x{n} | - | {mem} | - | - |")
                continue
            ok = mem["ratio"] <= MEMORY_TARGET
            status |= not ok
            print(f"| {n}x{n} | {mem['pair_f32'] / 1e6:.0f} | {mem['extra'] / 1e6:.0f} | "
                  f"{mem['ratio']:.2f}x | {'PASS' if ok else 'FAIL'} |")
        print()
    print(f"load average after: {load_average()}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", action="append", default=[],
                        help="a PipelineConfig as JSON (repeatable); the default always runs")
    parser.add_argument("--quick", action="store_true", help="skip 36 MP")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice; "
                        "1 is steadier on a machine other jobs share)")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    pipelines = [json.loads(p) for p in args.pipeline]
    if args.rss_child:
        print(json.dumps(peak_rss_child(args.rss_child, pipelines[0] if pipelines else {})))
        return 0
    sizes = SIZES[:2] if args.quick else SIZES
    run_benchmark([{}, *pipelines], sizes, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A big pair over HTTP against the same work in process (issue 12: within 1.3x at 36 MP).

Run: ``python -m benchmarks.http_scale [--sizes 2048 6000] [--repeats 3] [--threads 2]``.

The pair (benchmarks.scale.make_pair) is written once as PNG files. In process: ``Finder()
.analyze(path_a, path_b)`` (decode, map, cheap scores, regions) and the map saved as .npy,
the answer a Python user keeps. Over HTTP: a real ``python -m service`` on 127.0.0.1 (one CPU
worker with the same torch threads, uploads allowed up to the files' size) answering
``POST /v1/diff`` with ``Accept: application/x-npy`` (the same float map) for the same
files, timed from the first byte sent to the last received. Runs interleave; medians.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .scale import load_average, make_pair

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.3

__all__ = ["main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(threads: int, max_bytes: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DF_")}
    env.update({"DF_DEVICES": "cpu", "DF_CPU_WORKERS": "1", "DF_TORCH_THREADS": str(threads),
                "DF_MAX_UPLOAD_BYTES": str(max_bytes), "DF_ACCESS_LOG": "false",
                "DF_LOG_LEVEL": "warning", "DF_REQUEST_TIMEOUT": "600",
                "PYTHONPATH": str(ROOT)})
    proc = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 6000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    args = p.parse_args(argv)

    import httpx
    import torch
    from PIL import Image

    from core import Finder

    torch.set_num_threads(args.threads)
    print(f"# HTTP at scale (CPU, torch threads {args.threads})\nload average before: "
          f"{load_average()}\n")
    tmp = Path(tempfile.mkdtemp(prefix="df-http-scale-"))
    files: dict[int, tuple[Path, Path]] = {}
    for n in args.sizes:
        paths = (tmp / f"ref-{n}.png", tmp / f"cand-{n}.png")
        for arr, path in zip(make_pair(n), paths, strict=True):
            Image.fromarray(arr).save(path, compress_level=1)
        files[n] = paths
    biggest = max(path.stat().st_size for pair in files.values() for path in pair)
    proc, url = _start_server(args.threads, biggest + 1)
    finder = Finder(device="cpu")
    times: dict[tuple[int, str], list[float]] = {}
    try:
        with httpx.Client(timeout=600) as client:
            end = time.monotonic() + 120
            while True:
                try:
                    if client.get(url + "/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > end or proc.poll() is not None:
                    raise SystemExit("the server did not become ready")
                time.sleep(0.1)

            def in_process(n: int) -> None:
                res = finder.analyze(str(files[n][0]), str(files[n][1]))[0]
                np.save(io.BytesIO(), res.map, allow_pickle=False)

            def over_http(n: int) -> None:
                a, b = (path.read_bytes() for path in files[n])
                r = client.post(url + "/v1/diff", headers={"Accept": "application/x-npy"},
                                files={"reference": ("a.png", a, "image/png"),
                                       "candidate": ("b.png", b, "image/png")})
                if r.status_code != 200:
                    raise SystemExit(f"HTTP {r.status_code}: {r.text[:300]}")
                np.load(io.BytesIO(r.content), allow_pickle=False)

            for n in args.sizes:  # warm both sides once
                in_process(n)
                over_http(n)
            for _ in range(args.repeats):
                for n in args.sizes:
                    for name, fn in (("in process", in_process), ("HTTP", over_http)):
                        t = time.perf_counter()
                        fn(n)
                        times.setdefault((n, name), []).append(time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait(60)
    print("| size | PNG pair (MB) | in process (ms) | HTTP (ms) | ratio | target |")
    print("|---|---|---|---|---|---|")
    ok = True
    for n in args.sizes:
        mb = sum(path.stat().st_size for path in files[n]) / 1e6
        local = statistics.median(times[(n, "in process")]) * 1e3
        http = statistics.median(times[(n, "HTTP")]) * 1e3
        ratio = http / local
        ok &= ratio <= TARGET or n < 6000
        print(f"| {n}x{n} | {mb:.0f} | {local:.0f} | {http:.0f} | {ratio:.2f}x | "
              f"<= {TARGET}x{'' if n >= 6000 else ' (at 36 MP)'} |")
    print(f"\nload average after: {load_average()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

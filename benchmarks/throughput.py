"""HTTP benchmark: requests/s and latency percentiles of ``POST /v1/diff`` for 512x512 PNG
pairs at several concurrencies, against a real uvicorn server on loopback, next to the
same work done in-process (decode both PNGs, run the pipeline, encode the JSON answer).

    python -m benchmarks.throughput [--requests 64] [--seconds 20] [--concurrency 1 4 16]

Each level stops after ``--requests`` requests or ``--seconds`` seconds, whichever comes
first, after a short warm-up. Prints a markdown table. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_pairs(size: int = 512) -> list[tuple[bytes, bytes]]:
    """Three real photos at size x size, each with a painted patch in the candidate."""
    from skimage import data

    pairs = []
    for photo in (data.astronaut(), data.coffee(), data.rocket()):
        img = np.asarray(Image.fromarray(photo).resize((size, size), Image.Resampling.BILINEAR))
        cand = img.copy()
        cand[size // 4: size // 4 + 48, size // 3: size // 3 + 64] = (250, 200, 20)
        pairs.append(tuple(_png(x) for x in (img, cand)))
    return pairs


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Result:
    mode: str
    concurrency: int
    latencies: list[float]
    seconds: float
    errors: int

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1e3) if self.latencies else float("nan")


# -- in-process -------------------------------------------------------------------------


def in_process(pairs, concurrency: int, max_requests: int, max_seconds: float,
               warmup: int, threads: int) -> Result:
    """decode -> Finder.analyze -> JSON encoding, from ``concurrency`` threads, each with
    ``threads`` torch intra-op threads."""
    import torch

    from core import Finder, PipelineConfig
    from core.images import decode_image
    from service.encoding import JSON, encode

    config = PipelineConfig()
    finder = Finder(config=config, device="cpu")
    configured: set[int] = set()

    def one(i: int) -> None:
        if threading.get_ident() not in configured:  # torch's setting is per thread
            torch.set_num_threads(threads)
            configured.add(threading.get_ident())
        ref, cand = pairs[i % len(pairs)]
        arrived = time.perf_counter()
        a, b = decode_image(ref), decode_image(cand)
        result = finder.analyze(a, b)[0]
        encode(JSON, result, config, dict(result.timing_ms), arrived)

    for i in range(warmup):
        one(i)
    label = f"in-process, {threads} torch thread{'s' if threads > 1 else ''}"
    return _closed_loop(label, concurrency, max_requests, max_seconds, one)


def _closed_loop(mode: str, concurrency: int, max_requests: int, max_seconds: float,
                 one: Callable[[int], None]) -> Result:
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(max_requests))
    start = time.perf_counter()
    stop_at = start + max_seconds

    def worker() -> None:
        while time.perf_counter() < stop_at:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            one(i)
            with lock:
                latencies.append(time.perf_counter() - t0)

    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    return Result(mode, concurrency, latencies, time.perf_counter() - start, 0)


# -- over HTTP --------------------------------------------------------------------------


def _multipart(ref: bytes, cand: bytes) -> tuple[bytes, dict[str, str]]:
    """One pre-built multipart body, so the client spends no time encoding per request."""
    req = httpx.Request("POST", "http://x/v1/diff", files={
        "reference": ("ref.png", ref, "image/png"), "candidate": ("cand.png", cand, "image/png")})
    return req.read(), {"content-type": req.headers["content-type"]}


async def _http_level(url: str, bodies, concurrency: int, max_requests: int,
                      max_seconds: float, warmup: int) -> Result:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        async def one(i: int) -> bool:
            body, headers = bodies[i % len(bodies)]
            r = await client.post("/v1/diff", content=body, headers=headers)
            await r.aread()
            return r.status_code == 200

        for i in range(warmup):
            assert await one(i), "warm-up request failed"
        counter = iter(range(max_requests))
        start = time.perf_counter()
        stop_at = start + max_seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                ok = await one(i)
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Result("HTTP", concurrency, latencies, time.perf_counter() - start, errors)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("DF_")}
    full.update({"DF_DEVICES": "cpu", "DF_ACCESS_LOG": "false", "DF_LOG_LEVEL": "warning",
                 "DF_QUEUE_SIZE": "64", **env})
    proc = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=ROOT, env=full)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not become ready")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=120, help="requests per level (max)")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds per level (max)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--rounds", type=int, default=2,
                   help="in-process and HTTP alternate this many times per concurrency; "
                   "each mode's best round is reported (the machine may be shared)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--torch-threads", type=int, default=None,
                   help="DF_TORCH_THREADS for the server (default: its own default)")
    p.add_argument("--devices", default="cpu",
                   help="DF_DEVICES for the server, e.g. cpu or cpu:0,cpu:1 (two CPU workers)")
    p.add_argument("--inproc-threads", type=int, nargs="+", default=[1, 0],
                   help="torch threads for the in-process runs (0: torch's default)")
    p.add_argument("--url", default=None, help="benchmark this running server instead")
    args = p.parse_args(argv)

    import torch

    default_threads = torch.get_num_threads()  # before anything sets it
    pairs = make_pairs()
    bodies = [_multipart(*pair) for pair in pairs]
    env = {"DF_DEVICES": args.devices}
    if args.torch_threads is not None:
        env["DF_TORCH_THREADS"] = str(args.torch_threads)
    proc, url = (None, args.url) if args.url else start_server(env)
    rows: list[Result] = []
    try:
        for c in args.concurrency:
            best: dict[str, Result] = {}
            for _ in range(args.rounds):
                runs = [in_process(pairs, c, args.requests, args.seconds, args.warmup,
                                   t or default_threads) for t in args.inproc_threads]
                runs.append(asyncio.run(_http_level(url, bodies, c, args.requests,
                                                    args.seconds, args.warmup)))
                for r in runs:
                    print(f"{r.mode} c={c}: {r.rps:.2f} req/s", file=sys.stderr)
                    if r.mode not in best or r.rps > best[r.mode].rps:
                        best[r.mode] = r
            rows += list(best.values())
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)

    threads = args.torch_threads or "default (CPU count - 1)"
    print(f"\n512x512 PNG pairs (3 photos), default pipeline (SSIM map), JSON answers; "
          f"{os.cpu_count()} CPU cores; torch {torch.__version__}; server devices: "
          f"{args.devices}, torch threads per worker: {threads}; best of {args.rounds} "
          "alternating rounds\n")
    print("| mode | concurrency | requests | errors | req/s | p50 ms | p90 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.mode} | {r.concurrency} | {len(r.latencies)} | {r.errors} | "
              f"{r.rps:.2f} | {r.pct(50):.0f} | {r.pct(90):.0f} | {r.pct(99):.0f} |")
    top = max((r.rps for r in rows if r.mode.startswith("in-process")), default=0.0)
    for r in rows:
        if r.mode == "HTTP" and r.concurrency == 4 and top:
            print(f"\nHTTP at concurrency 4: {r.rps / top:.0%} of the best in-process "
                  f"throughput ({top:.2f} req/s, any concurrency); target >= 80%.")


if __name__ == "__main__":
    main()

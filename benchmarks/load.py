"""Overload benchmark: more concurrent ``POST /v1/diff`` requests than the workers and queue
take, against a real uvicorn server on loopback. Prints status counts, latency percentiles
(accepted and refused apart), whether every refusal carried Retry-After, the server's peak
memory, and whether it is healthy afterwards.

    python -m benchmarks.load [--concurrency 32] [--requests 400] [--seconds 20]
                              [--queue-size 4] [--size 256]

Bounded: it stops after ``--requests`` requests or ``--seconds`` seconds, whichever comes
first. Loopback only (the server is started here, on 127.0.0.1).
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
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_pair(size: int) -> tuple[bytes, bytes]:
    """A real photo crop and a copy with a painted patch, as PNG files."""
    from skimage import data

    ref = np.ascontiguousarray(data.astronaut()[:size, :size])
    cand = ref.copy()
    cand[size // 4: size // 2, size // 3: size // 2] = (250, 20, 20)
    out = []
    for a in (ref, cand):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out[0], out[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of ``pid`` in KiB (VmHWM is the kernel's peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Server:
    """``python -m service`` on a free loopback port."""

    def __init__(self, queue_size: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DF_")}
        env.update({"DF_DEVICES": "cpu", "DF_QUEUE_SIZE": str(queue_size),
                    "DF_ACCESS_LOG": "false", "DF_LOG_LEVEL": "warning"})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit("the server exited while starting")
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise SystemExit("the server did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class MemoryWatch(threading.Thread):
    """Samples the server's resident memory every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopped = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return
            time.sleep(0.02)


async def hammer(url: str, body: tuple[bytes, dict[str, str]], concurrency: int,
                 max_requests: int, max_seconds: float) -> list[tuple[int, float, bool]]:
    """Closed loop: ``concurrency`` clients post until the request or time budget is spent.
    Returns (status, seconds, had Retry-After) per request; status 0 is a transport error."""
    results: list[tuple[int, float, bool]] = []
    sent = 0
    end = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one_client() -> None:
            nonlocal sent
            while sent < max_requests and time.monotonic() < end:
                sent += 1
                start = time.perf_counter()
                try:
                    r = await client.post("/v1/diff", content=body[0], headers=body[1])
                    status, retry = r.status_code, "retry-after" in r.headers
                except httpx.HTTPError:
                    status, retry = 0, False
                results.append((status, time.perf_counter() - start, retry))

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return results


def multipart(ref: bytes, cand: bytes) -> tuple[bytes, dict[str, str]]:
    req = httpx.Request("POST", "http://x/", files={"reference": ("r.png", ref),
                                                    "candidate": ("c.png", cand)},
                        data={"config": '{"metric": "ssim"}'})
    return req.read(), {"content-type": req.headers["content-type"]}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--queue-size", type=int, default=4)
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    args = p.parse_args()

    body = multipart(*make_pair(args.size))
    server = Server(args.queue_size)
    try:
        server.wait_ready()
        idle_before = rss_kib(server.proc.pid)
        watch = MemoryWatch(server.proc.pid)
        watch.start()
        started = time.monotonic()
        results = asyncio.run(hammer(server.url, body, args.concurrency, args.requests,
                                     args.seconds))
        elapsed = time.monotonic() - started
        watch.stopped.set()
        watch.join()
        time.sleep(1.0)
        idle_after = rss_kib(server.proc.pid)
        peak = max(watch.peak, rss_kib(server.proc.pid, "VmHWM"))
        health = httpx.get(server.url + "/healthz", timeout=10).status_code
        check = httpx.post(server.url + "/v1/diff", content=body[0], headers=body[1],
                           timeout=60).status_code
    finally:
        server.stop()

    counts = Counter(s for s, _, _ in results)
    ok = [t for s, t, _ in results if s == 200]
    refused = [(t, retry) for s, t, retry in results if s in (429, 503)]
    other = {s: n for s, n in counts.items() if s not in (200, 429, 503)}
    print(f"## Overload: {len(results)} requests from {args.concurrency} clients in "
          f"{elapsed:.1f} s (queue size {args.queue_size}, {args.size}x{args.size} PNG pairs, "
          f"ssim; {os.cpu_count()} CPU cores)\n")
    print("| status | count | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for status in sorted(counts):
        ts = [t for s, t, _ in results if s == status]
        print(f"| {status or 'transport error'} | {counts[status]} | {pct(ts, 50):.0f} | "
              f"{pct(ts, 90):.0f} | {pct(ts, 99):.0f} | {max(ts) * 1000:.0f} |")
    print()
    print(f"- accepted: {len(ok)} ({len(ok) / elapsed:.1f}/s); refused with 429/503: "
          f"{len(refused)}, all with Retry-After: {all(r for _, r in refused)}")
    print(f"- other statuses: {other or 'none'}")
    print(f"- server memory: idle before {idle_before / 1024:.0f} MiB, peak "
          f"{peak / 1024:.0f} MiB, idle after {idle_after / 1024:.0f} MiB")
    print(f"- afterwards: /healthz {health}, a fresh /v1/diff {check}")


if __name__ == "__main__":
    main()

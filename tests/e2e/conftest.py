"""End-to-end fixtures: the real server (``python -m service``, uvicorn) in a subprocess on
a free loopback port, spoken to over HTTP; and a local web server for URL inputs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import png

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m service`` on 127.0.0.1:<free port> with the given DF_* settings."""

    def __init__(self, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{self.port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DF_")}
        full_env.update({"PYTHONUNBUFFERED": "1", "DF_ACCESS_LOG": "false",
                         "DF_DEVICES": "cpu", **env})
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        #: every /readyz status seen while waiting for readiness, in order
        self.readiness: list[httpx.Response] = []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll /readyz from the moment the port opens until it answers 200."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"server exited:\n{self.log()}"
            try:
                r = httpx.get(self.url + "/readyz", timeout=5)
            except httpx.TransportError:
                time.sleep(0.01)
                continue
            self.readiness.append(r)
            if r.status_code == 200:
                return
            time.sleep(0.01)
        raise AssertionError(f"server not ready within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@contextmanager
def running(log_dir: Path, timeout: float = 60.0, **env: str) -> Iterator[Server]:
    """A ready :class:`Server` for the ``with`` block, stopped after it."""
    server = Server(log_dir, **env)
    try:
        server.wait_ready(timeout)
        yield server
    finally:
        server.stop(20)


@pytest.fixture
def start_server(tmp_path_factory: pytest.TempPathFactory):
    """Factory: ``start_server(DF_X="1", ...)``; every server is stopped at teardown."""
    servers: list[Server] = []
    log_dir = tmp_path_factory.mktemp("server-logs")

    def start(**env: str) -> Server:
        server = Server(log_dir, **env)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


class Site:
    """A local web server serving fixed files; records each path requested."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                site.hits.append(self.path)
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def photos(astronaut: np.ndarray) -> dict[str, np.ndarray]:
    """512x512 astronaut and a copy with a painted patch, and 256x256 crops of both."""
    changed = astronaut.copy()
    changed[100:160, 200:280] = (255, 230, 0)
    return {"ref": astronaut, "cand": changed,
            "ref_small": np.ascontiguousarray(astronaut[:256, :256]),
            "cand_small": np.ascontiguousarray(changed[:256, :256])}


@pytest.fixture(scope="session")
def photo_png(photos) -> dict[str, bytes]:
    return {k: png(v) for k, v in photos.items()}


@pytest.fixture
def site(photo_png) -> Iterator[Site]:
    s = Site({f"/{k}.png": v for k, v in photo_png.items()})
    yield s
    s.close()


@pytest.fixture(scope="session")
def label_studio_real(tmp_path_factory: pytest.TempPathFactory):
    """A real Label Studio server (PyPI ``label-studio`` in its own cached venv, see
    tests/e2e/label_studio_install.py); skipped only when the install is impossible."""
    from tests.e2e.label_studio_install import InstallError, ensure_label_studio
    from tests.e2e.label_studio_server import LabelStudio

    try:
        venv = ensure_label_studio()
    except InstallError as exc:
        pytest.skip(f"label-studio cannot be installed here, so the real-server tests do not "
                    f"run: {exc}")
    server = LabelStudio(venv, tmp_path_factory.mktemp("label-studio"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()

"""Weights download against a local HTTP server: hashes, idempotence, resume, retries.

The server on 127.0.0.1 serves stand-in files; the backbones' hash prefixes are
set to those of the stand-ins (the real files' prefixes cannot be matched by
made-up content), everything else runs as in production.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from core import weights
from core.weights import BACKBONES, Backbone, ChecksumError, WeightsFetchError, fetch_weights


@dataclass
class FileServer:
    """State of the test server: what it serves and how it misbehaves."""

    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True  # honour Range requests with 206
    drop_after: dict[str, int] = field(default_factory=dict)  # name -> bytes sent before a drop
    drops_left: dict[str, int] = field(default_factory=dict)  # name -> how many drops remain
    fail_503: dict[str, int] = field(default_factory=dict)  # name -> 503 answers remaining
    log: list[tuple[str, str | None, int]] = field(default_factory=list)  # (name, Range, sent)
    url: str = ""

    def requests_for(self, name: str) -> list[tuple[str | None, int]]:
        return [(r, n) for f, r, n in self.log if f == name]


def _handler(state: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            rng = self.headers.get("Range")
            if name not in state.files:
                state.log.append((name, rng, 0))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if state.fail_503.get(name, 0) > 0:
                state.fail_503[name] -= 1
                state.log.append((name, rng, 0))
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = state.files[name]
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if state.ranges and m:
                start = int(m.group(1))
                if start >= len(data):
                    state.log.append((name, rng, 0))
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes" if state.ranges else "none")
            self.end_headers()
            if state.drops_left.get(name, 0) > 0:
                state.drops_left[name] -= 1
                cut = state.drop_after[name]
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True  # the rest never comes
                state.log.append((name, rng, cut))
                return
            self.wfile.write(body)
            state.log.append((name, rng, len(body)))

    return Handler


@pytest.fixture
def server() -> Iterator[FileServer]:
    state = FileServer()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/models/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def standin(seed: int, size: int = 300_000) -> bytes:
    return np.random.default_rng(seed).bytes(size)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME; returns its checkpoint directory."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def publish(server: FileServer, monkeypatch: pytest.MonkeyPatch, net: str, data: bytes,
             *, served: bytes | None = None) -> Backbone:
    """Serve ``served`` (default ``data``) under the net's file name; expect ``data``'s hash."""
    old = BACKBONES[net]
    prefix = hashlib.sha256(data).hexdigest()[:8]
    backbone = Backbone(net, old.filename, server.url + old.filename, prefix)
    monkeypatch.setitem(BACKBONES, net, backbone)
    server.files[old.filename] = data if served is None else served
    return backbone


def test_downloads_into_torch_home_and_is_idempotent(server, home, monkeypatch):
    alex = publish(server, monkeypatch, "alex", standin(1))
    squeeze = publish(server, monkeypatch, "squeeze", standin(2, 50_000))
    monkeypatch.setenv("DF_WEIGHTS_BASE_URL", server.url)

    results = fetch_weights("alex,squeeze", progress=False, backoff=0)
    assert [(r.net, r.action) for r in results] == [("alex", "downloaded"),
                                                    ("squeeze", "downloaded")]
    assert (home / alex.filename).read_bytes() == server.files[alex.filename]
    assert (home / squeeze.filename).read_bytes() == server.files[squeeze.filename]
    assert results[0].sha256 == hashlib.sha256(server.files[alex.filename]).hexdigest()
    assert sorted(p.name for p in home.iterdir()) == sorted([alex.filename, squeeze.filename])
    assert weights.weights_status() == {"alex": True, "vgg": False, "squeeze": True}

    n = len(server.log)
    again = fetch_weights(["alex", "squeeze"], progress=False, backoff=0)
    assert [r.action for r in again] == ["present", "present"]
    assert len(server.log) == n  # nothing downloaded the second time


def test_corrupted_file_is_rejected_and_not_left_in_place(server, home, monkeypatch):
    good = standin(3)
    bad = bytearray(good)
    bad[1000] ^= 0xFF
    alex = publish(server, monkeypatch, "alex", good, served=bytes(bad))

    with pytest.raises(ChecksumError) as info:
        fetch_weights("alex", base_url=server.url, progress=False, backoff=0)
    assert alex.sha256_prefix in str(info.value)
    assert info.value.code == "weights-checksum-mismatch"
    assert not home.exists() or list(home.iterdir()) == []  # neither the file nor a .part
    assert len(server.requests_for(alex.filename)) == 1  # a clean full download is not retried
    assert weights.weights_status()["alex"] is False


def test_corrupt_file_already_present_is_replaced(server, home, monkeypatch):
    alex = publish(server, monkeypatch, "alex", standin(4))
    home.mkdir(parents=True)
    (home / alex.filename).write_bytes(b"not the weights")

    [result] = fetch_weights("alex", base_url=server.url, progress=False, backoff=0)
    assert result.action == "downloaded"
    assert (home / alex.filename).read_bytes() == server.files[alex.filename]


def test_corrupt_file_present_and_corrupt_download_leaves_nothing(server, home, monkeypatch):
    alex = publish(server, monkeypatch, "alex", standin(4), served=b"also wrong")
    home.mkdir(parents=True)
    (home / alex.filename).write_bytes(b"not the weights")
    with pytest.raises(ChecksumError):
        fetch_weights("alex", base_url=server.url, progress=False, backoff=0)
    assert list(home.iterdir()) == []


def test_dropped_connection_resumes_with_range(server, home, monkeypatch):
    data = standin(5)
    alex = publish(server, monkeypatch, "alex", data)
    server.drop_after[alex.filename] = 120_000
    server.drops_left[alex.filename] = 1

    [result] = fetch_weights("alex", base_url=server.url, progress=False, backoff=0)
    assert result.action == "downloaded"
    assert (home / alex.filename).read_bytes() == data
    assert server.requests_for(alex.filename) == [(None, 120_000),
                                                  ("bytes=120000-", len(data) - 120_000)]
    assert not (home / (alex.filename + ".part")).exists()


def test_dropped_connection_restarts_when_server_ignores_range(server, home, monkeypatch):
    data = standin(6)
    alex = publish(server, monkeypatch, "alex", data)
    server.ranges = False
    server.drop_after[alex.filename] = 100_000
    server.drops_left[alex.filename] = 2

    [result] = fetch_weights("alex", base_url=server.url, progress=False, backoff=0)
    assert result.action == "downloaded"
    assert (home / alex.filename).read_bytes() == data
    sent = server.requests_for(alex.filename)
    assert [n for _, n in sent] == [100_000, 100_000, len(data)]
    assert sent[1][0] == "bytes=100000-"  # asked to resume; got the whole file and started over


def test_retries_used_up_then_a_later_run_resumes(server, home, monkeypatch):
    data = standin(7)
    alex = publish(server, monkeypatch, "alex", data)
    server.drop_after[alex.filename] = 50_000
    server.drops_left[alex.filename] = 3

    with pytest.raises(WeightsFetchError) as info:
        fetch_weights("alex", base_url=server.url, retries=2, progress=False, backoff=0)
    assert "after 3 attempt(s)" in str(info.value)
    assert not isinstance(info.value, ChecksumError)
    assert not (home / alex.filename).exists()
    part = home / (alex.filename + ".part")
    assert part.read_bytes() == data[:150_000]  # three drops of 50 kB each, appended in order

    [result] = fetch_weights("alex", base_url=server.url, progress=False, backoff=0)
    assert result.action == "downloaded"
    assert server.requests_for(alex.filename)[-1] == ("bytes=150000-", len(data) - 150_000)
    assert (home / alex.filename).read_bytes() == data
    assert not part.exists()


def test_stale_part_file_is_discarded_after_checksum_mismatch(server, home, monkeypatch):
    data = standin(8)
    alex = publish(server, monkeypatch, "alex", data)
    home.mkdir(parents=True)
    (home / (alex.filename + ".part")).write_bytes(b"x" * 1000)  # from some other file

    [result] = fetch_weights("alex", base_url=server.url, progress=False, backoff=0)
    assert (home / alex.filename).read_bytes() == data
    assert result.action == "downloaded"
    assert [r for r, _ in server.requests_for(alex.filename)] == ["bytes=1000-", None]


def test_complete_part_file_is_verified_without_downloading_again(server, home, monkeypatch):
    data = standin(9)
    alex = publish(server, monkeypatch, "alex", data)
    home.mkdir(parents=True)
    (home / (alex.filename + ".part")).write_bytes(data)

    [result] = fetch_weights("alex", base_url=server.url, progress=False, backoff=0)
    assert result.action == "downloaded"
    assert server.requests_for(alex.filename) == [(f"bytes={len(data)}-", 0)]  # a 416
    assert (home / alex.filename).read_bytes() == data


def test_503_is_retried_404_is_not(server, home, monkeypatch):
    alex = publish(server, monkeypatch, "alex", standin(10))
    server.fail_503[alex.filename] = 2
    [result] = fetch_weights("alex", base_url=server.url, progress=False, backoff=0)
    assert result.action == "downloaded"
    assert len(server.requests_for(alex.filename)) == 3

    vgg = BACKBONES["vgg"]  # not served at all
    with pytest.raises(WeightsFetchError, match="HTTP 404"):
        fetch_weights("vgg", base_url=server.url, progress=False, backoff=0)
    assert len(server.requests_for(vgg.filename)) == 1


def test_unknown_net_is_a_clear_error(home):
    with pytest.raises(WeightsFetchError, match=r"unknown LPIPS net.*resnet.*alex, vgg, squeeze"):
        fetch_weights("alex,resnet", base_url="http://127.0.0.1:9/", progress=False)


def test_cache_directory_supplies_and_keeps_verified_files(server, home, monkeypatch, tmp_path):
    """What the Docker build does: downloads land in a cache too; later builds copy them."""
    alex = publish(server, monkeypatch, "alex", standin(12))
    squeeze = publish(server, monkeypatch, "squeeze", standin(13, 20_000))
    cache = tmp_path / "cache"
    first = fetch_weights("alex", base_url=server.url, progress=False, cache=cache)
    assert first[0].action == "downloaded"
    assert (cache / alex.filename).read_bytes() == server.files[alex.filename]

    (home / alex.filename).unlink()
    (cache / squeeze.filename).write_bytes(b"corrupt cache entry")
    n = len(server.requests_for(alex.filename))
    again = fetch_weights("alex,squeeze", base_url=server.url, progress=False, cache=cache)
    assert [r.action for r in again] == ["cached", "downloaded"]
    assert len(server.requests_for(alex.filename)) == n  # not downloaded again
    assert (home / alex.filename).read_bytes() == server.files[alex.filename]
    assert (cache / squeeze.filename).read_bytes() == server.files[squeeze.filename]
    assert sorted(p.name for p in home.iterdir()) == sorted([alex.filename, squeeze.filename])

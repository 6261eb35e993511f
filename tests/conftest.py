"""Shared fixtures: real photos, and stand-in LPIPS backbone weights.

LPIPS weights cannot be downloaded here, so ``lpips_home`` writes files of the
right names and shapes (seeded random values) to a temporary TORCH_HOME. The
code under test loads them through the same torchvision path as real ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch


def write_standin_weights(torch_home: Path, nets: tuple[str, ...] = ("alex",)) -> Path:
    """Write seeded stand-in torchvision weights for the given LPIPS nets."""
    import torchvision.models as tvm

    from core.weights import BACKBONES

    build = {"alex": tvm.alexnet, "vgg": tvm.vgg16, "squeeze": tvm.squeezenet1_1}
    ckpt = torch_home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    for net in nets:
        target = ckpt / BACKBONES[net].filename
        if not target.exists():
            torch.manual_seed(0)
            torch.save(build[net](weights=None).state_dict(), target)
    return ckpt


@pytest.fixture(scope="session")
def lpips_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A TORCH_HOME with stand-in AlexNet and SqueezeNet weights, set for the session."""
    home = tmp_path_factory.mktemp("torch_home")
    write_standin_weights(home, ("alex", "squeeze"))
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    yield home
    from core.models import MODEL_CACHE

    MODEL_CACHE.clear()
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TORCH_HOME with no weights at all (and an empty model cache)."""
    from core.models import MODEL_CACHE

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    MODEL_CACHE.clear()
    yield tmp_path
    MODEL_CACHE.clear()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # (512, 512, 3) uint8


@pytest.fixture(scope="session")
def camera() -> np.ndarray:
    from skimage import data

    return data.camera()  # (512, 512) uint8


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    from skimage import data

    return data.chelsea()  # (300, 451, 3) uint8, non-square


def distort(img: np.ndarray, seed: int = 0, noise: float = 6.0) -> np.ndarray:
    """A uint8 copy of ``img`` with faint global noise and two local edits.

    Edits: a brightened square and a horizontally mirrored patch, so maps
    have both an image-wide nuisance and spots to find.
    """
    rng = np.random.default_rng(seed)
    out = img.astype(np.float64) + rng.normal(0.0, noise, img.shape)
    h, w = img.shape[:2]
    y, x = h // 4, w // 4
    out[y : y + 24, x : x + 24] += 40.0
    y2, x2 = h // 2, w // 2
    out[y2 : y2 + 32, x2 : x2 + 32] = out[y2 : y2 + 32, x2 : x2 + 32][:, ::-1]
    return np.clip(out, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="session")
def astronaut_pair(astronaut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reference, candidate) uint8 astronaut photos; the candidate is ``distort``-ed."""
    return astronaut, distort(astronaut, seed=1)


@pytest.fixture(scope="session")
def chelsea_pair(chelsea: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reference, candidate) uint8 chelsea photos (non-square, 300x451)."""
    return chelsea, distort(chelsea, seed=2)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run torch on one thread: tiny tensors (gradcheck) are many times faster so."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def raw_finder(**kwargs):
    """A Finder without the default smoothing: for tests of raw strategy/metric output."""
    from core import Finder

    return Finder(**{"post_processor": "identity", **kwargs})


def png(a: np.ndarray) -> bytes:
    """Encode an array as PNG bytes (what uploads carry)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    """Base64 text of bytes, as the JSON request form carries images."""
    import base64

    return base64.b64encode(data).decode()


def assert_problem(r, status: int, code: str) -> dict:
    """Assert an RFC 9457 problem response with this status and code; return its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status
    assert body["type"].endswith(":" + code), body
    assert body["code"] == code
    assert body["title"] and body["detail"]
    return body


def wait_ready(client, timeout: float = 60.0) -> None:
    """Poll an in-process client's /readyz until the workers are up."""
    import time

    end = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < end, "service did not become ready"
        time.sleep(0.02)

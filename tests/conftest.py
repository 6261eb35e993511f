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

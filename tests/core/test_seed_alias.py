"""The seed's Quick Start (difference-finder 0.0.4 README) runs unchanged on the
``difference_finder`` alias package: the snippet below is the README's, verbatim,
with only its two ``<img_path_n>`` placeholders filled in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import core
from core import DeviceError

SEED_QUICK_START = """\
from pathlib import Path
from difference_finder.finder import Finder
img1 = Path(<img_path_1>)
img2 = Path(<img_path_2>)
worker = Finder(pre_processor='identity',
post_processor='identity',
strategy='gradient',
metric='psnr',
device='cuda')
results = worker.run(img1, img2)
"""


def run_snippet(tmp_path, source: str) -> dict:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    b = a.copy()
    b[5:10, 8:16] = 255 - b[5:10, 8:16]
    for name, img in (("a.png", a), ("b.png", b)):
        Image.fromarray(img).save(tmp_path / name)
    source = (source.replace("<img_path_1>", repr(str(tmp_path / "a.png")))
              .replace("<img_path_2>", repr(str(tmp_path / "b.png"))))
    scope: dict = {}
    exec(compile(source, "seed-quick-start", "exec"), scope)
    return scope


def check_seed_output(scope: dict) -> None:
    """The seed's documented output: an (H, W) numpy map, channels averaged."""
    results = scope["results"]
    assert isinstance(results, np.ndarray) and results.shape == (24, 32)
    assert np.isfinite(results).all()
    # the edited box carries the difference
    assert results[5:10, 8:16].mean() > 10 * np.delete(results, np.s_[5:10], axis=0).mean()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the snippet asks for CUDA")
def test_seed_quick_start_verbatim(tmp_path) -> None:
    check_seed_output(run_snippet(tmp_path, SEED_QUICK_START))


def test_seed_quick_start_without_a_gpu(tmp_path) -> None:
    """Without CUDA the verbatim snippet fails clearly; on the CPU it gives the seed's output."""
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            run_snippet(tmp_path, SEED_QUICK_START)
    check_seed_output(run_snippet(tmp_path, SEED_QUICK_START.replace("'cuda'", "'cpu'")))


def test_alias_package_is_core() -> None:
    import difference_finder
    from difference_finder.finder import Finder

    assert Finder is core.Finder
    assert difference_finder.__version__ == core.__version__
    assert sorted(difference_finder.__all__) == sorted(core.__all__)
    assert all(getattr(difference_finder, n) is getattr(core, n) for n in core.__all__)

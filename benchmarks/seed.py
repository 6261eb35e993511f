"""Run the seed package (PyPI difference-finder 0.0.4) from a private benchmark directory.

The seed is never a dependency of this project; benchmarks compare against it. Install it with

    pip install --no-deps --target .bench/seed difference-finder==0.0.4
    pip install --target .bench/seed rich      # the seed's logger imports rich; nothing else does

Its other imports (torch, torchvision, lpips, pytorch_msssim, numpy, Pillow) come from .venv.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
SEED_DIR = Path(os.environ.get("SEED_DIR", ROOT / ".bench" / "seed"))
SEED_VERSION = "0.0.4"
INSTALL_HINT = (
    f"pip install --no-deps --target {SEED_DIR} difference-finder=={SEED_VERSION} && "
    f"pip install --target {SEED_DIR} rich"
)

SeedCallable = Callable[[torch.Tensor, torch.Tensor], np.ndarray]


def seed_available() -> bool:
    """True when the seed package is installed under SEED_DIR."""
    return (SEED_DIR / "difference_finder" / "finder.py").is_file()


def _import_seed_finder() -> type:
    """Import the seed's Finder from SEED_DIR.

    This project's ``difference_finder`` alias package (over ``core``) has the seed's name,
    so SEED_DIR leads sys.path while the seed is imported (any alias already imported is
    dropped from sys.modules first); afterwards SEED_DIR sits at the end of sys.path, so
    .venv wins on every other clash (the seed's own submodules resolve through its package).
    """
    if not seed_available():
        raise RuntimeError(f"seed package not found in {SEED_DIR}; install it with: {INSTALL_HINT}")
    for name in [m for m in sys.modules if m.split(".")[0] == "difference_finder"]:
        if not str(getattr(sys.modules[name], "__file__", "")).startswith(str(SEED_DIR)):
            del sys.modules[name]
    if str(SEED_DIR) in sys.path:
        sys.path.remove(str(SEED_DIR))
    sys.path.insert(0, str(SEED_DIR))
    try:
        from difference_finder.finder import Finder  # type: ignore[import-not-found]
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            f"the seed package needs module {exc.name!r}; install it with: {INSTALL_HINT}"
        ) from exc
    finally:
        sys.path.remove(str(SEED_DIR))
        sys.path.append(str(SEED_DIR))
    return Finder


def seed_finder(
    pre: str = "identity",
    post: str = "identity",
    strategy: str = "gradient",
    metric: str = "mse",
    device: str = "cpu",
    copy_inputs: bool = True,
) -> SeedCallable:
    """Build the seed's Finder once; return f(img1, img2) -> float32 (H, W) map of the first pair.

    Inputs are float tensors in [0, 1], shaped (C, H, W) or (N, C, H, W), on any device; the seed
    moves them to `device` itself. The seed's gradient strategy sets requires_grad on the tensor it
    is given (on CPU that is the caller's tensor), so by default each call works on clones; pass
    copy_inputs=False to time the bare call (then the inputs are left with requires_grad=True).
    Defaults are the seed's own defaults: identity / identity / gradient / mse.
    """
    finder = _import_seed_finder()(
        pre_processor=pre, post_processor=post, strategy=strategy, metric=metric, device=device
    )

    def run(img1: torch.Tensor, img2: torch.Tensor) -> np.ndarray:
        if copy_inputs:
            img1, img2 = img1.detach().clone(), img2.detach().clone()
        out = finder.run(img1, img2)
        return np.asarray(out, dtype=np.float32)

    return run


if __name__ == "__main__":
    # Smoke run: the seed's default and its README example on a random pair.
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, 64, 64, generator=gen)
    b = (a + 0.05 * torch.randn(1, 3, 64, 64, generator=gen)).clamp(0, 1)
    for args in [("identity", "identity", "gradient", "mse"),
                 ("identity", "identity", "gradient", "psnr")]:
        m = seed_finder(*args)(a, b)
        print(args, m.shape, m.dtype, float(np.abs(m).mean()))

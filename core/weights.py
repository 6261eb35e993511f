"""Where LPIPS's torchvision backbone weights live, and whether they are there.

lpips builds its backbone with torchvision, which would download the ImageNet
weights into ``$TORCH_HOME/hub/checkpoints`` when they are absent. We check
first and raise :class:`WeightsMissingError` instead: no silent download, no
hang, never a randomly initialised network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import WeightsMissingError

__all__ = ["BACKBONES", "Backbone", "checkpoint_dir", "require_weights", "weights_status"]


@dataclass(frozen=True)
class Backbone:
    """A torchvision weight file LPIPS needs for one ``net``."""

    net: str
    filename: str
    url: str
    sha256_prefix: str  # torchvision's convention: the hash prefix is in the name

    @property
    def path(self) -> Path:
        return checkpoint_dir() / self.filename


_TV = "https://download.pytorch.org/models/"
BACKBONES: dict[str, Backbone] = {
    "alex": Backbone("alex", "alexnet-owt-7be5be79.pth", _TV + "alexnet-owt-7be5be79.pth",
                     "7be5be79"),
    "vgg": Backbone("vgg", "vgg16-397923af.pth", _TV + "vgg16-397923af.pth", "397923af"),
    "squeeze": Backbone("squeeze", "squeezenet1_1-b8a52dc0.pth",
                        _TV + "squeezenet1_1-b8a52dc0.pth", "b8a52dc0"),
}


def checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` as torch.hub resolves it right now."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def require_weights(net: str) -> Path:
    """Return the weight file for ``net`` or raise a clear, actionable error."""
    backbone = BACKBONES[net]
    path = backbone.path
    if not path.is_file() or path.stat().st_size == 0:
        raise WeightsMissingError(
            f"LPIPS net {net!r} needs the torchvision weight file {path}, which is missing. "
            f"Run `difference-finder weights fetch --nets {net}` or download {backbone.url} "
            f"into {path.parent} (set TORCH_HOME to use another directory).",
            file=str(path), url=backbone.url, net=net,
        )
    return path


def weights_status() -> dict[str, bool]:
    """Which LPIPS nets have their backbone weights on disk."""
    return {net: b.path.is_file() and b.path.stat().st_size > 0 for net, b in BACKBONES.items()}

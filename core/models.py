"""The model cache: LPIPS networks built once per (net, device) and kept resident."""

from __future__ import annotations

import threading
import time

import torch

from .weights import require_weights

__all__ = ["MODEL_CACHE", "ModelCache"]


class ModelCache:
    """Thread-safe cache of LPIPS models keyed by ``(net, device)``.

    Models are in eval mode with parameters frozen (gradients still flow to
    the *inputs*, which is what the gradient strategy needs).
    """

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], torch.nn.Module] = {}
        self._lock = threading.Lock()
        #: seconds each model took to build, for the service's metrics
        self.load_seconds: dict[tuple[str, str], float] = {}

    def lpips(self, net: str, device: torch.device | str) -> torch.nn.Module:
        key = (net, str(torch.device(device)))
        model = self._models.get(key)
        if model is not None:
            return model
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = self._build(net, torch.device(device))
                self._models[key] = model
        return model

    def _build(self, net: str, device: torch.device) -> torch.nn.Module:
        require_weights(net)
        import lpips  # imported late: it pulls torchvision models in

        start = time.perf_counter()
        # Built outside inference mode even when first asked for under it: inference
        # tensors as weights would break every later gradient-strategy call.
        with torch.inference_mode(False):
            model = lpips.LPIPS(net=net, verbose=False, pretrained=True)
            model = model.eval().requires_grad_(False).to(device)
        self.load_seconds[(net, str(device))] = time.perf_counter() - start
        return model

    def warm(self, net: str, device: torch.device | str, size: int = 64) -> None:
        """Build the model and run one dummy pass (allocations, kernel choice)."""
        model = self.lpips(net, device)
        x = torch.zeros(1, 3, size, size, device=device)
        with torch.inference_mode():
            model(x, x)

    def loaded(self) -> list[tuple[str, str]]:
        return list(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


MODEL_CACHE = ModelCache()

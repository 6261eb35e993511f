"""Pre-processors: applied to each image (N, C, H, W) before the strategy.

Each works per sample, so a pair's result never depends on the rest of its
batch. Fourier filters act over H and W only and use frequencies normalised
to cycles per pixel, so a mask means the same on non-square images.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from .errors import ConfigError
from .numeric import stretch
from .registry import Registry

__all__ = ["PRE_PROCESSORS", "frequency_box"]

PRE_PROCESSORS = Registry("pre_processor")

Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


@PRE_PROCESSORS.register("identity")
def identity(x: torch.Tensor, data_range: float) -> torch.Tensor:
    """Do nothing (the default)."""
    return x


@PRE_PROCESSORS.register("normalize")
def normalize(x: torch.Tensor, data_range: float) -> torch.Tensor:
    """Stretch each image's values to [0, data_range] (min-max per sample).

    A constant image becomes all zeros rather than a division by zero.
    """
    return stretch(x) * data_range


def frequency_box(h: int, w: int, size: float, device: torch.device) -> torch.Tensor:
    """Boolean (H, W) mask of the centred box ``|fy|, |fx| < size / 2`` in the
    unshifted FFT layout (frequencies in cycles per pixel, range [-0.5, 0.5)).

    ``size`` is the fraction of the spectrum's side the box covers, as in the
    seed: 0.1 on a 300-pixel side covers the central 30 frequencies.
    """
    fy = torch.fft.fftfreq(h, device=device).abs()
    fx = torch.fft.fftfreq(w, device=device).abs()
    return (fy[:, None] < size / 2) & (fx[None, :] < size / 2)


def _apply_mask(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    spectrum = torch.fft.fft2(x, dim=(-2, -1))
    return torch.fft.ifft2(spectrum * keep, dim=(-2, -1)).real


@PRE_PROCESSORS.register("highpass_filter")
def highpass_filter(x: torch.Tensor, data_range: float, *, factor: Fraction = 0.1) -> torch.Tensor:
    """Keep high frequencies only (sensitive to edges and texture).

    Zeroes the central ``factor`` fraction of the spectrum (incl. the DC term).
    """
    h, w = x.shape[-2:]
    return _apply_mask(x, ~frequency_box(h, w, factor, x.device))


@PRE_PROCESSORS.register("lowpass_filter")
def lowpass_filter(x: torch.Tensor, data_range: float, *, factor: Fraction = 0.9) -> torch.Tensor:
    """Keep low frequencies only (sensitive to intensity, blind to fine noise).

    Keeps the central ``factor`` fraction of the spectrum, zeroes the border.
    """
    h, w = x.shape[-2:]
    return _apply_mask(x, frequency_box(h, w, factor, x.device))


def _low_below_high(params: dict) -> None:
    if params["low"] >= params["high"]:
        raise ConfigError(
            f"bandpass_filter needs low < high, got low={params['low']}, high={params['high']}"
        )


@PRE_PROCESSORS.register("bandpass_filter", check=_low_below_high)
def bandpass_filter(
    x: torch.Tensor, data_range: float, *, low: Fraction = 0.1, high: Fraction = 0.5
) -> torch.Tensor:
    """Keep the band between the ``low`` and ``high`` boxes of the spectrum.

    ``low`` must be smaller than ``high``; the DC term is always removed.
    """
    h, w = x.shape[-2:]
    keep = frequency_box(h, w, high, x.device) & ~frequency_box(h, w, low, x.device)
    return _apply_mask(x, keep)

"""core.preprocess: Fourier filters over H and W only, per sample, same meaning on any shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from core import PRE_PROCESSORS, Finder, PipelineConfig


def pre(name: str, x: torch.Tensor, data_range: float = 1.0, **params) -> torch.Tensor:
    return PRE_PROCESSORS.get(name).func(x, data_range, **params)


def sinusoid(h: int, w: int, fy: float, fx: float) -> torch.Tensor:
    """cos(2 pi (fy*y + fx*x)) as (1, 1, H, W); frequencies in cycles per pixel."""
    y = torch.arange(h, dtype=torch.float64)[:, None]
    x = torch.arange(w, dtype=torch.float64)[None, :]
    return torch.cos(2 * torch.pi * (fy * y + fx * x)).float()[None, None]


def energy(x: torch.Tensor) -> float:
    return float(x.pow(2).mean())


FILTERS = [
    ("highpass_filter", {"factor": 0.2}),
    ("lowpass_filter", {"factor": 0.5}),
    ("bandpass_filter", {"low": 0.1, "high": 0.4}),
    ("normalize", {}),
]


@pytest.mark.parametrize(("name", "params"), FILTERS)
def test_batch_result_equals_per_sample_results(astronaut, chelsea, name, params) -> None:
    a = torch.from_numpy(astronaut[:200, :280]).permute(2, 0, 1).float() / 255
    b = torch.from_numpy(chelsea[:200, :280]).permute(2, 0, 1).float() / 255
    c = torch.rand(3, 200, 280, generator=torch.Generator().manual_seed(0))
    batch = torch.stack([a, b, c])
    together = pre(name, batch, **params)
    for i in range(3):
        alone = pre(name, batch[i : i + 1], **params)
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("name", "params"), FILTERS[:3])
def test_channels_are_filtered_independently(chelsea, name, params) -> None:
    x = torch.from_numpy(chelsea).permute(2, 0, 1).float()[None] / 255
    changed = x.clone()
    changed[:, 1] = torch.rand_like(changed[:, 1])
    out, out_changed = pre(name, x, **params), pre(name, changed, **params)
    torch.testing.assert_close(out[:, [0, 2]], out_changed[:, [0, 2]], atol=1e-6, rtol=0)
    assert not torch.allclose(out[:, 1], out_changed[:, 1])
    for c in range(3):  # and each channel is what it would be on its own
        torch.testing.assert_close(out[:, c : c + 1], pre(name, x[:, c : c + 1], **params),
                                   atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(64, 128), (128, 64), (96, 96)])
@pytest.mark.parametrize(("fy", "fx"), [(0.0, 0.125), (0.125, 0.0), (0.125, 0.125)])
def test_highpass_mask_means_the_same_on_any_shape(shape, fy, fx) -> None:
    """A sinusoid at 0.125 cycles/pixel is above a 0.2 box (|f| < 0.1), inside a 0.3 box."""
    wave = sinusoid(*shape, fy, fx)
    kept = pre("highpass_filter", wave, factor=0.2)
    torch.testing.assert_close(kept, wave, atol=1e-4, rtol=0)
    removed = pre("highpass_filter", wave, factor=0.3)
    assert energy(removed) < 1e-8
    # The low-pass is the exact complement for the same factor.
    torch.testing.assert_close(pre("lowpass_filter", wave, factor=0.3), wave, atol=1e-4, rtol=0)
    assert energy(pre("lowpass_filter", wave, factor=0.2)) < 1e-8


@pytest.mark.parametrize("shape", [(64, 128), (128, 64)])
def test_bandpass_keeps_only_its_band(shape) -> None:
    low, mid, high = (sinusoid(*shape, 0.0, f) for f in (0.03125, 0.125, 0.375))
    params = {"low": 0.1, "high": 0.5}  # keeps 0.05 <= |f| < 0.25
    out = pre("bandpass_filter", low + mid + high, **params)
    torch.testing.assert_close(out, mid, atol=1e-4, rtol=0)
    # Rotated by 90 degrees, the same frequencies behave the same way.
    rotated = [sinusoid(*shape, f, 0.0) for f in (0.03125, 0.125, 0.375)]
    torch.testing.assert_close(pre("bandpass_filter", sum(rotated), **params), rotated[1],
                               atol=1e-4, rtol=0)


def test_low_band_and_high_parts_add_up_to_the_image(chelsea) -> None:
    x = torch.from_numpy(chelsea).permute(2, 0, 1).float()[None] / 255
    parts = (pre("lowpass_filter", x, factor=0.1)
             + pre("bandpass_filter", x, low=0.1, high=0.6)
             + pre("highpass_filter", x, factor=0.6))
    torch.testing.assert_close(parts, x, atol=1e-5, rtol=0)


def test_highpass_removes_the_mean_and_output_is_real(camera) -> None:
    x = torch.from_numpy(camera).float()[None, None] / 255
    out = pre("highpass_filter", x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert abs(out.mean().item()) < 1e-5
    assert out.std().item() > 0.01


def test_factor_is_a_parameter(camera) -> None:
    x = torch.from_numpy(camera).float()[None, None] / 255
    energies = [energy(pre("highpass_filter", x, factor=f)) for f in (0.05, 0.1, 0.3, 0.6)]
    assert energies == sorted(energies, reverse=True) and len(set(energies)) == 4
    default = Finder(pre_processor="highpass_filter", strategy="difference").config
    assert default.pre_processor == {"name": "highpass_filter", "factor": 0.1}
    a = Finder(pre_processor={"name": "highpass_filter", "factor": 0.3}, strategy="difference")
    b = Finder(pre_processor={"name": "highpass_filter", "factor": 0.05}, strategy="difference")
    other = np.roll(camera, 3, axis=1)
    assert not np.allclose(a.run(camera, other), b.run(camera, other))


@pytest.mark.parametrize(
    "spec",
    [{"name": "highpass_filter", "factor": 0.0}, {"name": "highpass_filter", "factor": 1.5},
     {"name": "lowpass_filter", "factor": -0.1}, {"name": "bandpass_filter", "low": 0.5,
                                                  "high": 0.2},
     {"name": "bandpass_filter", "low": 0.3, "high": 0.3},
     {"name": "highpass_filter", "cutoff": 0.2}],
)
def test_bad_filter_parameters_are_refused(spec) -> None:
    with pytest.raises(ValidationError):
        PipelineConfig(pre_processor=spec)


def test_normalize_stretches_each_sample_to_data_range() -> None:
    x = torch.stack([torch.linspace(0.2, 0.4, 48).view(3, 4, 4),
                     torch.full((3, 4, 4), 0.7)])
    out = pre("normalize", x, data_range=255.0)
    assert out[0].min().item() == pytest.approx(0.0)
    assert out[0].max().item() == pytest.approx(255.0)
    assert torch.equal(out[1], torch.zeros(3, 4, 4))  # constant image: zeros, no NaN


def test_preprocessors_do_not_modify_their_input(chelsea) -> None:
    x = torch.from_numpy(chelsea).permute(2, 0, 1).float()[None] / 255
    before = x.clone()
    for name, params in FILTERS:
        pre(name, x, **params)
    assert torch.equal(x, before)

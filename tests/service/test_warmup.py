"""The warm-up pair takes every step of the default pipeline, so the first request does not
pay first calls the warm-up skipped."""

import numpy as np
import torch

from core import Finder
from core.significance import fit_linear_filter
from service.prometheus import Metrics
from service.warmup import Warmup, warmup_pair


def test_warmup_pair_finds_its_edit_and_needs_the_filter():
    ref, cand = warmup_pair(256)
    assert ref.shape == cand.shape == (256, 256, 3) and ref.dtype == np.uint8
    (result,) = Finder().analyze(ref, cand)
    assert len(result.regions) == 1  # labelling ran and found the square
    r = result.regions[0]
    x, y, w, h = r.x, r.y, r.width, r.height
    assert abs(x - 64) <= 4 and abs(y - 64) <= 4 and abs(w - 64) <= 8 and abs(h - 64) <= 8
    a = torch.from_numpy(ref).permute(2, 0, 1)[None].float() / 255
    b = torch.from_numpy(cand).permute(2, 0, 1)[None].float() / 255
    beta = fit_linear_filter(a, b)  # noise: not the identity, so the filter is applied
    centre = (beta.shape[-1] - 1) // 2
    assert not torch.all(beta[..., centre] == 1)


def test_warmup_runs_on_small_sizes():
    for size in (16, 17, 64):
        Warmup([], size, Metrics())(torch.device("cpu"))

"""The ``cancel`` hook: checked between the Finder's steps, it stops work with a typed error
naming the step, and never changes a result when it says go on."""

from __future__ import annotations

import numpy as np
import pytest

from core import Finder
from core.compare import compare
from core.errors import Cancelled

RNG = np.random.default_rng(1)
A = RNG.random((48, 48, 3)).astype(np.float32)
#: one post-processor, so every step the hook guards is there (the default has none)
SMOOTH = [{"name": "smooth", "sigma": 2.0}]
B = np.clip(A + RNG.normal(0, 0.1, A.shape), 0, 1).astype(np.float32)


def after(n: int):
    """A cancel check that says stop on its (n+1)-th call; records the calls."""
    calls: list[int] = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > n
    return cancel, calls


@pytest.mark.parametrize("n, step", [(0, "pre-processor"), (1, "scores"), (2, "strategy"),
                                     (3, "post-processor"), (4, "regions")])
def test_analyze_stops_at_the_step_the_check_says(n, step):
    cancel, _ = after(n)
    with pytest.raises(Cancelled) as info:
        Finder(metric="ssim", post_processor=SMOOTH, device="cpu").analyze(A, B, cancel=cancel)
    assert info.value.extra["step"] == step
    assert info.value.status == 503


def test_a_check_that_says_go_on_changes_nothing():
    cancel, calls = after(10**6)
    plain = Finder(post_processor=SMOOTH, device="cpu").analyze(A, B)[0]
    checked = Finder(post_processor=SMOOTH, device="cpu").analyze(A, B, cancel=cancel)[0]
    np.testing.assert_array_equal(plain.map, checked.map)
    assert plain.metrics == checked.metrics and plain.regions == checked.regions
    assert len(calls) == 5  # pre, scores, strategy, one post-processor, regions


def test_compare_stops_between_candidates():
    cancel, calls = after(6)
    with pytest.raises(Cancelled):
        compare(A, [B, B.copy(), B.copy()], device="cpu", cancel=cancel)
    assert len(calls) == 7  # stopped during the second candidate

"""service.encoding: the .npy answer is byte-for-byte what numpy.save writes."""

from __future__ import annotations

import io

import numpy as np
import pytest

from service.encoding import npy_bytes


@pytest.mark.parametrize("a", [np.random.default_rng(0).random((3, 5), dtype=np.float32),
                               np.zeros((0, 4), np.float32),
                               np.arange(24, dtype=">f8").reshape(2, 3, 4)[:, ::2]])
def test_npy_bytes_match_numpy_save(a):
    ref = io.BytesIO()
    np.save(ref, np.ascontiguousarray(a, dtype="<f4"), allow_pickle=False)
    assert npy_bytes(a) == ref.getvalue()
    back = np.load(io.BytesIO(npy_bytes(a)))
    assert back.dtype == np.dtype("<f4") and np.array_equal(back, a.astype("<f4"))

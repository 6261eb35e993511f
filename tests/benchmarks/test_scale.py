"""benchmarks.scale and benchmarks.gpu: inputs are photos with local edits, the memory
probe runs, the GPU script skips cleanly without CUDA."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.scale import make_pair, peak_rss_child

ROOT = Path(__file__).resolve().parents[2]


def test_pair_is_a_photo_with_local_edits() -> None:
    ref, cand = make_pair(300)
    assert ref.shape == cand.shape == (300, 300, 3) and ref.dtype == np.uint8
    assert ref.std() > 20  # real content, not a flat image
    changed = (ref != cand).any(axis=2)
    assert 0 < changed.mean() < 0.05  # a few local edits, not a global change


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_memory_probe_reports_the_pair_and_a_peak() -> None:
    mem = peak_rss_child(128, {})
    assert mem["pair_f32"] == 2 * 128 * 128 * 3 * 4
    assert mem["peak_rss"] >= mem["base_rss"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_gpu_benchmark_skips_without_cuda() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "skipped" in proc.stdout

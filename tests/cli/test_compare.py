"""difference-finder compare: the figure, maps on one scale, scores as a table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli import main
from core.compare import compare
from tests.core.test_compare import degraded


@pytest.fixture(scope="module")
def small(astronaut: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """128 px reference, a noisy baseline and an edited candidate."""
    ref = np.ascontiguousarray(astronaut[::2, ::2])
    return tuple(np.ascontiguousarray(a[::2, ::2]) for a in (ref, *degraded(ref)))


def test_cli_compare_writes_figure_maps_and_json(tmp_path: Path, small, capsys) -> None:
    ref, base, ours = small
    paths = []
    for name, img in (("ref", ref), ("noisy", base), ("method", ours)):
        Image.fromarray(img).save(tmp_path / f"{name}.png")
        paths.append(str(tmp_path / f"{name}.png"))
    out = tmp_path / "out"
    rc = main(["compare", *paths, "-o", str(out), "--labels", "baseline,our method",
               "--baseline", "baseline", "--format", "pdf", "--dpi", "150", "--device", "cpu"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "our method" in table and "better on" in table
    assert (out / "figure.pdf").read_bytes().startswith(b"%PDF")
    data = json.loads((out / "comparison.json").read_text())
    assert [c["label"] for c in data["candidates"]] == ["baseline", "our method"]
    assert data["files"]["maps"]["our method"] == "maps/our_method.png"
    expected = compare(ref, [base, ours], labels=["baseline", "our method"],
                       baseline="baseline", device="cpu")
    assert data["improvement"][0]["improved_fraction"] == pytest.approx(
        expected.improvement[0].improved_fraction)
    with Image.open(out / "maps" / "baseline.png") as im:
        assert im.size == (128, 128)
    assert (out / "improvement" / "our_method.png").is_file()


def test_cli_compare_unknown_baseline_exits_1(tmp_path: Path, small, capsys) -> None:
    ref, base, _ = small
    for name, img in (("ref", ref), ("noisy", base)):
        Image.fromarray(img).save(tmp_path / f"{name}.png")
    rc = main(["compare", str(tmp_path / "ref.png"), str(tmp_path / "noisy.png"), "-o",
               str(tmp_path / "out"), "--baseline", "nope", "--device", "cpu"])
    assert rc == 1
    assert "baseline 'nope' is not one of the labels: noisy" in capsys.readouterr().err

"""The command line: files and directories in, heatmaps and JSON out, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli import main
from cli.pipeline import parse_step


@pytest.fixture
def pair(tmp_path: Path, astronaut: np.ndarray) -> tuple[Path, Path]:
    small = astronaut[::2, ::2]
    edited = small.copy()
    edited[40:60, 100:130] = 255
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(small).save(a)
    Image.fromarray(edited).save(b)
    return a, b


def test_parse_step_forms() -> None:
    assert parse_step("ssim") == "ssim"
    assert parse_step("highpass_filter:factor=0.2") == {"name": "highpass_filter", "factor": 0.2}
    assert parse_step('{"name": "lpips", "net": "vgg"}') == {"name": "lpips", "net": "vgg"}


def test_diff_writes_heatmap_and_json(pair, tmp_path: Path, capsys) -> None:
    out = tmp_path / "map.png"
    rc = main(["diff", str(pair[0]), str(pair[1]), "-o", str(out), "--json",
               "--strategy", "difference", "--post", "identity", "--colorbar", "--regions", "3"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["shape"] == [256, 256]
    assert data["config"]["strategy"]["name"] == "difference"
    top = data["regions"][0]
    assert (top["x"], top["y"], top["width"], top["height"]) == (100, 40, 30, 20)
    assert Image.open(out).width > 256  # colorbar added


def test_diff_directories_pairs_by_name(tmp_path: Path, pair, capsys) -> None:
    da, db = tmp_path / "ref", tmp_path / "cand"
    da.mkdir()
    db.mkdir()
    for name in ("one", "two"):
        (da / f"{name}.png").write_bytes(pair[0].read_bytes())
        (db / f"{name}.png").write_bytes(pair[1].read_bytes())
    rc = main(["diff", str(da), str(db), "-o", str(tmp_path / "maps"), "--json", "-q"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert [Path(p["reference"]).name for p in data["pairs"]] == ["one.png", "two.png"]
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["one.png", "two.png"]


def test_invalid_pipeline_exits_2_naming_the_field(pair, capsys) -> None:
    rc = main(["diff", str(pair[0]), str(pair[1]), "--pre", "highpass_filter:factor=3"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "pre_processor.factor" in err


def test_max_pixels_sets_the_decoders_limit(pair, capsys) -> None:
    """--max-pixels is the largest image decoded (above Pillow's ~89 MP guard it lets big
    scans through; here below the pair's 256x256, so it refuses them, naming the limit)."""
    assert main(["diff", str(pair[0]), str(pair[1]), "-q", "--max-pixels", "60000"]) == 1
    assert "exceeds the limit of 60000" in capsys.readouterr().err
    assert main(["diff", str(pair[0]), str(pair[1]), "-q", "--json",
                 "--max-pixels", "70000"]) == 0
    assert main(["diff", str(pair[0]), str(pair[1]), "-q", "--max-pixels", "0"]) == 1
    assert "--max-pixels must be at least 1" in capsys.readouterr().err


def test_output_must_name_a_png_and_config_must_be_json(pair, tmp_path: Path, capsys) -> None:
    assert main(["diff", str(pair[0]), str(pair[1]), "-q", "-o", str(tmp_path / "m.jpg")]) == 1
    assert "give a name ending in .png" in capsys.readouterr().err
    assert not (tmp_path / "m.jpg").exists()
    assert main(["diff", str(pair[0]), str(pair[1]), "-q", "--config", "{bad"]) == 1
    assert "--config is not valid JSON" in capsys.readouterr().err
    missing = tmp_path / "nofile.json"
    assert main(["diff", str(pair[0]), str(pair[1]), "-q", "--config", f"@{missing}"]) == 1
    err = capsys.readouterr().err
    assert f"--config @{missing}: cannot read" in err and "Errno" not in err


def test_directories_want_a_directory_not_a_png_name(pair, tmp_path: Path, capsys) -> None:
    refs, cands = tmp_path / "refs", tmp_path / "cands"
    for d, src in ((refs, pair[0]), (cands, pair[1])):
        d.mkdir()
        (d / "x.png").write_bytes(src.read_bytes())
    out = tmp_path / "map.png"
    assert main(["diff", str(refs), str(cands), "-q", "-o", str(out)]) == 1
    assert "directory input writes one heatmap per pair" in capsys.readouterr().err
    assert not out.exists()


def test_size_mismatch_exits_1_with_both_sizes(pair, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other.png"
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(other)
    assert main(["diff", str(pair[0]), str(other)]) == 1
    err = capsys.readouterr().err
    assert "256x256" in err and "20x10" in err
    assert main(["diff", str(pair[0]), str(other), "--size-policy", "resize", "-q"]) == 0


def test_diff_metrics_option_chooses_the_scores(pair, capsys) -> None:
    from core import Finder

    assert main(["diff", str(pair[0]), str(pair[1])]) == 0  # default: cheap scores only
    assert set(json.loads(capsys.readouterr().out)["metrics"]) == {"mse", "psnr"}
    assert main(["diff", str(pair[0]), str(pair[1]), "--metrics", "ssim,psnr"]) == 0
    got = json.loads(capsys.readouterr().out)["metrics"]
    want = Finder(device="cpu").analyze(*pair, metrics=["ssim", "psnr"], regions=False)[0]
    assert set(got) == {"ssim", "psnr"}
    assert got["ssim"] == pytest.approx(want.metrics["ssim"], rel=1e-5)
    assert main(["diff", str(pair[0]), str(pair[1]), "--metrics", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == {}
    assert main(["diff", str(pair[0]), str(pair[1]), "--metrics", "ssim,nope"]) == 1
    err = capsys.readouterr().err
    assert "'nope'" in err and "ssim" in err and "lpips" in err  # the valid names


def test_diff_says_plainly_when_nothing_differs(pair, tmp_path: Path, capsys) -> None:
    out = tmp_path / "map.png"
    assert main(["diff", str(pair[0]), str(pair[0]), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{pair[0]} vs {pair[0]}: no significant difference found")
    # the default heatmap is in fixed units: an identical pair looks empty
    from core.render import lut

    first = lut("magma")[0]
    assert (np.asarray(Image.open(out).convert("RGB")) == first).all()
    assert main(["diff", str(pair[0]), str(pair[0]), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["regions"] == [] and record["summary"] == "no significant difference found"
    assert main(["diff", str(pair[0]), str(pair[1]), "-o", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{pair[0]} vs {pair[1]}: ") and "significant region" in line
    # the edit shows in the fixed-unit heatmap
    assert not (np.asarray(Image.open(out).convert("RGB")) == first).all()

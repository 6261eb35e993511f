"""difference-finder weights fetch|list: the download from the command line, and its errors."""

from __future__ import annotations

import re

import torch

from cli import main
from core.models import ModelCache
from core.weights import BACKBONES
from tests.conftest import write_standin_weights
from tests.core.test_weights import publish, standin


def test_cli_fetch_then_lpips_loads_the_file(server, home, monkeypatch, capsys, tmp_path):
    """A real (stand-in) SqueezeNet state dict fetched by the CLI is what LPIPS then loads."""
    src = write_standin_weights(tmp_path / "src", ("squeeze",)) / BACKBONES["squeeze"].filename
    squeeze = publish(server, monkeypatch, "squeeze", src.read_bytes())
    monkeypatch.setenv("DF_WEIGHTS_BASE_URL", server.url)

    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"squeeze\s+missing\s+{re.escape(str(home / squeeze.filename))}", out)

    assert main(["weights", "fetch", "--nets", "squeeze", "-q"]) == 0
    assert "squeeze  downloaded" in capsys.readouterr().out
    assert main(["weights", "fetch", "--nets", "squeeze", "-q"]) == 0
    assert "squeeze  present" in capsys.readouterr().out

    assert main(["weights", "list", "--verify"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"squeeze\s+present, hash ok", out)
    assert re.search(r"alex\s+missing", out) and re.search(r"vgg\s+missing", out)

    model = ModelCache().lpips("squeeze", "cpu")  # loads through torchvision from TORCH_HOME
    first = next(model.net.parameters())
    expected = next(iter(torch.load(src, weights_only=True).values()))
    assert torch.equal(first, expected)


def test_cli_reports_a_failed_fetch(server, home, monkeypatch, capsys):
    publish(server, monkeypatch, "alex", standin(11), served=b"garbage")

    assert main(["weights", "fetch", "--nets", "alex", "--base-url", server.url, "-q"]) == 1
    assert "does not start with" in capsys.readouterr().err

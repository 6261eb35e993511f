"""The CLI's --help and weights list do not load torch (they must start in a blink)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from cli.main import main
try:
    main({argv!r})
except SystemExit:
    pass
print("TORCH-LOADED" if "torch" in sys.modules else "NO-TORCH")
"""


@pytest.mark.parametrize("argv", [["--help"], ["diff", "--help"], ["compare", "--help"],
                                  ["weights", "list"]])
def test_light_commands_do_not_import_torch(argv: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("NO-TORCH")


def test_weights_list_without_torch_names_the_hub_directory(tmp_path: Path) -> None:
    """The torch-free hub path is torch's own (checked against torch.hub here)."""
    import torch

    from core.weights import checkpoint_dir

    assert checkpoint_dir() == Path(torch.hub.get_dir()) / "checkpoints"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "cli", "weights", "list"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env=env).stdout
    assert str(tmp_path / "hub" / "checkpoints") in out


def test_core_function_compare_survives_importing_its_module() -> None:
    import core
    import core.compare

    assert callable(core.compare) and core.compare.__name__ == "compare"

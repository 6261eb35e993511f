"""The command line's public surface, its place in the layers (nothing imports it), and
``python -m cli``."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import cli

ROOT = Path(cli.__file__).parent.parent


def test_cli_surface_is_pinned() -> None:
    assert sorted(cli.__all__) == ["build_parser", "main"]
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    assert list(commands) == ["diff", "serve", "compare", "weights"]


def test_nothing_imports_the_cli() -> None:
    for package in ("core", "service", "difference_finder"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) and
                         not node.level else [])
                assert not any(n == "cli" or n.startswith("cli.") for n in names), path


def test_the_library_has_no_argparse() -> None:
    for package in ("core", "difference_finder"):
        for path in (ROOT / package).rglob("*.py"):
            assert "argparse" not in path.read_text(), path


def test_python_m_cli_prints_help() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "cli", "--help"], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "difference-finder" in out.stdout
    assert "{diff,serve,compare,weights}" in out.stdout


def test_a_bad_service_setting_is_named_as_a_setting() -> None:
    """DF_* values are validated before anything starts, each error naming its variable."""
    for name, value, text in (("DF_QUEUE_SIZE", "abc", "valid integer"),
                              ("DF_LOG_LEVEL", "verbose", "'debug'"),
                              ("DF_LABEL_STUDIO_URL", "notaurl", "http://"),
                              ("DF_RETAIN_MEMORY", "maybe", "valid boolean"),
                              ("DF_ANNOTATION_CONFIG", '{"strategy":', "cannot be parsed")):
        env = {**os.environ, "PYTHONPATH": str(ROOT), name: value}
        for command in (["cli", "serve"], ["service"]):  # the CLI and python -m service
            out = subprocess.run([sys.executable, "-m", *command, "--port", "0"],
                                 capture_output=True, text=True, env=env, cwd=ROOT,
                                 timeout=120)
            assert out.returncode == 2, out.stderr
            assert "invalid setting" in out.stderr and f"  {name}:" in out.stderr, out.stderr
            assert text in out.stderr and "pipeline" not in out.stderr
            assert "Traceback" not in out.stderr


def test_a_device_not_here_is_one_line_from_either_launcher() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DF_DEVICES": "tpu"}
    for command in (["cli", "serve"], ["service"]):
        out = subprocess.run([sys.executable, "-m", *command, "--port", "0"],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert out.returncode == 1, out.stderr
        assert "invalid device 'tpu': give auto, cpu" in out.stderr
        assert "Traceback" not in out.stderr


def test_the_library_refuses_a_retain_memory_setting_it_cannot_read() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DF_RETAIN_MEMORY": "maybe"}
    out = subprocess.run([sys.executable, "-c", "from core import Finder; Finder()"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 1 and "ConfigError: DF_RETAIN_MEMORY='maybe'" in out.stderr


def test_a_reader_that_stops_early_is_not_an_error(tmp_path) -> None:
    """``difference-finder diff ... --json | head``: no "Broken pipe" error message."""
    import numpy as np
    from PIL import Image

    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "diff", str(tmp_path / "a.png"),
                             str(tmp_path / "b.png"), "--json", "-q", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Broken pipe" not in err and "Traceback" not in err, err

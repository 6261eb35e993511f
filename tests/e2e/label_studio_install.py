"""Install PyPI ``label-studio`` into its own virtual environment, cached between runs.

The venv lives at ``$DF_LABEL_STUDIO_VENV`` or
``${XDG_CACHE_HOME:-~/.cache}/difference-finder/label-studio-<version>``; a file lock keeps
parallel test runs from installing into it at once, and a marker file written last says the
install finished (a half-done venv is removed and redone). Usable as a script:
``python -m tests.e2e.label_studio_install`` prints the venv's ``label-studio`` executable.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

#: the Label Studio release the real-server tests run against
VERSION = os.environ.get("DF_LABEL_STUDIO_VERSION", "1.23.2")
MARKER = ".difference-finder-installed"


class InstallError(RuntimeError):
    """Label Studio could not be installed (no network, no PyPI, pip failed); says why."""


def venv_dir(version: str = VERSION) -> Path:
    if explicit := os.environ.get("DF_LABEL_STUDIO_VENV"):
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "difference-finder" / f"label-studio-{version}"


def executable(venv: Path) -> Path:
    return venv / "bin" / "label-studio"


def ensure_label_studio(version: str = VERSION, timeout: float = 1500.0) -> Path:
    """Return the venv holding ``label-studio==version``, installing it first if missing."""
    venv = venv_dir(version)
    if (venv / MARKER).exists():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be installing: wait for it
        if (venv / MARKER).exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)  # a half-finished earlier attempt
        start = time.monotonic()
        base = getattr(sys, "_base_executable", sys.executable)
        steps = [[base, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                  "--disable-pip-version-check", f"label-studio=={version}"]]
        for cmd in steps:
            left = timeout - (time.monotonic() - start)
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=left,
                                      stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired as e:
                raise InstallError(f"{' '.join(cmd)} took over {timeout:.0f} s") from e
            if done.returncode != 0:
                raise InstallError(f"{' '.join(cmd)} failed ({done.returncode}):\n"
                                   f"{(done.stderr or done.stdout)[-3000:]}")
        if not executable(venv).exists():
            raise InstallError(f"pip installed label-studio but {executable(venv)} is missing")
        (venv / MARKER).write_text(f"label-studio=={version} in {time.monotonic() - start:.0f} s\n")
    return venv


if __name__ == "__main__":
    t0 = time.monotonic()
    path = ensure_label_studio()
    print(executable(path))
    print(f"{(path / MARKER).read_text().strip()}; this call {time.monotonic() - t0:.1f} s",
          file=sys.stderr)

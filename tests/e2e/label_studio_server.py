"""A real Label Studio server for end-to-end tests: the PyPI release from
:mod:`tests.e2e.label_studio_install`, started on a free loopback port with a temporary data
directory, telemetry, Sentry and the version check off, one user created from the command
line, a legacy token and a personal access token (PAT) for it.

Findings against Label Studio 1.23 (its sources in the venv): ``label-studio start
--username --password --user-token --enable-legacy-api-token`` creates the user and an
organisation with legacy tokens on (new organisations have them off:
``jwt_auth.models.JWTSettings.legacy_api_tokens_enabled``); ``POST /api/token/`` creates the
user's PAT (``{"token": <JWT refresh token>}``); ``POST /api/jwt/settings`` switches legacy
tokens per organisation; ``ML_BLOCK_LOCAL_IP=false`` and ``SSRF_PROTECTION_ENABLED=false`` let
an ML backend on loopback connect (the second for the webhook Label Studio creates for it).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import free_port
from tests.e2e.label_studio_install import executable

#: settings that keep the server local and quiet (Label Studio reads NAME and
#: LABEL_STUDIO_NAME alike)
QUIET_ENV = {
    "COLLECT_ANALYTICS": "false", "LATEST_VERSION_CHECK": "false", "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "", "DISABLE_SIGNUP_WITHOUT_LINK": "true",
    "ML_BLOCK_LOCAL_IP": "false",  # the ML backend under test listens on 127.0.0.1
    # ... and connecting it creates a webhook to <backend>/webhook, refused on loopback
    # ("URL resolves to a reserved network address", 403) unless this is off
    "SSRF_PROTECTION_ENABLED": "false",
    "USE_NGINX_FOR_UPLOADS": "false",  # no nginx: /storage-data/ served by Django itself
    "LOCAL_FILES_SERVING_ENABLED": "true", "DEBUG": "false", "LOG_LEVEL": "WARNING",
}


class LabelStudio:
    """``label-studio start`` in a subprocess; ``api()`` speaks to it with a token."""

    def __init__(self, venv: Path, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.username = "tester@example.com"
        # hex, not urlsafe: a value starting with "-" would read as an option to argparse
        self.password = "pw" + secrets.token_hex(12)
        self.legacy_token = secrets.token_hex(20)
        self.files_root = data_dir / "local-files"
        self.files_root.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "label-studio.log"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DF_", "LABEL_STUDIO_", "HEARTEX_"))}
        env.update(QUIET_ENV)
        env.update({"LABEL_STUDIO_BASE_DATA_DIR": str(data_dir / "data"),
                    "LOCAL_FILES_DOCUMENT_ROOT": str(self.files_root),
                    "HOME": str(data_dir), "PYTHONUNBUFFERED": "1"})
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(executable(venv)), "start", "--no-browser", "--internal-host", "127.0.0.1",
             "--port", str(self.port), "--host", self.url, "--username", self.username,
             f"--password={self.password}", f"--user-token={self.legacy_token}",
             "--enable-legacy-api-token"],
            cwd=data_dir, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)
        self.pat: str | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Poll /health until it answers 200 (the first start runs all migrations)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"label-studio exited:\n{self.log()}"
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"label-studio not ready within {timeout} s:\n{self.log()}")

    def headers(self, token: str | None = None) -> dict[str, str]:
        """``Token`` for the legacy token, ``Bearer`` for a JWT access token."""
        token = token or self.legacy_token
        return {"Authorization": ("Bearer " if token.count(".") == 2 else "Token ") + token}

    def api(self, method: str, path: str, token: str | None = None, *, ok: bool = True,
            **kwargs: Any) -> httpx.Response:
        r = httpx.request(method, self.url + path, headers=self.headers(token), timeout=120,
                          **kwargs)
        if ok:
            assert r.is_success, f"{method} {path}: {r.status_code} {r.text[:2000]}"
        return r

    def create_pat(self) -> str:
        """The user's personal access token (a JWT refresh token), created once."""
        if self.pat is None:
            self.pat = self.api("POST", "/api/token/").json()["token"]
        return self.pat

    def access_token(self, pat: str) -> str:
        """What a client does with a PAT: exchange it for a short-lived access token."""
        r = httpx.post(self.url + "/api/token/refresh/", json={"refresh": pat}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["access"]

    def set_legacy_tokens(self, enabled: bool, pat: str) -> None:
        """Turn the organisation's legacy tokens on or off (authenticated with the PAT)."""
        access = self.access_token(pat)
        current = self.api("GET", "/api/jwt/settings", access).json()
        self.api("POST", "/api/jwt/settings", access,
                 json={**current, "legacy_api_tokens_enabled": enabled})

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: uwsgi/gunicorn children
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()

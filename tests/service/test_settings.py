"""Service settings from DF_* environment variables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_defaults(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("DF_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert s.devices == ["auto"] and s.preload == [] and s.api_keys == []
    assert s.cors_origins == [] and s.allow_private_urls is False
    # room for two base64 images of the upload cap
    assert s.body_limit >= 2 * s.max_upload_bytes * 4 // 3


def test_lists_from_environment(monkeypatch):
    monkeypatch.setenv("DF_DEVICES", "cuda:0, cuda:1")
    monkeypatch.setenv("DF_PRELOAD", '["alex", "squeeze"]')
    monkeypatch.setenv("DF_API_KEYS", "k1,k2")
    monkeypatch.setenv("DF_CORS_ORIGINS", "https://a.example")
    monkeypatch.setenv("DF_QUEUE_SIZE", "3")
    s = Settings()
    assert s.devices == ["cuda:0", "cuda:1"]
    assert s.preload == ["alex", "squeeze"]
    assert [k.get_secret_value() for k in s.api_keys] == ["k1", "k2"]
    assert "k1" not in repr(s)  # keys are secrets
    assert s.cors_origins == ["https://a.example"] and s.queue_size == 3


@pytest.mark.parametrize(("key", "value", "message"), [
    ("DF_PRELOAD", "alex,resnet", "valid: alex, vgg, squeeze"),
    ("DF_DEVICES", "auto,cpu", "'auto' cannot be combined"),
    ("DF_QUEUE_SIZE", "-1", "greater than or equal to 0"),
    ("DF_REQUEST_TIMEOUT", "0", "greater than 0"),
])
def test_invalid_settings_are_named(monkeypatch, key, value, message):
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_cpu_threads_leave_a_core(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert Settings(torch_threads=None).cpu_threads(1) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert Settings().cpu_threads(1) == 15
    assert Settings(torch_threads=4).cpu_threads(1) == 4


def test_retain_memory_setting_decides_the_heap_configuration() -> None:
    """``Settings(retain_memory=False)`` (what DF_RETAIN_MEMORY=0 reads as) leaves the C
    allocator alone when the service builds its state, as the environment variable does for
    the library; the default configures it (glibc)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from service.settings import Settings; "
            "from service.state import ServiceState; from core.memory import configure; "
            "ServiceState.build(Settings(devices=['cpu'], retain_memory=sys.argv[1] == '1')); "
            "print(configure())")
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "DF_RETAIN_MEMORY"}
    got = {flag: subprocess.run([sys.executable, "-c", code, flag], capture_output=True,
                                text=True, cwd=root, env=env, timeout=120).stdout.strip()
           for flag in ("0", "1")}
    assert got["0"] == "False"
    assert got["1"] == ("True" if os.confstr("CS_GNU_LIBC_VERSION") else "False")

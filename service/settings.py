"""Service settings, read from ``DF_*`` environment variables (pydantic-settings).

Lists (``DF_DEVICES``, ``DF_PRELOAD``, ``DF_CORS_ORIGINS``, ``DF_API_KEYS``,
``DF_URL_ALLOWLIST``) are comma-separated, or a JSON array. The README's settings table
mirrors this class.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from core import PipelineConfig
from core.weights import BACKBONES

from .urlfetch import UrlPolicy

__all__ = ["Settings", "setting_errors"]

_MiB = 1024 * 1024


def _split(value: Any) -> Any:
    """``"a, b"`` or ``'["a", "b"]'`` -> ``["a", "b"]``; other values pass through."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything an operator can tune; see the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="DF_", extra="ignore", frozen=True)

    devices: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["auto"],
        description="compute devices, one worker each: 'auto' (every visible GPU, else the "
        "CPU), or e.g. 'cuda:0,cuda:1' or 'cpu'")
    queue_size: Annotated[int, Field(ge=0, le=100_000)] = Field(
        16, description="requests that may wait (being decoded or queued) beyond those "
        "being computed; more get 503 with Retry-After at once")
    request_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        60.0, description="seconds from arrival until a request that is still waiting "
        "gets 504")
    max_upload_bytes: Annotated[int, Field(ge=1)] = Field(
        25 * _MiB, description="largest encoded image file (upload, decoded base64 or "
        "download), in bytes; larger gets 413")
    max_body_bytes: Annotated[int, Field(ge=1)] | None = Field(
        None, description="largest request body in bytes; default: room for two "
        "base64-encoded images of max_upload_bytes plus 1 MiB")
    max_pixels: Annotated[int, Field(ge=1)] = Field(
        40_000_000, description="largest image area (width x height), checked from the header")
    max_side: Annotated[int, Field(ge=1)] = Field(
        16384, description="largest image width or height, checked from the header")
    preload: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="LPIPS nets (alex, vgg, squeeze) loaded and "
        "warmed on every device before /readyz turns 200")
    warmup_size: Annotated[int, Field(ge=16, le=4096)] = Field(
        256, description="side in pixels of the dummy pair used to warm each worker")
    cpu_workers: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None, description="worker threads on the CPU when DF_DEVICES is 'cpu' (or 'auto' "
        "finds no GPU); default: 2 where there are 2+ cores, so two requests compute at once")
    torch_threads: Annotated[int, Field(ge=1)] | None = Field(
        None, description="intra-op threads of each CPU worker; default: (CPU count - 1) "
        "shared by the CPU workers, at least 1 (decoding and HTTP keep a core)")
    worker_nice: Annotated[int, Field(ge=0, le=19)] = Field(
        5, description="how much lower than the event loop the CPU workers (and the torch "
        "threads they start) and the decode/encode threads are scheduled (Linux nice "
        "increment): health checks and refusals stay quick while every worker computes; 0 "
        "keeps them equal")
    io_threads: Annotated[int, Field(ge=1, le=256)] | None = Field(
        None, description="threads that decode, fetch and encode off the event loop; "
        "default: CPU count + 2, at most 16")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins allowed by CORS ('*' for any); none by "
        "default")
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="if set, every request but /healthz, /readyz "
        "and the docs needs 'Authorization: Bearer <key>'")
    metrics_auth: bool = Field(
        True, description="whether /metrics needs an API key when api_keys is set")
    allow_private_urls: bool = Field(
        False, description="let image URLs point at loopback/private/link-local addresses "
        "(for lab networks; off by default)")
    url_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="hosts, host:port pairs or http(s) URL prefixes "
        "that image URLs may point at even when they resolve to loopback/private addresses "
        "(e.g. 'nas.lab,10.0.0.5:8080,http://files.lab/images/'); empty by default")
    url_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        20.0, description="total seconds allowed for downloading one image URL")
    url_connect_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        5.0, description="seconds allowed to connect to an image URL's host")
    url_max_redirects: Annotated[int, Field(ge=0, le=20)] = Field(
        3, description="redirects followed per image URL, each re-checked")
    label_studio_url: str | None = Field(
        None, validation_alias=AliasChoices("DF_LABEL_STUDIO_URL", "LABEL_STUDIO_URL",
                                            "label_studio_url"),
        description="Label Studio's base URL (LABEL_STUDIO_URL works too): task images given "
        "as /data/... or upload/... paths or cloud URIs are fetched from it, under the URL "
        "policy")
    label_studio_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DF_LABEL_STUDIO_API_KEY", "LABEL_STUDIO_API_KEY",
                                            "label_studio_api_key"),
        description="Label Studio access token (LABEL_STUDIO_API_KEY works too), sent as "
        "'Authorization: Token <key>' to label_studio_url only")
    label_studio_reference_field: str = Field(
        "reference", min_length=1, description="Label Studio task data field with the "
        "reference image")
    label_studio_candidate_field: str = Field(
        "candidate", min_length=1, description="Label Studio task data field with the "
        "candidate image (the one annotated)")
    annotation_config: PipelineConfig = Field(
        default_factory=PipelineConfig, repr=False, description="the pipeline (a JSON "
        "PipelineConfig) behind Label Studio predictions and CVAT detections")
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = Field(
        "info", description="uvicorn log level: critical, error, warning, info, debug, trace "
        "(any case)")
    access_log: bool = Field(True, description="log one line per request")
    retain_memory: bool = Field(
        True, description="glibc only: large blocks come from the C heap and freed ones are "
        "reused, not unmapped and page-faulted anew (also read by the library, core/memory.py)"
        "; 0 leaves the allocator alone")
    memory_budget: Annotated[int, Field(ge=1)] | None = Field(
        None, description="bytes of host memory that admitted requests' working memory may "
        "take (estimated from image headers x the pipeline's measured factor); a full "
        "budget is 503 with Retry-After, a request needing more than all of it 413; "
        "default: memory_budget_fraction of the memory this process may use")
    memory_budget_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.5, description="share of the memory this process may use (its cgroup limit in a "
        "container, else the machine's RAM) that is the default memory budget; also the "
        "share of each CUDA device's memory that its budget is")
    drain_seconds: Annotated[float, Field(ge=0, le=60)] = Field(
        10.0, description="an early answer (503, 413, 401) first reads and discards the "
        "unread request body for up to this many seconds in all (2 s at most between two "
        "reads, up to twice the body limit and at least 1 GiB), so clients still sending can "
        "read it")
    shutdown_timeout: Annotated[float, Field(ge=0, le=3600)] = Field(
        30.0, description="on SIGTERM, seconds in-flight requests get to finish")
    shutdown_delay: Annotated[float, Field(ge=0, le=600)] = Field(
        0.0, description="on SIGTERM, seconds the server goes on accepting and serving with "
        "/readyz answering 503 'shutting down', before it stops accepting and drains: a load "
        "balancer polling /readyz takes the replica out of rotation first (Kubernetes: a "
        "few seconds, more than the readiness probe's period)")

    @field_validator("devices", "preload", "cors_origins", "api_keys", "url_allowlist",
                     mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one device is needed (or 'auto')")
        if "auto" in value and len(value) > 1:
            raise ValueError("'auto' cannot be combined with other devices")
        if len(set(value)) != len(value):
            raise ValueError(f"a device is listed twice: {value}")
        return value

    @field_validator("preload")
    @classmethod
    def _nets(cls, value: list[str]) -> list[str]:
        unknown = [net for net in value if net not in BACKBONES]
        if unknown:
            raise ValueError(f"unknown LPIPS net(s) {unknown}; valid: {', '.join(BACKBONES)}")
        return list(dict.fromkeys(value))

    @field_validator("url_allowlist")
    @classmethod
    def _allowlist(cls, value: list[str]) -> list[str]:
        UrlPolicy(allowlist=tuple(value))  # raises ValueError naming a malformed entry
        return value

    @field_validator("label_studio_url")
    @classmethod
    def _label_studio_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https://")
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(not k.get_secret_value() for k in value):
            raise ValueError("API keys cannot be empty")
        return value

    @property
    def body_limit(self) -> int:
        """The effective request body cap in bytes."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return 2 * math.ceil(self.max_upload_bytes / 3) * 4 + _MiB

    @property
    def drain_bytes(self) -> int:
        """The most body bytes an early answer reads and discards before it is sent: twice
        the body limit, at least 1 GiB (a body over it gets ``Connection: close``, and a
        client still sending sees a reset, so the bound is wide; time bounds it too)."""
        return max(2 * self.body_limit, 1 << 30)

    @property
    def io_pool_size(self) -> int:
        return self.io_threads or min(16, (os.cpu_count() or 1) + 2)

    @property
    def cpu_worker_count(self) -> int:
        if self.cpu_workers is not None:
            return self.cpu_workers
        return 2 if (os.cpu_count() or 1) >= 2 else 1

    def cpu_threads(self, cpu_workers: int) -> int:
        """Intra-op threads for each CPU worker."""
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, ((os.cpu_count() or 1) - 1) // max(1, cpu_workers))


def _setting_name(loc: tuple[object, ...]) -> str:
    """``DF_X`` (and the path inside a JSON setting) of a Settings error's location; a loc
    that already is an environment name (an alias such as ``DF_LABEL_STUDIO_URL``) as is."""
    if not loc:
        return "DF_?"
    name = str(loc[0]).upper()
    inner = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    return (name if name.startswith(("DF_", "LABEL_STUDIO_")) else f"DF_{name}") + inner


def setting_errors(exc: Exception) -> list[str] | None:
    """One line per invalid ``DF_*`` variable of a :class:`Settings` error (a validation
    error, or a value pydantic-settings could not parse, such as malformed JSON): its name
    and what is wrong, what the CLI and ``python -m service`` print before exiting 2; None
    for any other exception."""
    if isinstance(exc, ValidationError) and exc.title == "Settings":
        return [f"{_setting_name(e['loc'])}: {e['msg']}" for e in exc.errors()]
    if isinstance(exc, SettingsError):
        field = re.search(r'field "([^"]+)"', str(exc))
        name = _setting_name((field.group(1),)) if field else "DF_?"
        why = exc.__cause__
        return [f"{name}: cannot be parsed" + (f" ({why})" if why is not None else "")]
    return None

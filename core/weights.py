"""LPIPS's torchvision backbone weights: where they live, whether they are there, and
downloading them, checked against their hashes.

lpips builds its backbone with torchvision, which would download the ImageNet
weights into ``$TORCH_HOME/hub/checkpoints`` when they are absent. We check
first and raise :class:`WeightsMissingError` instead: no silent download, no
hang, never a randomly initialised network. :func:`fetch_weights` is the
explicit download (``difference-finder weights fetch``).

torchvision names every weight file ``<name>-<first 8 hex digits of its sha256>.pth``;
a download is accepted only when its SHA-256 starts with that prefix. Files are
written to ``<name>.part`` first (resumed with an HTTP Range request when the
server allows it, retried on network errors) and renamed into place only once
verified, so a half-written or corrupted file is never left where torch looks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ChecksumError, WeightsFetchError, WeightsMissingError

if TYPE_CHECKING:  # httpx is imported when something is downloaded, not with the library
    import httpx

__all__ = [
    "BACKBONES",
    "DEFAULT_BASE_URL",
    "Backbone",
    "ChecksumError",
    "FetchResult",
    "WeightsFetchError",
    "checkpoint_dir",
    "fetch_weights",
    "require_weights",
    "sha256_file",
    "verify_file",
    "weights_base_url",
    "weights_status",
]


@dataclass(frozen=True)
class Backbone:
    """A torchvision weight file LPIPS needs for one ``net``."""

    net: str
    filename: str
    url: str
    sha256_prefix: str  # torchvision's convention: the hash prefix is in the name

    @property
    def path(self) -> Path:
        return checkpoint_dir() / self.filename


#: torchvision's own download location
DEFAULT_BASE_URL = "https://download.pytorch.org/models/"
_TV = DEFAULT_BASE_URL
BACKBONES: dict[str, Backbone] = {
    "alex": Backbone("alex", "alexnet-owt-7be5be79.pth", _TV + "alexnet-owt-7be5be79.pth",
                     "7be5be79"),
    "vgg": Backbone("vgg", "vgg16-397923af.pth", _TV + "vgg16-397923af.pth", "397923af"),
    "squeeze": Backbone("squeeze", "squeezenet1_1-b8a52dc0.pth",
                        _TV + "squeezenet1_1-b8a52dc0.pth", "b8a52dc0"),
}


def checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` as torch.hub resolves it right now.

    Without torch loaded (``difference-finder weights list``), the same rule from the
    environment: ``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``.
    """
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "hub"):
        return Path(torch.hub.get_dir()) / "checkpoints"
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))
    return Path(home) / "hub" / "checkpoints"


def require_weights(net: str) -> Path:
    """Return the weight file for ``net`` or raise a clear, actionable error."""
    backbone = BACKBONES[net]
    path = backbone.path
    if not path.is_file() or path.stat().st_size == 0:
        raise WeightsMissingError(
            f"LPIPS net {net!r} needs the torchvision weight file {path}, which is missing. "
            f"Run `difference-finder weights fetch --nets {net}` or download {backbone.url} "
            f"into {path.parent} (set TORCH_HOME to use another directory).",
            file=str(path), url=backbone.url, net=net,
        )
    return path


def weights_status() -> dict[str, bool]:
    """Which LPIPS nets have their backbone weights on disk."""
    return {net: b.path.is_file() and b.path.stat().st_size > 0 for net, b in BACKBONES.items()}


# --- download: `fetch_weights` ----------------------------------------------------------

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_weights` did for one net."""

    net: str
    path: Path
    action: str  # "present" (already there and valid), "cached" (copied) or "downloaded"
    sha256: str
    size: int


def weights_base_url() -> str:
    """The download base URL: ``$DF_WEIGHTS_BASE_URL`` or torchvision's own."""
    return os.environ.get("DF_WEIGHTS_BASE_URL") or DEFAULT_BASE_URL


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, backbone: Backbone) -> str:
    """Return the file's SHA-256, or raise :class:`ChecksumError` if it lacks the prefix."""
    digest = sha256_file(path)
    if not digest.startswith(backbone.sha256_prefix):
        raise ChecksumError(
            f"{path.name}: SHA-256 {digest[:16]}... does not start with "
            f"{backbone.sha256_prefix} as its name says; the file is corrupt or not the "
            f"published one",
            file=str(path), net=backbone.net, sha256=digest,
            expected_prefix=backbone.sha256_prefix,
        )
    return digest


def _parse_nets(nets: str | Iterable[str] | None) -> list[str]:
    if nets is None:
        return list(BACKBONES)
    names = [n.strip() for n in nets.split(",")] if isinstance(nets, str) else list(nets)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in BACKBONES]
    if unknown or not names:
        raise WeightsFetchError(
            f"unknown LPIPS net(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(BACKBONES)}", nets=names)
    return list(dict.fromkeys(names))


class _Retryable(Exception):
    """An attempt failed in a way another attempt may fix."""


def _download_once(client: httpx.Client, url: str, part: Path, progress: bool,
                   desc: str) -> None:
    """One attempt: continue ``part`` from its current size (Range) or start it afresh."""
    import httpx

    have = part.stat().st_size if part.exists() else 0
    # identity encoding: byte offsets for Range must be offsets into the file itself
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with client.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 416 and have:
                # nothing left to send from there: either complete, or the .part is bad
                total = resp.headers.get("content-range", "").rpartition("/")[2]
                if total.isdigit() and int(total) == have:
                    return
                part.unlink()
                raise _Retryable(f"{url}: range not satisfiable, restarting")
            if resp.status_code in (429, 500, 502, 503, 504):
                raise _Retryable(f"{url}: HTTP {resp.status_code}")
            if resp.status_code not in (200, 206):
                raise WeightsFetchError(f"{url}: HTTP {resp.status_code}", url=url,
                                        status_code=resp.status_code)
            mode = "ab"
            if resp.status_code == 206:
                start = resp.headers.get("content-range", "").removeprefix("bytes ")
                if not start.startswith(f"{have}-"):
                    part.unlink(missing_ok=True)
                    raise _Retryable(f"{url}: server resumed at the wrong offset")
            else:  # 200: the server ignored Range (or there was nothing to resume)
                mode, have = "wb", 0
            length = resp.headers.get("content-length")
            total = have + int(length) if length and length.isdigit() else None
            bar = _bar(progress, total, have, desc)
            try:
                with open(part, mode) as f:
                    for chunk in resp.iter_raw():  # as received: a drop keeps what came
                        f.write(chunk)
                        bar.update(len(chunk))
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                bar.close()
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise _Retryable(f"{url}: {type(exc).__name__}: {exc}") from exc


def _bar(progress: bool, total: int | None, initial: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
                unit_divisor=1024, disable=not progress, file=sys.stderr, leave=False)


def _copy_atomic(src: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".copy")
    shutil.copyfile(src, tmp)
    os.replace(tmp, target)


def _fetch_one(client: httpx.Client, backbone: Backbone, url: str, dest: Path, retries: int,
               backoff: float, progress: bool, cache: Path | None) -> FetchResult:
    target = dest / backbone.filename
    if target.is_file():
        try:
            digest = verify_file(target, backbone)
            return FetchResult(backbone.net, target, "present", digest, target.stat().st_size)
        except ChecksumError:
            target.unlink()  # never leave a corrupt file where torch would load it
    cached = cache / backbone.filename if cache is not None else None
    if cached is not None and cached.is_file():
        try:
            digest = verify_file(cached, backbone)
        except ChecksumError:
            cached.unlink()
        else:
            _copy_atomic(cached, target)
            return FetchResult(backbone.net, target, "cached", digest, target.stat().st_size)
    part = target.with_name(target.name + ".part")
    last = ""
    resumed_any = part.exists()
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        resumed_any = resumed_any or (part.exists() and part.stat().st_size > 0)
        try:
            _download_once(client, url, part, progress, backbone.filename)
        except _Retryable as exc:
            last = str(exc)
            continue
        try:
            digest = verify_file(part, backbone)
        except ChecksumError:
            part.unlink(missing_ok=True)
            if resumed_any:  # a stale or mis-resumed .part: one more try from scratch
                resumed_any = False
                last = f"{url}: checksum mismatch after resuming"
                continue
            raise
        os.replace(part, target)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            _copy_atomic(target, cached)
        return FetchResult(backbone.net, target, "downloaded", digest, target.stat().st_size)
    raise WeightsFetchError(
        f"could not download {url} after {retries + 1} attempt(s): {last}. Run the command "
        f"again to resume from {part.name}.", url=url, file=str(target), net=backbone.net)


def fetch_weights(
    nets: str | Iterable[str] | None = None,
    *,
    base_url: str | None = None,
    dest: str | Path | None = None,
    retries: int = 3,
    progress: bool = True,
    timeout: float = 60.0,
    backoff: float = 1.0,
    cache: str | Path | None = None,
) -> list[FetchResult]:
    """Make sure the backbone files for ``nets`` (default: all) are in ``dest``.

    ``dest`` defaults to ``$TORCH_HOME/hub/checkpoints``; ``base_url`` to
    :func:`weights_base_url`. Valid files already present are left alone. A
    ``cache`` directory (e.g. a Docker build cache) supplies verified copies and
    keeps every new download.
    """
    import httpx

    names = _parse_nets(nets)
    root = (base_url if base_url is not None else weights_base_url()).rstrip("/") + "/"
    folder = Path(dest) if dest is not None else checkpoint_dir()
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        for net in names:
            backbone = BACKBONES[net]
            results.append(_fetch_one(client, backbone, root + backbone.filename, folder,
                                      retries, backoff, progress,
                                      Path(cache) if cache is not None else None))
    return results

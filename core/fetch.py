"""Download the torchvision backbone files LPIPS needs, checked against their hashes.

torchvision names every weight file ``<name>-<first 8 hex digits of its sha256>.pth``;
a download is accepted only when its SHA-256 starts with that prefix. Files are
written to ``<name>.part`` first (resumed with an HTTP Range request when the
server allows it, retried on network errors) and renamed into place only once
verified, so a half-written or corrupted file is never left where torch looks.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from .errors import DifferenceFinderError
from .weights import BACKBONES, Backbone, checkpoint_dir

__all__ = [
    "DEFAULT_BASE_URL",
    "ChecksumError",
    "FetchResult",
    "WeightsFetchError",
    "add_weights_parser",
    "fetch_weights",
    "run_weights",
    "sha256_file",
    "verify_file",
    "weights_base_url",
]

DEFAULT_BASE_URL = "https://download.pytorch.org/models/"
_CHUNK = 1 << 20


class WeightsFetchError(DifferenceFinderError, RuntimeError):
    """A weight file could not be downloaded (HTTP error, network failure, retries used up)."""

    code = "weights-fetch-failed"
    status = 502


class ChecksumError(WeightsFetchError):
    """A file's SHA-256 does not match the prefix in its name: it is corrupt or not the file."""

    code = "weights-checksum-mismatch"


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


# --- command line: `difference-finder weights fetch|list` -------------------------------


def add_weights_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``weights fetch`` and ``weights list`` to the CLI."""
    p = subparsers.add_parser("weights", help="download or list the LPIPS backbone weights",
                              description="Manage the torchvision backbone files LPIPS needs.")
    sub = p.add_subparsers(dest="weights_command", required=True)
    f = sub.add_parser("fetch", help="download missing files and check their hashes")
    f.add_argument("--nets", default=",".join(BACKBONES),
                   help=f"comma-separated subset of {','.join(BACKBONES)} (default: all)")
    f.add_argument("--dest", help="directory (default: $TORCH_HOME/hub/checkpoints)")
    f.add_argument("--base-url", help=f"default: $DF_WEIGHTS_BASE_URL or {DEFAULT_BASE_URL}")
    f.add_argument("--retries", type=int, default=3)
    f.add_argument("--cache", help="directory of earlier downloads to copy from and add to")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ls = sub.add_parser("list", help="show which files are present and where")
    ls.add_argument("--dest", help="directory (default: $TORCH_HOME/hub/checkpoints)")
    ls.add_argument("--verify", action="store_true", help="also check each file's hash")
    p.set_defaults(func=run_weights)
    return p


def run_weights(args: argparse.Namespace) -> int:
    """Run ``weights fetch`` or ``weights list`` (exit 1 if ``--verify`` finds a bad file)."""
    if args.weights_command == "fetch":
        results = fetch_weights(args.nets, base_url=args.base_url, dest=args.dest,
                                retries=args.retries, progress=not args.quiet,
                                cache=args.cache)
        for r in results:
            print(f"{r.net:8} {r.action:10} {r.path}  sha256={r.sha256[:12]}...  "
                  f"{r.size / 2**20:.1f} MiB")
        return 0
    folder = Path(args.dest) if args.dest else checkpoint_dir()
    ok = True
    for net, backbone in BACKBONES.items():
        path = folder / backbone.filename
        if not path.is_file():
            state = "missing"
        elif args.verify:
            try:
                verify_file(path, backbone)
                state = "present, hash ok"
            except ChecksumError:
                state, ok = "present, HASH MISMATCH", False
        else:
            state = f"present ({path.stat().st_size / 2**20:.1f} MiB)"
        print(f"{net:8} {state:24} {path}")
    return 0 if ok else 1


if __name__ == "__main__":  # `python -m core.fetch` behaves like `difference-finder weights`
    _parser = argparse.ArgumentParser(prog="python -m core.fetch")
    add_weights_parser(_parser.add_subparsers(dest="command", required=True))
    _args = _parser.parse_args(["weights", *sys.argv[1:]])
    sys.exit(run_weights(_args))

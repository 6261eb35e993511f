"""Process memory tuning: large temporaries reused from the C heap, not page-faulted anew.

glibc hands every block over its mmap threshold (at most 32 MB) back to the kernel on free,
so a 36-MP pipeline, whose ~100 full-size temporaries are each larger than that, pays a page
fault per 4 KiB page for every one of them: page faults, not arithmetic, made cost grow
~2x faster than the pixels (benchmarks/scale.py). Three levels, all glibc ``mallopt``:

- :func:`configure` (once, by ``Finder()``): one malloc arena, so threads started later
  share the main heap's free blocks; blocks up to 32 MB from the heap (where glibc's
  adaptive threshold settles after freeing large blocks anyway); the heap's free memory
  kept (up to 2 GiB at its top) for the next call.
- :func:`retained_memory` (around each ``Finder.analyze``): inside, large blocks come from
  the heap too; on leaving, large blocks are mapped again (a growing buffer elsewhere
  reallocates with ``mremap``, not by copying). The service configures at start-up, before
  its worker threads exist, and calls :func:`release_freed_memory` after 5 s without work.

``DF_RETAIN_MEMORY=0`` leaves the allocator alone; elsewhere than glibc all are no-ops that
say so (return False).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import ConfigError

__all__ = ["RETAIN_ENV", "configure", "release_freed_memory", "retain_enabled", "retained_memory"]

#: set to 0 to leave the C allocator as it is
RETAIN_ENV = "DF_RETAIN_MEMORY"

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -3, -4, -8
_MMAP_THRESHOLD = 32 << 20  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: keep up to ~2 GiB free at the heap top
_MMAP_MAX = 65536  # glibc's default count of mapped blocks

log = logging.getLogger(__name__)
_lock = threading.Lock()
_state = {"configured": None, "depth": 0}


_ON, _OFF = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def retain_enabled() -> bool:
    """``DF_RETAIN_MEMORY`` as a boolean (unset: on); anything but 1/0, true/false, yes/no,
    on/off is a :class:`~core.errors.ConfigError` naming it, not a silent default."""
    raw = os.environ.get(RETAIN_ENV, "1").strip().lower()
    if raw not in _ON | _OFF:
        raise ConfigError(f"{RETAIN_ENV}={os.environ[RETAIN_ENV]!r}: give 1 or 0 (true/false, "
                          "yes/no, on/off)")
    return raw in _ON


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has ``mallopt`` and ``malloc_trim``)."""
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded into this process
    except OSError:
        return None
    if not all(hasattr(libc, f) for f in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    return libc


def _set(libc: ctypes.CDLL, *params: tuple[int, int]) -> bool:
    ok = all(libc.mallopt(param, value) for param, value in params)
    if not ok:
        log.warning("mallopt refused %s; large temporaries page-fault on every use", params)
    return ok


def configure(retain: bool | None = None) -> bool:
    """One arena, blocks up to 32 MB from the heap; once per process (the first call
    decides). True when in effect. ``retain``: whether to (the service passes its
    ``retain_memory`` setting); None reads ``DF_RETAIN_MEMORY`` (:func:`retain_enabled`)."""
    with _lock:
        if _state["configured"] is None:
            on = retain_enabled() if retain is None else retain
            libc = _glibc() if on else None
            _state["configured"] = libc is not None and _set(
                libc, (_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
                (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
        return bool(_state["configured"])


@contextmanager
def retained_memory() -> Iterator[bool]:
    """Within (nesting and threads allowed): every block from the heap, freed ones reused
    (:func:`release_freed_memory` gives them back). Yields whether that is in effect."""
    on = configure()
    libc = _glibc() if on else None
    if libc is not None:
        with _lock:
            if _state["depth"] == 0:
                _set(libc, (_M_MMAP_MAX, 0))
            _state["depth"] += 1
    try:
        yield on
    finally:
        if libc is not None:
            with _lock:
                _state["depth"] -= 1
                if _state["depth"] == 0:
                    _set(libc, (_M_MMAP_MAX, _MMAP_MAX))


def release_freed_memory() -> bool:
    """Collect unreachable reference cycles, then return the C heap's free memory to the
    kernel (``malloc_trim``); True if any was. A served request left ~60 objects in cycles
    holding ~21 MB at 2048² (its map and answer) until the collector's next pass, so the
    memory between requests grew by that much per request until then; the collection
    took 0.2-0.3 ms in the service (start-up objects frozen)."""
    gc.collect()
    libc = _glibc() if _state["configured"] else None
    return bool(libc.malloc_trim(0)) if libc is not None else False

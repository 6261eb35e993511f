"""Process memory tuning: keep freed large blocks for reuse instead of page-faulting anew.

glibc hands every block over its mmap threshold (at most 32 MB) back to the kernel on free,
so a 36-MP pipeline, whose ~100 full-size temporaries are each larger than that, pays a page
fault per 4 KiB page for every one of them: page faults, not arithmetic, made cost grow
~2x faster than the pixels (benchmarks/scale.py). :func:`retain_freed_memory` asks glibc to
serve large blocks from its heap and keep freed ones (they are reused by the next step), and
:func:`release_freed_memory` gives the free part back to the kernel (the service calls it
when its workers go idle). Elsewhere than glibc both are no-ops that say so (return False).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading

__all__ = ["RETAIN_ENV", "release_freed_memory", "retain_freed_memory"]

#: set to 0 to leave the C allocator as it is (``Finder`` otherwise tunes it once per process)
RETAIN_ENV = "DF_RETAIN_MEMORY"

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: keep up to ~2 GiB free at the heap top

log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict[str, bool] = {}


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


def retain_freed_memory() -> bool:
    """Serve large blocks from glibc's heap and keep freed ones for reuse, once per process.

    True when in effect. Off when ``DF_RETAIN_MEMORY=0`` or the C library is not glibc.
    Resident memory then stays at its high-water mark until :func:`release_freed_memory`.
    """
    with _lock:
        if "retain" in _state:
            return _state["retain"]
        libc = None if os.environ.get(RETAIN_ENV, "1").strip() == "0" else _glibc()
        ok = libc is not None and bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
        if libc is not None and not ok:
            log.warning("mallopt refused; large temporaries will page-fault on every use")
        _state["retain"] = ok
        return ok


def release_freed_memory() -> bool:
    """Return the C heap's free memory to the kernel (``malloc_trim``); True if any was."""
    libc = _glibc() if _state.get("retain") else None
    return bool(libc.malloc_trim(0)) if libc is not None else False

"""How much memory this process may use, and the one check every large allocation passes.

A blob, a layer's buffer or a file whose header claims more bytes than the machine can hold is
refused before anything is allocated, with a one-line error naming what asked for the memory
and how much, in GiB. Without this, numpy raises a bare MemoryError (or the kernel kills the
process) long after the mistake (``num_output: 1000000000000``) was made.
"""

import os
from functools import lru_cache

from .errors import NetlayersError

GIB = 1024**3


@lru_cache(maxsize=1)
def memory_limit():
    """Bytes this process may use: the machine's physical memory, or the cgroup's limit when
    that is lower (a container). ``NETLAYERS_MEMORY_LIMIT`` (bytes) overrides both."""
    override = os.environ.get("NETLAYERS_MEMORY_LIMIT")
    if override:
        try:
            return max(1, int(float(override)))
        except ValueError:
            pass
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as file:
                text = file.read().strip()
            if text.isdigit():
                limits.append(int(text))
        except OSError:
            pass
    return min(limits) if limits else 2**62


def gib(nbytes):
    """``nbytes`` in GiB, as a message shows it (``12.5 GiB``; small sizes keep 3 digits)."""
    value = nbytes / GIB
    return f"{value:,.1f} GiB" if value >= 10 else f"{value:.3g} GiB"


class SizeError(NetlayersError):
    """An allocation (or a file's claimed content) larger than this machine can hold."""


def check_size(nbytes, what):
    """Raise :class:`SizeError` when ``nbytes`` exceeds :func:`memory_limit`. ``what`` names the
    owner: "blob 'ip1'", "data file train.npz"."""
    limit = memory_limit()
    if nbytes > limit:
        raise SizeError(f"{what} would need {gib(nbytes)}, more than this machine's memory ({gib(limit)})")


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library, or none that ctypes can load)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def return_freed_memory():
    """Give the memory freed so far back to the system (glibc's ``malloc_trim``; elsewhere
    nothing). glibc keeps freed blocks mapped for reuse, and after a large block is freed it
    serves blocks up to that size from its heap: building a net frees tens of MiB (each blob's
    first arrays, once the memory plan gives it a shared place; the fillers' float64 draws),
    which would stay in the process's resident memory for good."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

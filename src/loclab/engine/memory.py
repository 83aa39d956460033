"""CPU memory: keep freed blocks inside the process while training, instead of returning them to the OS.

glibc's ``malloc`` serves every block above 32 MB (its largest mmap threshold) with a fresh ``mmap``
and unmaps it on ``free``. A training step allocates and frees hundreds of MB of activations, so each
step faults in and zeroes that memory again: on the 2-core test CPU 30 000 to 75 000 page faults per
detector step, 15 % of the bf16 step time and a third of the fp32 one (``loclab bench`` shows both).
PyTorch's CPU performance guides fix this by preloading jemalloc or tcmalloc; a pip-installed tool
cannot preload a library, so :func:`freed_memory_retained` sets the same policy from inside the
process with ``mallopt``: no mmap for large blocks (they come from the heap and are reused) and no
trimming of the heap's free top while it is active. Both settings are restored on exit.
Elsewhere (macOS, Windows, musl, CUDA memory) this is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator
from functools import cache

# mallopt parameters and glibc's defaults for them (malloc/malloc.c)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_RETAIN_TRIM_THRESHOLD = 2**31 - 1  # the largest an int takes: never trim


@cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def can_retain_freed_memory() -> bool:
    """True where the allocator policy can be changed (Linux with glibc)."""
    return _glibc() is not None


def _set(trim_threshold: int, mmap_max: int) -> None:
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_MAX, mmap_max)
        libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)


@contextlib.contextmanager
def freed_memory_retained(enabled: bool = True) -> Iterator[bool]:
    """Within the block, freed CPU memory stays in the process for reuse; yields whether that applies.

    The process keeps its peak heap size until the block exits (then the heap may shrink again).
    """
    active = enabled and can_retain_freed_memory()
    if active:
        _set(_RETAIN_TRIM_THRESHOLD, 0)
    try:
        yield active
    finally:
        if active:
            _set(_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX)

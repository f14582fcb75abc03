"""Process-level tuning for long-running node processes (no ROS imports).

:func:`tune_malloc` is called once at node start-up (proposal node) and by the proposal
benchmark; it changes how the process allocates memory, never a result.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

LOG = logging.getLogger(__name__)

__all__ = ["tune_malloc"]


def tune_malloc(mmap_threshold_mb: int = 64, trim_threshold_mb: int = 256) -> bool:
    """Keep freed large numpy buffers in the glibc heap (``mallopt``) for repeated scans.

    Each scan allocates a few tens of MB of temporary arrays; glibc serves large blocks with
    fresh ``mmap`` pages by default, so every scan pays the page faults again (measured: about
    30 % of the range-image time for a 120k-point scan, ``bench/bench_proposals.py``). Raising
    ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (glibc ``mallopt(3)``; same as the
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables) lets the
    process reuse that memory. Process-wide and opt-in: call it once in long-running processes
    (proposal node, benchmark).

    Args:
        mmap_threshold_mb: new ``M_MMAP_THRESHOLD``, MiB (blocks below it come from the heap).
        trim_threshold_mb: new ``M_TRIM_THRESHOLD``, MiB (free heap kept before returning it to the OS).

    Returns:
        True when applied, False when not on glibc (nothing changed).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = mallopt(m_mmap_threshold, int(mmap_threshold_mb) << 20) == 1
    ok &= mallopt(m_trim_threshold, int(trim_threshold_mb) << 20) == 1
    LOG.debug("mallopt mmap_threshold=%d MB trim_threshold=%d MB: %s", mmap_threshold_mb, trim_threshold_mb, ok)
    return bool(ok)

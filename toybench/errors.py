"""The one exception type for errors a user causes (bad names, values, files), and the size check
that turns an allocation nobody can make into such an error.

The CLI turns a ``ToybenchError`` into one line on stderr and a non-zero exit, never a traceback.
It subclasses ``ValueError`` so library callers can catch it the usual way.

``check_allocation(n_bytes, what)`` refuses, before anything is allocated, a request larger than
the memory of this machine (``memory_limit_bytes``: physical memory, or the cgroup limit of the
container when that is lower), naming the size and how much would fit.
"""

from __future__ import annotations

import os
from pathlib import Path


class ToybenchError(ValueError):
    """A user-facing error whose message is one clear line."""


#: Used when the operating system does not report its memory (``os.sysconf`` missing).
FALLBACK_MEMORY_BYTES = 64 * 2**30


def memory_limit_bytes() -> int:
    """Bytes of memory this process may use at most: physical memory (``SC_PHYS_PAGES`` ×
    ``SC_PAGE_SIZE``), lowered to the cgroup v2 ``memory.max`` of the container where one is set,
    or ``FALLBACK_MEMORY_BYTES`` where the system reports neither."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        pass
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            limits.append(int(text))
    except OSError:
        pass
    limits = [limit for limit in limits if limit > 0]
    return min(limits) if limits else FALLBACK_MEMORY_BYTES


def format_bytes(n_bytes: float) -> str:
    """``3.1 TB``-style text (decimal units: kB, MB, GB, TB, PB, EB) of a byte count."""
    value = float(n_bytes)
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} EB"


def check_allocation(n_bytes: int, what: str, *, per_item: int | None = None) -> None:
    """Refuse a request for more memory than this machine has (``memory_limit_bytes``).

    Call it with the estimated size *before* allocating, so that an impossible size is one clear
    line instead of a ``MemoryError`` (or the kernel's out-of-memory killer) later.

    Parameters
    ----------
    n_bytes : int
        Estimated bytes the request needs (a Python int: no overflow however large).
    what : str
        What is requested, as the start of the message, e.g. ``"-n 1000000000000 samples"``.
    per_item : int, optional
        Bytes per item (sample, row, ...): the message then says how many items would fit.

    Raises
    ------
    ToybenchError
        ``"<what> would need 3.1 TB of memory; this machine has 137.4 GB (at most 42,000,000
        fit)"``.

    Examples
    --------
    >>> check_allocation(10**6, "a small array")  # fits: returns None
    """
    limit = memory_limit_bytes()
    if n_bytes <= limit:
        return
    fits = f" (at most {limit // per_item:,} fit)" if per_item else ""
    raise ToybenchError(
        f"{what} would need {format_bytes(n_bytes)} of memory; "
        f"this machine has {format_bytes(limit)}{fits}"
    )

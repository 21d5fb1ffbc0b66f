"""Atomic file writes: write to a temporary file in the target folder, then rename.

A crash or a full disk never leaves a half-written file under the final name, and an existing
file is only replaced once the new content is complete.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from toybench.errors import ToybenchError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    Raises
    ------
    ToybenchError
        If the folder does not exist or is not writable (one line, naming the path).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise ToybenchError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        # mkstemp creates 0600; give the final file the usual permissions (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise ToybenchError(f"cannot write {path}: {err.strerror or err}") from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (byte-stable for equal objects) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_npz(
    path: str | os.PathLike, compressed: bool = False, **arrays: np.ndarray
) -> Path:
    """Save arrays to an ``.npz`` atomically (no pickled objects: object arrays are refused)."""
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise TypeError(f"array {key!r} has dtype object; refusing to pickle")
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())

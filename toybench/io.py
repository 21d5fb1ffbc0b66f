"""Atomic file writes: write to a temporary file in the target folder, then rename.

A crash or a full disk never leaves a half-written file under the final name, and an existing
file is only replaced once the new content is complete.

Only regular files are ever replaced. Every writer goes through ``check_output``, which decides,
before anything is written, what a write to a path replaces:

- nothing there: a new regular file is created (its folder must exist);
- a regular file: it is replaced (atomically);
- a symlink whose target (after following every link) is an existing regular file: the *target*
  is replaced, in the target's folder, and the link is kept — what a user who points
  ``out.npz`` at a file elsewhere expects;
- anything else is refused with one line, leaving it untouched: a folder, a FIFO, a socket, a
  character or block device (``-o /dev/full`` as root would otherwise turn the device into a
  regular file), a dangling symlink, a symlink loop, or a symlink to any of these.

``check_output`` is public so that commands can check their output path before the slow part of
their work, not after it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from toybench.errors import ToybenchError

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
#: Longest path shown in a message; longer ones keep their start and end around "…".
_SHOW_CHARS = 120


def short_path(path: str | os.PathLike, limit: int = _SHOW_CHARS) -> str:
    """``path`` as text for a one-line message, elided in the middle when over ``limit`` chars."""
    text = str(path)
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return f"{text[:head]}…{text[-(limit - head - 1):]} ({len(text)} characters)"


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _refuse(path: Path, reason: str) -> ToybenchError:
    return ToybenchError(f"cannot write {short_path(path)}: {reason}")


def _os_reason(path: Path, err: OSError) -> str:
    if err.errno == errno.ENAMETOOLONG:
        try:
            limit = os.pathconf(path.parent if str(path.parent) else ".", "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):
            limit = None
        longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
        if limit is not None and longest <= limit:
            return f"path too long ({len(os.fsencode(str(path)))} bytes)"
        return f"file name too long (a name of {longest} bytes" + (
            f"; this file system allows {limit})" if limit else ")"
        )
    return err.strerror or str(err)


def check_output(path: str | os.PathLike) -> Path:
    """The regular file a write to ``path`` creates or replaces; refuses everything else.

    Nothing is written. See the module docstring for the rules (symlinks to regular files are
    written through; folders, FIFOs, devices, sockets and dangling links are refused).

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    Path
        ``path`` itself, or the resolved target of a symlink to a regular file.

    Raises
    ------
    ToybenchError
        One line naming the path and why it cannot be written.
    """
    path = Path(path)
    if not str(path) or str(path) == ".":
        raise _refuse(path, "no file name given")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        target = path
    except NotADirectoryError:
        raise _refuse(path, f"{short_path(path.parent, 60)} is not a folder") from None
    except OSError as err:
        raise _refuse(path, _os_reason(path, err)) from None
    else:
        target = path
        if stat.S_ISLNK(info.st_mode):
            link = os.readlink(path)
            try:
                target = Path(os.path.realpath(path, strict=True))
                info = os.stat(target)
            except FileNotFoundError:
                raise _refuse(
                    path, f"it is a dangling symlink (to {short_path(link, 60)}); not followed"
                ) from None
            except OSError as err:
                reason = "a symlink loop" if err.errno == errno.ELOOP else _os_reason(path, err)
                raise _refuse(path, f"it is a symlink that cannot be followed ({reason})") from None
            if not stat.S_ISREG(info.st_mode):
                raise _refuse(
                    path,
                    f"it is a symlink to {short_path(target, 60)}, {_kind(info.st_mode)}, "
                    "not a regular file; refusing to write through it",
                )
        elif not stat.S_ISREG(info.st_mode):
            raise _refuse(
                path, f"it is {_kind(info.st_mode)}, not a regular file; refusing to replace it"
            )
        return target
    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder_info = os.stat(folder)
    except OSError as err:
        reason = "no such folder" if err.errno == errno.ENOENT else _os_reason(folder, err)
        raise _refuse(path, f"{reason} ({short_path(folder, 60)})") from None
    if not stat.S_ISDIR(folder_info.st_mode):
        raise _refuse(path, f"{short_path(folder, 60)} is not a folder")
    return target


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a temporary file beside the target, then rename it over the
    target (``check_output`` decides the target and refuses non-regular files first).

    Returns
    -------
    Path
        ``path`` as given.

    Raises
    ------
    ToybenchError
        If ``check_output`` refuses the path, or the folder is missing, not writable or full
        (one line, naming the path; the temporary file is removed).
    """
    path = Path(path)
    target = check_output(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        # A short prefix keeps the temporary name legal wherever the final name is.
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:64]}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise _refuse(path, _os_reason(target, err)) from None
    try:
        # mkstemp creates 0600; give the final file the usual permissions (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if check_output(path) != target:  # the path changed while we wrote: write nothing
            raise _refuse(path, "it changed while being written")
        os.replace(tmp, target)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _refuse(path, _os_reason(target, err)) from None
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path (rules: ``check_output``).

    Raises
    ------
    ToybenchError
        If the path is not a regular file (or a symlink to one), or the folder does not exist or
        is not writable (one line, naming the path).
    """
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (byte-stable for equal objects) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_npz(
    path: str | os.PathLike, compressed: bool = False, **arrays: np.ndarray
) -> Path:
    """Save arrays to an ``.npz`` atomically (no pickled objects: object arrays are refused).

    The archive is written straight into the temporary file (no second copy in memory).
    """
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise TypeError(f"array {key!r} has dtype object; refusing to pickle")
    save = np.savez_compressed if compressed else np.savez
    return atomic_write(path, lambda handle: save(handle, **arrays))

"""Locate the declarative specs shipped with toybench (``generators/*.toml``, ``baselines/*.toml``).

In a wheel the spec folders are copied to ``toybench/_shipped/``; in a source checkout (editable
install, or running from the repository) they sit at the top of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
SPEC_KINDS = ("generators", "baselines")


def shipped_dir(kind: str) -> Path:
    """Return the folder holding the shipped specs of ``kind`` ("generators" or "baselines").

    Parameters
    ----------
    kind : str
        One of ``SPEC_KINDS``.

    Returns
    -------
    pathlib.Path
        The existing folder (wheel layout first, then source checkout).
    """
    if kind not in SPEC_KINDS:
        raise KeyError(f"unknown spec kind {kind!r}; valid: {', '.join(SPEC_KINDS)}")
    for candidate in (_PACKAGE_DIR / "_shipped" / kind, _PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"toybench is installed without its {kind}/ specs")


def shipped_specs(kind: str) -> dict[str, Path]:
    """Return ``{name: path}`` of the shipped ``*.toml`` specs of ``kind``, sorted by name."""
    return {p.stem: p for p in sorted(shipped_dir(kind).glob("*.toml"))}

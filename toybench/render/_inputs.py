"""Input checks every renderer shares: a supported image size, and its inputs present as 1-d
arrays of one length. Range checks stay with each renderer, which knows its own geometry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from toybench.errors import ToybenchError


def check_size(renderer: str, size: int, sizes: Sequence[int]) -> None:
    """Raise a one-line ``ToybenchError`` unless ``size`` is one of ``sizes``."""
    if size not in sizes:
        allowed = ", ".join(map(str, sizes))
        raise ToybenchError(f"{renderer}: image size {size} not supported; sizes: {allowed}")


def input_columns(
    renderer: str, values: Mapping[str, np.ndarray], inputs: Sequence[str]
) -> tuple[list[np.ndarray], int]:
    """Return ``values[k]`` for each input as arrays (dtypes kept) and their common length ``n``.

    Raises
    ------
    ToybenchError
        An input is missing, or the inputs are not 1-d arrays of one length.
    """
    missing = [k for k in inputs if k not in values]
    if missing:
        raise ToybenchError(
            f"{renderer}: missing inputs {', '.join(missing)}; needs {', '.join(inputs)}"
        )
    arrays = [np.asarray(values[k]) for k in inputs]
    n = arrays[0].shape[0] if arrays[0].ndim == 1 else -1
    if n < 0 or any(a.shape != (n,) for a in arrays):
        raise ToybenchError(f"{renderer}: every input must be a 1-d array of the same length")
    return arrays, n

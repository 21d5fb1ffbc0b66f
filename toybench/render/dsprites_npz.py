"""Loader for the original dSprites ``.npz`` a user already has (nothing is ever downloaded).

dSprites: Matthey, Higgins, Hassabis & Lerchner 2017, https://github.com/deepmind/dsprites-dataset.
The file ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` holds

* ``imgs``: ``(737280, 64, 64)`` uint8 with values 0/1;
* ``latents_classes``: ``(737280, 6)`` integer level indices of colour, shape, scale,
  orientation, pos_x, pos_y;
* ``latents_values``: ``(737280, 6)`` float64 physical values of the same;
* ``metadata``: a *pickled* dict. It is never read: the archive is opened with
  ``allow_pickle=False`` and only the arrays above are touched.

The loader returns images as ``(n, 1, 64, 64)`` uint8 with values 0/255 (the toybench renderer
convention, see :mod:`toybench.render.sprites`) and the level indices ``(n, 5)`` int64 in the order
shape, scale, orientation, pos_x, pos_y (the constant colour column is dropped), so that the
factors line up with the ``sprites`` renderer and the ``dsprites`` generator.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from toybench.errors import ToybenchError

FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "orientation", "pos_x", "pos_y")
LEVEL_COUNTS: tuple[int, ...] = (3, 6, 40, 32, 32)  # levels of the five factors above
IMAGE_SIDE = 64


class DSpritesArrays(NamedTuple):
    """Images and factor levels read from an original dSprites ``.npz``."""

    images: np.ndarray  # (n, 1, 64, 64) uint8, 0/255
    factors: np.ndarray  # (n, 5) int64: shape, scale, orientation, pos_x, pos_y


def load_dsprites_npz(path: str | os.PathLike) -> DSpritesArrays:
    """Read the original dSprites archive without unpickling anything.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file (e.g. ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``).

    Returns
    -------
    DSpritesArrays
        ``images`` ``(n, 1, 64, 64)`` uint8 in {0, 255}; ``factors`` ``(n, 5)`` int64 level
        indices, columns ``FACTOR_NAMES``.

    Raises
    ------
    ToybenchError
        One line naming the file: missing, not an ``.npz`` archive, a key missing, or arrays of
        the wrong shape, dtype or range.
    """
    path = Path(path)
    if not path.is_file():
        raise ToybenchError(f"dSprites file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ToybenchError(f"{path} is not a readable .npz archive ({err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ToybenchError(f"{path} is a single .npy array, not a dSprites .npz archive")
    with archive:
        missing = [k for k in ("imgs", "latents_classes") if k not in archive.files]
        if missing:
            raise ToybenchError(
                f"{path} lacks {', '.join(missing)}; a dSprites .npz holds imgs, latents_classes,"
                f" latents_values (found: {', '.join(archive.files) or 'nothing'})"
            )
        try:
            images = archive["imgs"]
            classes = archive["latents_classes"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ToybenchError(f"{path}: cannot read arrays ({err})") from None
    return DSpritesArrays(_images(images, path), _factors(classes, images.shape[0], path))


def _images(images: np.ndarray, path: Path) -> np.ndarray:
    """Check ``imgs`` and turn it into ``(n, 1, 64, 64)`` uint8 0/255, in place when possible."""
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise ToybenchError(f"{path}: imgs has shape {images.shape}, expected (n, 64, 64)")
    if images.dtype != np.uint8:
        raise ToybenchError(f"{path}: imgs has dtype {images.dtype}, expected uint8")
    if images.size and images.max() > 1:
        raise ToybenchError(f"{path}: imgs holds values above 1; dSprites images are 0/1")
    images *= np.uint8(255)  # 0/1 -> 0/255; the array was freshly read, so in place is safe
    return images[:, None]  # (n, 1, 64, 64)


def _factors(classes: np.ndarray, n: int, path: Path) -> np.ndarray:
    """Check ``latents_classes`` and keep shape, scale, orientation, pos_x, pos_y."""
    if classes.shape != (n, 6):
        raise ToybenchError(
            f"{path}: latents_classes has shape {classes.shape}, expected ({n}, 6) to match imgs"
        )
    if not np.issubdtype(classes.dtype, np.integer):
        raise ToybenchError(f"{path}: latents_classes has dtype {classes.dtype}, expected integers")
    factors = classes[:, 1:].astype(np.int64)  # drop the constant colour column
    for column, (name, count) in enumerate(zip(FACTOR_NAMES, LEVEL_COUNTS, strict=True)):
        values = factors[:, column]
        if n and (values.min() < 0 or values.max() >= count):
            raise ToybenchError(
                f"{path}: latents_classes column {name} has levels outside 0..{count - 1}"
            )
    return factors

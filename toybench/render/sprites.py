"""dSprites-compatible binary sprites: square, ellipse and heart on a black canvas.

Re-implements the factor grid of dSprites (Matthey, Higgins, Hassabis & Lerchner 2017,
https://github.com/deepmind/dsprites-dataset; used in β-VAE, Higgins et al. 2017,
https://openreview.net/forum?id=Sy2fzU9gl) so that correlated variants can be rendered on demand.

Conventions of the original data set
------------------------------------
* 737,280 images of 64 × 64 pixels, one white sprite on black; the ``.npz`` stores ``imgs`` as
  ``uint8`` with values 0/1, and ``latents_values`` / ``latents_classes`` with six columns
  ``color, shape, scale, orientation, pos_x, pos_y`` (colour is constant: white).
* shape: 3 categories, in this order: square, ellipse, heart (values 1, 2, 3 in
  ``latents_values``).
* scale: 6 values ``linspace(0.5, 1, 6)``.
* orientation: 40 values in radians; the original uses ``linspace(0, 2π, 40)`` *including* 2π,
  so its first and last orientation draw the same image (``DSPRITES_ORIENTATIONS``).
* pos_x, pos_y: 32 values each, ``linspace(0, 1, 32)``.
* Images are ordered with pos_y fastest, then pos_x, orientation, scale, shape.

Conventions here (an approximation: the original rendering code was never published)
-----------------------------------------------------------------------------------
* Output pixels are **0 / 255** ``uint8`` (not 0/1 as in the original ``.npz``), so that every
  toybench renderer shares one convention (``image / 255`` is in [0, 1]); the ``.npz`` loader
  rescales the original in the same way.
* Coordinates are given in units of a 64-pixel canvas and scaled by ``size / 64``. Pixel column
  ``c`` covers ``[c, c + 1)``, so its centre is at ``c + 0.5``. The sprite centre is at
  ``x = 16 + 31 · pos_x`` and ``y = 16 + 31 · pos_y``, on a pixel corner: on the 64-pixel grid
  every position step moves the sprite by exactly one pixel, an axis-aligned square of side 12
  covers exactly 12 × 12 pixels, and the positions span 16..47 (half a pixel left of / above
  the canvas centre 32; the original's exact offset is unknown). ``pos_x`` grows to the right
  (column), ``pos_y`` downwards (row).
* A pixel is on when its centre lies inside the shape (binary point sampling, no anti-aliasing).
* Shapes at scale 1 (64-pixel units): a square of side 12; an ellipse with semi-axes 10 × 5, long
  axis horizontal at orientation 0; the algebraic heart ``(x² + y² − 1)³ ≤ x² y³`` scaled to a
  width of 14 (about 13.5 high), tip pointing down at orientation 0, centred on its bounding box.
  Sizes were chosen by eye to match the original's look; extents scale linearly with ``scale``.
* orientation θ (radians) turns the sprite counter-clockwise as seen on screen.
* ``size = 32`` is a CPU-friendly variant of the same geometry (position steps of half a pixel).

Rendering is vectorized: an exact mask is computed once for each distinct
``(shape, scale, orientation, sub-pixel phase)`` (and kept for the process's later calls),
stored as one 64-bit word per row (bit 63 = column 0, the ``np.packbits`` layout), shifted into
place with integer bit and row shifts, and unpacked. ``render_full_grid`` uses the same path
to produce all 737,280 images bit-packed.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np

from toybench.errors import ToybenchError
from toybench.render._inputs import check_size, input_columns

SHAPES: tuple[str, ...] = ("square", "ellipse", "heart")
INPUTS: tuple[str, ...] = ("shape", "scale", "orientation", "pos_x", "pos_y")
SIZES: tuple[int, ...] = (32, 64)

DSPRITES_SCALES = np.linspace(0.5, 1.0, 6)
DSPRITES_ORIENTATIONS = np.linspace(0.0, 2.0 * np.pi, 40)  # endpoint included, as in the original
DSPRITES_POSITIONS = np.linspace(0.0, 1.0, 32)
DSPRITES_GRID_SHAPE: tuple[int, ...] = (3, 6, 40, 32, 32)

_CANVAS = 64.0  # geometry is defined on a 64-pixel canvas and scaled to the requested size
_POS_OFFSET, _POS_SPAN = 16.0, 31.0
_SQUARE_HALF = 6.0
_ELLIPSE_AXES = (10.0, 5.0)
_HEART_X_HALF_EXTENT = 1.1390  # max |x| of the unit algebraic heart
_HEART_Y_RANGE = (-1.0, 1.2360)  # min and max y of the unit algebraic heart
_HEART_UNIT = 7.0 / _HEART_X_HALF_EXTENT  # 64-pixel units per heart unit (width 14 at scale 1)
_MAX_SCALE = 1.5
_CHUNK = 32768  # images per block when placing masks, bounds peak memory
#: Masks already computed, per patch (radius, unit): (shape, scale, angle, fx, fy) -> (P,) words.
#: A mask is a pure function of its key, so reusing it changes no pixel; the dSprites grid has
#: a few thousand distinct masks per size, which every later render call (an evaluation renders
#: 8,192 rows at a time, dozens of times) would otherwise recompute.
_MASKS: dict[tuple[int, float], dict[tuple[float, ...], np.ndarray]] = {}
_MASKS_LIMIT = 100_000  # masks kept in all (at most 51 MB); beyond it the cache starts over
_MASKS_LOCK = threading.Lock()


def _inside(shape: np.ndarray, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Whether sprite-frame points ``(qx, qy)`` (64-pixel units at scale 1, y up) are inside."""
    square = np.maximum(np.abs(qx), np.abs(qy)) <= _SQUARE_HALF
    ellipse = (qx / _ELLIPSE_AXES[0]) ** 2 + (qy / _ELLIPSE_AXES[1]) ** 2 <= 1.0
    hx = qx / _HEART_UNIT
    hy = qy / _HEART_UNIT + 0.5 * (_HEART_Y_RANGE[0] + _HEART_Y_RANGE[1])
    heart = (hx**2 + hy**2 - 1.0) ** 3 - hx**2 * hy**3 <= 0.0
    return np.where(shape == 0, square, np.where(shape == 1, ellipse, heart))


def _half_extent(scale: float) -> float:
    """An upper bound on the distance (64-pixel units) of any sprite pixel from its centre."""
    heart_radius = _HEART_UNIT * np.hypot(_HEART_X_HALF_EXTENT, 1.2)
    return scale * max(_SQUARE_HALF * np.sqrt(2.0), _ELLIPSE_AXES[0], heart_radius)


def _mask_words(
    shape: np.ndarray,
    scale: np.ndarray,
    angle: np.ndarray,
    fx: np.ndarray,
    fy: np.ndarray,
    radius: int,
    unit: float,
) -> np.ndarray:
    """Exact masks as row words, one per distinct sprite.

    Parameters
    ----------
    shape, scale, angle, fx, fy : np.ndarray
        ``(m,)`` shape index, scale, orientation (radians) and sub-pixel offset in [0, 1) of the
        centre from pixel column / row ``radius`` of the patch.
    radius : int
        Patch half-width in pixels; the patch is ``2 * radius + 1`` pixels wide.
    unit : float
        Output pixels per 64-pixel-canvas unit (``size / 64``).

    Returns
    -------
    np.ndarray
        ``(m, 2 * radius + 1)`` uint64: bit ``63 - j`` of row ``r`` is pixel ``(r, j)``.
    """
    patch = 2 * radius + 1
    offsets = np.arange(patch, dtype=np.float64) - radius  # pixel index relative to centre pixel
    dx = (offsets[None, None, :] - fx[:, None, None]) / unit  # (m, 1, P), 64-px units
    dy_up = -(offsets[None, :, None] - fy[:, None, None]) / unit  # (m, P, 1); screen y is down
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    s = scale[:, None, None]
    qx = (cos * dx + sin * dy_up) / s  # undo the counter-clockwise turn, then the scale
    qy = (-sin * dx + cos * dy_up) / s
    inside = _inside(shape[:, None, None], qx, qy)  # (m, P, P) bool
    bits = np.left_shift(np.uint64(1), (63 - np.arange(patch)).astype(np.uint64))  # (P,)
    return np.bitwise_or.reduce(np.where(inside, bits, np.uint64(0)), axis=2)  # (m, P)


def _cached_mask_words(shape, scale, angle, fx, fy, radius: int, unit: float) -> np.ndarray:
    """`_mask_words` of ``m`` distinct sprites, each computed once per process (`_MASKS`)."""
    keys = list(zip(shape.tolist(), scale.tolist(), angle.tolist(), fx.tolist(), fy.tolist(),
                    strict=True))
    if not keys:
        return np.empty((0, 2 * radius + 1), dtype=np.uint64)
    with _MASKS_LOCK:
        cache = _MASKS.setdefault((radius, unit), {})
        missing = [i for i, key in enumerate(keys) if key not in cache]
        if missing:
            if sum(map(len, _MASKS.values())) + len(missing) > _MASKS_LIMIT:
                _MASKS.clear()
                cache = _MASKS.setdefault((radius, unit), {})
                missing = list(range(len(keys)))
            rows = np.asarray(missing, dtype=np.int64)
            words = _mask_words(shape[rows], scale[rows], angle[rows], fx[rows], fy[rows],
                                radius, unit)
            cache.update(zip((keys[i] for i in missing), words, strict=True))
        return np.stack([cache[key] for key in keys])


def _validate(shape, scale, orientation, pos_x, pos_y, size) -> tuple[np.ndarray, ...]:
    check_size("sprites", size, SIZES)
    columns = dict(zip(INPUTS, (shape, scale, orientation, pos_x, pos_y), strict=True))
    (shape, *rest), n = input_columns("sprites", columns, INPUTS)
    arrays = [column.astype(np.float64) for column in rest]
    if not np.issubdtype(shape.dtype, np.integer) or n and (shape.min() < 0 or shape.max() > 2):
        raise ToybenchError(f"sprites: shape must be an integer index into {SHAPES}")
    scale, orientation, pos_x, pos_y = arrays
    if not np.all(np.isfinite(np.stack(arrays))):
        raise ToybenchError("sprites: scale, orientation and positions must be finite")
    if n and (scale.min() <= 0 or scale.max() > _MAX_SCALE):
        raise ToybenchError(f"sprites: scale must lie in (0, {_MAX_SCALE}]")
    for name, pos in (("pos_x", pos_x), ("pos_y", pos_y)):
        if n and (pos.min() < 0 or pos.max() > 1):
            raise ToybenchError(f"sprites: {name} must lie in [0, 1]")
    return shape.astype(np.int64), scale, orientation, pos_x, pos_y


def render_packed(
    shape: np.ndarray,
    scale: np.ndarray,
    orientation: np.ndarray,
    pos_x: np.ndarray,
    pos_y: np.ndarray,
    size: int = 64,
) -> np.ndarray:
    """Render sprites bit-packed along each image row.

    Parameters
    ----------
    shape : np.ndarray
        ``(n,)`` int, index into ``SHAPES``.
    scale, orientation, pos_x, pos_y : np.ndarray
        ``(n,)`` float: scale in (0, 1.5], orientation in radians, positions in [0, 1].
    size : int
        Image side, one of ``SIZES``.

    Returns
    -------
    np.ndarray
        ``(n, size, size // 8)`` uint8, rows packed as by ``np.packbits(..., axis=-1)``.
    """
    shape, scale, orientation, pos_x, pos_y = _validate(
        shape, scale, orientation, pos_x, pos_y, size
    )
    n, unit = shape.shape[0], size / _CANVAS
    # centre in pixel-index coordinates: pixel j has its centre at j (see module docstring)
    cx = (_POS_OFFSET + _POS_SPAN * pos_x) * unit - 0.5
    cy = (_POS_OFFSET + _POS_SPAN * pos_y) * unit - 0.5
    ix, iy = np.floor(cx).astype(np.int64), np.floor(cy).astype(np.int64)
    fx, fy = np.round(cx - ix, 9), np.round(cy - iy, 9)
    radius = int(np.ceil(_half_extent(scale.max() if n else 1.0) * unit)) + 1
    patch = 2 * radius + 1
    if patch > 64:
        raise ToybenchError("sprites: sprite too large for the 64-bit row packing")

    # one exact mask per distinct (shape, scale, orientation, sub-pixel phase)
    codes = [np.unique(col, return_inverse=True) for col in (shape, scale, orientation, fx, fy)]
    key = np.zeros(n, dtype=np.int64)
    for values, inverse in codes:
        key = key * len(values) + inverse.reshape(-1)
    unique_keys, first, which = np.unique(key, return_index=True, return_inverse=True)
    words = _cached_mask_words(
        shape[first], scale[first], orientation[first], fx[first], fy[first], radius, unit
    )  # (m, P)

    # rows of each image as 64-bit words; big-endian so the bytes come out in packbits order.
    # Each block is drawn on native words padded by one patch above and below (a sprite reaching
    # past the edge then needs no masking), and the padding is cut off when copying it out.
    words_be = np.empty((n, size), dtype=">u8")
    padded = size + 2 * patch
    rows = np.arange(patch)
    for start in range(0, n, _CHUNK):
        block = slice(start, min(start + _CHUNK, n))
        b = block.stop - block.start
        w = words[which[block]]  # (b, P)
        left = (ix[block] - radius)[:, None]  # canvas column of patch pixel 0
        if left.min(initial=0) >= 0:  # the usual case: only right shifts
            shifted = w >> left.astype(np.uint64)
        else:
            shifted = np.where(
                left >= 0,
                w >> np.clip(left, 0, 63).astype(np.uint64),
                w << np.clip(-left, 0, 63).astype(np.uint64),
            )  # (b, P)
        canvas = np.zeros((b, padded), dtype=np.uint64)
        top = np.arange(b) * padded + (iy[block] - radius + patch)  # (b,) flat index of row 0
        canvas.reshape(-1)[top[:, None] + rows[None, :]] = shifted  # (b, P) rows written in place
        words_be[block] = canvas[:, patch : patch + size]
    packed = words_be.view(np.uint8).reshape(n, size, 8)  # (n, size, 8 bytes)
    return packed if size == 64 else np.ascontiguousarray(packed[:, :, : size // 8])


def render(values: Mapping[str, np.ndarray], size: int = 64) -> np.ndarray:
    """The ``sprites`` renderer: dSprites-style images from factor values.

    Parameters
    ----------
    values : Mapping[str, np.ndarray]
        ``shape`` (int level index, ``(n,)``), ``scale``, ``orientation`` (radians), ``pos_x``,
        ``pos_y`` (in [0, 1]) as ``(n,)`` floats.
    size : int
        Image side, 64 (the original) or 32.

    Returns
    -------
    np.ndarray
        ``(n, 1, size, size)`` uint8 with values 0 and 255.
    """
    packed = render_packed(*(values[name] for name in INPUTS), size=size)  # (n, size, size // 8)
    bits = np.unpackbits(packed, axis=-1)  # (n, size, size) 0/1
    return (bits * np.uint8(255))[:, None]  # (n, 1, size, size)


def full_grid_factors() -> np.ndarray:
    """Level indices of the full dSprites grid in the original's order.

    Returns
    -------
    np.ndarray
        ``(737280, 5)`` int64: shape, scale, orientation, pos_x, pos_y (pos_y fastest).
    """
    grids = np.meshgrid(*(np.arange(k) for k in DSPRITES_GRID_SHAPE), indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int64)


def render_full_grid(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """All 737,280 dSprites images, bit-packed, with their factor levels.

    Returns
    -------
    packed : np.ndarray
        ``(737280, size, size // 8)`` uint8, rows packed as by ``np.packbits``; unpack with
        ``np.unpackbits(packed, axis=-1)`` (0/1) for images.
    factors : np.ndarray
        ``(737280, 5)`` int64 level indices (``full_grid_factors()``).
    """
    factors = full_grid_factors()
    packed = render_packed(
        factors[:, 0],
        DSPRITES_SCALES[factors[:, 1]],
        DSPRITES_ORIENTATIONS[factors[:, 2]],
        DSPRITES_POSITIONS[factors[:, 3]],
        DSPRITES_POSITIONS[factors[:, 4]],
        size=size,
    )
    return packed, factors

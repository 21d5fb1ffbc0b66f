"""RGB toy scenes: one coloured object (shape, size, hue, position, rotation) on black.

A small colour counterpart of dSprites (Matthey et al. 2017,
https://github.com/deepmind/dsprites-dataset) in the spirit of the toy scenes used to study
correlated concepts (Träuble et al. 2021, https://arxiv.org/abs/2006.07886). Built so that every
concept stays visible at every combination of the others:

* shapes are ``square``, ``triangle`` (equilateral, a vertex up at rotation 0) and ``cross``
  (a plus sign). No circle: a rotated circle would make rotation invisible. No two shapes are
  rotations of each other.
* ``rotation`` (radians, counter-clockwise on screen) must lie in [0, π/2): the smallest
  rotational symmetry period among the shapes is π/2 (square, cross; the triangle's is 2π/3), so
  distinct rotations in that range give distinct images for every shape. Recommended levels:
  [0, π/3] in steps of at least π/12 (15°), which change the pixels even at the smallest size.
* ``size`` in (0, 1] scales the object's circumradius to ``0.21 · size`` of the image side
  (recommended levels in [0.5, 1]: 3.4 to 6.7 pixels at 32 × 32).
* ``pos_x`` / ``pos_y`` in [0, 1] move the centre over a band chosen so that the largest object
  at any rotation stays inside the canvas: the centre lands on the pixel corner nearest to
  ``lo + pos · (hi − lo)`` with ``lo = ceil(0.21 · S) + 1`` and ``hi = S − lo`` (8..24 at S = 32,
  15..49 at S = 64). Levels closer than ``1 / (hi − lo)`` may round to the same pixel;
  recommended: at most 8 levels, e.g. ``linspace(0, 1, 8)``.
* ``hue`` in [0, 1) is the HSV hue at full saturation and value, so the object's hue is exactly
  recoverable from any of its pixels (edge pixels are darker, same hue) and it always differs
  from the black background. Hue levels must not contain both 0 and 1 (the same colour).

Objects are anti-aliased by 4 × 4 super-sampling. Rendering is vectorized: one coloured patch per
distinct ``(shape, size, rotation, hue)`` in a batch (drawn once per process and cached), copied
into place by integer offsets (a loop over the few distinct positions, never over images).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from toybench.errors import ToybenchError
from toybench.render._inputs import check_size, input_columns

SHAPES: tuple[str, ...] = ("square", "triangle", "cross")
INPUTS: tuple[str, ...] = ("shape", "size", "hue", "pos_x", "pos_y", "rotation")
SIZES: tuple[int, ...] = (32, 64)
CHANNELS = 3

RADIUS_FRACTION = 0.21  # circumradius at size 1, as a fraction of the image side
MAX_ROTATION = np.pi / 2  # exclusive: the square's and the cross's symmetry period
_SUPERSAMPLE = 4
_CROSS_HALF_WIDTH = 0.3  # arm half-width in circumradius units
_CROSS_HALF_LENGTH = float(np.sqrt(1.0 - _CROSS_HALF_WIDTH**2))  # arm corners on the unit circle


def _in_square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(x), np.abs(y)) <= np.sqrt(0.5)


def _in_triangle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # equilateral triangle, vertex up: the three edges have outward normals at -90°, 30°, 150°
    # and lie at the inradius 1/2 from the centre
    normals = np.deg2rad(np.array([-90.0, 30.0, 150.0]))
    triangle = np.ones(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    for angle in normals:  # three fixed half-planes
        triangle &= x * np.cos(angle) + y * np.sin(angle) <= 0.5
    return triangle


def _in_cross(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ax, ay = np.abs(x), np.abs(y)
    return ((ax <= _CROSS_HALF_LENGTH) & (ay <= _CROSS_HALF_WIDTH)) | (
        (ax <= _CROSS_HALF_WIDTH) & (ay <= _CROSS_HALF_LENGTH)
    )


_INSIDE = (_in_square, _in_triangle, _in_cross)  # indexed like SHAPES


def _inside(shape: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether points ``(x, y)`` (circumradius 1, y up, object frame) are inside each shape."""
    square, triangle, cross = (test(x, y) for test in _INSIDE)
    return np.where(shape == 0, square, np.where(shape == 1, triangle, cross))


def centre_band(size: int) -> tuple[int, int]:
    """The lowest and highest object centre (pixel corners) for an image of side ``size``."""
    lo = int(np.ceil(RADIUS_FRACTION * size)) + 1
    return lo, size - lo


def hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """HSV → RGB at full saturation and value.

    Parameters
    ----------
    hue : np.ndarray
        ``(n,)`` hue in [0, 1) (taken modulo 1).

    Returns
    -------
    np.ndarray
        ``(n, 3)`` float64 in [0, 1].
    """
    h6 = (np.asarray(hue, dtype=np.float64) % 1.0) * 6.0  # (n,)
    # standard piecewise-linear HSV ramps: channel k peaks around sector offset k
    offsets = np.array([5.0, 3.0, 1.0])  # R, G, B
    k = (offsets[None, :] + h6[:, None]) % 6.0  # (n, 3)
    return 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def rgb_to_hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in [0, 1) of RGB colours (the inverse of ``hue_to_rgb`` for saturated colours).

    Parameters
    ----------
    rgb : np.ndarray
        ``(..., 3)`` non-negative colours, any scale; grey colours get hue 0.

    Returns
    -------
    np.ndarray
        ``(...)`` float64 hue in [0, 1).
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hi, lo = rgb.max(axis=-1), rgb.min(axis=-1)
    chroma = np.where(hi > lo, hi - lo, 1.0)
    sector = np.where(
        hi == r,
        ((g - b) / chroma) % 6.0,
        np.where(hi == g, (b - r) / chroma + 2.0, (r - g) / chroma + 4.0),
    )
    return np.where(hi > lo, sector / 6.0, 0.0) % 1.0


def _coverage(
    shape: np.ndarray, radius_px: np.ndarray, rotation: np.ndarray, half: int
) -> np.ndarray:
    """Anti-aliased coverage of each distinct object on a ``2 * half`` pixel patch.

    The object centre sits on the patch's central pixel corner.

    Returns
    -------
    np.ndarray
        ``(m, 2 * half, 2 * half)`` float64 in [0, 1].
    """
    side = 2 * half
    sub = (np.arange(side * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - half  # sub-sample centres
    dx = sub[None, None, :]
    dy_up = -sub[None, :, None]  # screen rows grow downwards
    alpha = np.empty((len(shape), side, side))
    for index in np.unique(shape):  # test each object against its own shape only
        rows = np.flatnonzero(shape == index)
        cos, sin = np.cos(rotation[rows])[:, None, None], np.sin(rotation[rows])[:, None, None]
        r = radius_px[rows][:, None, None]
        x = (cos * dx + sin * dy_up) / r  # undo the counter-clockwise turn and the size
        y = (-sin * dx + cos * dy_up) / r
        inside = _INSIDE[index](x, y)  # (m_shape, side*s, side*s)
        blocks = inside.reshape(len(rows), side, _SUPERSAMPLE, side, _SUPERSAMPLE)
        alpha[rows] = blocks.mean(axis=(2, 4))  # (m_shape, side, side); exact: counts / 16
    return alpha


#: Patches already drawn, by (image size, shape, size, rotation, hue): the factor grids of a
#: generator hold a few hundred distinct objects, so repeated batches (data splits, the
#: interventional batches of `toybench.evaluate`) reuse them instead of super-sampling again.
#: A patch depends on its key only, so caching leaves every image bit for bit the same.
_PATCH_CACHE: dict[tuple[int, int, float, float, float], np.ndarray] = {}
_PATCH_CACHE_LIMIT = 16384  # entries (at most 44 MB of 64 × 64 patches); emptied when full


def _patches(
    size: int,
    half: int,
    shape: np.ndarray,
    obj_size: np.ndarray,
    rotation: np.ndarray,
    hue: np.ndarray,
) -> np.ndarray:
    """Coloured patches ``(m, 3, 2 * half, 2 * half)`` uint8 of ``m`` objects (cached)."""
    keys = list(
        zip(
            [size] * len(shape),
            shape.tolist(),
            obj_size.tolist(),
            rotation.tolist(),
            hue.tolist(),
            strict=True,
        )
    )
    patches = [_PATCH_CACHE.get(key) for key in keys]
    missing = np.array([i for i, patch in enumerate(patches) if patch is None], dtype=np.int64)
    if len(missing):
        radius_px = RADIUS_FRACTION * size * obj_size[missing]
        alpha = _coverage(shape[missing], radius_px, rotation[missing], half)  # (u, P, P)
        rgb = hue_to_rgb(hue[missing])  # (u, 3)
        built = np.rint(255.0 * alpha[:, None] * rgb[:, :, None, None]).astype(np.uint8)
        if len(_PATCH_CACHE) + len(missing) > _PATCH_CACHE_LIMIT:
            _PATCH_CACHE.clear()
        for i, patch in zip(missing.tolist(), built, strict=True):
            patches[i] = patch
            if len(_PATCH_CACHE) < _PATCH_CACHE_LIMIT:
                _PATCH_CACHE[keys[i]] = patch
    return np.stack(patches)  # (m, 3, P, P)


def _validate(values: Mapping[str, np.ndarray], size: int) -> tuple[np.ndarray, ...]:
    check_size("scene", size, SIZES)
    (shape, *columns), n = input_columns("scene", values, INPUTS)
    floats = [column.astype(np.float64) for column in columns]
    if (
        not np.issubdtype(shape.dtype, np.integer)
        or n
        and (shape.min() < 0 or shape.max() >= len(SHAPES))
    ):
        raise ToybenchError(f"scene: shape must be an integer index into {SHAPES}")
    if n and not np.all(np.isfinite(np.stack(floats))):
        raise ToybenchError("scene: size, hue, positions and rotation must be finite")
    obj_size, hue, pos_x, pos_y, rotation = floats
    checks = (
        (
            "size",
            obj_size,
            obj_size.min(initial=1.0) > 0 and obj_size.max(initial=0.0) <= 1,
            "(0, 1]",
        ),
        ("pos_x", pos_x, pos_x.min(initial=0.0) >= 0 and pos_x.max(initial=0.0) <= 1, "[0, 1]"),
        ("pos_y", pos_y, pos_y.min(initial=0.0) >= 0 and pos_y.max(initial=0.0) <= 1, "[0, 1]"),
        (
            "rotation",
            rotation,
            rotation.min(initial=0.0) >= 0 and rotation.max(initial=0.0) < MAX_ROTATION,
            "[0, π/2) radians (larger turns repeat the square and the cross)",
        ),
    )
    for name, _, ok, allowed in checks:
        if not ok:
            raise ToybenchError(f"scene: {name} must lie in {allowed}")
    return shape.astype(np.int64), obj_size, hue % 1.0, pos_x, pos_y, rotation


def render(values: Mapping[str, np.ndarray], size: int = 32) -> np.ndarray:
    """The ``scene`` renderer.

    Parameters
    ----------
    values : Mapping[str, np.ndarray]
        ``shape`` (int index into ``SHAPES``), ``size`` in (0, 1], ``hue`` in [0, 1),
        ``pos_x`` / ``pos_y`` in [0, 1], ``rotation`` in [0, π/2) radians; each ``(n,)``.
    size : int
        Image side, 32 or 64.

    Returns
    -------
    np.ndarray
        ``(n, 3, size, size)`` uint8 RGB.
    """
    shape, obj_size, hue, pos_x, pos_y, rotation = _validate(values, size)
    n = shape.shape[0]
    images = np.zeros((n, CHANNELS, size, size), dtype=np.uint8)  # black background
    if n == 0:
        return images
    half = int(np.ceil(RADIUS_FRACTION * size)) + 1  # patch half-side: covers the circumradius
    lo, hi = centre_band(size)
    cx = np.rint(lo + pos_x * (hi - lo)).astype(np.int64)  # (n,) centre columns (pixel corners)
    cy = np.rint(lo + pos_y * (hi - lo)).astype(np.int64)

    # one coloured patch per distinct (shape, size, rotation, hue)
    codes = [np.unique(col, return_inverse=True) for col in (shape, obj_size, rotation, hue)]
    key = np.zeros(n, dtype=np.int64)
    for levels, inverse in codes:
        key = key * len(levels) + inverse.reshape(-1)
    _, first, which = np.unique(key, return_index=True, return_inverse=True)
    which = which.reshape(-1)
    patches = _patches(size, half, shape[first], obj_size[first], rotation[first], hue[first])

    offset_key = (cy - half) * size + (cx - half)
    order = np.argsort(offset_key, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(offset_key[order]) != 0])
    for group in np.split(order, starts[1:]):  # one group per distinct position
        top, left = cy[group[0]] - half, cx[group[0]] - half
        images[group, :, top : top + 2 * half, left : left + 2 * half] = patches[which[group]]
    return images

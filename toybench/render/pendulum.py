"""A CausalVAE-style pendulum scene: pendulum angle and light position cause the shadow.

After the synthetic pendulum data of CausalVAE (Yang, Liu, Chen, Shen, Hao & Wang 2021,
https://arxiv.org/abs/2004.08697): a pendulum hangs from a pivot, a sun moves along the top of the
image, and the pendulum casts a shadow on the ground. The four concepts are
``pendulum_angle`` and ``light_position`` (causes) and ``shadow_length`` and ``shadow_position``
(effects, by geometry). The renderer draws the shadow from the *given* shadow values, never
recomputed from the angle and the light, so that interventions on the shadow are visible.

Geometry (``shadow_geometry``), in canvas units: x in [0, 1] from left to right, y in [0, 1] from
the bottom up; the image side is 1 whatever the pixel size.

* The pivot is at ``(0.5, PIVOT_Y)``; the rod of length ``ROD_LENGTH`` ends in a bob of radius
  ``BOB_RADIUS``. ``pendulum_angle`` θ (radians) is measured from the downward vertical, positive
  when the bob swings to the right: bob centre ``pivot + ROD_LENGTH · (sin θ, −cos θ)``.
* The sun is drawn at ``(light_position, SUN_Y)``. Its light is parallel (a distant sun, as in
  CausalVAE), along the direction from the sun to the pivot; a point ``(x, y)`` therefore casts
  its shadow on the ground line ``y = GROUND_Y`` at
  ``x + (y − GROUND_Y) · (0.5 − light_position) / (SUN_Y − PIVOT_Y)``.
* The shadow is the projection of the pendulum from the pivot to the far edge of the bob (distance
  ``ROD_LENGTH + BOB_RADIUS`` from the pivot along the rod, as CausalVAE projects the ball's
  far end). ``shadow_length`` is the distance between the two projected ends (canvas units,
  ≥ 0) and ``shadow_position`` their midpoint (canvas x).
* Recommended physical ranges: ``pendulum_angle`` in [−π/4, π/4], ``light_position`` in
  [0.25, 0.75]. Over that box the shadow stays on the canvas: ``shadow_length`` in
  [0, 0.39] and ``shadow_position`` in [0.16, 0.84] (``shadow_ranges`` computes them).

Drawing: light sky, a ground strip below ``GROUND_Y``, the shadow as a dark capsule on the ground
strip from ``shadow_position − shadow_length / 2`` to ``shadow_position + shadow_length / 2``
(rounded ends, so a zero-length shadow is still a visible spot), the rod, the red bob, the pivot and
the orange sun. Every element is a signed distance field with a one-pixel anti-aliasing ramp,
evaluated for a whole batch at once with numpy broadcasting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from toybench.errors import ToybenchError
from toybench.render._inputs import check_size, input_columns

INPUTS: tuple[str, ...] = ("pendulum_angle", "light_position", "shadow_length", "shadow_position")
SIZES: tuple[int, ...] = (32, 64)
CHANNELS = 3

PIVOT_Y = 0.55
SUN_Y = 0.9
GROUND_Y = 0.12
ROD_LENGTH = 0.26
BOB_RADIUS = 0.06
SUN_RADIUS = 0.07
PIVOT_RADIUS = 0.025
ROD_HALF_WIDTH = 0.02
SHADOW_HALF_WIDTH = 0.035
ANGLE_RANGE = (-np.pi / 4, np.pi / 4)
LIGHT_RANGE = (0.25, 0.75)

_SKY = np.array([215.0, 228.0, 240.0])
_GROUND = np.array([185.0, 165.0, 130.0])
_SHADOW = np.array([45.0, 40.0, 35.0])
_ROD = np.array([70.0, 70.0, 70.0])
_BOB = np.array([200.0, 30.0, 30.0])
_SUN = np.array([255.0, 175.0, 0.0])
_CHUNK = 4096  # images per block, bounds peak memory


def _ground_x(x: np.ndarray, y: np.ndarray, light_position: np.ndarray) -> np.ndarray:
    """Where the parallel light through ``(x, y)`` meets the ground line (canvas x)."""
    slope = (0.5 - light_position) / (SUN_Y - PIVOT_Y)  # horizontal run per unit of descent
    return x + (y - GROUND_Y) * slope


def shadow_geometry(angle: np.ndarray, light_position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shadow of the pendulum on the ground line, by parallel projection from the light.

    Parameters
    ----------
    angle : np.ndarray
        Pendulum angle θ in radians from the downward vertical (positive: bob to the right).
    light_position : np.ndarray
        Sun x position in canvas units; broadcast against ``angle``.

    Returns
    -------
    shadow_length : np.ndarray
        Distance between the projected pivot and the projected far edge of the bob (canvas units).
    shadow_position : np.ndarray
        Midpoint of the two projected ends (canvas x).

    Examples
    --------
    >>> length, position = shadow_geometry(np.array([0.0]), np.array([0.5]))
    >>> float(length[0]), float(position[0])
    (0.0, 0.5)
    """
    angle = np.asarray(angle, dtype=np.float64)
    light_position = np.asarray(light_position, dtype=np.float64)
    reach = ROD_LENGTH + BOB_RADIUS
    tip_x = 0.5 + reach * np.sin(angle)
    tip_y = PIVOT_Y - reach * np.cos(angle)
    pivot_shadow = _ground_x(np.float64(0.5), np.float64(PIVOT_Y), light_position)
    tip_shadow = _ground_x(tip_x, tip_y, light_position)
    return np.abs(tip_shadow - pivot_shadow), 0.5 * (tip_shadow + pivot_shadow)


def shadow_length(angle: np.ndarray, light_position: np.ndarray) -> np.ndarray:
    """``shadow_geometry(...)[0]``: the shadow length alone (for a ``function`` mechanism)."""
    return shadow_geometry(angle, light_position)[0]


def shadow_position(angle: np.ndarray, light_position: np.ndarray) -> np.ndarray:
    """``shadow_geometry(...)[1]``: the shadow midpoint alone (for a ``function`` mechanism)."""
    return shadow_geometry(angle, light_position)[1]


def shadow_ranges(points: int = 201) -> dict[str, tuple[float, float]]:
    """Ranges of shadow length and position over the recommended angle × light box.

    Both are monotone in each argument along the box edges, so a fine grid gives them to grid
    precision.
    """
    angle, light = np.meshgrid(np.linspace(*ANGLE_RANGE, points), np.linspace(*LIGHT_RANGE, points))
    length, position = shadow_geometry(angle, light)
    return {
        "shadow_length": (float(length.min()), float(length.max())),
        "shadow_position": (float(position.min()), float(position.max())),
    }


def _alpha(distance: np.ndarray, size: int) -> np.ndarray:
    """Coverage from a signed distance (canvas units): a one-pixel linear ramp at the edge."""
    return np.clip(0.5 - distance * size, 0.0, 1.0)


def _disc(px, py, cx, cy, radius) -> np.ndarray:
    return np.hypot(px - cx, py - cy) - radius


def _capsule(px, py, ax, ay, bx, by, radius) -> np.ndarray:
    """Signed distance to the segment ``a → b`` thickened by ``radius`` (broadcasting)."""
    dx, dy = bx - ax, by - ay
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.hypot(px - ax - t * dx, py - ay - t * dy) - radius


def _validate(values: Mapping[str, np.ndarray], size: int) -> tuple[np.ndarray, ...]:
    check_size("pendulum", size, SIZES)
    columns, n = input_columns("pendulum", values, INPUTS)
    arrays = [column.astype(np.float64) for column in columns]
    if n and not np.all(np.isfinite(np.stack(arrays))):
        raise ToybenchError("pendulum: every input must be finite")
    angle, light, length, position = arrays
    if n and np.abs(angle).max() > np.pi / 2:
        raise ToybenchError("pendulum: pendulum_angle must lie in [-π/2, π/2] radians")
    if n and (light.min() < 0 or light.max() > 1):
        raise ToybenchError("pendulum: light_position must lie in [0, 1]")
    if n and length.min() < 0:
        raise ToybenchError("pendulum: shadow_length must be >= 0")
    return angle, light, length, position


def render(values: Mapping[str, np.ndarray], size: int = 32) -> np.ndarray:
    """The ``pendulum`` renderer.

    Parameters
    ----------
    values : Mapping[str, np.ndarray]
        ``pendulum_angle`` (radians), ``light_position`` (canvas x in [0, 1]), ``shadow_length``
        (canvas units, ≥ 0), ``shadow_position`` (canvas x); each ``(n,)`` float.
    size : int
        Image side, 32 or 64.

    Returns
    -------
    np.ndarray
        ``(n, 3, size, size)`` uint8 RGB.
    """
    angle, light, length, position = _validate(values, size)
    n = angle.shape[0]
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    px = centres[None, None, :]  # (1, 1, S) canvas x of each column
    py = 1.0 - centres[None, :, None]  # (1, S, 1) canvas y of each row (rows grow downwards)
    sky = np.where(py[0] < GROUND_Y, 0.0, 1.0)  # (S, 1): 1 above the ground line
    background = (sky[..., None] * _SKY + (1.0 - sky[..., None]) * _GROUND).astype(np.float32)
    background = np.broadcast_to(background, (size, size, 3)).transpose(2, 0, 1)  # (3, S, S)

    bands = _bands(size)
    images = np.empty((n, CHANNELS, size, size), dtype=np.uint8)
    images[...] = np.rint(background).astype(np.uint8)  # rows outside every band stay background
    for start in range(0, n, _CHUNK):
        block = slice(start, min(start + _CHUNK, n))
        angle_b, light_b, length_b, position_b = (
            a[block].astype(np.float32)[:, None, None] for a in (angle, light, length, position)
        )  # each (b, 1, 1)
        scene_b = _Scene(
            bob_x=0.5 + ROD_LENGTH * np.sin(angle_b),
            bob_y=PIVOT_Y - ROD_LENGTH * np.cos(angle_b),
            shadow_left=position_b - 0.5 * length_b,
            shadow_right=position_b + 0.5 * length_b,
            sun_x=light_b,
        )
        for band, rows in bands.items():  # three fixed, disjoint bands of rows
            canvas = np.broadcast_to(
                background[:, rows], (angle_b.shape[0], 3) + background[:, rows].shape[1:]
            ).copy()  # (b, 3, rows, S)
            for distance, colour in _layers(band, scene_b, px, py[:, rows]):
                alpha = _alpha(distance, size)[:, None]  # (b, 1, rows, S)
                update = colour.astype(np.float32)[None, :, None, None] - canvas
                update *= alpha
                canvas += update
            images[block, :, rows] = np.rint(canvas, out=canvas)
    return images


class _Scene(NamedTuple):
    """Per-image geometry of a block, each ``(b, 1, 1)`` float32 in canvas units."""

    bob_x: np.ndarray
    bob_y: np.ndarray
    shadow_left: np.ndarray
    shadow_right: np.ndarray
    sun_x: np.ndarray


def _layers(band: str, scene: _Scene, px: np.ndarray, py: np.ndarray) -> tuple:
    """Painter's order of ``(signed distance (b, rows, S), colour)`` for one band of rows."""
    if band == "shadow":
        y = 0.5 * GROUND_Y
        shadow = _capsule(px, py, scene.shadow_left, y, scene.shadow_right, y, SHADOW_HALF_WIDTH)
        return ((shadow, _SHADOW),)
    if band == "pendulum":
        return (
            (_capsule(px, py, 0.5, PIVOT_Y, scene.bob_x, scene.bob_y, ROD_HALF_WIDTH), _ROD),
            (_disc(px, py, scene.bob_x, scene.bob_y, BOB_RADIUS), _BOB),
            (_disc(px, py, 0.5, PIVOT_Y, PIVOT_RADIUS), _ROD),
        )
    return ((_disc(px, py, scene.sun_x, SUN_Y, SUN_RADIUS), _SUN),)


def _bands(size: int) -> dict[str, slice]:
    """The disjoint bands of image rows that each group of layers can touch.

    Each layer only draws within a fixed band of rows; compositing there alone saves most of the
    work, and everything else is plain background.
    """
    return {
        "shadow": _rows(size, 0.0, GROUND_Y),
        # |angle| <= π/2 keeps the bob below the pivot's height plus its radius
        "pendulum": _rows(size, PIVOT_Y - ROD_LENGTH - BOB_RADIUS, PIVOT_Y + BOB_RADIUS),
        "sun": _rows(size, SUN_Y - SUN_RADIUS, SUN_Y + SUN_RADIUS),
    }


def _rows(size: int, y_low: float, y_high: float) -> slice:
    """The image rows whose centres lie within one pixel of the canvas-y band [y_low, y_high]."""
    pad = 1.0 / size
    top = int(np.floor((1.0 - y_high - pad) * size))  # rows grow downwards
    bottom = int(np.ceil((1.0 - y_low + pad) * size))
    return slice(max(top, 0), min(bottom, size))

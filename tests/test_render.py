"""Renderers: the registry contract for every renderer and size, then each renderer's geometry."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from toybench.errors import ToybenchError
from toybench.render import RENDERERS, Renderer, get_renderer, pendulum, render, scene, sprites

# level sets like the shipped generators use, per renderer and input (physical values)
LEVELS = {
    "sprites": {
        "shape": np.arange(3),
        "scale": sprites.DSPRITES_SCALES,
        "orientation": sprites.DSPRITES_ORIENTATIONS,
        "pos_x": sprites.DSPRITES_POSITIONS,
        "pos_y": sprites.DSPRITES_POSITIONS,
    },
    "scene": {
        "shape": np.arange(3),
        "size": np.linspace(0.5, 1.0, 6),
        "hue": np.arange(8) / 8,
        "pos_x": np.linspace(0.0, 1.0, 8),
        "pos_y": np.linspace(0.0, 1.0, 8),
        "rotation": np.linspace(0.0, np.pi / 3, 5),
    },
    "pendulum": {
        "pendulum_angle": np.linspace(-np.pi / 4, np.pi / 4, 9),
        "light_position": np.linspace(0.25, 0.75, 9),
        "shadow_length": np.linspace(0.0, 0.39, 8),
        "shadow_position": np.linspace(0.16, 0.84, 8),
    },
}
CASES = [(name, size) for name, r in RENDERERS.items() for size in r.sizes]


def random_values(name: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` random combinations of the renderer's levels."""
    rng = np.random.default_rng(seed)
    return {k: rng.choice(levels, size=n) for k, levels in LEVELS[name].items()}


def with_value(values: dict[str, np.ndarray], name: str, value) -> dict[str, np.ndarray]:
    return {**values, name: np.full_like(values[name], value)}


def ink(images: np.ndarray) -> np.ndarray:
    """Boolean foreground of single-channel images ``(n, 1, H, W) -> (n, H, W)``."""
    return images[:, 0] > 0


def centroid(mask: np.ndarray) -> np.ndarray:
    """Pixel-centre centroid ``(x, y)`` of each boolean mask ``(n, H, W) -> (n, 2)``."""
    rows, cols = np.indices(mask.shape[1:]) + 0.5
    area = mask.sum(axis=(1, 2))
    return np.stack(
        [(mask * cols).sum(axis=(1, 2)) / area, (mask * rows).sum(axis=(1, 2)) / area], 1
    )


# ----------------------------------------------------------------------------- registry contract


def test_registry_is_a_plain_dict_of_renderers():
    assert type(RENDERERS) is dict and set(RENDERERS) == {"sprites", "scene", "pendulum"}
    for name, renderer in RENDERERS.items():
        assert isinstance(renderer, Renderer) and renderer.name == name
        assert set(LEVELS[name]) == set(renderer.inputs)
        assert set(renderer.categories) <= set(renderer.inputs)
    assert RENDERERS["sprites"].categories == {"shape": ("square", "ellipse", "heart")}


def test_unknown_renderer_lists_the_valid_names():
    with pytest.raises(ToybenchError, match="pendulum, scene, sprites"):
        get_renderer("mnist")


@pytest.mark.parametrize(("name", "size"), CASES)
def test_shapes_dtypes_ranges(name, size):
    renderer = RENDERERS[name]
    images = render(name, random_values(name, 50), size)
    assert images.shape == (50, renderer.channels, size, size)
    assert images.dtype == np.uint8
    assert images.min() == 0 or name == "pendulum"  # backgrounds: black for sprites and scenes
    assert images.max() == 255
    if name == "sprites":
        assert set(np.unique(images)) == {0, 255}
    empty = render(name, {k: v[:0] for k, v in random_values(name, 1).items()}, size)
    assert empty.shape == (0, renderer.channels, size, size)


@pytest.mark.parametrize(("name", "size"), CASES)
def test_deterministic_and_batch_independent(name, size):
    values = random_values(name, 64, seed=1)
    first = render(name, values, size)
    np.testing.assert_array_equal(first, render(name, values, size))
    # an image depends only on its own values, not on what else is in the batch
    subset = np.arange(0, 64, 5)
    np.testing.assert_array_equal(
        first[subset], render(name, {k: v[subset] for k, v in values.items()}, size)
    )


@pytest.mark.parametrize("name", list(RENDERERS))
def test_bad_inputs_are_one_line_errors(name):
    renderer = RENDERERS[name]
    values = random_values(name, 4)
    with pytest.raises(ToybenchError, match="missing"):
        render(
            name, {k: v for k, v in values.items() if k != renderer.inputs[-1]}, renderer.sizes[0]
        )
    with pytest.raises(ToybenchError, match="unexpected: colour"):
        render(name, {**values, "colour": values[renderer.inputs[0]]}, renderer.sizes[0])
    with pytest.raises(ToybenchError, match="sizes"):
        render(name, values, 48)
    with pytest.raises(ToybenchError, match="same length"):
        renderer.fn(
            {**values, renderer.inputs[-1]: values[renderer.inputs[-1]][:2]}, renderer.sizes[0]
        )
    with pytest.raises(ToybenchError, match="finite"):
        renderer.fn(with_value(values, renderer.inputs[-1], np.nan), renderer.sizes[0])


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("sprites", "pos_x", 1.5),
        ("sprites", "scale", 0.0),
        ("sprites", "shape", 3),
        ("scene", "rotation", np.pi / 2),
        ("scene", "size", 1.2),
        ("scene", "pos_y", -0.1),
        ("scene", "shape", -1),
        ("pendulum", "light_position", 1.1),
        ("pendulum", "pendulum_angle", 2.0),
        ("pendulum", "shadow_length", -0.1),
    ],
)
def test_out_of_range_values_are_refused(name, key, value):
    values = with_value(random_values(name, 4), key, value)
    with pytest.raises(ToybenchError, match=key):
        RENDERERS[name].fn(values, RENDERERS[name].sizes[0])


# ----------------------------------------------------------------------------- sprites


def sprite_values(shape, scale, orientation, pos_x, pos_y) -> dict[str, np.ndarray]:
    arrays = np.broadcast_arrays(
        np.asarray(shape),
        np.asarray(scale, float),
        np.asarray(orientation, float),
        np.asarray(pos_x, float),
        np.asarray(pos_y, float),
    )
    arrays = [np.atleast_1d(a).ravel() for a in arrays]
    return dict(zip(sprites.INPUTS, [arrays[0].astype(np.int64), *arrays[1:]], strict=True))


def test_axis_aligned_square_covers_exactly_its_pixels():
    """Known answer: side 12 at scale 1 and 6 at scale 0.5, on whole pixels of the 64 grid."""
    images = sprites.render(sprite_values(0, [1.0, 0.5], 0.0, 0.0, 0.0), 64)
    mask = ink(images)
    assert mask[0].sum() == 144 and mask[1].sum() == 36
    rows, cols = np.nonzero(mask[0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 21, 10, 21)  # centre at 16


@pytest.mark.parametrize("size", sprites.SIZES)
@pytest.mark.parametrize("shape", [0, 1, 2])
def test_area_grows_with_scale_squared(shape, size):
    """Mean area over 40 orientations and a few positions is ∝ scale² (pixelation averages out)."""
    orientation = np.repeat(sprites.DSPRITES_ORIENTATIONS, 3)  # (120,)
    pos = np.tile([0.0, 0.37, 0.81], 40)
    areas = np.array(
        [
            ink(sprites.render(sprite_values(shape, s, orientation, pos, pos[::-1]), size))
            .sum((1, 2))
            .mean()
            for s in sprites.DSPRITES_SCALES
        ]
    )
    ratio = areas / areas[-1] / sprites.DSPRITES_SCALES**2
    np.testing.assert_allclose(ratio, 1.0, atol=0.02 if size == 64 else 0.05)
    if size == 64:  # known answers: square of side 12, ellipse of semi-axes 10 × 5, at scale 1
        expected = {0: 144.0, 1: 50.0 * np.pi}.get(shape)
        if expected is not None:
            np.testing.assert_allclose(areas[-1], expected, rtol=0.01)


@pytest.mark.parametrize("size", sprites.SIZES)
def test_centroid_tracks_position(size):
    pos = sprites.DSPRITES_POSITIONS
    grid_x, grid_y = np.meshgrid(pos[::3], pos[::5])  # (7, 11)
    for shape in range(3):
        orientation = sprites.DSPRITES_ORIENTATIONS[7]
        images = sprites.render(
            sprite_values(shape, 1.0, orientation, grid_x.ravel(), grid_y.ravel()), size
        )
        found = centroid(ink(images))  # (n, 2)
        expected = (16.0 + 31.0 * np.stack([grid_x.ravel(), grid_y.ravel()], 1)) * size / 64
        moved = found - found[:1]  # every shape: displacement follows the position exactly
        np.testing.assert_allclose(moved, expected - expected[:1], atol=1.0)
        if shape in (0, 1):  # centrally symmetric: the centroid is the sprite centre
            np.testing.assert_allclose(found, expected, atol=1.0)


def test_square_is_unchanged_by_a_quarter_turn():
    """Index 10 of 40 orientations in [0, 2π) is π/2. (The original grid includes 2π, so its step
    is 2π/39 and no level is exactly π/2; see the sprites module docstring.)"""
    quarter = np.linspace(0.0, 2 * np.pi, 40, endpoint=False)[10]
    assert quarter == pytest.approx(np.pi / 2)
    scale, pos = np.meshgrid(sprites.DSPRITES_SCALES, sprites.DSPRITES_POSITIONS[::4])
    for size in sprites.SIZES:
        for base in (0.0, 0.3):
            turned = sprites.render(sprite_values(0, scale, base + quarter, pos, pos[::-1]), size)
            straight = sprites.render(sprite_values(0, scale, base, pos, pos[::-1]), size)
            np.testing.assert_array_equal(turned, straight)


def test_ellipse_and_heart_change_under_rotation_with_their_symmetries():
    scale, pos = np.meshgrid(sprites.DSPRITES_SCALES, sprites.DSPRITES_POSITIONS[::4])
    for shape in (1, 2):
        straight = sprites.render(sprite_values(shape, scale, 0.0, pos, pos), 64)
        quarter = sprites.render(sprite_values(shape, scale, np.pi / 2, pos, pos), 64)
        half = sprites.render(sprite_values(shape, scale, np.pi, pos, pos), 64)
        assert np.all(np.any(straight != quarter, axis=(1, 2, 3)))
        if shape == 1:  # the ellipse has a 180° symmetry; centred on a pixel corner it is exact
            np.testing.assert_array_equal(straight, half)
        else:  # the heart has none
            assert np.all(np.any(straight != half, axis=(1, 2, 3)))


def test_heart_points_down_and_orientation_turns_counter_clockwise():
    heart = ink(sprites.render(sprite_values(2, 1.0, [0.0, np.pi / 2], 0.5, 0.5), 64))
    rows, cols = np.nonzero(heart[0])
    assert cols[rows == rows.max()].mean() == pytest.approx(cols.mean(), abs=1.0)  # tip at bottom
    rows, cols = np.nonzero(heart[1])
    # turned 90° counter-clockwise on screen, the tip points right
    assert rows[cols == cols.max()].mean() == pytest.approx(rows.mean(), abs=1.0)
    ellipse = ink(sprites.render(sprite_values(1, 1.0, [0.0, np.pi / 4], 0.5, 0.5), 64))
    rows, cols = np.nonzero(ellipse[1])
    # long axis now runs lower-left to upper-right: for a 2:1 ellipse at 45° the pixel coordinates
    # correlate with (a² − b²) / (a² + b²) = 0.6
    assert np.corrcoef(cols, -rows)[0, 1] == pytest.approx(0.6, abs=0.05)


def test_original_grid_first_and_last_orientation_coincide():
    values = sprite_values([0, 1, 2], 1.0, 0.0, 0.4, 0.6)
    last = with_value(values, "orientation", sprites.DSPRITES_ORIENTATIONS[-1])
    np.testing.assert_array_equal(sprites.render(values, 64), sprites.render(last, 64))


@pytest.mark.parametrize("size", sprites.SIZES)
def test_packed_rendering_matches_packbits(size):
    values = random_values("sprites", 200, seed=3)
    packed = sprites.render_packed(*(values[k] for k in sprites.INPUTS), size=size)
    np.testing.assert_array_equal(
        packed, np.packbits(sprites.render(values, size)[:, 0] > 0, axis=-1)
    )


@pytest.mark.parametrize("size", sprites.SIZES)
def test_sprite_mask_cache_changes_no_pixel(size, monkeypatch):
    # the masks kept across calls (sprites._MASKS) are those a fresh computation gives: render
    # with an empty cache, again from the cache, and with a cache so small that it starts over
    values = random_values("sprites", 3000, seed=5)
    monkeypatch.setattr(sprites, "_MASKS", {})
    cold = sprites.render(values, size)
    assert sum(map(len, sprites._MASKS.values())) > 0
    warm = sprites.render(values, size)
    monkeypatch.setattr(sprites, "_MASKS_LIMIT", 50)
    small = sprites.render(values, size)  # more masks than the limit: the cache starts over
    np.testing.assert_array_equal(cold, warm)
    np.testing.assert_array_equal(cold, small)
    fresh = []
    for i in range(0, 3000, 97):  # one sprite per call, each drawn with an empty cache
        monkeypatch.setattr(sprites, "_MASKS", {})
        fresh.append(sprites.render({k: v[i : i + 1] for k, v in values.items()}, size)[0])
    np.testing.assert_array_equal(cold[::97], np.stack(fresh))


def test_full_grid_factors_follow_the_original_order():
    factors = sprites.full_grid_factors()
    assert factors.shape == (737280, 5)
    np.testing.assert_array_equal(factors[:3], [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 2]])
    np.testing.assert_array_equal(factors[32], [0, 0, 0, 1, 0])  # pos_y fastest, then pos_x
    np.testing.assert_array_equal(factors[-1], [2, 5, 39, 31, 31])


@pytest.mark.slow
def test_full_grid_matches_the_renderer():
    packed, factors = sprites.render_full_grid(64)
    assert packed.shape == (737280, 64, 8) and packed.dtype == np.uint8
    rng = np.random.default_rng(0)
    pick = rng.choice(737280, size=500, replace=False)
    values = {
        "shape": factors[pick, 0],
        "scale": sprites.DSPRITES_SCALES[factors[pick, 1]],
        "orientation": sprites.DSPRITES_ORIENTATIONS[factors[pick, 2]],
        "pos_x": sprites.DSPRITES_POSITIONS[factors[pick, 3]],
        "pos_y": sprites.DSPRITES_POSITIONS[factors[pick, 4]],
    }
    np.testing.assert_array_equal(
        np.unpackbits(packed[pick], axis=-1), sprites.render(values, 64)[:, 0] // 255
    )
    assert np.all(packed.reshape(737280, -1).any(axis=1))  # no empty image anywhere on the grid


# ----------------------------------------------------------------------------- scene


def scene_grid(levels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    grids = np.meshgrid(*levels.values(), indexing="ij")
    return {k: g.ravel() for k, g in zip(levels, grids, strict=True)}


def image_digests(images: np.ndarray) -> set[bytes]:
    return {hashlib.sha1(image.tobytes()).digest() for image in images}


def test_scene_is_injective_on_the_level_grid():
    """Every concept visible at every combination of the others: the 46,080 level combinations
    of a toy-causal-like grid give 46,080 distinct images."""
    values = scene_grid(LEVELS["scene"])
    images = scene.render(values, 32)
    assert len(image_digests(images)) == images.shape[0]


@pytest.mark.parametrize("size", scene.SIZES)
def test_every_scene_concept_changes_the_image_visibly(size):
    """For random combinations, moving any one concept to any other level changes the image by
    at least a clearly visible amount somewhere."""
    base = random_values("scene", 40, seed=4)
    before = scene.render(base, size).astype(np.int16)
    for name, levels in LEVELS["scene"].items():
        for level in levels:
            changed = base[name] != level
            after = scene.render(with_value(base, name, level), size).astype(np.int16)
            largest = np.abs(after - before).max(axis=(1, 2, 3))  # (n,)
            assert np.all(largest[changed] >= 48), (name, level)
            assert np.all(largest[~changed] == 0)


@pytest.mark.parametrize("size", scene.SIZES)
def test_scene_hue_is_recoverable_from_pixels(size):
    values = random_values("scene", 200, seed=5)
    values["hue"] = np.random.default_rng(6).uniform(0.0, 1.0, 200)  # any hue, not only levels
    images = scene.render(values, size).astype(np.float64)  # (n, 3, S, S)
    brightness = images.max(axis=1)  # (n, S, S)
    full = brightness >= 0.9 * brightness.max(axis=(1, 2), keepdims=True)  # fully covered pixels
    mean_rgb = (images * full[:, None]).sum(axis=(2, 3)) / full.sum(axis=(1, 2))[:, None]  # (n, 3)
    estimate = scene.rgb_to_hue(mean_rgb)
    error = np.abs((estimate - values["hue"] + 0.5) % 1.0 - 0.5)  # circular distance
    assert error.max() < 1.0 / 200  # uint8 rounding only
    # and the object always stands out of the black background at full value
    np.testing.assert_array_equal(images.max(axis=(1, 2, 3)), 255)


def test_hue_conversion_round_trips_and_hits_the_primaries():
    hues = np.linspace(0.0, 1.0, 721)[:-1]
    np.testing.assert_allclose(scene.rgb_to_hue(scene.hue_to_rgb(hues)), hues, atol=1e-12)
    np.testing.assert_allclose(
        scene.hue_to_rgb(np.array([0.0, 1 / 3, 2 / 3, 1 / 6])),
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]],
    )


@pytest.mark.parametrize("size", scene.SIZES)
def test_scene_objects_stay_inside_the_canvas(size):
    extremes = {
        **LEVELS["scene"],
        "size": np.array([1.0]),
        "hue": np.array([0.0]),
        "pos_x": np.array([0.0, 1.0]),
        "pos_y": np.array([0.0, 1.0]),
        "rotation": np.linspace(0.0, np.pi / 2, 12, endpoint=False),
    }
    values = scene_grid(extremes)
    images = scene.render(values, size)
    border = np.concatenate(
        [images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], axis=-1
    )
    assert border.max() == 0
    # not clipped: each object carries as much colour as the same object in the centre
    centred = scene.render(
        {
            **values,
            "pos_x": np.full_like(values["pos_x"], 0.5),
            "pos_y": np.full_like(values["pos_y"], 0.5),
        },
        size,
    )
    np.testing.assert_array_equal(images.sum(axis=(1, 2, 3)), centred.sum(axis=(1, 2, 3)))


def test_scene_rotation_levels_are_distinct_for_every_shape_but_repeat_after_symmetry():
    rotations = np.linspace(0.0, np.pi / 2, 24, endpoint=False)  # 3.75° steps, finer than needed
    values = scene_grid(
        {
            "shape": np.arange(3),
            "size": np.array([1.0]),
            "hue": np.array([0.3]),
            "pos_x": np.array([0.5]),
            "pos_y": np.array([0.5]),
            "rotation": rotations,
        }
    )
    assert len(image_digests(scene.render(values, 64))) == 3 * 24
    # the symmetry argument behind the [0, π/2) range: each shape is invariant under its period
    # (random points: boundary points have measure zero)
    x, y = np.random.default_rng(11).uniform(-1.0, 1.0, (2, 20000))
    for shape, period in ((0, np.pi / 2), (1, 2 * np.pi / 3), (2, np.pi / 2)):
        c, s = np.cos(period), np.sin(period)
        inside = scene._inside(np.array(shape), x, y)
        np.testing.assert_array_equal(
            inside, scene._inside(np.array(shape), c * x + s * y, -s * x + c * y)
        )
        assert 0.2 < inside.mean() < 0.8


# ----------------------------------------------------------------------------- pendulum


def test_shadow_geometry_known_answers():
    reach = pendulum.ROD_LENGTH + pendulum.BOB_RADIUS
    light = np.linspace(0.0, 1.0, 11)
    length, position = pendulum.shadow_geometry(np.zeros(11), light)
    # hanging straight down, the shadow runs from the pivot's to the tip's projection
    slope = (0.5 - light) / (pendulum.SUN_Y - pendulum.PIVOT_Y)
    np.testing.assert_allclose(length, reach * np.abs(slope))
    np.testing.assert_allclose(
        position, 0.5 + (pendulum.PIVOT_Y - pendulum.GROUND_Y - reach / 2) * slope
    )
    # with the sun straight above the pivot, the shadow is the rod's horizontal extent
    angle = np.linspace(-np.pi / 4, np.pi / 4, 9)
    length, position = pendulum.shadow_geometry(angle, 0.5)
    np.testing.assert_allclose(length, reach * np.abs(np.sin(angle)))
    np.testing.assert_allclose(position, 0.5 + reach * np.sin(angle) / 2)


def test_shadow_geometry_is_mirror_symmetric_and_projects_along_the_light():
    rng = np.random.default_rng(7)
    angle, light = rng.uniform(-np.pi / 4, np.pi / 4, 100), rng.uniform(0.25, 0.75, 100)
    length, position = pendulum.shadow_geometry(angle, light)
    mirrored_length, mirrored_position = pendulum.shadow_geometry(-angle, 1.0 - light)
    np.testing.assert_allclose(mirrored_length, length)
    np.testing.assert_allclose(mirrored_position, 1.0 - position)
    # the tip, its shadow and the light direction are collinear (cross product zero)
    reach = pendulum.ROD_LENGTH + pendulum.BOB_RADIUS
    tip = np.stack([0.5 + reach * np.sin(angle), pendulum.PIVOT_Y - reach * np.cos(angle)], 1)
    pivot_shadow = 0.5 + (pendulum.PIVOT_Y - pendulum.GROUND_Y) * (0.5 - light) / (
        pendulum.SUN_Y - pendulum.PIVOT_Y
    )
    ends = np.stack([position - length / 2, position + length / 2], 1)
    tip_shadow = np.where(np.isclose(ends[:, 0], pivot_shadow), ends[:, 1], ends[:, 0])
    direction = np.stack([0.5 - light, pendulum.PIVOT_Y - pendulum.SUN_Y * np.ones(100)], 1)
    to_ground = np.stack([tip_shadow - tip[:, 0], pendulum.GROUND_Y - tip[:, 1]], 1)
    cross = direction[:, 0] * to_ground[:, 1] - direction[:, 1] * to_ground[:, 0]
    np.testing.assert_allclose(cross, 0.0, atol=1e-12)
    ranges = pendulum.shadow_ranges()
    assert 0.0 <= length.min() and length.max() <= ranges["shadow_length"][1] + 1e-12
    assert ranges["shadow_position"][0] > 0.0 and ranges["shadow_position"][1] < 1.0


def shadow_mask(images: np.ndarray) -> np.ndarray:
    """Dark shadow pixels in the ground strip ``(n, 3, S, S) -> (n, S, S)``."""
    size = images.shape[-1]
    dark = images.max(axis=1) < 100
    dark[:, : int(size * (1 - pendulum.GROUND_Y))] = False
    return dark


@pytest.mark.parametrize("size", pendulum.SIZES)
def test_pendulum_shadow_moves_with_the_light(size):
    angle = np.repeat(np.linspace(-np.pi / 4, np.pi / 4, 5), 2)
    light = np.tile([0.3, 0.7], 5)
    length, position = pendulum.shadow_geometry(angle, light)
    values = {
        "pendulum_angle": angle,
        "light_position": light,
        "shadow_length": length,
        "shadow_position": position,
    }
    images = pendulum.render(values, size)
    shadow_x = centroid(shadow_mask(images))[:, 0] / size  # canvas x of the shadow's centroid
    np.testing.assert_allclose(shadow_x, position, atol=1.0 / size)
    # light from the left throws the shadow to the right, and vice versa
    assert np.all(shadow_x[0::2] > shadow_x[1::2])
    sun = np.all(images == pendulum._SUN[:, None, None].astype(np.uint8), axis=1)  # (n, S, S)
    np.testing.assert_allclose(centroid(sun)[:, 0] / size, light, atol=1.0 / size)


@pytest.mark.parametrize("size", pendulum.SIZES)
def test_pendulum_shadow_is_drawn_from_the_given_values(size):
    """Interventions on the shadow show: the renderer does not recompute it from the causes."""
    values = {k: v[:1].repeat(6) for k, v in random_values("pendulum", 1, seed=8).items()}
    values["shadow_position"] = np.linspace(0.2, 0.8, 6)
    values["shadow_length"] = np.full(6, 0.1)
    images = pendulum.render(values, size)
    np.testing.assert_allclose(
        centroid(shadow_mask(images))[:, 0] / size, values["shadow_position"], atol=1.0 / size
    )
    # only the ground strip differs between these images
    strip = int(size * (1 - pendulum.GROUND_Y)) - 1
    np.testing.assert_array_equal(images[:, :, :strip], images[:1, :, :strip].repeat(6, axis=0))
    # a longer shadow covers more ground, and a zero-length one is still a visible spot
    longer = pendulum.render(with_value(values, "shadow_length", 0.3), size)
    zero = pendulum.render(with_value(values, "shadow_length", 0.0), size)
    assert np.all(shadow_mask(longer).sum((1, 2)) > shadow_mask(images).sum((1, 2)))
    assert np.all(shadow_mask(zero).sum((1, 2)) > 0)


@pytest.mark.parametrize("size", pendulum.SIZES)
def test_every_pendulum_concept_changes_the_image(size):
    base = random_values("pendulum", 30, seed=9)
    before = pendulum.render(base, size).astype(np.int16)
    for name, levels in LEVELS["pendulum"].items():
        for level in levels:
            changed = ~np.isclose(base[name], level)
            after = pendulum.render(with_value(base, name, level), size).astype(np.int16)
            largest = np.abs(after - before).max(axis=(1, 2, 3))
            assert np.all(largest[changed] >= 24), (name, level)


def test_pendulum_row_bands_are_disjoint_and_cover_everything_drawn():
    """Compositing only a band of rows per layer is an optimisation: it must not clip anything."""
    rng = np.random.default_rng(10)
    n = 300
    angle = rng.uniform(-np.pi / 2, np.pi / 2, n)
    angle[:2] = [np.pi / 2, -np.pi / 2]
    length = rng.uniform(0.0, 1.0, n)
    position = rng.uniform(-0.2, 1.2, n)
    geometry = pendulum._Scene(
        bob_x=(0.5 + pendulum.ROD_LENGTH * np.sin(angle))[:, None, None],
        bob_y=(pendulum.PIVOT_Y - pendulum.ROD_LENGTH * np.cos(angle))[:, None, None],
        shadow_left=(position - length / 2)[:, None, None],
        shadow_right=(position + length / 2)[:, None, None],
        sun_x=rng.uniform(0.0, 1.0, n)[:, None, None],
    )
    for size in pendulum.SIZES:
        bands = pendulum._bands(size)
        rows = [set(range(*band.indices(size))) for band in bands.values()]
        assert sum(len(r) for r in rows) == len(set().union(*rows))  # disjoint
        centres = (np.arange(size) + 0.5) / size
        px, py = centres[None, None, :], 1.0 - centres[None, :, None]
        for band, inside in zip(bands, rows, strict=True):
            outside = np.array([r not in inside for r in range(size)])
            for distance, _ in pendulum._layers(band, geometry, px, py):
                alpha = pendulum._alpha(distance, size)  # (n, S, S)
                assert alpha[:, outside].max() == 0.0, band
                assert alpha.max() > 0.5  # the layer does draw something

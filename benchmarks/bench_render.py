"""Rendering throughput of the three renderers (pytest-benchmark).

Targets on 2 CPU cores (issue 2): the full dSprites grid (737,280 images, Matthey et al. 2017,
https://github.com/deepmind/dsprites-dataset) bit-packed in ≤ 3 s; toy scenes at 32 × 32 at
≥ 50,000 images/s. Throughput lands in ``extra_info["images_per_s"]`` of each benchmark.

Run: ``pytest benchmarks/bench_render.py --benchmark-only``.
"""

from __future__ import annotations

import numpy as np
import pytest

from toybench.render import pendulum, scene, sprites

SCENE_LEVELS = {
    "shape": np.arange(3),
    "size": np.linspace(0.5, 1.0, 6),
    "hue": np.arange(8) / 8,
    "pos_x": np.linspace(0.0, 1.0, 8),
    "pos_y": np.linspace(0.0, 1.0, 8),
    "rotation": np.linspace(0.0, np.pi / 3, 5),
}


def _record(benchmark, n_images: int, **extra) -> None:
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(images=n_images, images_per_s=round(n_images / mean), **extra)


def test_dsprites_full_grid_bitpacked(benchmark):
    packed, factors = benchmark.pedantic(
        sprites.render_full_grid, args=(64,), rounds=3, iterations=1
    )
    assert packed.shape == (737280, 64, 8) and factors.shape == (737280, 5)
    _record(benchmark, 737280, target_s=3.0, packed_mib=round(packed.nbytes / 2**20))


@pytest.mark.parametrize("masks", ["cold", "warm"])
@pytest.mark.parametrize("size", sprites.SIZES)
def test_sprites_batch(benchmark, size, masks):
    """50,000 random grid sprites; ``cold`` empties the mask cache (`sprites._MASKS`) before
    each round (a process's first render), ``warm`` keeps it (every later one)."""
    rng = np.random.default_rng(0)
    n = 50_000
    values = {
        "shape": rng.integers(0, 3, n),
        "scale": rng.choice(sprites.DSPRITES_SCALES, n),
        "orientation": rng.choice(sprites.DSPRITES_ORIENTATIONS, n),
        "pos_x": rng.choice(sprites.DSPRITES_POSITIONS, n),
        "pos_y": rng.choice(sprites.DSPRITES_POSITIONS, n),
    }
    setup = sprites._MASKS.clear if masks == "cold" else None
    images = benchmark.pedantic(sprites.render, args=(values, size), setup=setup, rounds=5,
                                iterations=1, warmup_rounds=1)
    assert images.shape == (n, 1, size, size)
    _record(benchmark, n, masks=masks)


@pytest.mark.parametrize("size", scene.SIZES)
def test_scene_batch(benchmark, size):
    rng = np.random.default_rng(0)
    n = 50_000
    values = {k: rng.choice(levels, n) for k, levels in SCENE_LEVELS.items()}
    images = benchmark.pedantic(scene.render, args=(values, size), rounds=5, iterations=1)
    assert images.shape == (n, 3, size, size)
    _record(benchmark, n, target_images_per_s=50_000 if size == 32 else None)


@pytest.mark.parametrize("size", pendulum.SIZES)
def test_pendulum_batch(benchmark, size):
    rng = np.random.default_rng(0)
    n = 20_000
    angle = rng.uniform(-np.pi / 4, np.pi / 4, n)
    light = rng.uniform(0.25, 0.75, n)
    length, position = pendulum.shadow_geometry(angle, light)
    values = {
        "pendulum_angle": angle,
        "light_position": light,
        "shadow_length": length,
        "shadow_position": position,
    }
    images = benchmark.pedantic(pendulum.render, args=(values, size), rounds=3, iterations=1)
    assert images.shape == (n, 3, size, size)
    _record(benchmark, n)

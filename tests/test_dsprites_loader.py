"""The original-dSprites ``.npz`` loader, on small archives written by the tests themselves."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from toybench.errors import ToybenchError
from toybench.render import sprites
from toybench.render.dsprites_npz import load_dsprites_npz


def _write_dsprites_like(path, n=24, seed=0, **overrides):
    """A miniature of the original archive: 0/1 images, 6 latent columns, a pickled metadata."""
    rng = np.random.default_rng(seed)
    grid = sprites.full_grid_factors()
    levels = grid[rng.choice(grid.shape[0], size=n, replace=False)]  # (n, 5)
    classes = np.concatenate([np.zeros((n, 1), dtype=np.int64), levels], axis=1)  # (n, 6)
    values = np.stack(
        [
            np.ones(n),
            levels[:, 0] + 1.0,
            sprites.DSPRITES_SCALES[levels[:, 1]],
            sprites.DSPRITES_ORIENTATIONS[levels[:, 2]],
            sprites.DSPRITES_POSITIONS[levels[:, 3]],
            sprites.DSPRITES_POSITIONS[levels[:, 4]],
        ],
        axis=1,
    )
    imgs = rng.integers(0, 2, size=(n, 64, 64), dtype=np.uint8)
    arrays = {
        "imgs": imgs,
        "latents_classes": classes,
        "latents_values": values,
        # as in the original: a pickled dict stored as a 0-d object array
        "metadata": np.array({"description": "pickled, must never be loaded"}, dtype=object),
    }
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez_compressed(path, **arrays)
    return imgs, levels


def test_loads_images_and_factors_without_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    imgs, levels = _write_dsprites_like(path)

    def refuse(*args, **kwargs):
        raise AssertionError("the loader must not unpickle anything")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    images, factors = load_dsprites_npz(path)
    assert images.shape == (24, 1, 64, 64) and images.dtype == np.uint8
    assert factors.shape == (24, 5) and factors.dtype == np.int64
    np.testing.assert_array_equal(images[:, 0], imgs * 255)
    np.testing.assert_array_equal(factors, levels)
    assert set(np.unique(images)) <= {0, 255}


def test_factor_columns_match_the_sprites_renderer_order(tmp_path):
    """Images written by our own renderer come back with the same levels, column for column."""
    path = tmp_path / "own.npz"
    levels = sprites.full_grid_factors()[::7919][:20]  # (20, 5)
    values = {
        "shape": levels[:, 0],
        "scale": sprites.DSPRITES_SCALES[levels[:, 1]],
        "orientation": sprites.DSPRITES_ORIENTATIONS[levels[:, 2]],
        "pos_x": sprites.DSPRITES_POSITIONS[levels[:, 3]],
        "pos_y": sprites.DSPRITES_POSITIONS[levels[:, 4]],
    }
    rendered = sprites.render(values, 64)  # (20, 1, 64, 64) 0/255
    classes = np.concatenate([np.zeros((20, 1), dtype=np.int64), levels], axis=1)
    np.savez(path, imgs=rendered[:, 0] // 255, latents_classes=classes)
    images, factors = load_dsprites_npz(path)
    np.testing.assert_array_equal(images, rendered)
    np.testing.assert_array_equal(factors, levels)


def test_missing_file(tmp_path):
    with pytest.raises(ToybenchError, match="not found"):
        load_dsprites_npz(tmp_path / "nope.npz")


@pytest.mark.parametrize(
    "content", [b"this is not a zip archive", pickle.dumps({"imgs": 1})], ids=["text", "pickle"]
)
def test_not_an_npz(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ToybenchError, match="not a readable .npz"):
        load_dsprites_npz(path)


def test_single_npy_is_refused(tmp_path):
    path = tmp_path / "imgs.npy"
    np.save(path, np.zeros((2, 64, 64), dtype=np.uint8))
    with pytest.raises(ToybenchError, match="single .npy"):
        load_dsprites_npz(path)


@pytest.mark.parametrize("key", ["imgs", "latents_classes"])
def test_missing_key(tmp_path, key):
    path = tmp_path / "partial.npz"
    _write_dsprites_like(path, **{key: None})
    with pytest.raises(ToybenchError, match=f"lacks {key}"):
        load_dsprites_npz(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"imgs": np.zeros((24, 32, 32), dtype=np.uint8)}, "imgs has shape"),
        ({"imgs": np.zeros((24, 64, 64), dtype=np.float32)}, "imgs has dtype"),
        ({"imgs": np.full((24, 64, 64), 255, dtype=np.uint8)}, "values above 1"),
        ({"latents_classes": np.zeros((23, 6), dtype=np.int64)}, "latents_classes has shape"),
        ({"latents_classes": np.zeros((24, 5), dtype=np.int64)}, "latents_classes has shape"),
        ({"latents_classes": np.zeros((24, 6))}, "latents_classes has dtype"),
        ({"latents_classes": np.full((24, 6), 3, dtype=np.int64)}, "column shape has levels"),
    ],
    ids=["side", "dtype", "range", "rows", "columns", "float-classes", "level-range"],
)
def test_wrong_arrays(tmp_path, override, message):
    path = tmp_path / "wrong.npz"
    _write_dsprites_like(path, **override)
    with pytest.raises(ToybenchError, match=message):
        load_dsprites_npz(path)


def test_errors_are_one_line(tmp_path):
    path = tmp_path / "wrong.npz"
    _write_dsprites_like(path, imgs=np.zeros((24, 32, 32), dtype=np.uint8))
    with pytest.raises(ToybenchError) as info:
        load_dsprites_npz(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)

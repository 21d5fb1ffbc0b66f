"""Datasets: splits and seeds, interventional sets, the checksummed cache, the torch adapter."""

import dataclasses
import math
import warnings

import numpy as np
import pytest

from toybench.data import (
    Dataset,
    TorchImages,
    cache_path,
    data_root,
    make_interventional,
    make_split,
)
from toybench.errors import ToybenchError
from toybench.specs import load_generator


@pytest.fixture()
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("TOYBENCH_DATA_ROOT", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def pairs():
    return dataclasses.replace(load_generator("dsprites-pairs"), size=32)


def test_data_root_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("TOYBENCH_DATA_ROOT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root() == tmp_path / "xdg" / "toybench"
    monkeypatch.setenv("TOYBENCH_DATA_ROOT", str(tmp_path / "mine"))
    assert data_root() == tmp_path / "mine"


def test_split_contents(root, pairs):
    ds = make_split(pairs, "train", corr=0.2, n=50, seed=3)
    assert isinstance(ds, Dataset) and len(ds) == 50
    assert ds.images.shape == (50, 1, 32, 32) and ds.images.dtype == np.uint8
    assert ds.factors.shape == (50, 5) and ds.factors.dtype == np.int64
    assert ds.concepts == pairs.concept_names and ds.dag == pairs.dag
    assert (ds.generator, ds.corr, ds.seed, ds.split) == ("dsprites-pairs", 0.2, 3, "train")
    assert ds.card["split"] == "train" and ds.card["n_samples"] == 50
    np.testing.assert_array_equal(ds.images, pairs.render(ds.factors))


def test_splits_are_deterministic_and_distinct(root, pairs):
    a = make_split(pairs, "train", corr=0.2, n=40, seed=1, cache=False)
    b = make_split(pairs, "train", corr=0.2, n=40, seed=1, cache=False)
    test = make_split(pairs, "test", corr=0.2, n=40, seed=1, cache=False)
    other = make_split(pairs, "train", corr=0.2, n=40, seed=2, cache=False)
    np.testing.assert_array_equal(a.factors, b.factors)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.factors, test.factors)
    assert not np.array_equal(a.factors, other.factors)


def test_decorrelated_split_uses_infinite_sigma(root, pairs):
    ds = make_split(pairs, "test_decorrelated", corr=0.1, n=20, seed=0, cache=False)
    assert math.isinf(ds.corr) and ds.card["corr"] == "inf"
    assert all(e["mi"] == 0.0 for e in ds.card["edges"])
    train = make_split(pairs, "train", corr=0.1, n=20, seed=0, cache=False)
    assert all(e["mi"] > 0.3 for e in train.card["edges"])


def test_generator_by_name(root):
    ds = make_split("toy-causal", "test", corr="inf", n=8, seed=0, cache=False)
    assert ds.images.shape == (8, 3, 32, 32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "n must be an integer ≥ 1"),
        ({"n": -2}, "n must be an integer ≥ 1"),
        ({"seed": -1}, "seed must be an integer ≥ 0"),
        ({"corr": 0}, "corr must be a number > 0"),
        ({"corr": "x"}, "corr must be a number > 0"),
    ],
)
def test_bad_arguments(root, pairs, kwargs, match):
    args = {"corr": 0.2, "n": 5, "seed": 0} | kwargs
    with pytest.raises(ToybenchError, match=match):
        make_split(pairs, "train", **args)


def test_unknown_split(pairs):
    with pytest.raises(ToybenchError, match="unknown split 'val'; valid: train, test"):
        make_split(pairs, "val", corr=0.2, n=5, seed=0)


def test_cache_roundtrip_and_keys(root, pairs):
    ds = make_split(pairs, "train", corr=0.2, n=30, seed=0)
    path = cache_path(pairs, "train", corr=0.2, n=30, seed=0)
    assert path.is_file() and path.is_relative_to(root)
    again = make_split(pairs, "train", corr=0.2, n=30, seed=0)
    np.testing.assert_array_equal(again.images, ds.images)
    assert again.card == ds.card
    keys = {
        cache_path(pairs, s, corr=c, n=n, seed=k)
        for s, c, n, k in [
            ("train", 0.2, 30, 0),
            ("test", 0.2, 30, 0),
            ("train", 0.4, 30, 0),
            ("train", 0.2, 31, 0),
            ("train", 0.2, 30, 1),
        ]
    }
    assert len(keys) == 5
    assert cache_path(dataclasses.replace(pairs, size=64), "train", corr=0.2, n=30, seed=0) != path
    assert not list(path.parent.glob("*.tmp"))


def _corrupt_truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _corrupt_pixels(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["images"] = arrays["images"].copy()
    arrays["images"][0, 0, 0, 0] ^= 255
    np.savez(path, **arrays)


def _corrupt_garbage(path):
    path.write_bytes(b"not an npz at all")


@pytest.mark.parametrize("corrupt", [_corrupt_truncate, _corrupt_pixels, _corrupt_garbage])
def test_corrupted_cache_is_detected_and_regenerated(root, pairs, corrupt):
    ds = make_split(pairs, "train", corr=0.3, n=25, seed=4)
    path = cache_path(pairs, "train", corr=0.3, n=25, seed=4)
    corrupt(path)
    with pytest.warns(UserWarning, match="corrupted; regenerating"):
        again = make_split(pairs, "train", corr=0.3, n=25, seed=4)
    np.testing.assert_array_equal(again.images, ds.images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file is healthy
        make_split(pairs, "train", corr=0.3, n=25, seed=4)


def test_unwritable_cache_still_returns_data(tmp_path, monkeypatch, pairs):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("TOYBENCH_DATA_ROOT", str(blocker / "sub"))
    with pytest.warns(UserWarning, match="not cached"):
        ds = make_split(pairs, "train", corr=0.3, n=5, seed=0)
    assert len(ds) == 5


def test_interventional(root, pairs):
    ds = make_interventional(pairs, {"pos_x": 3}, corr=0.1, n=200, seed=0)
    k = pairs.scm.index("pos_x")
    assert ds.split == "interventional" and np.all(ds.factors[:, k] == 3)
    assert ds.card["do"] == {"pos_x": 3}
    # pos_y still listens to pos_x (fixed at 3 of 31): it clusters near u = 3/31
    assert np.abs(ds.factors[:, pairs.scm.index("pos_y")] - 3).mean() < 4
    cut = make_interventional(pairs, {"pos_y": 0}, corr=0.1, n=10, seed=0)
    assert ("pos_x", "pos_y") not in {(e["parent"], e["child"]) for e in cut.card["edges"]}
    with pytest.raises(ToybenchError, match="level must be in 0..31"):
        make_interventional(pairs, {"pos_x": 32}, corr=0.1, n=5, seed=0)
    with pytest.raises(ToybenchError, match="unknown concept 'x'"):
        make_interventional(pairs, {"x": 0}, corr=0.1, n=5, seed=0)


def test_torch_adapter(root, pairs):
    import torch
    from torch.utils.data import DataLoader

    ds = make_split(pairs, "train", corr=0.3, n=10, seed=0, cache=False)
    wrapped = TorchImages(ds)
    image, factors = wrapped[2]
    assert len(wrapped) == 10
    assert image.dtype == torch.float32 and image.shape == (1, 32, 32)
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() == 1.0
    assert factors.dtype == torch.int64 and factors.tolist() == ds.factors[2].tolist()
    x, y = next(iter(DataLoader(wrapped, batch_size=4)))
    assert x.shape == (4, 1, 32, 32) and y.shape == (4, 5)

"""Datasets: splits and seeds, interventional sets, no files or home folder, the torch adapter."""

import dataclasses
import math
import os
import pathlib
import pwd
import subprocess
import sys

import numpy as np
import pytest

from toybench.data import (
    Dataset,
    TorchImages,
    make_interventional,
    make_split,
)
from toybench.errors import ToybenchError
from toybench.specs import load_generator


@pytest.fixture(scope="module")
def pairs():
    return dataclasses.replace(load_generator("dsprites-pairs"), size=32)


def test_split_contents(pairs):
    ds = make_split(pairs, "train", corr=0.2, n=50, seed=3)
    assert isinstance(ds, Dataset) and len(ds) == 50
    assert ds.images.shape == (50, 1, 32, 32) and ds.images.dtype == np.uint8
    assert ds.factors.shape == (50, 5) and ds.factors.dtype == np.int64
    assert ds.concepts == pairs.concept_names and ds.dag == pairs.dag
    assert (ds.generator, ds.corr, ds.seed, ds.split) == ("dsprites-pairs", 0.2, 3, "train")
    assert ds.card["split"] == "train" and ds.card["n_samples"] == 50
    np.testing.assert_array_equal(ds.images, pairs.render(ds.factors))


def test_splits_are_deterministic_and_distinct(pairs):
    a = make_split(pairs, "train", corr=0.2, n=40, seed=1)
    b = make_split(pairs, "train", corr=0.2, n=40, seed=1)
    test = make_split(pairs, "test", corr=0.2, n=40, seed=1)
    other = make_split(pairs, "train", corr=0.2, n=40, seed=2)
    np.testing.assert_array_equal(a.factors, b.factors)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.factors, test.factors)
    assert not np.array_equal(a.factors, other.factors)


def test_decorrelated_split_uses_infinite_sigma(pairs):
    ds = make_split(pairs, "test_decorrelated", corr=0.1, n=20, seed=0)
    assert math.isinf(ds.corr) and ds.card["corr"] == "inf"
    assert all(e["mi"] == 0.0 for e in ds.card["edges"])
    train = make_split(pairs, "train", corr=0.1, n=20, seed=0)
    assert all(e["mi"] > 0.3 for e in train.card["edges"])


def test_generator_by_name():
    ds = make_split("toy-causal", "test", corr="inf", n=8, seed=0)
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
def test_bad_arguments(pairs, kwargs, match):
    args = {"corr": 0.2, "n": 5, "seed": 0} | kwargs
    with pytest.raises(ToybenchError, match=match):
        make_split(pairs, "train", **args)


def test_unknown_split(pairs):
    with pytest.raises(ToybenchError, match="unknown split 'val'; valid: train, test"):
        make_split(pairs, "val", corr=0.2, n=5, seed=0)


def test_drawing_data_writes_no_files(tmp_path, monkeypatch, pairs):
    """Splits are rendered in memory: nothing appears in the home, cache or working folder."""
    for var, sub in [("HOME", "home"), ("XDG_CACHE_HOME", "xdg"), ("TOYBENCH_DATA_ROOT", "data")]:
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.chdir(tmp_path)
    for split in ("train", "test", "test_decorrelated"):
        make_split(pairs, split, corr=0.2, n=30, seed=0)
    make_interventional(pairs, {"pos_x": 1}, corr=0.2, n=10, seed=0)
    assert list(tmp_path.rglob("*")) == []


def _no_home(monkeypatch):
    """A container's ``--user 12345``: no $HOME and no passwd entry, so ``Path.home()`` raises."""
    for var in ("HOME", "XDG_CACHE_HOME", "TOYBENCH_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    def no_home(cls):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setattr(pathlib.Path, "home", classmethod(no_home))
    assert os.path.expanduser("~") == "~"


def test_data_without_a_home_folder(monkeypatch, pairs):
    _no_home(monkeypatch)
    with pytest.raises(RuntimeError):
        pathlib.Path.home()
    ds = make_split(pairs, "train", corr=0.2, n=20, seed=0)
    assert len(ds) == 20
    assert len(make_interventional(pairs, {"pos_x": 1}, corr=0.2, n=5, seed=0)) == 5


_NO_HOME_RUN = """
import pathlib, pwd, sys

def no_entry(uid):
    raise KeyError(uid)

def no_home(cls):
    raise RuntimeError("Could not determine home directory.")

pwd.getpwuid = no_entry
pathlib.Path.home = classmethod(no_home)
from toybench.cli import main
main(sys.argv[1:])
"""

_TINY_RUN = (
    "train.steps=2", "train.batch_size=32", "train.n_train=128", "train.n_test=100",
    "eval.factor_vae_train=20", "eval.factor_vae_eval=10", "eval.factor_vae_variance=100",
    "eval.beta_vae_train=20", "eval.beta_vae_eval=10", "eval.consistency_pairs=20",
    "eval.batch_size=8",
)


@pytest.mark.slow
def test_run_without_a_home_folder(tmp_path):
    """Fault 9: ``toybench run`` as a user with no $HOME and no passwd entry finishes the run
    (it used to die with a traceback from the data cache after making the run folder)."""
    repo = pathlib.Path(__file__).resolve().parents[1]
    drop = {"HOME", "XDG_CACHE_HOME", "TOYBENCH_DATA_ROOT", "MPLCONFIGDIR", "PYTHONPATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    sets = [item for o in _TINY_RUN for item in ("--set", o)]
    done = subprocess.run(
        [sys.executable, "-c", _NO_HOME_RUN, "run", "--model", "vae", "--protocol", "quick",
         "--out", "runs", *sets],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name != ".cache"]
    assert (run_dir / "metrics.json").is_file()


def test_interventional(pairs):
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


def test_torch_adapter(pairs):
    import torch
    from torch.utils.data import DataLoader

    ds = make_split(pairs, "train", corr=0.3, n=10, seed=0)
    wrapped = TorchImages(ds)
    image, factors = wrapped[2]
    assert len(wrapped) == 10
    assert image.dtype == torch.float32 and image.shape == (1, 32, 32)
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() == 1.0
    assert factors.dtype == torch.int64 and factors.tolist() == ds.factors[2].tolist()
    x, y = next(iter(DataLoader(wrapped, batch_size=4)))
    assert x.shape == (4, 1, 32, 32) and y.shape == (4, 5)

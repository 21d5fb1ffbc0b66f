"""``toybench run --test-corr / --device / --threads``: extra test splits at other σ under keys
that say the σ (registered, in config.json and its hash), leaving every other score as it was;
the device and thread count recorded in env.json and kept out of the run's hash."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from sweep_cells import TINY, one_line_error
from threadpoolctl import threadpool_limits

from toybench import runs
from toybench.cli import main
from toybench.data import make_split
from toybench.hardware import THREAD_ENV_VARS, TOYBENCH_THREADS, capped_threads
from toybench.metrics import metric_info, split_info
from toybench.rundir import RunSpec, corr_of_split, split_at_corr

IDENTITY = ("config_hash", "git_sha")


def _run(out, overrides=(), **kw):
    with capped_threads(1):
        return runs.run("vae", corr=0.2, seed=2, protocol="quick", overrides=(*TINY, *overrides),
                        out=out, plots=False, echo=lambda _line: None, **kw)


def test_split_names_say_their_sigma_and_round_trip():
    assert split_at_corr(0.4) == "test_corr0_4" and split_at_corr("inf") == "test_corrinf"
    assert split_at_corr(1e-5) == "test_corr1e-05" and split_at_corr(2.5) == "test_corr2_5"
    for sigma in (0.4, 0.25, 1e-5, 3.0, 1e300, float("inf")):
        assert corr_of_split(split_at_corr(sigma)) == sigma
        assert split_info(split_at_corr(sigma)).startswith("an extra test split")
    for name in ("test", "test_corr", "test_corr0_40", "test_corr-1", "test_corrx"):
        assert corr_of_split(name) is None
    images = make_split("toy-causal", "test_corr0_4", corr=0.2, n=50, seed=0)
    again = make_split("toy-causal", "test_corr0_4", corr="inf", n=50, seed=0)
    other = make_split("toy-causal", "test_corr0_7", corr=0.2, n=50, seed=0)
    test = make_split("toy-causal", "test", corr=0.4, n=50, seed=0)
    assert images.corr == 0.4 and (images.factors == again.factors).all()  # σ from the name
    assert not (images.factors == other.factors).all()  # one stream per σ ...
    assert not (images.factors == test.factors).all()  # ... none shared with the test split


@pytest.fixture
def restored_threads():
    """`toybench run --threads` caps its process for good: put this one back afterwards."""
    import torch

    saved = torch.get_num_threads(), {k: os.environ.get(k) for k in (*THREAD_ENV_VARS,
                                                                      TOYBENCH_THREADS)}
    with threadpool_limits(limits=None):  # restores the BLAS pools on exit
        yield
    torch.set_num_threads(saved[0])
    for key, value in saved[1].items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_extra_test_splits_device_and_threads(tmp_path, restored_threads):
    import torch

    plain = _run(tmp_path)
    torch.set_num_threads(2)  # what --threads 1 must bring down
    result = CliRunner().invoke(main, [
        "run", "--model", "vae", "--corr", "0.2", "--seed", "2", "--protocol", "quick",
        "--no-plots", "--device", "auto", "--threads", "1", "--test-corr", "inf,0.4",
        "--out", str(tmp_path), *[item for o in TINY for item in ("--set", o)]])
    assert result.exit_code == 0, result.output
    (folder,) = set(tmp_path.glob("vae-*")) - {plain.run_dir}
    assert folder.name == RunSpec("vae", corr=0.2, seed=2, protocol="quick",
                                  overrides=(*TINY, "eval.test_corr=[0.4, inf]")).name
    env = json.loads((folder / "env.json").read_text())
    assert env["device"] == "cpu" and env["torch_threads"] == 1  # auto is cpu without a GPU
    config = json.loads((folder / "config.json").read_text())
    assert "device" not in json.dumps(config)  # the device is not part of the run
    assert config["data"]["splits"]["test_corr0_4"] == {"n": 100, "corr": "0.4"}
    card = json.loads((folder / "data_card.json").read_text())
    assert set(card) == {"train", "test", "test_decorrelated", "test_corr0_4", "test_corrinf"}

    metrics = json.loads((folder / "metrics.json").read_text())
    added = {k: v for k, v in metrics.items() if k.startswith("test_corr")}
    assert {k.split(".", 1)[0] for k in added} == {"test_corr0_4", "test_corrinf"}
    for key, value in added.items():
        assert metric_info(key).contains(value), key
    interventional = ("factor_vae.", "beta_vae.", "consistency")  # on intervention_splits only
    assert {k.split(".", 1)[1] for k in added if k.startswith("test_corrinf.")} == {
        k.split(".", 1)[1] for k in plain.metrics if k.startswith("test_decorrelated.")
        and not k.split(".", 1)[1].startswith(interventional)}
    rest = {k: v for k, v in metrics.items() if k not in added and k not in IDENTITY}
    assert rest == {k: v for k, v in plain.metrics.items() if k not in IDENTITY}


@pytest.mark.parametrize(("args", "fragment"), [
    (["--test-corr", "0.4,0.4"], "--test-corr lists 0.4 more than once"),
    (["--test-corr", "abc"], "--test-corr: 'abc' is not a σ"),
    (["--set", "eval.test_corr=[0]"], "eval.test_corr: corr must be"),
    (["--set", "eval.test_corr=0.4"], "eval.test_corr expects"),
    (["--threads", "0"], "--threads must be an integer ≥ 1"),
    (["--device", "gpu"], "unknown device 'gpu'"),
])
def test_bad_run_options_are_one_line(tmp_path, args, fragment):
    result = CliRunner().invoke(main, ["run", "--model", "vae", *args, "--out", str(tmp_path)])
    one_line_error(result, fragment)
    assert not list(tmp_path.iterdir())

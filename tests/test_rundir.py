"""Run identity and run folders: `RunSpec` as a value (pickle, config.json, hash, name) and
`RunDir` states, the atomic claim, ``status.json`` and what ``metrics.json`` says about its run.

Runs are tiny (a few steps, a few hundred images, small scoring sizes) so the file stays fast.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FP32

from toybench import runs
from toybench.errors import ToybenchError
from toybench.rundir import MAX_NAME, RunClaimed, RunDir, RunSpec

ROOT = Path(__file__).resolve().parent.parent
TINY = (
    "train.steps=4", "train.batch_size=32", "train.n_train=256", "train.n_test=200",
    "train.checkpoint_every=2", "train.log_every=1", "train.hist_every=4",
    "eval.factor_vae_train=20", "eval.factor_vae_eval=10", "eval.factor_vae_variance=100",
    "eval.beta_vae_train=20", "eval.beta_vae_eval=10", "eval.consistency_pairs=20",
    "eval.batch_size=8",
    *FP32,
)


def _spec(model="vae", **kw) -> RunSpec:
    kw.setdefault("overrides", TINY)
    return RunSpec(model, kw.pop("generator", "toy-causal"), kw.pop("corr", 0.2),
                   kw.pop("seed", 1), kw.pop("protocol", "quick"), kw.pop("overrides"))


def _quiet(_line: str) -> None:
    return None


# --- RunSpec ----------------------------------------------------------------------------------


def test_spec_is_a_value_that_pickles_and_round_trips_through_config_json():
    spec = _spec(corr="0.2")
    assert spec.corr == 0.2 and isinstance(spec.corr, float)
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and hash(again) == hash(spec)
    assert again.name == spec.name and again.hash == spec.hash and again.config == spec.config
    config = json.loads(json.dumps(spec.config))  # what config.json holds
    assert RunSpec.from_config(config) == spec
    assert spec.name == f"vae-toy-causal-corr0.2-s1-{spec.hash}" and len(spec.hash) == 8


def test_spec_inf_and_fields():
    spec = _spec(corr="inf")
    assert math.isinf(spec.corr) and spec.config["data"]["corr"] == "inf"
    assert spec.config["spec"]["corr"] == "inf"
    assert spec.config["data"]["splits"]["test_decorrelated"]["corr"] == "inf"


def test_spec_hash_is_the_resolved_config_not_the_spelling():
    # the same resolved settings spelled differently name the same folder
    a = _spec(overrides=(*TINY, "train.lr=1e-3"))
    b = _spec(overrides=TINY)
    assert a.config["train"]["lr"] == b.config["train"]["lr"]
    assert a.name == b.name
    assert _spec(overrides=(*TINY, "train.lr=2e-3")).name != b.name
    assert _spec(seed=2).name != b.name and _spec(corr=0.4).name != b.name


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": -1}, "seed must be an integer"),
    ({"seed": 2**32}, "seed must be an integer"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"corr": "nan"}, "corr"),
    ({"corr": 0}, "corr"),
    ({"overrides": "train.lr=1"}, "sequence"),
])
def test_bad_spec_fields_are_one_line_errors(kwargs, message):
    with pytest.raises(ToybenchError, match=message):
        _spec(**kwargs)


def test_bad_baseline_or_override_fails_on_check_before_anything_is_written(tmp_path):
    with pytest.raises(ToybenchError, match="unknown model"):
        _spec("no-such-model").check()
    with pytest.raises(ToybenchError, match="unknown key train.nope"):
        runs.execute(_spec(overrides=("train.nope=1",)), tmp_path, echo=_quiet)
    assert list(tmp_path.iterdir()) == []


def test_names_are_safe_file_names_for_any_spec_name(tmp_path):
    spec_file = tmp_path / ("g" * 200 + " é.toml")  # a legal file name, too long for a run name
    spec_file.write_text('extends = "toy-causal"\n')
    spec = _spec(generator=str(spec_file))
    assert "/" not in spec.name and len(spec.name.encode()) <= MAX_NAME
    assert spec.name.endswith(spec.hash)


def test_building_specs_imports_no_torch():
    code = ("import sys; from toybench.rundir import RunSpec; "
            "specs = [RunSpec(m, 'toy-causal', c, s, 'standard') for m in ('vae', 'csvae', 'pca')"
            " for c in (0.2, 'inf') for s in range(20)]; "
            "names = {s.name for s in specs}; assert len(names) == 120, len(names); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]


# --- RunDir states and the claim --------------------------------------------------------------


def test_states_new_started_failed_done(tmp_path):
    spec = _spec()
    folder = RunDir.of(spec, tmp_path)
    assert folder.state() == "new"
    folder.ckpt.parent.mkdir(parents=True)
    folder.ckpt.write_bytes(b"x")
    assert folder.state() == "started"
    folder.write_status("failed", exit_code=3, error="boom")
    assert folder.state() == "failed"
    folder.metrics.write_text("{}")
    assert folder.state() == "done"


def _hold_claim(path: str, ready, release) -> None:
    claim = RunDir(path).claim()
    RunDir(path).write_status("running")
    ready.set()
    release.wait(30)
    claim.release()


def test_claim_is_exclusive_across_processes_and_released_on_exit(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_claim, args=(str(tmp_path / "r"), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        folder = RunDir(tmp_path / "r")
        assert folder.state() == "running"
        with pytest.raises(RunClaimed, match=r"already running.*pid \d+"):
            folder.claim()
    finally:
        release.set()
        holder.join(60)
    assert folder.state() == "new"
    with folder.claim():
        pass


def _claim_and_report(path: str, barrier, results) -> None:
    barrier.wait(30)
    try:
        claim = RunDir(path).claim()
    except RunClaimed:
        results.put("refused")
        return
    results.put("claimed")
    barrier.wait(30)  # hold it until the other process has tried
    claim.release()


def test_two_processes_claiming_one_run_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_claim_and_report, args=(str(tmp_path / "r"), barrier, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=60) for _ in procs)
    barrier.abort()  # the refused process never reaches the second wait
    for p in procs:
        p.join(60)
    assert outcomes == ["claimed", "refused"]


def test_force_refuses_a_symlinked_run_folder_and_keeps_it(tmp_path):
    spec = _spec()
    real = tmp_path / "elsewhere"
    real.mkdir()
    (real / "config.json").write_text("{}")
    (real / "precious.txt").write_text("keep")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / spec.name).symlink_to(real)
    with pytest.raises(ToybenchError, match="symlink"):
        runs.execute(spec, tmp_path / "out", force=True, echo=_quiet)
    assert (real / "precious.txt").read_text() == "keep"


def test_force_on_a_new_run_folder_just_runs(tmp_path):
    """--force where no folder exists yet: the claim makes the folder (and its lock), which
    clearing must accept (it used to refuse: "not a toybench run folder")."""
    result = runs.execute(_spec(), tmp_path, force=True, plots=False, echo=_quiet)
    assert result.status == "done" and (result.run_dir / "metrics.json").is_file()


def test_force_refuses_a_folder_that_is_not_a_run(tmp_path):
    spec = _spec()
    (tmp_path / spec.name).mkdir()
    (tmp_path / spec.name / "precious.txt").write_text("keep")
    with pytest.raises(ToybenchError, match="not a toybench run folder"):
        runs.execute(spec, tmp_path, force=True, echo=_quiet)
    assert (tmp_path / spec.name / "precious.txt").read_text() == "keep"


def test_out_that_is_a_file_is_a_one_line_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a folder")
    with pytest.raises(ToybenchError, match="is not a folder"):
        runs.execute(_spec(), target, echo=_quiet)
    assert target.read_text() == "not a folder"


# --- a real run: status.json, identity, load_run ----------------------------------------------


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return runs.execute(_spec(), out, plots=False, echo=_quiet)


def test_metrics_json_names_its_run_and_aggregates_with_a_glob(done):
    import pandas as pd

    metrics = json.loads((done.run_dir / "metrics.json").read_text())
    spec = _spec()
    for key, value in {"model": "vae", "family": "vae", "generator": "toy-causal", "corr": 0.2,
                       "seed": 1, "protocol": "quick", "config_hash": spec.hash,
                       "supervision": "none"}.items():
        assert metrics[key] == value, key
    for key in ("spec_hash", "toybench_version", "git_sha", "schema_version"):
        assert key in metrics
    frame = pd.DataFrame([json.loads(p.read_text())
                          for p in done.run_dir.parent.glob("*/metrics.json")])
    assert frame.loc[0, "model"] == "vae" and frame.loc[0, "test.mig"] == metrics["test.mig"]
    status = json.loads((done.run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["exit_code"] == 0


def test_failed_run_leaves_status_json_with_error_and_exit_code(tmp_path):
    from toybench.train import TrainingDiverged

    spec = _spec(overrides=(*TINY, "train.lr=1e30", "train.grad_clip=0", "train.nan_patience=2",
                            "train.steps=8"))
    with pytest.raises(TrainingDiverged):
        runs.execute(spec, tmp_path, echo=_quiet)
    folder = RunDir.of(spec, tmp_path)
    status = json.loads(folder.status.read_text())
    assert status["state"] == "failed" and status["exit_code"] == 3
    assert "non-finite" in status["error"] and "\n" not in status["error"]
    assert folder.state() == "failed"


def test_load_run_encode_score_reproduces_the_runs_own_dci(done, tmp_path):
    from toybench.evaluate import score_codes_file

    loaded = runs.load_run(done.run_dir)
    assert loaded.config["model"]["baseline"] == "vae" and not loaded.model.training
    path = runs.encode_run(done.run_dir, tmp_path / "codes.npz")
    scores = score_codes_file(path)
    assert scores["dci.disentanglement"] == done.metrics["test.dci.disentanglement"]


def test_load_run_refuses_unfinished_and_foreign_folders(tmp_path):
    with pytest.raises(ToybenchError, match="not a run folder"):
        runs.load_run(tmp_path / "missing")
    (tmp_path / "r").mkdir()
    with pytest.raises(ToybenchError, match="not a finished run"):
        runs.load_run(tmp_path / "r")


def test_two_processes_running_one_spec_train_it_once(tmp_path):
    args = [sys.executable, "-m", "toybench.cli", "run", "--model", "vae", "--corr", "0.2",
            "--seed", "1", "--protocol", "quick", "--no-plots", "--out", str(tmp_path)]
    args += [item for o in TINY for item in ("--set", o)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    trained = [o for o in outputs if "train  done" in o]
    assert len(trained) == 1, outputs
    other = next(o for o in outputs if "train  done" not in o)
    assert "already running" in other or "already done" in other, other
    assert codes in ([0, 0], [0, 75]), outputs
    (folder,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # .cache: PCA
    assert json.loads((folder / "metrics.json").read_text())["model"] == "vae"

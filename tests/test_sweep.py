"""``toybench sweep``: the sorted grid, index and shards, dry-run states, skip-if-done, failures
recorded without stopping the sweep, --retry-failed, two sweeps over one grid at once, a sweep
killed with SIGKILL and started again, the local process pool and its thread caps, and one clear
line for every bad argument.

Cells are tiny (4 steps on 128 images, small scoring sizes, no plots); the grids that train
share one reference sweep, so the file stays fast.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from sweep_cells import (
    CLI_GRID,
    GRID,
    ROOT,
    TINY,
    huge_baseline,
    metrics_bytes,
    one_line_error,
    run_sweep,
)

from toybench.cli import main
from toybench.evaluate import EvalConfig
from toybench.rundir import RunDir, RunSpec
from toybench.sweep import (
    EXIT_ELSEWHERE,
    Grid,
    parse_corrs,
    parse_names,
    parse_seeds,
    parse_shard,
    select,
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted serial sweep of GRID's two VAE cells and two cells of a baseline that
    cannot fit in memory: every other way of running GRID must match its VAE cells."""
    out = tmp_path_factory.mktemp("reference")
    huge = huge_baseline(out.parent)
    grid = Grid(models=("vae", str(huge)), corrs=GRID.corrs, seeds=GRID.seeds,
                protocol=GRID.protocol, overrides=GRID.overrides)
    report = run_sweep(grid, out, threads=1)  # every comparison runs torch on one thread
    assert {spec.name for spec in GRID.specs()} == set(metrics_bytes(out))
    return out, metrics_bytes(out), grid, report


# --- the grid ---------------------------------------------------------------------------------


def test_lists_parse_and_refuse_junk():
    assert parse_names(" vae, beta-vae ", "--models") == ("vae", "beta-vae")
    assert parse_corrs("inf,0.7,0.2") == (math.inf, 0.7, 0.2)
    assert parse_seeds("0-2") == (0, 1, 2)
    assert parse_seeds("0-2,10, 4") == (0, 1, 2, 10, 4)
    assert parse_seeds("3") == (3,)
    assert parse_shard("1/4") == (1, 4)
    for text, fragment in [("2-0", "runs backwards"), ("a-b", "not a seed"), ("0,0", "more "
                           "than once"), ("0-2,1", "more than once"), ("", "empty"),
                           ("0,,1", "empty item"), ("-1", "not a seed"),
                           ("4294967296", r"2\*\*32 - 1")]:
        with pytest.raises(ValueError, match=fragment):
            parse_seeds(text)
    with pytest.raises(ValueError, match="'abc' is not a σ"):
        parse_corrs("0.2,abc")
    with pytest.raises(ValueError, match="more than once"):
        parse_corrs("0.2,0.20")


def test_cells_are_sorted_whatever_the_order_of_the_lists():
    one = Grid(models=("vae", "beta-vae"), corrs=(0.2, math.inf, 0.7), seeds=(2, 0),
               protocol="quick")
    two = Grid(models=("beta-vae", "vae"), corrs=(math.inf, 0.7, 0.2), seeds=(0, 2),
               protocol="quick")
    cells = one.specs()
    assert [s.name for s in cells] == [s.name for s in two.specs()]
    keys = [(s.baseline, s.corr, s.seed) for s in cells]
    assert keys == sorted(keys) and len(set(keys)) == 12
    assert keys[0] == ("beta-vae", 0.2, 0) and keys[-1] == ("vae", math.inf, 2)
    assert one.shape == "2 models × 1 generator × 3 σ × 2 seeds"


def test_index_and_shards_partition_the_grid():
    cells = Grid(models=("vae", "pca"), corrs=(0.2, 0.4, math.inf), seeds=(0, 1),
                 protocol="quick").specs()
    for n in (1, 2, 3, 5, 12, 13):
        shards = [select(cells, shard=(i, n)) for i in range(n)]
        indices = sorted(i for shard in shards for i, _ in shard)
        assert indices == list(range(len(cells)))  # every cell once, in exactly one shard
        assert all(spec is cells[i] for shard in shards for i, spec in shard)
    assert select(cells, index=7) == [(7, cells[7])]
    with pytest.raises(ValueError, match="out of range: the grid has 12 cells, 0..11"):
        select(cells, index=12)
    with pytest.raises(ValueError, match="exclude each other"):
        select(cells, index=0, shard=(0, 2))


def test_test_corr_is_part_of_each_cell_and_its_hash_a_grid_without_it_is_unchanged():
    plain = Grid(models=("vae",), corrs=(0.2,), protocol="quick").specs()[0]
    extra = Grid(models=("vae",), corrs=(0.2,), protocol="quick",
                 test_corr=(math.inf, 0.4)).specs()[0]
    assert extra.config["eval"]["test_corr"] == [0.4, "inf"]
    assert extra.hash != plain.hash
    assert set(extra.config["data"]["splits"]) == {"train", "test", "test_decorrelated",
                                                   "test_corr0_4", "test_corrinf"}
    # no test_corr: config.json has exactly the eval fields it had before the field existed
    fields = set(EvalConfig.__dataclass_fields__) - {"test_corr"}
    assert set(plain.config["eval"]) == fields
    same = RunSpec("vae", corr=0.2, protocol="quick", overrides=("eval.test_corr=[]",))
    assert same.name == plain.name
    assert RunSpec("vae", corr=0.2, protocol="quick",
                   overrides=("eval.test_corr=[0.4, inf]",)).name == extra.name
    with pytest.raises(ValueError, match="not both"):
        Grid(models=("vae",), overrides=("eval.test_corr=[0.4]",), test_corr=(0.2,))


def test_dry_run_lists_index_state_and_name_and_writes_nothing(tmp_path):
    grid = Grid(models=("vae",), corrs=(0.2,), seeds=(0, 1, 2, 3, 4), protocol="quick",
                overrides=TINY)
    cells = grid.specs()
    out = tmp_path / "runs"
    folders = [RunDir.of(spec, out) for spec in cells]
    for folder in folders:
        folder.path.mkdir(parents=True)
    folders[0].metrics.write_text("{}")  # done
    folders[1].write_status("failed", exit_code=3, error="diverged")  # failed
    folders[2].ckpt.parent.mkdir()
    folders[2].ckpt.write_bytes(b"")  # started
    folders[4].path.rmdir()  # new
    with folders[3].claim():  # running: held by "another process"
        before = sorted(str(p) for p in out.rglob("*"))
        result = CliRunner().invoke(main, ["sweep", *CLI_GRID, "--seeds", "0-4", "--out",
                                           str(out), "--dry-run"])
        after = sorted(str(p) for p in out.rglob("*"))
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[2:7]]
    assert rows == [[str(i), state, spec.name] for i, (state, spec) in
                    enumerate(zip(["done", "failed", "started", "running", "new"], cells,
                                  strict=True))]
    assert "states: 1 done, 1 new, 1 started" in result.output
    assert after == before


# --- running the grid -------------------------------------------------------------------------


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(reference):
    out, _, grid, report = reference
    huge0, huge1, vae0, vae1 = grid.specs()
    assert [r.outcome for r in report.results] == ["failed", "failed", "done", "done"]
    assert report.exit_code == 1
    status = RunDir.of(huge0, out).read_status()
    assert status["state"] == "failed" and "parameters" in status["error"]
    assert json.loads(RunDir.of(huge0, out).config.read_text()) == huge0.config
    assert [RunDir.of(s, out).state() for s in (huge0, huge1, vae0, vae1)] == [
        "failed", "failed", "done", "done"]
    done_line = next(line for line in report.lines if vae0.name in line)
    assert " done " in done_line and "dci.disentanglement ↑" in done_line and " s " in done_line
    assert "failed cells (2" in "\n".join(report.lines)
    assert report.lines[-2].startswith(f"  #0 {huge0.name}: exit 1: the model has")


def test_done_cells_are_skipped_and_failed_ones_reported_again(reference):
    out, _, grid, _ = reference
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    again = run_sweep(grid, out)
    assert again.results == [] and again.exit_code == 1
    assert "2 done, 2 failed (skipped; --retry-failed reruns); nothing to run" in again.lines[1]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")} == mtimes


def test_retry_failed_starts_a_failed_cell_over(tmp_path):
    grid = Grid(models=("pca",), corrs=(0.2,), seeds=(0,), protocol="quick", overrides=TINY)
    (spec,) = grid.specs()
    folder = RunDir.of(spec, tmp_path)
    folder.path.mkdir(parents=True)
    folder.config.write_text(json.dumps(spec.config))  # what a run that crashed leaves
    folder.write_status("failed", exit_code=1, error="RuntimeError: a crash")
    (folder.path / "history.csv").write_text("stale")
    skipped = run_sweep(grid, tmp_path)
    assert skipped.results == [] and skipped.exit_code == 1
    assert "#0 " + spec.name + ": exit 1: RuntimeError: a crash" in skipped.lines[-1]
    retried = run_sweep(grid, tmp_path, retry_failed=True)
    assert [r.outcome for r in retried.results] == ["done"] and retried.exit_code == 0
    assert folder.state() == "done" and folder.read_status()["state"] == "done"
    assert (folder.path / "history.csv").read_text() != "stale"  # started over, not resumed


@pytest.mark.slow  # subprocesses
def test_two_sweeps_over_one_grid_run_every_cell_exactly_once(tmp_path, reference):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "toybench.cli", "sweep", *CLI_GRID, "--seeds", "0-1",
               "--threads", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode in (0, EXIT_ELSEWHERE), stdout + stderr
    names = [spec.name for spec in GRID.specs()]
    ran_here = [name for stdout, _ in outputs for line in stdout.splitlines()
                for name in names if f" done     {name}  " in line and " s  " in line]
    assert sorted(ran_here) == sorted(names)  # each cell trained by exactly one of the two
    pids = {p.pid for p in procs}
    for name in names:
        folder = RunDir(out / name)
        assert folder.read_status()["pid"] in pids
        events = [len(list((o / name / "tb").glob("events.out.tfevents.*")))
                  for o in (out, reference[0])]
        assert events[0] == events[1]  # trained and scored once, like the reference
    assert metrics_bytes(out) == reference[1]


@pytest.mark.slow  # subprocesses
def test_a_sweep_killed_with_sigkill_finishes_when_started_again(tmp_path, reference):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "toybench.cli", "sweep", *CLI_GRID, "--threads", "1",
               "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:  # kill mid-cell: a checkpoint and no result
            if any(not (ckpt.parent.parent / "metrics.json").exists()
                   for ckpt in out.glob("*/ckpt/last.pt")):
                break
            assert proc.poll() is None, "the sweep finished before it could be killed"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "started" in [RunDir.of(spec, out).state() for spec in GRID.specs()]
    report = run_sweep(GRID, out, threads=1)  # as the reference and the killed sweep
    assert report.exit_code == 0, report.lines
    assert metrics_bytes(out) == reference[1]  # byte for byte as if never killed


@pytest.mark.slow  # subprocesses
def test_local_executor_runs_two_jobs_with_capped_threads(tmp_path, reference, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a worker left alone would take 2 threads
    report = run_sweep(GRID, tmp_path, executor="local", jobs=2, threads=1)
    assert report.exit_code == 0, report.lines
    assert [r.outcome for r in report.results] == ["done", "done"]
    assert {r.torch_threads for r in report.results} == {1}  # reported from inside the worker
    for name in reference[1]:
        assert json.loads((tmp_path / name / "env.json").read_text())["torch_threads"] == 1
    assert "2 worker process(es) × 1 thread(s)" in report.lines[1]
    assert metrics_bytes(tmp_path) == reference[1]


# --- bad arguments: one clear line, a non-zero exit, nothing written -------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--models", ""], "--models is empty"),
        (["--models", "vae,"], "empty item"),
        (["--models", "resnet"], "unknown model 'resnet'"),
        (["--corr", "0.2,abc"], "--corr: 'abc' is not a σ"),
        (["--corr", "0.2,-1"], "--corr: '-1' is not a σ"),
        (["--seeds", "2-0"], "range '2-0' runs backwards"),
        (["--seeds", "a-b"], "'a-b' is not a seed"),
        (["--executor", "slurm"], "unknown executor 'slurm'; valid: serial, local, ray"),
        (["--index", "2"], "--index 2 is out of range: the grid has 2 cells, 0..1"),
        (["--index", "x"], "--index must be an integer ≥ 0"),
        (["--shard", "3/2"], "--shard 3/2: i must be in 0..N-1"),
        (["--shard", "1"], "expected i/N"),
        (["--index", "0", "--shard", "0/2"], "exclude each other"),
        (["--jobs", "2"], "--jobs 2 needs --executor local or ray"),
        (["--jobs", "0", "--executor", "local"], "--jobs must be an integer ≥ 1"),
        (["--threads", "many"], "--threads must be an integer ≥ 1"),
        (["--address", "auto"], "--address joins a Ray cluster"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--test-corr", "0.4,x"], "--test-corr: 'x' is not a σ"),
        (["--test-corr", "0.4", "--set", "eval.test_corr=[0.2]"], "not both"),
        (["--set", "train.nope=1"], "unknown key train.nope"),
        (["--protocol", "huge"], "no protocol 'huge'"),
    ],
)
def test_bad_arguments_give_one_line_and_write_nothing(tmp_path, args, fragment):
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["sweep", *CLI_GRID, *args, "--out", str(out)])
    one_line_error(result, fragment)
    assert not out.exists()


def test_cuda_without_a_gpu_is_one_line(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["sweep", *CLI_GRID, "--device", "cuda", "--out",
                                       str(out)])
    one_line_error(result, "--device cuda:", "use --device cpu or --device auto")
    assert not out.exists()
    result = CliRunner().invoke(main, ["run", "--model", "vae", "--device", "cuda", "--out",
                                       str(out)])
    one_line_error(result, "--device cuda:")
    assert not out.exists()


def test_ray_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["sweep", *CLI_GRID, "--executor", "ray", "--out",
                                       str(out)])
    one_line_error(result, "--executor ray needs Ray", "pip install")
    assert not out.exists()


def test_local_executor_defaults_to_one_single_thread_worker_per_core(monkeypatch):
    """Measured on the 2-core VM: two 1-thread workers train ~1.5x the images per second of
    one 2-thread worker, so that is the default."""
    from toybench import hardware
    from toybench.executors import make_executor

    monkeypatch.setattr(hardware, "cpu_count", lambda: 4)
    local = make_executor("local")
    assert (local.jobs, local.threads) == (4, 1)
    assert (make_executor("local", jobs=2).threads, make_executor("local", threads=2).jobs) \
        == (2, 2)

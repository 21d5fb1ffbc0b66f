"""``toybench sweep --executor ray`` against a real local Ray cluster (``ray.init(num_cpus=2)``,
started once for this module): cells run as Ray tasks with torch capped at the CPUs each task
was given, their results equal a serial sweep's byte for byte, done cells are skipped, a failing
cell is recorded, and a CUDA device on a cluster without GPUs is one clear line.

Ray is part of the ``dev`` extra, so the README's test command installs it: these tests are not
skipped when it is missing, they fail.
"""

from __future__ import annotations

import json
import os

import pytest
import ray
from sweep_cells import GRID, ROOT, TINY, huge_baseline, metrics_bytes, run_sweep

from toybench.rundir import RunDir
from toybench.sweep import Grid

pytestmark = pytest.mark.slow  # a Ray cluster starts (about 8 s)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local Ray instance for the module; its workers import this checkout's toybench."""
    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", "OMP_NUM_THREADS")}
    os.environ["PYTHONPATH"] = str(ROOT)  # the raylet's workers inherit the environment
    os.environ["OMP_NUM_THREADS"] = "2"  # a task left alone would take 2 threads
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_ray_tasks_run_the_grid_like_a_serial_sweep(tmp_path_factory):
    serial = tmp_path_factory.mktemp("serial")
    assert run_sweep(GRID, serial, index=0, threads=1).exit_code == 0  # the first cell
    out = tmp_path_factory.mktemp("ray")
    report = run_sweep(GRID, out, executor="ray", threads=1)
    assert report.exit_code == 0, report.lines
    assert sorted(r.outcome for r in report.results) == ["done", "done"]
    assert {r.torch_threads for r in report.results} == {1}  # set from the task's 1 CPU
    assert "the ray executor (2 CPUs in the cluster; tasks of 1 CPU(s)" in report.lines[1]
    (name, first), = metrics_bytes(serial).items()
    assert metrics_bytes(out)[name] == first
    again = run_sweep(GRID, out, executor="ray")
    assert again.results == [] and again.exit_code == 0  # done cells are skipped


def test_a_task_with_two_cpus_runs_torch_on_two_threads(tmp_path):
    grid = Grid(models=("pca",), corrs=(0.2,), seeds=(0,), protocol="quick", overrides=TINY)
    report = run_sweep(grid, tmp_path, executor="ray", threads=2)
    assert [r.torch_threads for r in report.results] == [2], report.lines
    (name,) = metrics_bytes(tmp_path)
    assert json.loads((tmp_path / name / "env.json").read_text())["torch_threads"] == 2


def test_a_failing_ray_task_is_recorded_and_the_sweep_goes_on(tmp_path):
    huge = huge_baseline(tmp_path)
    grid = Grid(models=("pca", str(huge)), corrs=(0.2,), seeds=(1,), protocol="quick",
                overrides=TINY)
    report = run_sweep(grid, tmp_path / "runs", executor="ray", jobs=1)
    assert sorted(r.outcome for r in report.results) == ["done", "failed"]
    assert report.exit_code == 1
    failed = RunDir.of(grid.specs()[0], tmp_path / "runs")
    assert failed.state() == "failed" and "parameters" in failed.read_status()["error"]


def test_cuda_on_a_cluster_without_gpus_is_one_error(tmp_path):
    with pytest.raises(ValueError, match="the Ray cluster has no GPU"):
        run_sweep(GRID, tmp_path / "runs", executor="ray", device="cuda")
    assert not (tmp_path / "runs").exists()

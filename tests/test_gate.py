"""`toybench check`, the CI quality gate: the tolerance's statistics (known answers), the
reference file, pass / fail on hand-written runs, atomic `--update`, one-line errors, and a
deliberately damaged real model that fails the gate."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY, TINY_SEEDS
from leaderboard_helpers import fake_run

from toybench import gate
from toybench.cli import main

REPO = Path(__file__).resolve().parents[1]


def _invoke(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def _scores(base: float, **changes) -> dict:
    """Every gated score of a plausible run (higher-better ones at ``base``)."""
    scores = {key: base for key in gate.GATED_METRICS}
    scores["test.entanglement"] = 1 - base
    scores["test.recon.bce_vs_pca"] = 1.2 - base / 2
    return {**scores, **{key.replace("__", "."): value for key, value in changes.items()}}


def _reference(tmp_path: Path) -> Path:
    """Two cells (vae, hvae) × 3 seeds of hand-written runs and the reference built from them."""
    for model in ("vae", "hvae"):
        for seed, base in enumerate((0.49, 0.5, 0.51)):
            fake_run(tmp_path / "ref-runs", model, _scores(base), seed=seed)
    reference = tmp_path / "ref.csv"
    done = _invoke("check", "--update", "--reference", reference, tmp_path / "ref-runs")
    assert done.exit_code == 0, done.output
    return reference


# --------------------------------------------------------------------------------------------
# The statistics.
# --------------------------------------------------------------------------------------------


def test_pooled_spread_known_answers():
    s_pool, df = gate.pooled_spread([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    assert df == 4 and s_pool == pytest.approx(math.sqrt((2 + 8) / 4), rel=1e-15)
    s_pool, df = gate.pooled_spread([[5.0], [1.0, 3.0]])  # one seed adds nothing
    assert (s_pool, df) == (pytest.approx(math.sqrt(2)), 1)
    with pytest.raises(gate.ToybenchError, match="df = 0"):
        gate.pooled_spread([[1.0], [2.0]])


def test_t_quantile_known_answers():
    # df = 1 (Cauchy): tan(π (p − 1/2)); df = 2: (2p − 1) / sqrt(2 p (1 − p)); table t(0.99, 4)
    for m in (1, 6):
        p = 1 - 0.01 / m
        assert gate.t_quantile(0.01, m, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)),
                                                            rel=1e-9)
        assert gate.t_quantile(0.01, m, 2) == pytest.approx((2 * p - 1)
                                                            / math.sqrt(2 * p * (1 - p)),
                                                            rel=1e-9)
    assert gate.t_quantile(0.01, 1, 4) == pytest.approx(3.747, abs=5e-4)


def _row(**fields) -> gate.Gated:
    values = dict(cell=gate.Cell("vae"), seeds=(0, 1, 2), metric="test.mig", direction="higher",
                  n_ref=3, mean=0.5, std=0.1, s_pool=0.1, df=2, floor=0.02, alpha=0.01,
                  n_metrics=6, git_sha="x")
    return gate.Gated(**{**values, **fields})


def test_tolerance_is_the_bonferroni_t_times_the_pooled_spread_or_the_floor():
    p = 1 - 0.01 / 6
    t = (2 * p - 1) / math.sqrt(2 * p * (1 - p))  # df = 2 in closed form
    assert gate.tolerance(_row(), 3) == pytest.approx(t * 0.1 * math.sqrt(2 / 3), rel=1e-9)
    assert gate.tolerance(_row(), 1) == pytest.approx(t * 0.1 * math.sqrt(4 / 3), rel=1e-9)
    assert gate.tolerance(_row(s_pool=0.0), 3) == 0.02
    assert gate.tolerance(_row(s_pool=1e-4), 3) == 0.02


def test_only_regressions_count_and_the_direction_comes_from_the_registry():
    assert gate.worse_by("higher", 0.5, 0.4) == pytest.approx(0.1)
    assert gate.worse_by("higher", 0.5, 0.6) == pytest.approx(-0.1)
    assert gate.worse_by("lower", 0.5, 0.6) == pytest.approx(0.1)
    with pytest.raises(gate.ToybenchError):
        gate.worse_by("info", 1, 2)


# --------------------------------------------------------------------------------------------
# The reference and the gate on hand-written runs.
# --------------------------------------------------------------------------------------------


def test_reference_stores_the_pooled_spread_and_reads_back(tmp_path):
    reference = _reference(tmp_path)
    rows = gate.read_reference(reference)
    assert len(rows) == 2 * len(gate.GATED_METRICS)
    assert {r.cell for r in rows} == {gate.Cell("vae"), gate.Cell("hvae")}
    mig = [r for r in rows if r.metric == "test.mig"]
    s_pool, df = gate.pooled_spread([[0.49, 0.5, 0.51], [0.49, 0.5, 0.51]])
    assert {(r.s_pool, r.df, r.n_ref, r.seeds) for r in mig} == {(s_pool, 4, 3, (0, 1, 2))}
    assert mig[0].mean == pytest.approx(0.5) and mig[0].direction == "higher"
    recon = next(r for r in rows if r.metric == "test.recon.bce_vs_pca")
    assert recon.direction == "lower" and recon.floor == gate.GATED_METRICS[recon.metric]
    assert gate.reference_text(rows) == reference.read_text()  # exact round trip


def test_gate_passes_unchanged_and_better_runs_and_fails_a_regression(tmp_path):
    reference = _reference(tmp_path)
    same = _invoke("check", "--reference", reference, tmp_path / "ref-runs")
    assert same.exit_code == 0, same.output
    assert "gate passed: 12 scores within tolerance" in same.output
    for seed, base in enumerate((0.6, 0.7, 0.8)):  # better everywhere
        fake_run(tmp_path / "better", "vae", _scores(base), seed=seed)
        fake_run(tmp_path / "better", "hvae", _scores(base), seed=seed)
    better = _invoke("check", "--reference", reference, tmp_path / "better")
    assert better.exit_code == 0, better.output
    assert "ok (better)" in better.output
    for seed, base in enumerate((0.49, 0.5, 0.51)):  # hvae's MIG collapses, the rest unchanged
        fake_run(tmp_path / "worse", "vae", _scores(base), seed=seed)
        fake_run(tmp_path / "worse", "hvae", _scores(base, test__mig=0.0), seed=seed)
    worse = _invoke("check", "--reference", reference, tmp_path / "worse")
    assert worse.exit_code == 1, worse.output
    failing = [line for line in worse.output.splitlines() if line.endswith("WORSE")]
    assert len(failing) == 1 and failing[0].startswith("hvae toy-causal σ=0.2")
    assert "test.mig ↑" in failing[0]
    assert worse.output.splitlines()[-1].startswith(
        "gate FAILED: 1 of 12 scores worse than the reference beyond tolerance: test.mig of "
        "hvae toy-causal σ=0.2")


def test_a_drop_within_the_tolerance_passes(tmp_path):
    reference = _reference(tmp_path)
    rows = {r.metric: r for r in gate.read_reference(reference) if r.cell.model == "vae"}
    allowed = gate.tolerance(rows["test.mig"], 3)
    for model in ("vae", "hvae"):
        for seed, base in enumerate((0.49, 0.5, 0.51)):
            fake_run(tmp_path / "new", model, _scores(base, test__mig=base - 0.9 * allowed),
                     seed=seed)
    done = _invoke("check", "--reference", reference, tmp_path / "new")
    assert done.exit_code == 0, done.output


def test_update_is_atomic_and_keeps_the_old_reference_on_failure(tmp_path):
    reference = _reference(tmp_path)
    before = reference.read_bytes()
    fake_run(tmp_path / "incomplete", "vae", {"test.mig": 0.5})  # no other gated score
    done = _invoke("check", "--update", "--reference", reference, tmp_path / "incomplete")
    assert done.exit_code == 1 and "has no finite test.dci.disentanglement" in done.output
    assert reference.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["ref.csv"]
    (tmp_path / "folder.csv").mkdir()
    done = _invoke("check", "--update", "--reference", tmp_path / "folder.csv",
                   "--out", tmp_path / "never")
    assert done.exit_code == 1 and "refusing to replace" in done.output
    assert not (tmp_path / "never").exists()  # refused before any run


@pytest.mark.parametrize("case", ["missing", "bad-header", "inconsistent", "direction",
                                  "set-with-dirs", "missing-cell", "bad-override",
                                  "failed-run"])
def test_bad_arguments_are_one_line_errors(tmp_path, case):
    reference = _reference(tmp_path)
    text = reference.read_text()
    args = ["check", "--reference", reference, tmp_path / "ref-runs"]
    if case == "missing":
        args[2] = tmp_path / "nothing.csv"
    elif case == "bad-header":
        reference.write_text("a,b\n1,2\n")
    elif case == "inconsistent":
        lines = text.splitlines()
        lines[1] = lines[1].replace(",4,", ",5,")  # one row's df
        reference.write_text("\n".join(lines) + "\n")
    elif case == "direction":
        reference.write_text(text.replace("test.mig,higher", "test.mig,lower"))
    elif case == "set-with-dirs":
        args += ["--set", "model.beta=2"]
    elif case == "missing-cell":
        args[-1] = next((tmp_path / "ref-runs").glob("vae-*"))
    elif case == "bad-override":
        args = ["check", "--reference", reference, "--out", tmp_path / "out",
                "--set", "model.no_such_field=1"]
    elif case == "failed-run":  # a run that cannot start fails the gate, naming the run
        args = ["check", "--reference", reference, "--out", tmp_path / "out",
                "--set", "train.n_train=1000000000000"]
    done = _invoke(*args)
    assert done.exit_code == 1, done.output
    errors = [line for line in done.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in done.output, done.output
    if case == "failed-run":  # the first run to fail (they run side by side, one per CPU)
        assert re.match(r"Error: (hvae|vae) toy-causal σ=0\.2 seed [0-2]: ", errors[0]), errors
        assert "memory" in errors[0]
    if case == "bad-override":
        assert "no_such_field" in errors[0]
        assert not (tmp_path / "out").exists()  # every spec checked before any run


def test_committed_reference_is_the_default_cells():
    rows = gate.read_reference(REPO / gate.DEFAULT_REFERENCE)
    assert gate.reference_cells(rows) == {gate.Cell(m): gate.DEFAULT_SEEDS
                                          for m in gate.DEFAULT_MODELS}
    assert {r.metric: r.floor for r in rows} == gate.GATED_METRICS
    assert {r.alpha for r in rows} == {gate.ALPHA}


# --------------------------------------------------------------------------------------------
# A real model, damaged.
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_damaged_model_fails_the_gate_and_the_undamaged_one_passes(tiny_gate, tmp_path):
    runs, reference = tiny_gate
    rows = gate.read_reference(reference)
    assert gate.reference_cells(rows) == {gate.Cell("vae", overrides=TINY): TINY_SEEDS}
    again = _invoke("check", "--reference", reference, "--out", runs)  # the same runs, reused
    assert again.exit_code == 0, again.output
    assert again.output.count("reused (already done)") == len(TINY_SEEDS)
    given = _invoke("check", "--reference", reference, runs)  # read as given run folders
    assert given.exit_code == 0, given.output
    # β raised 1000×: the posterior collapses (no active unit), reconstructions fall to the
    # mean image. Two seeds are enough for the gate to see it.
    from toybench.rundir import RunSpec
    from toybench.runs import execute

    for seed in (0, 1):
        execute(RunSpec("vae", "toy-causal", 0.2, seed, "quick", (*TINY, "model.beta=1000")),
                tmp_path, plots=False, echo=lambda line: None)
    damaged = _invoke("check", "--reference", reference, tmp_path)
    assert damaged.exit_code == 1, damaged.output
    verdict = damaged.output.splitlines()[-1]
    assert verdict.startswith("gate FAILED") and "test.recon.bce_vs_pca" in verdict, verdict

"""The study drivers' grids: what the committed leaderboards and the convergence study cover."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from conftest import FP32

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studies import convergence, leaderboards  # noqa: E402


def test_leaderboard_grids_are_the_issues_grids():
    cells = list(leaderboards.cells())
    toy = [c for c in cells if c[2] == "toy-causal"]
    sprites = [c for c in cells if c[2] == "dsprites-pairs-32"]
    assert len(toy) == 9 * 4 * 3 and len(sprites) == 5 * 3 * 3
    assert len(set(cells)) == len(cells)
    assert ("csvae", leaderboards.UNSUPERVISED) in leaderboards.GRIDS["toy-causal"][0]
    assert {c[3] for c in sprites} == {math.inf, 0.4, 0.2}
    assert [c[4] for c in cells[:len(cells) // 3]] == [0] * (len(cells) // 3)  # seed 0 first


def test_every_study_cell_at_a_leaderboard_sigma_is_a_leaderboard_cell():
    """The study's long runs at σ ∈ {inf, 0.2} give the leaderboards their standard runs."""
    for model, generator, corr, _seed, _protocol in convergence.cells():
        assert leaderboards.in_grid(model, (), generator, corr) == \
            (generator == "toy-causal" or model != "csvae"), (model, generator, corr)


def test_batch_long_trains_every_study_cell_once_starting_with_the_extended_ones():
    todo = convergence.LONGER["batch-long"].cells
    study = {(m, g, c) for m, g, c, _seed, _protocol in convergence.cells()}
    assert len(todo) == len(set(todo)) == len(study) == 20 and set(todo) == study
    n = len(convergence.EXTENDED)
    assert todo[:n] == convergence.EXTENDED
    # then the same models and generators at the other σ
    assert [(m, g) for m, g, _ in todo[n:2 * n]] == [(m, g) for m, g, _ in todo[:n]]
    assert all(a[2] != b[2] for a, b in zip(todo[:n], todo[n:2 * n], strict=True))
    # then dsprites-pairs-32 at σ = inf, the cells short of active units
    inf = [c for c in study if c[1:] == ("dsprites-pairs-32", math.inf) and c not in todo[:2 * n]]
    assert set(todo[2 * n:2 * n + len(inf)]) == set(inf) and len(inf) == 4


TINY = ("train.steps=2", "train.batch_size=16", "train.n_train=64", "train.n_test=100",
        "train.checkpoint_every=2", "eval.factor_vae_train=10", "eval.factor_vae_eval=5",
        "eval.factor_vae_variance=50", "eval.beta_vae_train=10", "eval.beta_vae_eval=5",
        "eval.consistency_pairs=10", "eval.batch_size=8", *FP32)


# The failed run's model is NaN: its TensorBoard images are skipped, not cast to black with a
# RuntimeWarning (they were, until 2026-12-07).
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_run_and_keep_keeps_the_small_files_of_a_done_run_and_nothing_of_a_failed_one(
        tmp_path, capsys):
    from studies.keep import run_and_keep
    from toybench.rundir import RunSpec

    spec = RunSpec("vae", "toy-causal", 0.2, 0, "quick", TINY)
    kept = tmp_path / "kept" / spec.name
    assert run_and_keep(spec, tmp_path / "work", kept, ("metrics.json", "config.json"),
                        commit=False, message="unused")
    assert sorted(p.name for p in kept.iterdir()) == ["config.json", "metrics.json"]
    assert f"== quick {spec.name} (new)" in capsys.readouterr().out
    broken = RunSpec("vae", "toy-causal", 0.2, 0, "quick",  # diverges: a failed run
                     (*TINY, "train.lr=1e30", "train.grad_clip=0", "train.nan_patience=1"))
    gone = tmp_path / "kept" / "broken"
    assert not run_and_keep(broken, tmp_path / "work", gone, ("metrics.json",), commit=False,
                            message="unused")
    assert "FAILED" in capsys.readouterr().out and not gone.exists()


def test_unit_mi_agrees_with_the_runs_own_active_units_and_mig(tiny_gate, tmp_path, capsys):
    import json

    from studies import unit_mi

    runs, _ = tiny_gate
    run = sorted(p.parent for p in runs.glob("*/metrics.json"))[0]
    out = tmp_path / "unit-mi.json"
    assert unit_mi.main([str(run), "-o", str(out)]) == 0
    entry = json.loads(out.read_text())[run.name]
    metrics = json.loads((run / "metrics.json").read_text())
    assert entry["model"] == "vae" and entry["split"] == "test_decorrelated"
    assert len(entry["active_units"]) == metrics["test_decorrelated.active_units"]
    concepts = entry["concepts"]
    assert sorted(concepts) == ["hue", "pos_x", "pos_y", "rotation", "shape", "size"]
    for figures in concepts.values():
        assert figures["unit"] in entry["active_units"]
        assert 0 <= figures["gap"] <= figures["max_nmi"] <= figures["sum_nmi"] + 1e-4
    gaps = [figures["gap"] for figures in concepts.values()]
    assert sum(gaps) / len(gaps) == pytest.approx(metrics["test_decorrelated.mig.active"],
                                                 abs=1e-3)
    assert "wrote" in capsys.readouterr().out
    # a folder that is no run: one line on stderr, exit 2, nothing written
    assert unit_mi.main([str(tmp_path), "-o", str(tmp_path / "no.json")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "no.json").exists()


def test_baseline_tables_come_from_the_kept_runs(tmp_path):
    import json

    path = leaderboards.write_baseline_tables(tmp_path / "tables.md")
    text = path.read_text()
    assert "## `standard`" in text and "## `long`" in text
    assert "**toy-causal**, `standard`" in text and "**dsprites-pairs-32**, `long`" in text
    # each row's seed count is the number of kept runs of that cell
    kept = [json.loads(p.read_text()) for p in
            (leaderboards.KEPT / "toy-causal").glob("*/metrics.json")]
    n = sum(1 for m in kept if m["model"] == "beta-vae" and m["protocol"] == "standard"
            and m["corr"] == 0.2)
    assert n >= 1  # the committed leaderboard runs hold this cell
    assert f"| beta-vae | 0.2 | {n} |" in text.split("## `long`")[0]


def test_run_time_sums_status_seconds_per_protocol(tmp_path):
    import json

    runs = {"a": ("standard", 1800.0, None), "b": ("standard", 1800.0, None),
            "c": ("long", 7200.0, None), "d": ("standard", 120.0, "c")}
    for name, (protocol, seconds, source) in runs.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"protocol": protocol}))
        status = {"state": "done", "seconds": seconds}
        if source:
            status["derived_from"] = source
        (folder / "status.json").write_text(json.dumps(status))
    assert leaderboards.run_time(tmp_path) == (
        "run time (sum of `status.json` seconds) 1.0 h for 2 trained standard runs and 2.0 h "
        "for 1 long runs, whose first 2,400 steps gave 1 more standard runs (scored in 2 min)")


def test_ranking_table_lists_swaps_and_the_clear_ones():
    from studies import convergence_report as report

    def runs(at_2400, at_4800):  # {seed: curve rows} with the test BCE at two steps
        return {seed: [{"step": 2400, "test.recon.bce": a}, {"step": 4800, "test.recon.bce": b}]
                for seed, (a, b) in enumerate(zip(at_2400, at_4800, strict=True))}

    cells = {("a", "g", "inf"): runs([10, 11], [20, 21]),  # better than b at 2,400, not at 4,800
             ("b", "g", "inf"): runs([12, 13], [14, 15]),  # ranges at 4,800 apart: clear swap
             ("c", "g", "inf"): runs([30, 31], [14.0, 14.8])}  # swaps with b: ranges overlap
    row = next(line for line in report.ranking_table(cells).splitlines() if "| bce |" in line)
    assert row == "| g | inf | bce | 3 | 3 of 3 | a/b, a/c |"
    drift = report.drift_table(cells, steps=(2400,)).splitlines()
    assert "| bce | 3 of 3 | 3 of 3 |" in drift  # every seed of every cell moved up, all missed
    gap = report.gap_table(cells).splitlines()
    assert "| a | g | inf | 2 | 10.5 | 20.5 | -48.8% |" in gap


def test_extended_tables_judge_steps_against_the_longest_run():
    from studies import convergence_report as report

    def rows(bce_by_step):  # curve rows with the test BCE and a constant active-unit count
        return [{"step": s, "test.recon.bce": b, "test.active_units": 6.0}
                for s, b in bce_by_step.items()]

    steps = (1200, 2400, 3600, 4800, 9600, 14400, 19200)
    cells = {("vae", "g", "0.2"): {
        0: rows(dict(zip(steps, [70, 60, 55, 52, 50, 49.0, 48.0], strict=True))),
        1: rows(dict(zip(steps, [71, 61, 56, 53, 51, 48.5, 49.0], strict=True)))}}
    assert report.scored_steps(cells) == steps
    lines = report.table(cells, steps).splitlines()
    # 14,400's mean (48.75) lies in 19,200's spread 48..49; 9,600's (50.5) does not
    assert lines[2] == "| vae | g | 0.2 | 2 | ✗ bce | ✗ bce | ✗ bce | ✗ bce | ✗ bce | ✓ | ✓ |"
    values = report.extended_values(cells, keys=("test.recon.bce",)).splitlines()
    assert values[2] == ("| vae | g | 0.2 | bce | 70.5 ± 0.5 | 60.5 ± 0.5 | 55.5 ± 0.5 | "
                         "52.5 ± 0.5 | 50.5 ± 0.5 | 48.8 ± 0.25 | 48.5 ± 0.5 |")


def test_batch_table_compares_at_equal_images_against_the_reference_spread():
    from studies import convergence_report as report

    def rows(bce_by_step):
        return [{"step": s, "test.recon.bce": b} for s, b in bce_by_step.items()]

    reference = {("vae", "g", "0.2"): {0: rows({1200: 60, 4800: 50, 19200: 44}),
                                        1: rows({1200: 62, 4800: 52, 19200: 46})}}
    batch = {("vae", "g", "0.2"): {0: rows({4800: 55, 19200: 45}),
                                    1: rows({4800: 57, 19200: 46})}}
    lines = report.batch_table(batch, reference).splitlines()
    assert lines[0].startswith("| model | generator | σ | score | 4,800 / 1,200 | 19,200 / 4,800 |")
    # 4,800 small steps = 1,200 reference steps (61); 56 lies outside 44..46, 45.5 inside
    assert lines[2] == "| vae | g | 0.2 | bce | 56* / 61 | 45.5 / 51 | 45 ± 1 |"


def test_report_judges_the_batch64_runs_against_their_38400_step_reference(tmp_path):
    import json

    from studies import convergence_report as report

    def keep(kind, seed, bce_by_step):  # a finished run folder as the study keeps it
        run = tmp_path / "runs" / kind / f"vae-g-corr0.2-s{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(
            {"model": "vae", "generator": "g", "corr": 0.2, "seed": seed}))
        (run / "curve.json").write_text(json.dumps(
            [{"step": s, "test.recon.bce": b, "test.active_units": 6.0}
             for s, b in bce_by_step.items()]))

    for seed in (0, 1):
        keep("long", seed, {2400: 60 + seed, 4800: 55 + seed})
        keep("extended", seed, {4800: 55 + seed, 19200: 50 + seed})
        keep("batch64", seed, {4800: 57 + seed, 19200: 49 + seed})
    # batch64-long: 19,200's mean (49.5) inside 38,400's spread 49..50, 9,600's (52.5) not
    keep("batch64-long", 0, {9600: 52, 19200: 49, 38400: 49})
    keep("batch64-long", 1, {9600: 53, 19200: 50, 38400: 50})
    report.write_report(tmp_path / "runs", tmp_path)
    text = (tmp_path / "docs" / "protocols-table.md").read_text(encoding="utf-8")
    section = text[text.index("### Is batch 64 converged?"):]
    assert "| vae | g | 0.2 | 2 | ✗ bce | ✓ | ✓ |" in section.splitlines()
    assert (tmp_path / "docs" / "img" / "convergence-batch64-long-g-corr0.2.png").stat().st_size
    # beside the 256-batch long runs at equal images, up to 19,200 steps only
    lines = text[text.index("### Does batch 64 reach"):].splitlines()
    assert lines[4].startswith("| model | generator | σ | score | 9,600 / 2,400 | 19,200 / 4,800 |"
                               " reference's last step |")
    assert "| vae | g | 0.2 | bce | 52.5* / 60.5 | 49.5* / 55.5 | 55.5 ± 0.5 |" in lines


@pytest.mark.parametrize("argv", [["studies/convergence.py", "batch", "--seeds", "abc"],
                                  ["studies/leaderboards.py", "run", "--corr", "zz"]])
def test_study_drivers_refuse_bad_values_in_one_line(tmp_path, argv):
    import subprocess

    work = tmp_path / "work"
    done = subprocess.run([sys.executable, *argv, "--work", str(work)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr and not work.exists()


def test_a_seed_outside_the_study_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    from studies.keep import cli

    for argv in (["batch", "--seeds", "7"], ["run", "--seeds", "1,5"]):
        monkeypatch.setattr(sys, "argv", ["convergence.py", *argv, "--work", str(tmp_path / "w")])
        assert cli(convergence.main) == 2
        assert capsys.readouterr().err.startswith("error: --seeds: the study's seeds are 0-2")
    assert convergence.study_seeds("0-2") == (0, 1, 2)
    assert not (tmp_path / "w").exists()

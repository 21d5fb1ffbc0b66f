"""`toybench leaderboard`: known-answer aggregation, bad folders skipped with one warning each,
byte-identical rebuilds, the rendered README, and one-line errors."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner
from leaderboard_helpers import fake_external_run, fake_run

from toybench import leaderboard as lb
from toybench.cli import main

# Student's t quantiles of the two-sided 95% interval: df = 2 in closed form (the quantile p of
# t with 2 degrees of freedom is (2p - 1) / sqrt(2p(1 - p))), df = 3 from a printed table.
T975_DF2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
T975_DF3 = 3.1824


def _invoke(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _row(rows, **where):
    found = [r for r in rows if all(r[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, found)
    return found[0]


def _grid(out: Path) -> None:
    """vae and csvae (both ways) at σ 0.2 and inf, 3 seeds, known values."""
    for model, overrides in (("vae", ()), ("csvae", ()),
                             ("csvae", ("model.supervision_weight=0",
                                        "train.supervised_fraction=0"))):
        for corr in ("0.2", "inf"):
            for seed, value in enumerate((0.1, 0.2, 0.3)):
                bump = 0.5 if model == "csvae" and overrides else 0.0
                fake_run(out, model, {
                    "test.mig": value + bump, "test_decorrelated.mig": value / 2,
                    "test.recon.bce_vs_pca": 0.9 + seed / 100,
                    "test.entanglement.size-hue": value, "test.entanglement": value,
                    "test_decorrelated.entanglement.size-hue": value / 3,
                    "train.steps": 300, "n_codes": 10,
                }, corr=corr, seed=seed, overrides=overrides)


def test_summarize_known_answers():
    s = lb.summarize([0.3, 0.1, 0.2])
    assert s.n == 3 and s.mean == pytest.approx(0.2, abs=1e-15)
    assert s.std == pytest.approx(0.1, abs=1e-15)
    half = T975_DF2 * 0.1 / math.sqrt(3)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.2 - half, 0.2 + half), abs=1e-12)
    assert (s.median, s.minimum, s.maximum) == (0.2, 0.1, 0.3)
    one = lb.summarize([0.5])
    assert (one.n, one.mean, one.std, one.ci_low, one.median) == (1, 0.5, None, None, 0.5)
    assert lb.summarize([]).n == 0


def test_aggregation_of_hand_written_runs(tmp_path):
    _grid(tmp_path / "runs")
    done = _invoke("leaderboard", tmp_path / "runs", "-o", tmp_path / "lb.csv")
    assert done.exit_code == 0, done.output
    assert "read 18 runs (0 skipped)" in done.output
    rows = _rows(tmp_path / "lb.csv")
    assert list(rows[0]) == list(lb.AGGREGATE_COLUMNS)
    vae = _row(rows, model="vae", corr="0.2", split="test", metric="mig")
    half = T975_DF2 * 0.1 / math.sqrt(3)
    assert vae["direction"] == "higher" and vae["n_seeds"] == "3" and vae["seeds"] == "0 1 2"
    assert float(vae["mean"]) == pytest.approx(0.2, abs=1e-10)
    assert float(vae["std"]) == pytest.approx(0.1, abs=1e-10)
    assert float(vae["ci95_low"]) == pytest.approx(0.2 - half, abs=1e-9)
    assert float(vae["ci95_high"]) == pytest.approx(0.2 + half, abs=1e-9)
    assert (vae["median"], vae["min"], vae["max"]) == ("0.2", "0.1", "0.3")
    assert vae["supervision"] == "none" and vae["protocol"] == "quick"
    decorrelated = _row(rows, model="vae", corr="inf", split="test_decorrelated", metric="mig")
    assert float(decorrelated["mean"]) == pytest.approx(0.1, abs=1e-10)
    pair = _row(rows, model="vae", corr="0.2", split="test", metric="entanglement.size-hue")
    assert pair["direction"] == "lower"
    steps = _row(rows, model="vae", corr="0.2", split="run", metric="train.steps")
    assert (steps["mean"], steps["std"], steps["direction"]) == ("300", "0", "info")
    # CSVAE with and without labels: two rows, marked, never pooled
    csvae = [r for r in rows if r["model"] == "csvae" and r["corr"] == "0.2"
             and r["split"] == "test" and r["metric"] == "mig"]
    assert sorted(r["supervision"] for r in csvae) == ["none", "weak (labels 10%)"]
    assert len({r["setting_hash"] for r in csvae}) == 2
    assert float(_row(csvae, supervision="none")["mean"]) == pytest.approx(0.7, abs=1e-10)
    # the run table: one row per run, identity columns, numbers as numbers
    runs = _rows(tmp_path / "lb.runs.csv")
    assert len(runs) == 18 and list(runs[0])[:len(lb.RUN_COLUMNS)] == list(lb.RUN_COLUMNS)
    first = runs[0]
    assert first["schema_version"] == "1" and first["train.steps"] == "300"
    assert {r["corr"] for r in runs} == {"0.2", "inf"}
    assert float(first["test.mig"]) in (0.1, 0.2, 0.3, 0.6, 0.7, 0.8)


def test_external_encoder_runs_aggregate_like_baselines(tmp_path):
    for seed, value in enumerate((0.4, 0.6)):
        fake_external_run(tmp_path / "runs", "mlp", {"test.mig": value}, seed=seed,
                          supervision="full (factor labels)")
    fake_run(tmp_path / "runs", "vae", {"test.mig": 0.1})
    done = _invoke("leaderboard", str(tmp_path / "runs") + "/*", "-o", tmp_path / "lb.csv")
    assert done.exit_code == 0, done.output
    row = _row(_rows(tmp_path / "lb.csv"), model="external:mlp", split="test", metric="mig")
    assert row["supervision"] == "full (factor labels)" and row["n_seeds"] == "2"
    assert float(row["mean"]) == pytest.approx(0.5)


def _bad_folders(root: Path) -> dict[str, str]:
    """Folders that must be skipped -> a word their warning names."""
    good = fake_run(root, "vae", {"test.mig": 0.5}, seed=0)
    bad = {}
    partial = fake_run(root, "vae", {}, seed=1, status="running")
    (partial / "metrics.json").unlink()
    bad[partial.name] = "unfinished"
    failed = fake_run(root, "vae", {}, seed=2, status=None)
    (failed / "metrics.json").unlink()
    (failed / "status.json").write_text(json.dumps(
        {"state": "failed", "exit_code": 3, "error": "training diverged"}))
    bad[failed.name] = "failed (exit 3: training diverged)"
    corrupt = fake_run(root, "vae", {}, seed=3)
    (corrupt / "metrics.json").write_text('{"model": "vae", "test.mig": 0.')
    bad[corrupt.name] = "corrupt metrics.json"
    unknown = fake_run(root, "vae", {"test.not_a_metric": 1.0}, seed=4)
    bad[unknown.name] = "unregistered key"
    outside = fake_run(root, "vae", {"test.mig": 1.5}, seed=5)
    bad[outside.name] = "outside its bounds"
    moved = fake_run(root, "vae", {"test.mig": 0.2}, seed=6)
    metrics = json.loads((moved / "metrics.json").read_text())
    metrics["seed"] = 7
    (moved / "metrics.json").write_text(json.dumps(metrics))
    bad[moved.name] = "metrics.json says seed = 7"
    old = fake_run(root, "vae", {"test.mig": 0.2}, seed=8)
    metrics = json.loads((old / "metrics.json").read_text())
    (old / "metrics.json").write_text(json.dumps(
        {k: v for k, v in metrics.items() if "." in k}))
    bad[old.name] = "no identity keys"
    no_config = fake_run(root, "vae", {"test.mig": 0.2}, seed=9)
    (no_config / "config.json").unlink()
    bad[no_config.name] = "no config.json"
    copy = root / "z-copies" / good.name  # sorts after the original: the copy is the duplicate
    shutil.copytree(good, copy)
    bad[str(Path("z-copies") / good.name)] = "duplicate of"
    return bad


def test_bad_folders_get_one_warning_each_and_are_never_aggregated(tmp_path):
    bad = _bad_folders(tmp_path / "runs")
    done = CliRunner().invoke(main, ["leaderboard", str(tmp_path / "runs"), "-o",
                                     str(tmp_path / "lb.csv")])
    assert done.exit_code == 0, done.output
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(bad), warnings
    for name, reason in bad.items():
        line = [w for w in warnings if f"{name}:" in w]
        assert len(line) == 1 and reason in line[0], (name, warnings)
    assert f"read 1 runs ({len(bad)} skipped)" in done.stdout
    row = _row(_rows(tmp_path / "lb.csv"), split="test", metric="mig")
    assert (row["n_seeds"], row["mean"], row["seeds"]) == ("1", "0.5", "0")


def test_rebuild_is_byte_identical(tmp_path):
    _grid(tmp_path / "runs")
    first = _invoke("leaderboard", tmp_path / "runs", "-o", tmp_path / "a.csv")
    globbed = [str(p) for p in sorted((tmp_path / "runs").iterdir(), reverse=True)]
    second = _invoke("leaderboard", *globbed, "-o", tmp_path / "b.csv")
    assert first.exit_code == second.exit_code == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.runs.csv").read_bytes() == (tmp_path / "b.runs.csv").read_bytes()
    again = _invoke("leaderboard", tmp_path / "runs", "-o", tmp_path / "a.csv")
    assert again.exit_code == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_readme_is_rendered_from_the_csvs(tmp_path):
    _grid(tmp_path / "runs")
    (tmp_path / "boards").mkdir()
    done = _invoke("leaderboard", tmp_path / "runs", "-o", tmp_path / "boards" / "grid.csv",
                   "--readme")
    assert done.exit_code == 0, done.output
    readme = (tmp_path / "boards" / "README.md").read_text()
    assert lb.README_MARKER in readme
    assert "## toy-causal — protocol `quick` (`grid.csv`)" in readme
    assert "| model | supervision | train σ | seeds | mig ↑ | entanglement ↓ |" in readme
    half = T975_DF2 * 0.1 / math.sqrt(3)
    assert f"| vae | none | 0.2 | 3 | 0.200 ± {half:.3f} |" in readme
    assert "| vae | none | ∞ | 3 |" in readme
    assert "| csvae | weak (labels 10%) | 0.2 | 3 |" in readme
    assert "| csvae | none | 0.2 | 3 | 0.700 ± " in readme
    assert "decorrelated split (σ = ∞)" in readme
    assert "| model | supervision | train σ | size-hue ↓ |" in readme
    plots = sorted(p.name for p in (tmp_path / "boards" / "plots").iterdir())
    assert plots == ["grid-toy-causal-quick-pairs.png", "grid-toy-causal-quick-test.png",
                     "grid-toy-causal-quick-test_decorrelated.png"]
    for name in plots:
        assert f"(plots/{name})" in readme
        assert (tmp_path / "boards" / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second leaderboard in the folder gets its own section; the README is rebuilt
    fake_run(tmp_path / "more", "hvae", {"test.mig": 0.3}, generator="dsprites-pairs-32")
    done = _invoke("leaderboard", tmp_path / "more", "-o", tmp_path / "boards" / "d.csv",
                   "--readme")
    assert done.exit_code == 0, done.output
    readme = (tmp_path / "boards" / "README.md").read_text()
    assert readme.index("(`d.csv`)") < readme.index("(`grid.csv`)")
    assert "| hvae | none | 0.2 | 1 | 0.300 (n = 1) |" in readme
    # a preface (the state of the sweeps behind the tables) goes above the first section
    lb.render_readme(tmp_path / "boards", preface="**Partial**: 4 of 9 cells.")
    readme = (tmp_path / "boards" / "README.md").read_text()
    assert readme.index(lb.README_MARKER) < readme.index("**Partial**: 4 of 9 cells.\n") \
        < readme.index("## ")


def test_plots_of_a_leaderboard_named_after_its_generator_say_it_once(tmp_path):
    _grid(tmp_path / "runs")
    done = _invoke("leaderboard", tmp_path / "runs", "-o", tmp_path / "toy-causal.csv",
                   "--readme")
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "toy-causal-quick-pairs.png", "toy-causal-quick-test.png",
        "toy-causal-quick-test_decorrelated.png"]


def _bands_and_bars(n_seeds: dict[str, int]):
    """The interval artists of a one-model plot whose cell at σ label c has n_seeds[c] seeds
    (mean 0.5, interval 0.4–0.6): (filled bands with area, error-bar containers)."""
    from matplotlib.collections import PolyCollection
    from matplotlib.container import ErrorbarContainer

    mk = ("vae", "none", "abcd1234")
    cells = {(mk, c, "test", "mig"): {"mean": "0.5", "ci95_low": "0.4", "ci95_high": "0.6",
                                      "n_seeds": str(n)} for c, n in n_seeds.items()}
    fig = lb.plot_figure("t", "test", ["mig"], [mk], {mk: "vae"}, list(n_seeds), cells, [],
                         "toy-causal", "quick")
    ax = fig.axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)
             and any(len(path.vertices) > 2 for path in c.get_paths())]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    return bands, bars


def test_plots_draw_an_interval_only_from_three_seeds():
    assert lb.MIN_SEEDS_FOR_BAND == 3
    bands, bars = _bands_and_bars({"0.2": 3, "0.4": 3, "inf": 3})
    assert (len(bands), len(bars)) == (1, 1)  # a band over the finite σ, a bar at ∞
    # one 2-seed cell: no band over the line; bars on the 3-seed points only
    bands, bars = _bands_and_bars({"0.2": 3, "0.4": 2, "inf": 2})
    assert (len(bands), len(bars)) == (0, 1)
    bands, bars = _bands_and_bars({"0.2": 2, "0.4": 2, "inf": 2})
    assert (len(bands), len(bars)) == (0, 0)


def test_sigma_axis_puts_inf_at_the_right_behind_a_gap():
    assert lb.sigma_positions(["inf", "0.2", "0.7", "0.4"]) == {
        "0.2": 0.0, "0.4": 1.0, "0.7": 2.0, "inf": 3.5}
    assert lb.sigma_positions(["inf"]) == {"inf": 0.0}


def test_readme_never_replaces_a_readme_it_did_not_write(tmp_path):
    fake_run(tmp_path / "runs", "vae", {"test.mig": 0.5})
    (tmp_path / "README.md").write_text("# my project\n")
    done = _invoke("leaderboard", tmp_path / "runs", "-o", tmp_path / "x.csv", "--readme")
    assert done.exit_code == 1
    assert "refusing to replace" in done.output and len(done.output.splitlines()) == 1
    assert (tmp_path / "README.md").read_text() == "# my project\n"
    assert not (tmp_path / "x.csv").exists()  # refused before anything was written


@pytest.mark.parametrize("case", ["nothing-matched", "no-such-path", "not-csv", "runs-csv",
                                  "no-folder", "a-folder", "no-finished-run", "no-args"])
def test_bad_arguments_are_one_line_errors(tmp_path, case):
    runs = tmp_path / "runs"
    fake_run(runs, "vae", {"test.mig": 0.5})
    out = tmp_path / "lb.csv"
    args = {
        "nothing-matched": [str(tmp_path / "nothing-*"), "-o", out],
        "no-such-path": [tmp_path / "missing", "-o", out],
        "not-csv": [runs, "-o", tmp_path / "lb.txt"],
        "runs-csv": [runs, "-o", tmp_path / "lb.runs.csv"],
        "no-folder": [runs, "-o", tmp_path / "missing" / "lb.csv"],
        "a-folder": [runs, "-o", tmp_path / "runs"],
        "no-finished-run": [tmp_path / "partial", "-o", out],
        "no-args": ["-o", out],
    }[case]
    if case == "a-folder":
        (tmp_path / "dir.csv").mkdir()
        args = [runs, "-o", tmp_path / "dir.csv"]
    if case == "no-finished-run":
        (fake_run(tmp_path / "partial", "vae", {}, status="running") / "metrics.json").unlink()
    done = _invoke("leaderboard", *args)
    assert done.exit_code != 0
    errors = [line for line in done.output.splitlines() if not line.startswith("warning:")]
    assert len(errors) == 1 or case == "no-args", done.output
    assert "Traceback" not in done.output
    assert not out.exists() and not (tmp_path / "lb.runs.csv").exists()


@pytest.mark.slow
def test_real_tiny_runs_aggregate_end_to_end(tiny_gate, tmp_path):
    runs, _ = tiny_gate
    done = _invoke("leaderboard", runs, "-o", tmp_path / "lb.csv", "--readme")
    assert done.exit_code == 0, done.output
    metrics = [json.loads(p.read_text()) for p in sorted(runs.glob("*/metrics.json"))]
    assert len(metrics) == 4
    rows = _rows(tmp_path / "lb.csv")
    for key in ("dci.disentanglement", "recon.bce_vs_pca", "entanglement.size-hue"):
        values = [m[f"test.{key}"] for m in metrics]
        row = _row(rows, split="test", metric=key)
        std = statistics.stdev(values)
        assert float(row["mean"]) == pytest.approx(statistics.fmean(values), rel=1e-9)
        assert float(row["std"]) == pytest.approx(std, rel=1e-9)
        assert float(row["ci95_high"]) - float(row["mean"]) == pytest.approx(
            T975_DF3 * std / 2, rel=1e-4)
        assert row["seeds"] == "0 1 2 3"
    runs_rows = _rows(tmp_path / "lb.runs.csv")
    assert sorted(r["run"] for r in runs_rows) == sorted(p.parent.name for p in
                                                         runs.glob("*/metrics.json"))
    assert (tmp_path / "README.md").is_file()
    assert os.path.getsize(tmp_path / "plots" / "lb-toy-causal-quick-test.png") > 10_000

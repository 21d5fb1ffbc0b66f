"""The committed leaderboards' sweeps: standard runs whose small files live in ``leaderboards/``.

Two grids (issue 12), both at the ``standard`` protocol, seeds 0-2:

- ``toy-causal``: every baseline (CSVAE both with its 10% labels and unsupervised) at
  σ ∈ {inf, 0.7, 0.4, 0.2};
- ``dsprites-pairs-32``: vae, beta-vae, beta-tcvae, hvae and ada-gvae at σ ∈ {inf, 0.4, 0.2}.

Each cell is one `toybench.runs.execute` of a `RunSpec`; its run folder (checkpoints included)
goes to ``--work`` and its small files (`KEEP`) to ``leaderboards/runs/<generator>/<run name>/``,
committed at once with ``--commit``, so an interrupted sweep loses at most the run in progress
and ``toybench leaderboard leaderboards/runs/<generator>/*`` rebuilds every table from the
committed files alone. Cells already kept are skipped.

A cell that the convergence study (`studies/convergence.py`) trained as the first 2,400 steps
of a ``long`` run is not trained again: with ``--study-work`` (the study's run folders) it is
scored from that run's ``ckpt/step2400.pt`` (``execute(prefix_of=...)``, byte-identical to a
run trained from scratch; ``status.json`` says ``derived_from``). The study calls
`keep_standard` itself after each long run, so its checkpoints need not outlive the machine.

    python studies/leaderboards.py run --work /path/to/runs [--study-work DIR] [--commit]
                                       [--protocol standard|long]
                                       [--threads 2] [--only TEXT] [--corr inf,0.2]
    python studies/leaderboards.py build   # leaderboards/*.csv, leaderboards/README.md and
                                           # docs/baselines-table.md
    python studies/leaderboards.py compare --models beta-vae,ada-gvae [--corr inf,0.2]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOARD = ROOT / "leaderboards"
KEPT = BOARD / "runs"
KEEP = ("metrics.json", "config.json", "status.json", "env.json")
SEEDS = (0, 1, 2)
INF = math.inf
UNSUPERVISED = ("model.supervision_weight=0", "train.supervised_fraction=0")
#: generator -> (models as (baseline, overrides), σ values)
GRIDS = {
    "toy-causal": (
        (("vae", ()), ("beta-vae", ()), ("beta-tcvae", ()), ("csvae", ()),
         ("csvae", UNSUPERVISED), ("hvae", ()), ("pca", ()), ("ada-gvae", ()),
         ("ada-ml-vae", ())),
        (INF, 0.7, 0.4, 0.2)),
    "dsprites-pairs-32": (
        (("vae", ()), ("beta-vae", ()), ("beta-tcvae", ()), ("hvae", ()), ("ada-gvae", ())),
        (INF, 0.4, 0.2)),
}


def cells():
    """``(baseline, overrides, generator, σ, seed)``: seed 0 of every cell first."""
    for seed in SEEDS:
        for generator, (models, corrs) in GRIDS.items():
            for corr in corrs:
                for baseline, overrides in models:
                    yield baseline, overrides, generator, corr, seed


def label(baseline: str, overrides: tuple[str, ...]) -> str:
    return baseline + (" (unsupervised)" if overrides == UNSUPERVISED else "")


def in_grid(baseline: str, overrides: tuple[str, ...], generator: str, corr: float) -> bool:
    models, corrs = GRIDS.get(generator, ((), ()))
    return (baseline, tuple(overrides)) in models and corr in corrs


def keep_standard(baseline: str, overrides: tuple[str, ...], generator: str, corr: float,
                  seed: int, work: Path, *, study_work: Path | None = None,
                  commit: bool = False, train_missing: bool = True) -> str:
    """Run (or take from the study's long run) one standard cell and keep its small files.

    Returns ``"kept"`` (already in ``leaderboards/runs``), ``"taken"`` (scored from a long
    run's step-2400 checkpoint), ``"trained"``, ``"failed"`` or, with ``train_missing`` false
    and no long run to take it from, ``"missing"``.
    """
    from studies.keep import run_and_keep
    from toybench.rundir import RunDir, RunSpec

    spec = RunSpec(baseline, generator, corr, seed, "standard", tuple(overrides))
    kept = KEPT / generator / spec.name
    if (kept / "metrics.json").is_file():
        return "kept"
    run_dir = RunDir.of(spec, work)
    source = None
    if study_work is not None and run_dir.state() != "done":
        long = RunDir.of(RunSpec(baseline, generator, corr, seed, "long", tuple(overrides)),
                         study_work)
        if long.state() == "done" and (long.path / "ckpt" / "step2400.pt").is_file():
            source = long.path
    if source is None and run_dir.state() != "done" and not train_missing:
        return "missing"
    extra = {"resume": False, "prefix_of": source} if source is not None else {}
    if not run_and_keep(spec, work, kept, KEEP, commit=commit,
                        message=f"leaderboard run: {spec.name}",
                        note=", from the study" if source else "", **extra):
        return "failed"
    return "taken" if source else "trained"


def keep_long(baseline: str, overrides: tuple[str, ...], generator: str, corr: float,
              seed: int, work: Path, *, commit: bool = False) -> str:
    """Run one cell with the ``long`` protocol, scored at step 2,400 too, and keep its small
    files (with ``curve.json``); then keep the standard run taken from its first 2,400 steps.

    Returns ``"kept"`` (the long run already in ``leaderboards/runs``), ``"trained"`` or
    ``"failed"``.
    """
    from studies.keep import run_and_keep
    from toybench.rundir import RunSpec

    spec = RunSpec(baseline, generator, corr, seed, "long", tuple(overrides))
    kept = KEPT / generator / spec.name
    outcome = "kept"
    if not (kept / "metrics.json").is_file():
        if not run_and_keep(spec, work, kept, (*KEEP, "curve.json"), commit=commit,
                            message=f"leaderboard run: {spec.name}", score_at=(2400,)):
            return "failed"
        outcome = "trained"
    keep_standard(baseline, overrides, generator, corr, seed, work, study_work=work,
                  commit=commit)
    return outcome


def keep_study_run(study_kept: Path, *, commit: bool = False) -> bool:
    """Copy a committed convergence-study long run (``studies/convergence/runs/long/<name>``)
    into ``leaderboards/runs/<generator>/`` when its cell is a leaderboard cell (the study's
    runs are the long leaderboard's rows at σ ∈ {inf, 0.2}). Returns whether it was copied."""
    import json

    from studies.keep import git_commit

    config = json.loads((study_kept / "config.json").read_text())
    spec = config["spec"]
    corr = math.inf if spec["corr"] == "inf" else float(spec["corr"])
    generator = spec["generator"]
    if not in_grid(spec["baseline"], tuple(spec["overrides"]), generator, corr):
        return False
    kept = KEPT / generator / study_kept.name
    if (kept / "metrics.json").is_file():
        return False
    kept.mkdir(parents=True, exist_ok=True)
    for path in study_kept.iterdir():
        if path.is_file():
            shutil.copy2(path, kept / path.name)
    if commit:
        git_commit(kept, f"leaderboard run: {study_kept.name} (from the convergence study)")
    return True


def study_cell(baseline: str, overrides: tuple[str, ...], generator: str, corr: float) -> bool:
    """Whether the convergence study trains this cell's long runs (its seeds 0-2)."""
    from studies.convergence import CORRS, GENERATORS, MODELS

    return not overrides and baseline in MODELS and generator in GENERATORS and corr in CORRS


def run(work: Path, study_work: Path | None, commit: bool, only: str | None,
        corrs: tuple[float, ...] | None = None, train_missing: bool = True,
        protocol: str = "standard", skip_study: bool = False) -> int:
    failures = 0
    if protocol == "long":  # the study's long runs first: they are already done
        for study_kept in sorted((ROOT / "studies/convergence/runs/long").glob("*")):
            if (study_kept / "metrics.json").is_file():
                keep_study_run(study_kept, commit=commit)
    for baseline, overrides, generator, corr, seed in cells():
        if only and only not in f"{label(baseline, overrides)} {generator}":
            continue
        if corrs is not None and corr not in corrs:
            continue
        if skip_study and study_cell(baseline, overrides, generator, corr):
            continue  # the study's long run gives it (studies/convergence.py --board-work)
        if protocol == "long":
            if baseline == "pca":  # fitted, not trained: one protocol is all it has
                outcome = keep_standard(baseline, overrides, generator, corr, seed, work,
                                        commit=commit)
            elif study_cell(baseline, overrides, generator, corr):
                continue  # studies/convergence.py trains it (and keeps both rows)
            else:
                outcome = keep_long(baseline, overrides, generator, corr, seed, work,
                                    commit=commit)
        else:
            outcome = keep_standard(baseline, overrides, generator, corr, seed, work,
                                    study_work=study_work, commit=commit,
                                    train_missing=train_missing)
        failures += outcome == "failed"
    return 1 if failures else 0


def build() -> int:
    """``leaderboards/<generator>.csv`` (+ ``.runs.csv``) and ``leaderboards/README.md``, after
    copying in the committed study runs not yet in ``leaderboards/runs`` (`keep_study_run`)."""
    from toybench.leaderboard import build_leaderboard, render_readme
    from toybench.rundir import RunSpec

    copied = [p.name for p in sorted((ROOT / "studies/convergence/runs/long").glob("*"))
              if (p / "metrics.json").is_file() and keep_study_run(p)]
    if copied:
        print(f"copied {len(copied)} study runs into {KEPT} (commit them)")
    lines, complete = [], True
    for generator in GRIDS:
        folders = sorted(str(p) for p in (KEPT / generator).glob("*") if p.is_dir())
        if folders:
            build_leaderboard(folders, BOARD / f"{generator}.csv")
        grid = [c for c in cells() if c[2] == generator]
        done = {protocol: sum((KEPT / generator / RunSpec(b, g, corr, seed, protocol,
                                                          o).name / "metrics.json").is_file()
                              for b, o, g, corr, seed in grid)
                for protocol in ("standard", "long")}
        complete = complete and done["standard"] == len(grid)
        lines.append(f"- {generator}: {done['standard']} of the {len(grid)} standard cells "
                     f"and {done['long']} long runs; " + run_time(KEPT / generator))
    state = ("every standard cell has its 3 seeds" if complete else
             "cells are added as they finish, so a row with fewer than 3 seeds is not final")
    preface = ("**State of the sweeps** (`python studies/leaderboards.py run`; "
               f"{state}):\n\n"
               + "\n".join(lines) + "\n\nThe `long` rows are the convergence study's runs "
               "(4,800 steps; σ ∈ {inf, 0.2}); whether `standard` has converged: "
               "docs/protocols.md. Nearly all runs ran two at a time on 2-core machines, "
               "one torch thread each (`env.json` records each run's threads and CPU).")
    render_readme(BOARD, preface=preface)
    write_baseline_tables()
    return 0


def run_time(folder: Path) -> str:
    """What the kept runs of one leaderboard cost: the sum of their ``status.json`` seconds
    (training and scoring, one run per process), per protocol; a standard run scored from a
    long run's step-2,400 checkpoint (``derived_from``) costs its scoring only."""
    import json

    cost = {"standard": [0, 0.0], "derived": [0, 0.0], "long": [0, 0.0]}
    for status_file in folder.glob("*/status.json"):
        status = json.loads(status_file.read_text(encoding="utf-8"))
        protocol = json.loads((status_file.parent / "metrics.json").read_text(
            encoding="utf-8"))["protocol"]
        kind = "derived" if status.get("derived_from") else protocol
        cost[kind][0] += 1
        cost[kind][1] += float(status.get("seconds", 0.0))
    (n_standard, standard), (n_long, long), (n_derived, derived) = (
        cost["standard"], cost["long"], cost["derived"])
    return (f"run time (sum of `status.json` seconds) {standard / 3600:.1f} h for "
            f"{n_standard} trained standard runs and {long / 3600:.1f} h for {n_long} long "
            f"runs, whose first 2,400 steps gave {n_derived} more standard runs (scored in "
            f"{derived / 60:.0f} min)")


#: The tables of issue 9, part 6 (every baseline at σ ∈ {inf, 0.2}, mean ± std over seeds).
BASELINE_TABLES = ROOT / "docs" / "baselines-table.md"


def write_baseline_tables(path: Path = BASELINE_TABLES) -> Path:
    """``docs/baselines-table.md``: `compare` of every grid model at σ ∈ {inf, 0.2}, for the
    standard and the long protocol, from the kept runs (rewritten by every ``build``)."""
    from toybench.io import atomic_write_text

    models = dict.fromkeys(baseline + (":unsupervised" if overrides == UNSUPERVISED else "")
                           for grid_models, _ in GRIDS.values()
                           for baseline, overrides in grid_models)  # ordered, no repeats
    text = ["# Baselines at σ ∈ {∞, 0.2}: mean ± std over seeds", "",
            "Written by `python studies/leaderboards.py build` from the run files in "
            "`leaderboards/runs/` (do not edit by hand). Columns: test BCE (nats per image) on "
            "the correlated test split and on the decorrelated one (`BCE dec`), active units "
            "(AU) on the test split, and on the decorrelated split DCI disentanglement (D), "
            "completeness (C), informativeness (I, test accuracy), MIG and the calibrated "
            "entanglement of each correlated pair (DAG edge). `seeds` says how many runs each "
            "row has; `± 0` with one seed is no spread. The standard protocol is 2,400 steps, "
            "the long one 4,800; whether either has converged: `docs/protocols.md`. "
            "`csvae` is the weakly supervised default (10% labels), `csvae:unsupervised` the "
            "same model without labels; `ada-gvae` and `ada-ml-vae` train on pairs.", ""]
    for protocol in ("standard", "long"):
        text += [f"## `{protocol}`", "",
                 compare(tuple(models), tuple(GRIDS), (INF, 0.2), protocol), ""]
    return atomic_write_text(path, "\n".join(text).rstrip("\n") + "\n")


#: The columns of `compare`: (split, metric key, label).
COMPARE = (("test", "recon.bce", "BCE"), ("test_decorrelated", "recon.bce", "BCE dec"),
           ("test", "active_units", "AU"), ("test_decorrelated", "dci.disentanglement", "D"),
           ("test_decorrelated", "dci.completeness", "C"),
           ("test_decorrelated", "dci.informativeness_test", "I"),
           ("test_decorrelated", "mig", "MIG"))


def compare(models: tuple[str, ...], generators: tuple[str, ...],
            corrs: tuple[float, ...] | None, protocol: str = "standard") -> str:
    """Markdown tables of the kept runs: per generator, a row per model × σ with the number of
    seeds and mean ± sample std of `COMPARE` and of each correlated pair's entanglement on the
    decorrelated split."""
    import json
    import statistics

    from toybench.scm import corr_label

    out = []
    for generator in generators:
        runs = [r for r in (json.loads(p.read_text())
                            for p in sorted((KEPT / generator).glob("*/metrics.json")))
                if r["protocol"] == protocol]
        pairs = sorted({k.split(".", 2)[2] for r in runs for k in r
                        if k.startswith("test_decorrelated.entanglement.")})
        header = ["model", "σ", "seeds", *(c[2] for c in COMPARE), *(f"ent {p}" for p in pairs)]
        rows = []
        for model in models:
            base, _, variant = model.partition(":")
            for corr in sorted({float(r["corr"]) for r in runs}, key=lambda c: -c):
                if corrs is not None and corr not in corrs:
                    continue
                group = [r for r in runs if r["model"] == base and float(r["corr"]) == corr
                         and (variant != "unsupervised") == (r["supervision"] != "none"
                                                              or base != "csvae")]
                if not group:
                    continue
                cells = []
                for key in [f"{s}.{m}" for s, m, _ in COMPARE] + \
                        [f"test_decorrelated.entanglement.{p}" for p in pairs]:
                    values = [r[key] for r in group if isinstance(r.get(key), int | float)]
                    if not values:
                        cells.append("")
                        continue
                    mean = statistics.fmean(values)
                    std = statistics.stdev(values) if len(values) > 1 else 0.0
                    digits = 1 if abs(mean) >= 10 or key.endswith("active_units") else 3
                    cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
                rows.append([model, corr_label(corr), str(len(group)), *cells])
        out += [f"**{generator}**, `{protocol}` (decorrelated split unless marked; mean ± std "
                f"over seeds)", "",
                "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                *("| " + " | ".join(r) + " |" for r in rows), ""]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="run the cells not yet kept in leaderboards/runs/")
    go.add_argument("--work", type=Path, required=True, help="folder for the run folders")
    go.add_argument("--study-work", type=Path, default=None,
                    help="the convergence study's run folders (take standard runs from them)")
    go.add_argument("--commit", action="store_true", help="git-commit each finished run")
    go.add_argument("--threads", type=int, default=None, help="torch/BLAS threads")
    go.add_argument("--only", default=None,
                    help="run only cells whose 'model generator' contains this text")
    go.add_argument("--corr", default=None, help="run only cells at these σ (inf,0.2)")
    go.add_argument("--protocol", choices=("standard", "long"), default="standard",
                    help="long: each cell a long run scored at 2,400 too, kept with the "
                         "standard run taken from it (the study's runs copied in)")
    go.add_argument("--skip-study-cells", action="store_true",
                    help="leave the cells the convergence study trains to its long runs")
    go.add_argument("--study-only", action="store_true",
                    help="only the cells a long run of --study-work already trained")
    sub.add_parser("build", help="write leaderboards/*.csv and leaderboards/README.md")
    cmp = sub.add_parser("compare", help="markdown table of kept runs (mean ± std over seeds)")
    cmp.add_argument("--models", required=True,
                     help="e.g. beta-vae,ada-gvae (csvae:unsupervised for the variant)")
    cmp.add_argument("--data", default=",".join(GRIDS), help="generators")
    cmp.add_argument("--corr", default=None, help="σ values (default: all)")
    cmp.add_argument("--protocol", default="standard", help="standard or long")
    args = parser.parse_args()
    if args.command == "run":
        if args.threads:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ[var] = str(args.threads)
            import torch

            torch.set_num_threads(args.threads)
        from toybench.sweep import parse_corrs

        corrs = None if args.corr is None else parse_corrs(args.corr)
        return run(args.work, args.study_work, args.commit, args.only, corrs,
                   not args.study_only, args.protocol, args.skip_study_cells)
    if args.command == "compare":
        from toybench.sweep import parse_corrs, parse_names

        corrs = None if args.corr is None else parse_corrs(args.corr)
        print(compare(parse_names(args.models, "--models"), parse_names(args.data, "--data"),
                      corrs, args.protocol))
        return 0
    return build()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from studies.keep import cli

    sys.exit(cli(main))

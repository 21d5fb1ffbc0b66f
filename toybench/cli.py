"""The ``toybench`` command line. Each command is a few lines that call one library function.

Errors a user can cause (bad names, bad values, unreadable files) are raised as
``click.ClickException`` / ``click.BadParameter`` (or ``UsageError``) so that click prints one
clear line and exits non-zero, never a traceback.
"""

from __future__ import annotations

import click

from toybench import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="toybench")
def main() -> None:
    """toybench: VAEs and friends on synthetic correlated causal data, with exact ground truth."""


class _UserErrors:
    """Turn a ``ToybenchError`` into a one-line ``click.ClickException`` (exit 1, no traceback)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        from toybench.errors import ToybenchError

        if isinstance(err, ToybenchError):
            failure = click.ClickException(" ".join(str(err).split()))
            failure.exit_code = int(getattr(err, "exit_code", 1))  # 3 diverged, 75 running
            raise failure from None
        return False


_DATA_HELP = "generator: a shipped name (see `toybench list`) or a path to your own .toml spec"
_TEST_CORR_HELP = ("also score on extra test splits drawn at these σ, comma-separated (keys "
                   "test_corr0_4.*, test_corrinf.*; part of the run's config and hash)")
_DEVICE_HELP = ("auto (cuda if available, else cpu) | cpu | cuda; bf16 autocast on either; not "
                "part of the run's hash")
_CORR_HELP = "correlation width σ > 0 (smaller = stronger); 'inf' = independent factors"


@main.command(short_help="Draw a data set and save it as an .npz.")
@click.option("--data", required=True, help=_DATA_HELP)
@click.option("--corr", default="inf", show_default=True, help=_CORR_HELP)
@click.option("-n", "n", type=int, default=1000, show_default=True, help="number of samples")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed (≥ 0)")
@click.option("--split", default="train", show_default=True,
              help="train | test | test_decorrelated (σ = inf) | test_corr<σ> (σ of its name: "
                   "test_corr0_4)")
@click.option("-o", "--out", required=True, help="output .npz (images, factors, concepts, card)")
def generate(data: str, corr: str, n: int, seed: int, split: str, out: str) -> None:
    """Draw a data set and export it as an .npz for any framework."""
    from toybench.data import generate as generate_npz

    with _UserErrors():
        click.echo(f"wrote {generate_npz(data, corr=corr, n=n, seed=seed, out=out, split=split)}")


@main.command(short_help="Draw samples, the DAG and the data card.")
@click.option("--data", required=True, help=_DATA_HELP)
@click.option("--corr", default="inf", show_default=True, help=_CORR_HELP)
@click.option("-n", "n", type=int, default=32, show_default=True, help="number of samples shown")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed (≥ 0)")
@click.option("-o", "--out", required=True, help="output figure (.png, .pdf or .svg)")
def show(data: str, corr: str, n: int, seed: int, out: str) -> None:
    """Contact sheet: samples, the DAG and the data card at σ.

    The card's realized Pearson ρ, Spearman ρ and mutual information of every concept pair are
    drawn as heatmaps; the DAG's edges carry their Pearson ρ and MI.
    """
    from toybench.data import show as show_sheet

    with _UserErrors():
        click.echo(f"wrote {show_sheet(data, corr=corr, out=out, n=n, seed=seed)}")


def _generator_lines() -> list[tuple[str, str]]:
    from toybench.specs import generator_summaries

    return generator_summaries()


def _baseline_lines() -> list[tuple[str, str]]:
    from toybench.baselines import baseline_summaries

    return baseline_summaries()


def _bound(value: float | None, unbounded: str) -> str:
    return unbounded if value is None else f"{value:g}"


def _metric_lines() -> list[tuple[str, str]]:
    """Every key of ``metrics.json``: direction (↑ higher / ↓ lower is better, · neither),
    bounds and meaning, from `toybench.metrics.METRIC_INFO`."""
    from toybench.metrics import METRIC_INFO

    lines = []
    for info in METRIC_INFO.values():
        lo, hi = info.bounds
        bounds = f"[{_bound(lo, '-inf')}, {_bound(hi, 'inf')}]" if info.numeric else info.kind
        lines.append((info.display_key, f"{info.arrow} {bounds:<11} {info.meaning}"))
    return lines


def _split_lines() -> list[tuple[str, str]]:
    """The evaluation splits that prefix score keys, from `toybench.metrics.SPLIT_INFO`."""
    from toybench.metrics import SPLIT_INFO

    return list(SPLIT_INFO.items())


def _setting_lines() -> list[tuple[str, str]]:
    from toybench.baselines import setting_summaries

    return setting_summaries()


# `toybench list` sections: title -> function returning (name, one line) pairs.
LIST_SECTIONS = {
    "generators": _generator_lines,
    "baselines": _baseline_lines,
    "splits (the <split> of a score key)": _split_lines,
    "metrics": _metric_lines,
    "settings (--set KEY=VALUE; field defaults, protocols and baseline files set their own)":
        _setting_lines,
}


@main.command(name="list", short_help="List generators, baselines and metrics.")
def list_() -> None:
    """List the shipped generators, baselines and metrics, one line each."""
    with _UserErrors():
        for title, lines in LIST_SECTIONS.items():
            lines = lines()
            width = max([16, *(len(name) for name, _ in lines)])
            click.echo(f"{title}:")
            for name, line in lines:
                click.echo(f"  {name:<{width}} {line}")


@main.command(name="run", short_help="Train and score a baseline; write a run folder.")
@click.option("--model", required=True,
              help="baseline: a shipped name (see `toybench list`) or a path to a .toml")
@click.option("--data", default="toy-causal", show_default=True, help=_DATA_HELP)
@click.option("--corr", default="inf", show_default=True, help=_CORR_HELP)
@click.option("--seed", type=int, default=0, show_default=True,
              help="run seed in [0, 2**32 - 1]: data, weights, batches, noise, evaluation")
@click.option("--protocol", default="standard", show_default=True,
              help="quick (CI smoke test) | standard (the leaderboard protocol) | long (the "
                   "convergence reference, 2x standard); defined in "
                   "baselines/protocols.toml, a baseline file may add its own")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a config field: section.field=value with section model, train or "
                   "eval, e.g. --set train.lr=3e-4 --set model.beta=8 (repeatable). Every key "
                   "and its default: `toybench list` (settings); an unknown key's error names "
                   "the valid ones")
@click.option("--out", default="runs", show_default=True, help="parent folder of run folders")
@click.option("--resume", is_flag=True, help="continue an unfinished run from ckpt/last.pt")
@click.option("--force", is_flag=True, help="delete an existing run folder and start over")
@click.option("--fp32", is_flag=True, help="plain fp32 training (default: bf16 autocast)")
@click.option("--no-plots", is_flag=True, help="skip the figures in plots/")
@click.option("--score-at", "score_at", default="", metavar="S1,S2,...",
              help="also score the model at these steps of its training (full evaluation, "
                   "appended to curve.json with the final step); changes no result")
@click.option("--test-corr", default=None, metavar="S1,S2",
              help=_TEST_CORR_HELP)
@click.option("--device", default="cpu", show_default=True, help=_DEVICE_HELP)
@click.option("--threads", default=None, metavar="T",
              help="cap torch, OpenMP and BLAS at T threads in this process (default: "
                   "torch's own choice, one per core)")
def run_command(model: str, data: str, corr: str, seed: int, protocol: str,
                overrides: tuple[str, ...], out: str, resume: bool, force: bool,
                fp32: bool, no_plots: bool, score_at: str, test_corr: str | None, device: str,
                threads: str | None) -> None:
    """Train a baseline, score it on the test and decorrelated splits, write runs/<name>/."""
    from toybench import hardware

    with _UserErrors():
        hardware.check_device(device)
        extra = ()
        if test_corr is not None:
            from toybench.sweep import eval_test_corr_setting, parse_corrs

            extra = (eval_test_corr_setting(parse_corrs(test_corr, "--test-corr")),)
        if threads is not None:  # before torch is imported (toybench.runs imports it)
            hardware.cap_threads(_count(threads, "--threads"))
        from toybench.runs import run

        run(model, data=data, corr=corr, seed=seed, protocol=protocol,
            overrides=(*overrides, *extra), out=out, resume=resume, force=force, fp32=fp32,
            plots=not no_plots, echo=click.echo, device=device, score_at=_steps_list(score_at))


def _steps_list(text: str) -> tuple[int, ...]:
    """``"300,600"`` -> (300, 600); one-line error for anything but comma-separated integers."""
    from toybench.errors import ToybenchError

    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return tuple(int(item) for item in items)
    except ValueError:
        raise ToybenchError(f"--score-at takes comma-separated step counts, got {text!r}") \
            from None


def _count(text: str | None, what: str, *, minimum: int = 1) -> int | None:
    """An integer option given as text, checked here so that junk is one clear line."""
    from toybench.errors import ToybenchError

    if text is None:
        return None
    value = str(text).strip()
    if not value.isdigit() or int(value) < minimum:
        raise ToybenchError(f"{what} must be an integer ≥ {minimum}, got {text!r}")
    return int(value)


@main.command(name="sweep", short_help="Run a grid of runs: models × data × σ × seeds.")
@click.option("--models", required=True, metavar="M1,M2",
              help="baselines, comma-separated (shipped names or .toml paths)")
@click.option("--data", default="toy-causal", show_default=True, metavar="G1,G2",
              help="generators, comma-separated (shipped names or .toml paths)")
@click.option("--corr", default="inf", show_default=True, metavar="S1,S2",
              help="training σ values, comma-separated, e.g. inf,0.7,0.4,0.2")
@click.option("--seeds", default="0", show_default=True, metavar="SEEDS",
              help="seeds: a range 0-2 (both ends), a list 0,3,7, or both 0-2,10")
@click.option("--protocol", default="standard", show_default=True,
              help="quick | standard | long (baselines/protocols.toml), for every cell")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a config field of every cell, as for `toybench run` (repeatable)")
@click.option("--test-corr", default=None, metavar="S1,S2", help=_TEST_CORR_HELP)
@click.option("--executor", default="serial", show_default=True,
              help="serial (this process) | local (a pool of --jobs processes) | ray (Ray "
                   "tasks; pip install -e \".[ray]\")")
@click.option("--jobs", default=None, metavar="N",
              help="cells at once: local worker processes (default one per core) or Ray "
                   "tasks in flight (default all)")
@click.option("--threads", default=None, metavar="T",
              help="CPU threads per cell: local default cores ÷ jobs, ray default 1 "
                   "(num_cpus of each task), serial default uncapped")
@click.option("--address", default=None, metavar="ADDR",
              help="ray: join this running cluster (e.g. auto or 10.0.0.1:6379) instead of "
                   "starting a local one; --out must then be on a file system all nodes share")
@click.option("--index", default=None, metavar="I",
              help="run only cell I of the sorted grid (0-based; see --dry-run)")
@click.option("--shard", default=None, metavar="i/N",
              help="run only cells i, i+N, i+2N, ... (0-based; SLURM-style array jobs)")
@click.option("--dry-run", is_flag=True, help="list the cells with index, state and name; "
                                               "run nothing")
@click.option("--retry-failed", is_flag=True,
              help="start failed cells over (default: report and skip them, exit 1)")
@click.option("--out", default="runs", show_default=True, help="parent folder of run folders")
@click.option("--device", default="cpu", show_default=True, help=_DEVICE_HELP)
@click.option("--no-plots", is_flag=True, help="skip each run's figures in plots/")
def sweep_command(models: str, data: str, corr: str, seeds: str, protocol: str,
                  overrides: tuple[str, ...], test_corr: str | None, executor: str,
                  jobs: str | None, threads: str | None, address: str | None,
                  index: str | None, shard: str | None, dry_run: bool, retry_failed: bool,
                  out: str, device: str, no_plots: bool) -> None:
    """Run every cell of a grid that is not done yet, one run folder per cell.

    Cells are sorted by (model, generator, σ, seed). Done cells are skipped and started ones
    resume from their checkpoint, so a stopped sweep continues where it was. A failed cell is
    recorded in its status.json, listed at the end and skipped next time (exit 1) unless
    --retry-failed; a cell held by another process (another sweep over the same grid) is left
    to it (exit 75 if nothing failed). Exit 0: every selected cell is done.
    """
    from toybench import sweep as sweeps

    with _UserErrors():
        grid = sweeps.Grid(
            models=sweeps.parse_names(models, "--models"),
            generators=sweeps.parse_names(data, "--data"),
            corrs=sweeps.parse_corrs(corr), seeds=sweeps.parse_seeds(seeds),
            protocol=protocol, overrides=tuple(overrides),
            test_corr=() if test_corr is None else sweeps.parse_corrs(test_corr, "--test-corr"))
        report = sweeps.sweep(
            grid, out, index=_count(index, "--index", minimum=0),
            shard=None if shard is None else sweeps.parse_shard(shard), dry_run=dry_run,
            retry_failed=retry_failed, executor=executor, jobs=_count(jobs, "--jobs"),
            threads=_count(threads, "--threads"), address=address, device=device,
            plots=not no_plots, echo=click.echo)
    if report.exit_code:
        raise SystemExit(report.exit_code)


@main.command(name="encode", short_help="Encode a split with a finished run's model.")
@click.argument("run_dir", metavar="RUN_DIR")
@click.option("--data", default=None, help="generator to encode (default: the run's own)")
@click.option("--corr", default=None, help="σ of the data (default: the run's own)")
@click.option("-n", "n", type=int, default=None,
              help="number of images (default: the run's n_test)")
@click.option("--seed", type=int, default=None, help="data seed (default: the run's own)")
@click.option("--split", type=click.Choice(["test", "test_decorrelated"]), default="test",
              show_default=True, help="which split to draw")
@click.option("-o", "--out", required=True, help="output .npz with `codes` and `factors`")
def encode_command(run_dir: str, data: str | None, corr: str | None, n: int | None,
                   seed: int | None, split: str, out: str) -> None:
    """Encode a data split with a finished run's model; write codes + factors for `score`."""
    from toybench.runs import encode_run

    with _UserErrors():
        path = encode_run(run_dir, out, data=data, corr=corr, n=n, split=split, seed=seed)
        click.echo(f"wrote {path}")


@main.command(name="score", short_help="Score the codes in an .npz: DCI, MIG, SAP, etc.")
@click.argument("codes_npz", metavar="CODES.npz")
@click.option("--json", "json_out", default=None, help="also write the scores as flat JSON here")
@click.option("--dci-backend", type=click.Choice(["fast", "reference"]), default="fast",
              show_default=True, help="fast = exact re-implementation; reference = scikit-learn")
@click.option("--shuffle-seed", type=click.IntRange(min=0), default=None,
              help="shuffle the rows with this seed before the first-80% train / last-20% test "
                   "split (default: keep the stored order)")
def score_command(codes_npz: str, json_out: str | None, dci_backend: str,
                  shuffle_seed: int | None) -> None:
    """Score the `codes` (n, L) of an .npz against its `factors` (n, K): DCI, MIG, SAP, ..."""
    import warnings

    from toybench.evaluate import RowOrderWarning, format_scores, score_codes_file
    from toybench.io import atomic_write_json, check_output

    with _UserErrors():
        if json_out is not None:
            check_output(json_out)  # before the scoring, not after it
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RowOrderWarning)
                scores = score_codes_file(codes_npz, dci_backend=dci_backend,
                                          shuffle_seed=shuffle_seed)
        finally:  # also when scoring fails: the warning may explain why
            for item in caught:  # one line on stderr; other warnings go on as usual
                if issubclass(item.category, RowOrderWarning):
                    click.echo(f"Warning: {' '.join(str(item.message).split())}", err=True)
                else:
                    warnings.warn_explicit(item.message, item.category, item.filename,
                                           item.lineno)
        click.echo(format_scores(scores))
        if json_out is not None:
            click.echo(f"wrote {atomic_write_json(json_out, scores)}")


# --------------------------------------------------------------------------------------------
# Leaderboards and the CI quality gate (toybench/leaderboard.py, toybench/gate.py).
# --------------------------------------------------------------------------------------------


@main.command(name="leaderboard", short_help="Aggregate run folders into leaderboard CSVs.")
@click.argument("runs", nargs=-1, required=True, metavar="RUN_DIRS_OR_GLOBS...")
@click.option("-o", "--out", required=True, metavar="NAME.csv",
              help="aggregated table (one row per model × generator × σ × split × protocol × "
                   "metric); the per-run table NAME.runs.csv is written beside it")
@click.option("--readme", is_flag=True,
              help="then render README.md and plots/*.png in the folder of NAME.csv from "
                   "every leaderboard there (NAME.csv + NAME.runs.csv pairs)")
def leaderboard_command(runs: tuple[str, ...], out: str, readme: bool) -> None:
    """Aggregate finished run folders into NAME.csv and NAME.runs.csv.

    RUN_DIRS_OR_GLOBS are run folders, folders holding run folders (searched recursively) or
    globs of either (quote them to let toybench expand them: 'runs/vae-*'). Only metrics.json,
    config.json and status.json are read. Unfinished, failed, corrupt and duplicate folders are
    named in one warning line each and left out. NAME.csv has, per metric, the number of seeds,
    mean, standard deviation, 95% t-interval, median, min and max; rows are sorted and floats
    written in a fixed format, so a rebuild from the same folders is byte-identical.
    """
    from toybench.leaderboard import build_leaderboard

    with _UserErrors():
        result = build_leaderboard(runs, out, readme=readme,
                                   warn=lambda line: click.echo(line, err=True))
        click.echo(f"read {len(result.runs)} runs ({len(result.skipped)} skipped)")
        click.echo(f"wrote {result.table}")
        click.echo(f"wrote {result.runs_table}")
        if result.readme is not None:
            click.echo(f"wrote {result.readme}")


@main.command(name="check", short_help="CI quality gate: fresh quick runs vs a reference.")
@click.argument("run_dirs", nargs=-1, metavar="[RUN_DIRS...]")
@click.option("--reference", default="leaderboards/ci-reference.csv", show_default=True,
              help="the gate's reference CSV (cells, seeds, reference means, pooled spread)")
@click.option("--update", is_flag=True,
              help="rewrite the reference from fresh runs of the default cells (or from "
                   "RUN_DIRS) instead of checking")
@click.option("--out", default=None,
              help="folder for the gate's runs; done runs there are reused (default: a new "
                   "temporary folder, deleted when the gate passes)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="add an override to every cell's runs, e.g. --set model.beta=200 to see the "
                   "gate fail (repeatable)")
def check_command(run_dirs: tuple[str, ...], reference: str, update: bool, out: str | None,
                  overrides: tuple[str, ...]) -> None:
    """Fail (exit 1) when a model got worse than the committed reference.

    Trains and scores the reference's cells again (or reads RUN_DIRS: run folders, folders of
    them or globs) and compares each gated score's mean over seeds with the reference's. A
    score fails when it is worse, in its registered direction, by more than
    max(floor, t(1 - 0.01/m, df) * s_pool * sqrt(1/n_new + 1/n_ref)), with s_pool the
    seed-to-seed spread pooled over the reference's cells and m the number of gated metrics.
    Prints every comparison; exit 0 passed, 1 failed or bad input.
    """
    from toybench import gate

    with _UserErrors():
        if update:
            gate.update(reference, run_dirs, out=out, overrides=overrides, echo=click.echo)
            return
        result = gate.check(reference, run_dirs, out=out, overrides=overrides,
                            echo=click.echo)
    if not result.passed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

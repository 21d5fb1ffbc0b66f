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
_CORR_HELP = "correlation width σ > 0 (smaller = stronger); 'inf' = independent factors"


@main.command(short_help="Draw a data set and save it as an .npz.")
@click.option("--data", required=True, help=_DATA_HELP)
@click.option("--corr", default="inf", show_default=True, help=_CORR_HELP)
@click.option("-n", "n", type=int, default=1000, show_default=True, help="number of samples")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed (≥ 0)")
@click.option("--split", default="train", show_default=True,
              help="train | test | test_decorrelated (σ = inf)")
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


def _setting_lines() -> list[tuple[str, str]]:
    from toybench.baselines import setting_summaries

    return setting_summaries()


# `toybench list` sections: title -> function returning (name, one line) pairs.
LIST_SECTIONS = {
    "generators": _generator_lines,
    "baselines": _baseline_lines,
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
def run_command(model: str, data: str, corr: str, seed: int, protocol: str,
                overrides: tuple[str, ...], out: str, resume: bool, force: bool,
                fp32: bool, no_plots: bool, score_at: str) -> None:
    """Train a baseline, score it on the test and decorrelated splits, write runs/<name>/."""
    from toybench.runs import run

    with _UserErrors():
        run(model, data=data, corr=corr, seed=seed, protocol=protocol, overrides=overrides,
            out=out, resume=resume, force=force, fp32=fp32, plots=not no_plots, echo=click.echo,
            score_at=_steps_list(score_at))


def _steps_list(text: str) -> tuple[int, ...]:
    """``"300,600"`` -> (300, 600); one-line error for anything but comma-separated integers."""
    from toybench.errors import ToybenchError

    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return tuple(int(item) for item in items)
    except ValueError:
        raise ToybenchError(f"--score-at takes comma-separated step counts, got {text!r}") \
            from None


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

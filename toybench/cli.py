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
            raise click.ClickException(" ".join(str(err).split())) from None
        return False


_DATA_HELP = "generator: a shipped name (see `toybench list`) or a path to your own .toml spec"
_CORR_HELP = "correlation width σ > 0 (smaller = stronger); 'inf' = independent factors"


@main.command()
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


@main.command()
@click.option("--data", required=True, help=_DATA_HELP)
@click.option("--corr", default="inf", show_default=True, help=_CORR_HELP)
@click.option("-n", "n", type=int, default=32, show_default=True, help="number of samples shown")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed (≥ 0)")
@click.option("-o", "--out", required=True, help="output figure (.png, .pdf or .svg)")
def show(data: str, corr: str, n: int, seed: int, out: str) -> None:
    """Contact sheet: samples, the DAG and the realized correlations next to σ."""
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


# `toybench list` sections: title -> function returning (name, one line) pairs.
LIST_SECTIONS = {
    "generators": _generator_lines,
    "baselines": _baseline_lines,
    "metrics": _metric_lines,
}


@main.command(name="list")
def list_() -> None:
    """List the shipped generators, baselines and metrics, one line each."""
    with _UserErrors():
        for title, lines in LIST_SECTIONS.items():
            lines = lines()
            width = max([16, *(len(name) for name, _ in lines)])
            click.echo(f"{title}:")
            for name, line in lines:
                click.echo(f"  {name:<{width}} {line}")


@main.command(name="run")
@click.option("--model", required=True,
              help="baseline: a shipped name (see `toybench list`) or a path to a .toml")
@click.option("--data", default="toy-causal", show_default=True, help=_DATA_HELP)
@click.option("--corr", default="inf", show_default=True, help=_CORR_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="random seed (≥ 0)")
@click.option("--protocol", default="standard", show_default=True,
              help="quick | standard (protocols of the baseline file)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a config field, e.g. --set train.lr=3e-4 --set model.beta=8")
@click.option("--out", default="runs", show_default=True, help="parent folder of run folders")
@click.option("--resume", is_flag=True, help="continue an unfinished run from ckpt/last.pt")
@click.option("--force", is_flag=True, help="delete an existing run folder and start over")
@click.option("--fp32", is_flag=True, help="plain fp32 training (default: bf16 autocast)")
@click.option("--no-plots", is_flag=True, help="skip the figures in plots/")
def run_command(model: str, data: str, corr: str, seed: int, protocol: str,
                overrides: tuple[str, ...], out: str, resume: bool, force: bool,
                fp32: bool, no_plots: bool) -> None:
    """Train a baseline, score it on the test and decorrelated splits, write runs/<name>/."""
    from toybench.runs import run
    from toybench.train import TrainingDiverged

    with _UserErrors():
        try:
            run(model, data=data, corr=corr, seed=seed, protocol=protocol, overrides=overrides,
                out=out, resume=resume, force=force, fp32=fp32, plots=not no_plots,
                echo=click.echo)
        except TrainingDiverged as err:  # distinct exit code (3) for a diverged run
            failure = click.ClickException(" ".join(str(err).split()))
            failure.exit_code = err.exit_code
            raise failure from None


@main.command(name="score")
@click.argument("codes_npz", metavar="CODES.npz")
@click.option("--json", "json_out", default=None, help="also write the scores as flat JSON here")
@click.option("--dci-backend", type=click.Choice(["fast", "reference"]), default="fast",
              show_default=True, help="fast = exact re-implementation; reference = scikit-learn")
def score_command(codes_npz: str, json_out: str | None, dci_backend: str) -> None:
    """Score the `codes` (n, L) of an .npz against its `factors` (n, K): DCI, MIG, SAP, ..."""
    from toybench.evaluate import format_scores, score_codes_file
    from toybench.io import atomic_write_json

    with _UserErrors():
        scores = score_codes_file(codes_npz, dci_backend=dci_backend)
        click.echo(format_scores(scores))
        if json_out is not None:
            click.echo(f"wrote {atomic_write_json(json_out, scores)}")


if __name__ == "__main__":
    main()

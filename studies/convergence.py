"""The convergence study of docs/protocols.md: long runs scored along their training.

Every neural baseline x {toy-causal, dsprites-pairs-32} x σ ∈ {inf, 0.2} x seeds 0-2 is trained
with the ``long`` protocol (4,800 steps, 8x the 600 steps of the first standard protocol) and
scored along its training at ``SCORE_AT`` steps with the full evaluation (``toybench run
--score-at``, which changes no result). The learning rate is constant and the KL schedule is in
fixed steps, so the long run's first 2,400 steps are exactly the ``standard`` run (and its first
S steps the run of S steps): one long run scores every shorter protocol. The run folders (with
checkpoints, ``ckpt/step<S>.pt`` for each scored step) go to ``--work``; each finished run's
small files (``curve.json``, ``metrics.json``, ``config.json``, ``status.json``) are copied to
``studies/convergence/runs/long/`` and, with ``--commit``, committed at once, so an interrupted
study loses at most the run in progress (which resumes from its checkpoint when the study is
started again). ``studies/convergence/lr-schedule/`` keeps the runs that chose the constant rate.

    python studies/convergence.py run --work /path/to/runs [--commit] [--threads 1]
                                      [--board-work DIR] [--only TEXT]
    python studies/convergence.py extend --work /path/to/runs [--commit]   # beyond `long`
    python studies/convergence.py batch --work /path/to/runs [--commit]    # batch 64
    python studies/convergence.py batch-long --work /path/to/runs [--commit]  # its reference
    python studies/convergence.py report        # docs/protocols.md tables and docs/img/ curves

``extend`` trains the cells of ``EXTENDED`` 4x longer than ``long`` (19,200 steps, the same
protocol with ``train.steps`` overridden, so its first 4,800 steps are the long run) and keeps
them under ``studies/convergence/runs/extended/``: how far the long run itself is from
converged. ``batch`` trains the same cells with 64 images per step for 19,200 steps (the long
run's images in 4x its steps) and keeps them under ``studies/convergence/runs/batch64/``: what the
batch size buys. ``batch-long`` trains them at batch 64 for twice that (38,400 steps, kept under
``runs/batch64-long/``), the reference that says whether 64 x 19,200 is converged; it goes on
from the extended cells to every cell (``every_cell``).

Cells run in a fixed order: seed 0 of every cell first, then seed 1, then seed 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "studies" / "convergence" / "runs"
MODELS = ("vae", "beta-vae", "beta-tcvae", "csvae", "hvae")
GENERATORS = ("toy-causal", "dsprites-pairs-32")
CORRS = (0.2, float("inf"))
SEEDS = (0, 1, 2)
#: protocol -> the steps scored before its last one (2400 = the standard protocol)
SCORE_AT = {"long": (300, 600, 1200, 2400, 3600)}
KEEP = ("curve.json", "metrics.json", "config.json", "status.json")
#: ``extend``: (model, generator, σ) cells trained for EXTENDED_STEPS, scored at EXTENDED_AT.
#: The VAE on toy-causal at σ = 0.2 is issue 9's unconverged example; beta-tcvae on
#: dsprites-pairs-32 at σ = inf is the cell whose seeds keep fewest active units.
EXTENDED = (("vae", "toy-causal", 0.2), ("beta-tcvae", "dsprites-pairs-32", float("inf")))
EXTENDED_STEPS = 19200
EXTENDED_AT = (1200, 2400, 3600, 4800, 9600, 14400)
#: ``batch``: the EXTENDED cells with BATCH images per step instead of 256, for BATCH_STEPS steps
#: (4x the steps of ``long`` at a quarter of its batch: the long run's 1.2 M images), scored at
#: BATCH_AT (9,600 steps see the standard run's 614 k images).
BATCH = 64
BATCH_STEPS = 19200
BATCH_AT = (2400, 4800, 9600, 14400)
#: ``batch-long``: the batch-64 cells trained twice as long (2.5 M images), scored on the way
#: (19,200 steps = the ``batch`` run): is batch 64 x 19,200 converged by the criterion?
BATCH_LONG_STEPS = 2 * BATCH_STEPS
BATCH_LONG_AT = (*BATCH_AT, BATCH_STEPS, 28800)


def every_cell() -> tuple[tuple[str, str, float], ...]:
    """Every (model, generator, σ): the EXTENDED cells, then each one's partner at the other σ
    (what a correlation does to that model), then dsprites-pairs-32 at σ = inf (where active
    units fall short of the concepts in some seeds), then the rest in the study's order."""
    partners = tuple((m, g, c) for m, g, e in EXTENDED for c in CORRS if c != e)
    first = EXTENDED + partners
    rest = [(m, g, c) for g in GENERATORS for c in CORRS for m in MODELS
            if (m, g, c) not in first]
    rest.sort(key=lambda cell: cell[1:] != ("dsprites-pairs-32", float("inf")))
    return first + tuple(rest)


class Longer(NamedTuple):
    """A subcommand that trains cells beyond the ``long`` protocol."""

    kind: str  # the kept folder under runs/
    overrides: tuple[str, ...]  # of the long protocol
    score_at: tuple[int, ...]  # steps scored before the last one
    cells: tuple[tuple[str, str, float], ...]  # (model, generator, σ), in this order
    help: str


LONGER = {
    "extend": Longer(
        "extended", (f"train.steps={EXTENDED_STEPS}",), EXTENDED_AT, EXTENDED,
        f"train the EXTENDED cells for {EXTENDED_STEPS} steps"),
    "batch": Longer(
        f"batch{BATCH}", (f"train.steps={BATCH_STEPS}", f"train.batch_size={BATCH}"),
        BATCH_AT, EXTENDED,
        f"train the EXTENDED cells at batch {BATCH} for {BATCH_STEPS} steps (the images of "
        "`long`)"),
    "batch-long": Longer(
        f"batch{BATCH}-long", (f"train.steps={BATCH_LONG_STEPS}", f"train.batch_size={BATCH}"),
        BATCH_LONG_AT, every_cell(),
        f"train every cell at batch {BATCH} for {BATCH_LONG_STEPS} steps (the reference of "
        f"`batch`; its first {BATCH_STEPS} steps are the batch-{BATCH} run)"),
}


def cells():
    """``(model, generator, corr, seed, protocol)`` in the study's order."""
    for seed in SEEDS:
        for generator in GENERATORS:
            for corr in CORRS:
                for model in MODELS:
                    for protocol in SCORE_AT:
                        yield model, generator, corr, seed, protocol


def run(work: Path, commit: bool, only: str | None, board_work: Path | None = None,
        corrs: tuple[float, ...] | None = None, seeds: tuple[int, ...] | None = None) -> int:
    from studies.keep import run_and_keep
    from studies.leaderboards import in_grid, keep_standard, keep_study_run
    from toybench.rundir import RunSpec

    failures = 0
    for model, generator, corr, seed, protocol in cells():
        if only and only not in f"{model} {generator} {protocol}":
            continue
        if corrs is not None and corr not in corrs:
            continue
        if seeds is not None and seed not in seeds:
            continue
        spec = RunSpec(model, generator, corr, seed, protocol)
        kept = STUDY / protocol / spec.name
        if (kept / "metrics.json").is_file():
            continue
        if not run_and_keep(spec, work, kept, KEEP, commit=commit,
                            message=f"convergence study: {spec.name}",
                            score_at=SCORE_AT[protocol]):
            failures += 1
            continue
        if board_work is not None and in_grid(model, (), generator, corr):
            # the leaderboard's standard run is this run's first 2,400 steps: keep it now,
            # while the checkpoint is on this machine; the run itself is the long row
            keep_standard(model, (), generator, corr, seed, board_work, study_work=work,
                          commit=commit)
            keep_study_run(kept, commit=commit)
    return 1 if failures else 0


def extend(work: Path, commit: bool, seeds: tuple[int, ...] | None = None, *,
           command: str = "extend", only: str | None = None) -> int:
    """Train and keep the cells of ``LONGER[command]`` as it says (every seed of a cell before
    the next cell; ``only``: the cells whose 'model generator σ' contains this text)."""
    from studies.keep import run_and_keep
    from toybench.rundir import RunSpec

    longer = LONGER[command]
    failures = 0
    for model, generator, corr in longer.cells:
        if only and only not in f"{model} {generator} {corr}":
            continue
        for seed in SEEDS if seeds is None else seeds:
            spec = RunSpec(model, generator, corr, seed, "long", overrides=longer.overrides)
            kept = STUDY / longer.kind / spec.name
            if (kept / "metrics.json").is_file():
                continue
            if not run_and_keep(spec, work, kept, KEEP, commit=commit,
                                message=f"convergence study, {longer.kind}: {spec.name}",
                                score_at=longer.score_at):
                failures += 1
    return 1 if failures else 0


def study_seeds(text: str) -> tuple[int, ...]:
    """``--seeds`` of a subcommand: `toybench.sweep.parse_seeds`, and only the study's seeds."""
    from toybench.errors import ToybenchError
    from toybench.sweep import parse_seeds

    seeds = parse_seeds(text)
    outside = [s for s in seeds if s not in SEEDS]
    if outside:
        raise ToybenchError(f"--seeds: the study's seeds are {SEEDS[0]}-{SEEDS[-1]}, not "
                            + ", ".join(map(str, outside)))
    return seeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="train and score the cells not yet in studies/convergence/")
    go.add_argument("--work", type=Path, required=True, help="folder for the run folders")
    go.add_argument("--commit", action="store_true", help="git-commit each finished run")
    go.add_argument("--threads", type=int, default=None, help="torch/BLAS threads")
    go.add_argument("--corr", default=None, help="run only cells at these σ (inf,0.2)")
    go.add_argument("--seeds", default=None, help="run only these seeds (0-2)")
    go.add_argument("--board-work", type=Path, default=None,
                    help="also keep each long run's first 2,400 steps as the leaderboard's "
                         "standard run (studies/leaderboards.py), run folders here")
    go.add_argument("--only", default=None, help="run only cells whose 'model generator' "
                                                 "contains this text")
    for command, longer in LONGER.items():
        more = sub.add_parser(command, help=longer.help)
        more.add_argument("--work", type=Path, required=True, help="folder for the run folders")
        more.add_argument("--commit", action="store_true", help="git-commit each finished run")
        more.add_argument("--seeds", default=None, help="run only these seeds (0-2)")
        more.add_argument("--only", default=None, help="run only cells whose 'model generator "
                                                       "σ' contains this text (σ: inf or 0.2)")
    sub.add_parser("report", help="write docs/protocols.md's tables and docs/img/ curves")
    args = parser.parse_args()
    seeds = None if getattr(args, "seeds", None) is None else study_seeds(args.seeds)
    if args.command in LONGER:
        return extend(args.work, args.commit, seeds, command=args.command, only=args.only)
    if args.command == "run":
        if args.threads:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ[var] = str(args.threads)
            import torch

            torch.set_num_threads(args.threads)
        from toybench.sweep import parse_corrs

        corrs = None if args.corr is None else parse_corrs(args.corr)
        return run(args.work, args.commit, args.only, args.board_work, corrs, seeds)
    from studies.convergence_report import write_report  # noqa: PLC0415 - only for reports

    write_report(STUDY, ROOT)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from studies.keep import cli

    sys.exit(cli(main))

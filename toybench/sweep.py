"""Sweeps: a grid of runs (model × generator × σ × seed), run once each, on one machine or many.

A `Grid` turns the lists of ``toybench sweep`` into `toybench.rundir.RunSpec` cells, sorted by
(model, generator, σ, seed) whatever order the lists were given in, so a cell's index is the
same in every process that builds the same grid: ``--index I`` runs cell I and ``--shard i/N``
the cells ``i, i + N, i + 2N, ...`` (0-based, for SLURM-style array jobs). What a cell *is* is
its spec; whether it is done is its folder's state (`toybench.rundir.RunDir`):

- ``done`` cells are skipped, so a sweep that is stopped (Ctrl-C, SIGKILL, a lost machine) and
  started again finishes without redoing finished runs;
- ``started`` cells (a checkpoint and no result) resume from their checkpoint, exactly;
- ``failed`` cells are reported and skipped: their error stays in ``status.json`` and the sweep
  exits non-zero; ``--retry-failed`` starts them over (a failure such as a diverged run repeats
  if nothing changed, so rerunning it is a decision);
- ``running`` cells, held by another process (another sweep over the same grid, an array job),
  are left to it: the run folder's claim makes every cell run exactly once however many sweeps
  share the grid. A cell claimed by another process after this sweep started is reported
  "running elsewhere", never as a failure.

A cell that fails never stops the sweep: the failure is recorded in the cell's ``status.json``,
listed at the end, and the exit code is 1. Progress is a tqdm bar over cells on a terminal plus
one line per finished cell, with its headline scores (`CELL_SCORES`, directions from the metric
registry) and seconds, which reads the same in a log file.

The executors (`toybench.executors`) run the cells: ``serial`` in this process, ``local`` in a
pool of spawned worker processes, each capped at ``--threads`` CPU threads, ``ray`` as Ray
tasks on a local or remote cluster. ``--test-corr`` adds the extra test splits at other σ of
Roth et al. 2023 (https://arxiv.org/abs/2209.15456), the train σ × test σ transfer grid, to every
cell (``eval.test_corr``, part of each cell's config and hash).

Nothing in this module imports torch: the grid is enumerated, checked and listed without it.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toybench.errors import ToybenchError
from toybench.executors import (
    CELL_SCORES,
    EXECUTORS,
    Cell,
    CellResult,
    make_executor,
)
from toybench.rundir import RunDir, RunSpec
from toybench.scm import corr_label, parse_corr
from toybench.seeds import check_seed

#: Exit codes of a sweep: all cells done; some failed; none failed but some ran elsewhere
#: (EX_TEMPFAIL: the grid is not complete yet); interrupted (Ctrl-C).
EXIT_DONE, EXIT_FAILED, EXIT_ELSEWHERE, EXIT_INTERRUPTED = 0, 1, 75, 130
_RANGE = re.compile(r"(\d+)\s*-\s*(\d+)")


# --------------------------------------------------------------------------------------------
# The grid.
# --------------------------------------------------------------------------------------------


def parse_names(text: str, what: str) -> tuple[str, ...]:
    """``"vae,beta-vae"`` → ``("vae", "beta-vae")``; empty items and repeats are errors."""
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise ToybenchError(f"{what} is empty: give at least one name")
    if not all(items):
        raise ToybenchError(f"{what} {text!r} has an empty item (a stray comma?)")
    return _no_repeats(items, what)


def parse_corrs(text: str, what: str = "--corr") -> tuple[float, ...]:
    """``"inf,0.7,0.4"`` → σ floats (`toybench.scm.parse_corr` for each); junk is an error
    that names the item."""
    sigmas = []
    for item in parse_names(text, what):
        try:
            sigmas.append(parse_corr(item))
        except ToybenchError as err:
            raise ToybenchError(f"{what}: {item!r} is not a σ ({err})") from None
    _no_repeats([corr_label(sigma) for sigma in sigmas], what)
    return tuple(sigmas)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0-2"``, ``"0,3,7"`` or ``"0-2,10"`` → seeds (ranges include both ends).

    Raises
    ------
    ToybenchError
        Not an integer or range, a descending range (``2-0``), a seed out of range, a repeat.
    """
    seeds: list[int] = []
    for item in parse_names(text, "--seeds"):
        span = _RANGE.fullmatch(item)
        if span:
            first, last = int(span.group(1)), int(span.group(2))
            if first > last:
                raise ToybenchError(f"--seeds: range {item!r} runs backwards; write "
                                    f"{last}-{first}")
            _checked_seed(first), _checked_seed(last)
            seeds += range(first, last + 1)
        elif item.isdigit():
            seeds.append(_checked_seed(int(item)))
        else:
            raise ToybenchError(f"--seeds: {item!r} is not a seed or a range such as 0-2")
    _no_repeats([str(s) for s in seeds], "--seeds")
    return tuple(seeds)


def _checked_seed(seed: int) -> int:
    try:
        return check_seed(seed)
    except ToybenchError as err:
        raise ToybenchError(f"--seeds: {err}") from None


def _no_repeats(items: Sequence[str], what: str) -> tuple[str, ...]:
    twice = sorted({item for item in items if list(items).count(item) > 1})
    if twice:
        raise ToybenchError(f"{what} lists {', '.join(twice)} more than once")
    return tuple(items)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` → ``(i, N)`` with ``0 <= i < N``."""
    part = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not part:
        raise ToybenchError(f"--shard {text!r}: expected i/N, e.g. 0/4 (0-based)")
    i, n = int(part.group(1)), int(part.group(2))
    if n < 1 or i >= n:
        raise ToybenchError(f"--shard {text}: i must be in 0..N-1 and N ≥ 1 (0-based shards)")
    return i, n


def eval_test_corr_setting(sigmas: Iterable[float]) -> str:
    """The ``--set`` override that ``--test-corr`` stands for: ``eval.test_corr=[0.4, inf]``."""
    return f"eval.test_corr=[{', '.join(corr_label(s) for s in sorted(sigmas))}]"


@dataclass(frozen=True)
class Grid:
    """The cells of a sweep: every model × generator × σ × seed, under one protocol.

    Parameters
    ----------
    models, generators : tuple of str
        Baseline and generator names or spec paths.
    corrs : tuple of float
        Training σ values (``math.inf`` = independent).
    seeds : tuple of int
    protocol : str or None
    overrides : tuple of str
        ``--set`` overrides applied to every cell.
    test_corr : tuple of float
        σ of the extra test splits (``--test-corr``), set as ``eval.test_corr`` of each cell.
    """

    models: tuple[str, ...]
    generators: tuple[str, ...] = ("toy-causal",)
    corrs: tuple[float, ...] = (math.inf,)
    seeds: tuple[int, ...] = (0,)
    protocol: str | None = "standard"
    overrides: tuple[str, ...] = ()
    test_corr: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("models", "generators", "corrs", "seeds"):
            if not getattr(self, name):
                raise ToybenchError(f"the grid has no {name}: nothing to run")
        if self.test_corr and any(o.split("=")[0].strip() == "eval.test_corr"
                                  for o in self.overrides):
            raise ToybenchError("give --test-corr or --set eval.test_corr=..., not both")

    @property
    def shape(self) -> str:
        """``"2 models × 1 generator × 4 σ × 3 seeds"``."""
        def count(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 or word == 'σ' else 's'}"

        return " × ".join([count(len(self.models), "model"),
                           count(len(self.generators), "generator"),
                           count(len(self.corrs), "σ"), count(len(self.seeds), "seed")])

    def specs(self) -> list[RunSpec]:
        """The cells as `RunSpec`s, sorted by (model, generator, σ, seed); inf sorts last."""
        overrides = tuple(self.overrides)
        if self.test_corr:
            overrides += (eval_test_corr_setting(self.test_corr),)
        cells = [RunSpec(model, generator, corr, seed, self.protocol, overrides)
                 for model in self.models for generator in self.generators
                 for corr in self.corrs for seed in self.seeds]
        return sorted(cells, key=lambda s: (s.baseline, s.generator, s.corr, s.seed))


def select(specs: Sequence[RunSpec], *, index: int | None = None,
           shard: tuple[int, int] | None = None) -> list[tuple[int, RunSpec]]:
    """``(index, spec)`` of the cells to run: all, cell ``index``, or shard ``(i, N)``."""
    if index is not None and shard is not None:
        raise ToybenchError("--index and --shard exclude each other")
    numbered = list(enumerate(specs))
    if index is not None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(specs):
            cells = f"{len(specs)} cell" + ("" if len(specs) == 1 else "s")
            raise ToybenchError(f"--index {index} is out of range: the grid has {cells}, "
                                f"0..{len(specs) - 1}")
        return [numbered[index]]
    if shard is not None:
        i, n = shard
        return numbered[i::n]
    return numbered


# --------------------------------------------------------------------------------------------
# The sweep.
# --------------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    """What a sweep did.

    Attributes
    ----------
    cells : list of (int, RunSpec, str)
        The selected cells with their state when the sweep started.
    results : list of CellResult
        One per cell run here (in the order they finished).
    seconds : float
    interrupted : bool
        Stopped by Ctrl-C (the cells in progress saved their checkpoints).
    out : Path
        The sweep's ``--out``.
    dry_run : bool
        Only listed (exit code 0).
    """

    cells: list[tuple[int, RunSpec, str]]
    results: list[CellResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    out: Path = Path("runs")
    dry_run: bool = False

    def outcome_of(self, index: int) -> str:
        """The cell's outcome: its result here, else its state when the sweep started."""
        for result in self.results:
            if result.index == index:
                return result.outcome
        return next(state for i, _, state in self.cells if i == index)

    @property
    def failed(self) -> list[tuple[int, RunSpec, str]]:
        """Cells that failed here, and failed cells that were skipped: ``(index, spec, error)``."""
        out = []
        for index, spec, _ in self.cells:
            if self.outcome_of(index) == "failed":
                result = next((r for r in self.results if r.index == index), None)
                error = result.line if result is not None else _status_error(spec, self.out)
                out.append((index, spec, error))
        return out

    @property
    def exit_code(self) -> int:
        if self.dry_run:
            return EXIT_DONE
        if self.interrupted:
            return EXIT_INTERRUPTED
        outcomes = [self.outcome_of(index) for index, _, _ in self.cells]
        if "failed" in outcomes:
            return EXIT_FAILED
        if any(o in ("running", "interrupted") for o in outcomes):
            return EXIT_ELSEWHERE
        return EXIT_DONE


def _status_error(spec: RunSpec, out: Path) -> str:
    status = RunDir.of(spec, out).read_status() or {}
    code = status.get("exit_code")
    return (f"exit {code}: " if code is not None else "") + str(status.get("error", "failed"))


def sweep(
    grid: Grid,
    out: str | Path = "runs",
    *,
    index: int | None = None,
    shard: tuple[int, int] | None = None,
    dry_run: bool = False,
    retry_failed: bool = False,
    executor: str = "serial",
    jobs: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    device: str = "cpu",
    plots: bool = True,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
) -> SweepReport:
    """Run (or list) the cells of a grid that are not done; what ``toybench sweep`` calls.

    Every argument and every cell's configuration is checked before anything is written, and
    the executor is started (Ray imported and connected) before the first cell runs.

    Parameters
    ----------
    grid : Grid
    out : str or Path
        Parent folder of the run folders (on a cluster: a shared file system, see
        `toybench.executors`).
    index, shard
        Run only cell ``index``, or shard ``(i, N)``: cells ``i, i + N, ...`` (0-based).
    dry_run : bool
        List the selected cells with index, state and name; run nothing, write nothing.
    retry_failed : bool
        Start failed cells over (otherwise they are reported and skipped).
    executor : {"serial", "local", "ray"}
    jobs : int, optional
        Cells at once (``local``: worker processes, default 1; ``ray``: tasks in flight,
        default all; ``serial``: 1).
    threads : int, optional
        CPU threads per cell (``local``: default cores ÷ jobs; ``ray``: the tasks' ``num_cpus``,
        default 1; ``serial``: default uncapped).
    address : str, optional
        ``ray``: join this cluster instead of starting a local one.
    device : {"cpu", "cuda", "auto"}
    plots : bool
        Write each run's ``plots/``.
    progress : bool, optional
        tqdm bar over cells (default: when stderr is a terminal).
    echo : callable
        Where the lines go.

    Returns
    -------
    SweepReport
        Its ``exit_code``: 0 every selected cell done, 1 a cell failed (now or before), 75 none
        failed but some were running elsewhere, 130 interrupted.
    """
    started = time.perf_counter()
    specs = grid.specs()
    chosen = select(specs, index=index, shard=shard)
    for _, spec in chosen:
        spec.check()  # every cell's config resolved and validated before anything is written
    out = Path(out)
    runner = None if dry_run else make_executor(executor, jobs=jobs, threads=threads,
                                                address=address, device=device)
    cells = [(i, spec, RunDir.of(spec, out).state()) for i, spec in chosen]
    report = SweepReport(cells, out=out, dry_run=dry_run)
    where = f"{len(chosen)} of {len(specs)}" if len(chosen) < len(specs) else f"{len(specs)}"
    echo(f"sweep: {where} cells ({grid.shape}), protocol {grid.protocol}, in {out}/")
    if dry_run:
        _list_cells(cells, echo)
        return report
    todo = [(i, spec, state) for i, spec, state in cells
            if state in ("new", "started") or (state == "failed" and retry_failed)]
    echo(_state_line(cells, retry_failed) + (f"; {len(todo)} to run on {runner.describe()}"
                                              if todo else "; nothing to run"))
    work = [Cell(i, spec, str(out), runner.device, plots, retry=state == "failed")
            for i, spec, state in todo]
    if work:
        bar = _Progress(len(work), progress, echo)
        results = runner.run(work)
        try:
            for result in results:
                report.results.append(result)
                bar.line(result)
                if result.outcome == "interrupted":  # Ctrl-C reached the cell: stop here
                    report.interrupted = True
                    break
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            results.close()  # stops the executor (a pool waits for the cells in progress)
            bar.close()
    report.seconds = time.perf_counter() - started
    for line in _summary(report, retry_failed):
        echo(line)
    return report


def _list_cells(cells: Sequence[tuple[int, RunSpec, str]], echo: Callable[[str], None]) -> None:
    width = max(5, len(str(max((i for i, _, _ in cells), default=0))))
    echo(f"{'index':>{width}}  {'state':<8} cell")
    for i, spec, state in cells:
        echo(f"{i:>{width}}  {state:<8} {spec.name}")
    echo(_state_line(cells, retry_failed=False))


def _state_line(cells: Iterable[tuple[int, RunSpec, str]], retry_failed: bool) -> str:
    counts: dict[str, int] = {}
    for _, _, state in cells:
        counts[state] = counts.get(state, 0) + 1
    words = {"done": "done", "new": "new", "started": "started (resume from a checkpoint)",
             "failed": "failed" + ("" if retry_failed else " (skipped; --retry-failed reruns)"),
             "running": "running elsewhere"}
    return "states: " + ", ".join(f"{counts[s]} {words[s]}" for s in words if s in counts)


class _Progress:
    """A tqdm bar over cells on a terminal, and one line per finished cell."""

    def __init__(self, total: int, progress: bool | None, echo: Callable[[str], None]) -> None:
        self.total, self.echo, self.done = total, echo, 0
        self.start = time.perf_counter()
        if progress is None:
            progress = sys.stderr.isatty()
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="sweep", unit="cell", file=sys.stderr)

    def line(self, result: CellResult) -> None:
        self.done += 1
        width = len(str(self.total))
        text = (f"[{self.done:>{width}}/{self.total} {_clock(time.perf_counter() - self.start)}]"
                f" #{result.index} {result.summary()}")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.clear()
            self.echo(text)
            self.bar.refresh()
        else:
            self.echo(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _summary(report: SweepReport, retry_failed: bool) -> list[str]:
    ran: dict[str, int] = {}
    for result in report.results:
        ran[result.outcome] = ran.get(result.outcome, 0) + 1
    words = {"done": "done", "failed": "failed", "existing": "done by another process",
             "running": "running elsewhere", "interrupted": "interrupted"}
    here = ", ".join(f"{ran[o]} {w}" for o, w in words.items() if o in ran) or "nothing run"
    lines = [f"sweep: {here} in {_clock(report.seconds)}"
             + (" (interrupted: run the same command again to continue)"
                if report.interrupted else "")]
    failed = report.failed
    if failed:
        lines.append(f"failed cells ({len(failed)}; the error is in each run's status.json"
                     + ("" if retry_failed else "; --retry-failed runs them again") + "):")
        lines += [f"  #{i} {spec.name}: {error}" for i, spec, error in failed]
    elsewhere = [i for i, _, _ in report.cells if report.outcome_of(i) == "running"]
    if elsewhere and not report.interrupted:
        lines.append(f"{len(elsewhere)} cell(s) running in another process: run the sweep "
                     f"again when it is done to pick up what it leaves")
    return lines


__all__ = ["CELL_SCORES", "EXECUTORS", "Grid", "SweepReport", "parse_corrs", "parse_names",
           "parse_seeds", "parse_shard", "select", "sweep"]

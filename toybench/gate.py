"""The model-quality CI gate (``toybench check``): fresh runs against a committed reference.

The reference (``leaderboards/ci-reference.csv``) lists a few *cells* — a baseline on a
generator at one σ and protocol, with its seeds — and, for each gated metric (`GATED_METRICS`),
the reference mean over those seeds. ``toybench check`` trains and scores the cells again (or
reads run folders given to it) and fails, with a table of every comparison, when a score is
worse than the reference by more than its tolerance.

The tolerance is one-sided (only regressions fail; direction from the metric registry,
`toybench.metrics.registry`) and comes from the seed-to-seed spread *pooled* over the
reference's cells — with three seeds a per-cell spread is useless — as in the two-sample
t-test with a pooled variance (Student 1908; Welch 1947 discusses when pooling is fair):

    s_pool² = Σ_cells Σ_seeds (x − x̄_cell)² / df,   df = Σ_cells (n_cell − 1)
    tolerance = max(floor, t(1 − α/m, df) · s_pool · √(1/n_new + 1/n_ref))

with α = 0.01 and the Bonferroni correction over the ``m`` gated metrics (Dunn 1961): each
cell's family of m comparisons falsely fails with probability ≤ α when the runs differ only by
seed-to-seed noise. ``s_pool``, ``df``, α, m and each metric's floor are stored in the reference,
so the gate recomputes exactly what ``--update`` decided. The floors keep a tolerance from
being zero where the seeds agree exactly (a count, a saturated score).

On one machine toybench is deterministic, so an unchanged checkout reproduces the reference's
scores exactly; the tolerance absorbs what another CPU's arithmetic (bf16 training is not
bit-identical across instruction sets) does to the same seeds.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toybench.errors import ToybenchError
from toybench.io import atomic_write_text, check_output, short_path
from toybench.leaderboard import RunRecord, csv_text, read_csv, read_runs

#: Gated metrics (registered keys with a direction) -> floor of their tolerance. Headline
#: scores of the correlated test split: disentanglement, information, the FactorVAE score,
#: the calibrated pairwise entanglement and reconstruction against PCA. All lie in [0, 1] but
#: recon.bce_vs_pca (≈ 1 at PCA's quality); 0.02 is below what a run can meaningfully change
#: and above the granularity of the FactorVAE score's 250 evaluation votes (0.004).
GATED_METRICS: dict[str, float] = {
    "test.dci.disentanglement": 0.02,
    "test.dci.informativeness_test": 0.02,
    "test.mig": 0.02,
    "test.factor_vae.eval_accuracy": 0.02,
    "test.entanglement": 0.02,
    "test.recon.bce_vs_pca": 0.02,
}
#: Family-wise false-failure rate of one cell's comparisons (before Bonferroni).
ALPHA = 0.01
#: The cells ``--update`` runs: three model families at σ = 0.2 on toy-causal, 3 seeds each, at
#: the ``quick`` protocol. Nine quick runs fit the CI budget of about 4 minutes on 2 cores
#: (see README, "The quality gate"); β-VAE and β-TCVAE share the VAE's code.
DEFAULT_MODELS = ("vae", "csvae", "hvae")
DEFAULT_GENERATOR = "toy-causal"
DEFAULT_CORR = 0.2
DEFAULT_PROTOCOL = "quick"
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_REFERENCE = Path("leaderboards") / "ci-reference.csv"
REFERENCE_COLUMNS = ("model", "generator", "corr", "protocol", "overrides", "seeds", "metric",
                     "direction", "n_ref", "mean", "std", "s_pool", "df", "floor", "alpha",
                     "n_metrics", "git_sha")


@dataclass(frozen=True)
class Cell:
    """What the gate reruns: a baseline on a generator at one σ and protocol.

    ``model`` is what `toybench.rundir.RunSpec` takes (a shipped baseline name or a path).
    """

    model: str
    generator: str = DEFAULT_GENERATOR
    corr: float = DEFAULT_CORR
    protocol: str = DEFAULT_PROTOCOL
    overrides: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        """``vae toy-causal σ=0.2`` (the table's cell column)."""
        from toybench.scm import corr_label

        return f"{self.model} {self.generator} σ={corr_label(self.corr)}"

    @property
    def label(self) -> str:
        """`short`, the protocol and any overrides."""
        extra = f" --set {' --set '.join(self.overrides)}" if self.overrides else ""
        return f"{self.short} --protocol {self.protocol}{extra}"

    def covers(self, record: RunRecord) -> bool:
        """Whether a run folder is a run of this cell, possibly with ``--set`` overrides added
        after the cell's own (what ``toybench check --set`` makes)."""
        other = Cell.of(record)
        return ((other.model, other.generator, other.corr, other.protocol)
                == (self.model, self.generator, self.corr, self.protocol)
                and other.overrides[:len(self.overrides)] == self.overrides)

    def spec(self, seed: int, extra: Sequence[str] = ()):
        from toybench.rundir import RunSpec

        return RunSpec(self.model, self.generator, self.corr, seed, self.protocol,
                       (*self.overrides, *extra))

    @classmethod
    def of(cls, record: RunRecord) -> Cell:
        """The cell a run folder belongs to (from its ``config.json`` spec)."""
        spec = record.spec
        return cls(str(spec["baseline"]), str(spec["generator"]), record.corr,
                   str(spec["protocol"]), tuple(spec.get("overrides", ())))


@dataclass(frozen=True)
class Gated:
    """One reference row: a cell's reference value of one gated metric."""

    cell: Cell
    seeds: tuple[int, ...]
    metric: str
    direction: str
    n_ref: int
    mean: float
    std: float | None
    s_pool: float
    df: int
    floor: float
    alpha: float
    n_metrics: int
    git_sha: str


@dataclass(frozen=True)
class Comparison:
    """One gated score of one cell, new against reference."""

    row: Gated
    n_new: int
    new: float | None
    worse_by: float | None  # > 0: worse than the reference; None when the score is missing
    tolerance: float

    @property
    def failed(self) -> bool:
        return self.worse_by is None or self.worse_by > self.tolerance


@dataclass(frozen=True)
class GateResult:
    """What `check` found: every comparison and the table printed."""

    comparisons: tuple[Comparison, ...]
    table: str

    @property
    def passed(self) -> bool:
        return not any(c.failed for c in self.comparisons)

    @property
    def failures(self) -> tuple[Comparison, ...]:
        return tuple(c for c in self.comparisons if c.failed)


# --------------------------------------------------------------------------------------------
# The statistics.
# --------------------------------------------------------------------------------------------


def pooled_spread(groups: Iterable[Sequence[float]]) -> tuple[float, int]:
    """``(s_pool, df)``: the standard deviation pooled over groups (each around its own mean)
    and its degrees of freedom ``Σ (n_g − 1)``; groups of one value add nothing.

    >>> s, df = pooled_spread([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> round(s, 6), df
    (1.581139, 4)

    Raises
    ------
    ToybenchError
        No group has two values (df = 0: no spread to pool).
    """
    import statistics

    squares, df = 0.0, 0
    for group in groups:
        values = [float(v) for v in group]
        if len(values) >= 2:
            mean = statistics.fmean(values)
            squares += math.fsum((v - mean) ** 2 for v in values)
            df += len(values) - 1
    if df == 0:
        raise ToybenchError("the reference needs a cell with at least two seeds to pool a "
                            "seed-to-seed spread (df = 0)")
    return math.sqrt(squares / df), df


def t_quantile(alpha: float, n_metrics: int, df: int) -> float:
    """``t(1 − alpha / n_metrics, df)``: Student's one-sided quantile, Bonferroni-corrected.

    >>> round(t_quantile(0.01, 1, 4), 4)  # the tabulated t(0.99, 4)
    3.7469
    """
    from scipy.stats import t

    return float(t.ppf(1 - alpha / n_metrics, df))


def tolerance(row: Gated, n_new: int) -> float:
    """``max(floor, t(1 − α/m, df) · s_pool · √(1/n_new + 1/n_ref))`` of a reference row."""
    spread = t_quantile(row.alpha, row.n_metrics, row.df) * row.s_pool * math.sqrt(
        1 / n_new + 1 / row.n_ref)
    return max(row.floor, spread)


def worse_by(direction: str, reference: float, new: float) -> float:
    """How much worse ``new`` is than ``reference`` (negative: better), by the direction."""
    if direction == "higher":
        return reference - new
    if direction == "lower":
        return new - reference
    raise ToybenchError(f"cannot gate a metric without a direction ({direction!r})")


# --------------------------------------------------------------------------------------------
# The reference file.
# --------------------------------------------------------------------------------------------


def build_reference(groups: Mapping[Cell, Sequence[RunRecord]],
                    metrics: Mapping[str, float] = GATED_METRICS,
                    alpha: float = ALPHA) -> list[Gated]:
    """Reference rows from the runs of each cell (`pooled_spread` per metric over the cells).

    Raises
    ------
    ToybenchError
        A metric without a direction, a run without a gated score, or df = 0.
    """
    import statistics

    from toybench.leaderboard import summarize
    from toybench.metrics.registry import metric_info

    if not groups:
        raise ToybenchError("no runs to build a reference from")
    rows = []
    for metric, floor in metrics.items():
        direction = metric_info(metric).direction
        if direction == "info":
            raise ToybenchError(f"{metric} has no direction (informational); it cannot be gated")
        values: dict[Cell, list[float]] = {}
        for cell, runs in groups.items():
            for record in runs:
                value = record.scores.get(metric)
                if value is None or not math.isfinite(value):
                    raise ToybenchError(f"run {short_path(record.path, 80)} has no finite "
                                        f"{metric}; it cannot be a reference")
                values.setdefault(cell, []).append(float(value))
        s_pool, df = pooled_spread(values.values())
        for cell, runs in groups.items():
            stats = summarize(values[cell])
            shas = sorted({str(r.identity["git_sha"]) for r in runs})
            rows.append(Gated(cell, tuple(sorted(r.identity["seed"] for r in runs)), metric,
                              direction, stats.n, statistics.fmean(values[cell]), stats.std,
                              s_pool, df, float(floor), float(alpha), len(metrics),
                              shas[0] if len(shas) == 1 else "mixed"))
    return rows


def reference_text(rows: Sequence[Gated]) -> str:
    """The reference CSV (floats exact, rows in cell then metric order)."""
    from toybench.scm import corr_label

    def as_row(row: Gated) -> dict[str, Any]:
        return {"model": row.cell.model, "generator": row.cell.generator,
                "corr": corr_label(row.cell.corr), "protocol": row.cell.protocol,
                "overrides": json.dumps(list(row.cell.overrides)),
                "seeds": " ".join(map(str, row.seeds)), "metric": row.metric,
                "direction": row.direction, "n_ref": row.n_ref, "mean": row.mean,
                "std": row.std, "s_pool": row.s_pool, "df": row.df, "floor": row.floor,
                "alpha": row.alpha, "n_metrics": row.n_metrics, "git_sha": row.git_sha}

    ordered = sorted(rows, key=lambda r: (r.cell.model, r.cell.generator, r.cell.corr,
                                          r.cell.protocol, r.cell.overrides, r.metric))
    return csv_text(REFERENCE_COLUMNS, [as_row(r) for r in ordered], exact=True)


def read_reference(path: str | os.PathLike) -> list[Gated]:
    """The rows of a reference file, checked (one-line `ToybenchError` naming the problem)."""
    from toybench.metrics.registry import metric_info
    from toybench.scm import parse_corr

    path = Path(path)
    if not path.is_file():
        raise ToybenchError(f"no gate reference at {short_path(path)}; pass --reference, or "
                            f"create one with `toybench check --update`")
    table = read_csv(path, REFERENCE_COLUMNS)
    if not table:
        raise ToybenchError(f"gate reference {short_path(path)} has no rows")
    rows = []
    for number, raw in enumerate(table, start=2):
        where = f"{short_path(path)} line {number}"
        try:
            overrides = json.loads(raw["overrides"])
            if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
                raise ValueError("overrides must be a JSON list of strings")
            cell = Cell(raw["model"], raw["generator"], parse_corr(raw["corr"]), raw["protocol"],
                        tuple(overrides))
            row = Gated(cell, tuple(int(s) for s in raw["seeds"].split()), raw["metric"],
                        raw["direction"], int(raw["n_ref"]), float(raw["mean"]),
                        float(raw["std"]) if raw["std"] else None, float(raw["s_pool"]),
                        int(raw["df"]), float(raw["floor"]), float(raw["alpha"]),
                        int(raw["n_metrics"]), raw["git_sha"])
        except (ValueError, ToybenchError) as err:
            raise ToybenchError(f"{where}: {' '.join(str(err).split())[:160]}") from None
        try:
            direction = metric_info(row.metric).direction
        except KeyError:
            raise ToybenchError(f"{where}: unknown metric {row.metric!r}") from None
        if direction != row.direction:
            raise ToybenchError(f"{where}: the registry says {row.metric} is {direction}-better, "
                                f"the reference {row.direction}; rebuild it with --update")
        numbers = (row.mean, row.s_pool, row.floor, row.alpha)
        if (row.n_ref != len(row.seeds) or row.n_ref < 1 or row.df < 1 or row.n_metrics < 1
                or not all(math.isfinite(v) for v in numbers) or row.s_pool < 0
                or row.floor < 0 or not 0 < row.alpha < 1):
            raise ToybenchError(f"{where}: inconsistent values (n_ref, seeds, df, s_pool, floor, "
                                f"alpha or n_metrics)")
        rows.append(row)
    by_metric: dict[str, set] = {}
    for row in rows:
        by_metric.setdefault(row.metric, set()).add((row.s_pool, row.df, row.floor, row.alpha))
    if any(len(v) > 1 for v in by_metric.values()) or {r.n_metrics for r in rows} != {
            len(by_metric)}:
        raise ToybenchError(f"{short_path(path)}: a metric's s_pool, df, floor or alpha differs "
                            f"between rows, or n_metrics is not the number of metrics")
    cells = {row.cell for row in rows}
    if len(rows) != len(cells) * len(by_metric) or len({(r.cell, r.metric) for r in rows}) != len(
            rows):
        raise ToybenchError(f"{short_path(path)}: every cell needs one row per gated metric")
    return rows


def reference_cells(rows: Sequence[Gated]) -> dict[Cell, tuple[int, ...]]:
    """The reference's cells and their seeds, in file order."""
    cells: dict[Cell, tuple[int, ...]] = {}
    for row in rows:
        cells.setdefault(row.cell, row.seeds)
    return cells


# --------------------------------------------------------------------------------------------
# Runs.
# --------------------------------------------------------------------------------------------


def cell_jobs(cells: Mapping[Cell, Sequence[int]],
              overrides: Sequence[str] = ()) -> list[tuple[Cell, Any]]:
    """``(cell, RunSpec)`` of every cell × seed, each resolved and checked (one-line
    `ToybenchError` for a bad baseline, generator or override) before anything runs."""
    jobs = [(cell, cell.spec(seed, overrides)) for cell, seeds in cells.items() for seed in seeds]
    for _, spec in jobs:
        spec.check()
    return jobs


def run_cells(jobs: Sequence[tuple[Cell, Any]], out: str | os.PathLike, *,
              echo: Callable[[str], None] = print) -> dict[Cell, list[RunRecord]]:
    """Run (or reuse, when done) every job of `cell_jobs` under ``out``; one line per run as
    it finishes. A failed run raises its one-line error (its ``status.json`` says it too).

    The runs go to spawned processes of one thread each (one per CPU, at most one per run; the
    `toybench.executors.LocalExecutor` of sweeps): measured on the 2-core machine, two quick
    runs took 63 s side by side at one thread against 98 s one after the other at two threads,
    with the same scores. On one CPU, or with one run to do, it runs in this process, also at
    one thread, so that no run's arithmetic depends on how many ran. The records are returned
    in job order, whatever order the runs finish in.
    """
    from toybench import hardware
    from toybench.executors import Cell as ExecCell
    from toybench.executors import CellResult, LocalExecutor, SerialExecutor
    from toybench.leaderboard import read_run
    from toybench.rundir import RunDir
    from toybench.runs import _git_sha

    sha = _git_sha()
    # Done runs are reused here; the rest run (a failed folder of an earlier gate in this --out
    # starts over: retry). Workers only pay off for two runs or more.
    done = {index for index, (_, spec) in enumerate(jobs)
            if RunDir.of(spec, out).state() == "done"}
    todo = [ExecCell(index, spec, str(out), plots=False, retry=True)
            for index, (_, spec) in enumerate(jobs) if index not in done]
    workers = min(hardware.cpu_count(), len(todo))
    executor = (LocalExecutor(jobs=workers, threads=1) if workers > 1
                else SerialExecutor(threads=1))
    reused = (CellResult(index, jobs[index][1].name, "existing") for index in sorted(done))
    records: dict[int, RunRecord] = {}
    stale = []
    for count, outcome in enumerate(itertools.chain(reused, executor.run(todo)), start=1):
        cell, spec = jobs[outcome.index]
        if outcome.outcome not in ("done", "existing"):  # a failed run fails the gate
            raise ToybenchError(f"{cell.short} seed {spec.seed}: "
                                f"{outcome.error or outcome.outcome}")
        record = read_run(RunDir.of(spec, out).path)
        records[outcome.index] = record
        scores = ", ".join(f"{key.split('.', 1)[1]} {_number(record.scores.get(key))}"
                           for key in ("test.dci.disentanglement", "test.recon.bce_vs_pca"))
        how = ("reused (already done)" if outcome.outcome == "existing"
               else f"done in {outcome.seconds:.0f} s")
        echo(f"[{count}/{len(jobs)}] {cell.model} seed {spec.seed}: {how}; {scores}")
        if outcome.outcome == "existing" and record.identity["git_sha"] != sha:
            stale.append(record)
    if stale:
        echo(f"note: {len(stale)} reused runs were made at git {stale[0].identity['git_sha']}, "
             f"this checkout is {sha}: delete them (or use a fresh --out) to rerun with this "
             f"code")
    results: dict[Cell, list[RunRecord]] = {}
    for index, (cell, _) in enumerate(jobs):
        results.setdefault(cell, []).append(records[index])
    return results


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def _group_runs(runs: Sequence[RunRecord]) -> dict[Cell, list[RunRecord]]:
    groups: dict[Cell, list[RunRecord]] = {}
    for record in runs:
        groups.setdefault(Cell.of(record), []).append(record)
    return groups


def _gate_folder(out: str | os.PathLike | None) -> tuple[Path, bool]:
    """``(folder, temporary)``: ``out``, or a new folder under the system's temporary one."""
    if out is not None:
        return Path(out), False
    return Path(tempfile.mkdtemp(prefix="toybench-gate-")), True


# --------------------------------------------------------------------------------------------
# Check and update.
# --------------------------------------------------------------------------------------------


def compare(rows: Sequence[Gated], groups: Mapping[Cell, Sequence[RunRecord]]) -> GateResult:
    """Every reference row against the new runs of its cell."""
    import statistics

    from toybench.metrics.registry import metric_info

    comparisons = []
    for row in rows:
        runs = groups.get(row.cell, ())
        values = [float(r.scores[row.metric]) for r in runs
                  if r.scores.get(row.metric) is not None
                  and math.isfinite(r.scores[row.metric])]
        if len(values) < len(runs) or not values:
            comparisons.append(Comparison(row, len(runs), None, None, row.floor))
            continue
        new = statistics.fmean(values)
        comparisons.append(Comparison(row, len(values), new,
                                      worse_by(row.direction, row.mean, new),
                                      tolerance(row, len(values))))
    width = max([4, *(len(c.row.cell.short) for c in comparisons)])
    lines = [f"{'cell':<{width}} {'metric':<32} {'reference':>10} {'new':>10} {'worse by':>10} "
             f"{'tolerance':>10}  verdict"]
    for c in comparisons:
        arrow = metric_info(c.row.metric).arrow
        verdict = ("MISSING" if c.worse_by is None else "WORSE" if c.failed
                   else "ok (better)" if c.worse_by < 0 else "ok")
        lines.append(f"{c.row.cell.short:<{width}} {c.row.metric + ' ' + arrow:<32} "
                     f"{c.row.mean:>10.4f} {_fixed(c.new):>10} {_fixed(c.worse_by):>10} "
                     f"{c.tolerance:>10.4f}  {verdict}")
    return GateResult(tuple(comparisons), "\n".join(lines))


def _fixed(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def check(reference: str | os.PathLike = DEFAULT_REFERENCE,
          run_dirs: Sequence[str] = (), *, out: str | os.PathLike | None = None,
          overrides: Sequence[str] = (),
          echo: Callable[[str], None] = print) -> GateResult:
    """Run the reference's cells (or read ``run_dirs``) and compare every gated score.

    Parameters
    ----------
    reference : path
        The reference CSV (`read_reference`).
    run_dirs : sequence of str
        Run folders, folders of them or globs to read instead of running (each must belong to
        a reference cell: same baseline, generator, σ, protocol and overrides).
    out : path, optional
        Where the gate's runs go (done runs there are reused); default a new temporary folder,
        deleted when the gate passes and kept (and named) when it fails.
    overrides : sequence of str
        ``--set`` overrides added to every cell (see what the gate catches: ``model.beta=200``).
    echo : callable
        Progress lines, the table and the verdict.

    Returns
    -------
    GateResult
    """
    rows = read_reference(reference)
    cells = reference_cells(rows)
    shas = sorted({row.git_sha for row in rows})
    echo(f"gate: {len(cells)} cells × {rows[0].n_metrics} metrics against "
         f"{short_path(reference)} (reference runs at git {', '.join(shas)})")
    for cell, seeds in cells.items():
        echo(f"  cell {cell.label}, seeds {' '.join(map(str, seeds))}")
    folder, temporary = None, False
    if run_dirs:
        if overrides or out is not None:
            raise ToybenchError("--set and --out apply to the gate's own runs, not to given "
                                "run folders")
        runs, _ = read_runs(run_dirs, warn=echo)
        groups = {cell: [r for r in runs if cell.covers(r)] for cell in cells}
        for record in runs:
            if not any(cell.covers(record) for cell in cells):
                echo(f"warning: ignored {short_path(record.path)}: not a run of a reference "
                     f"cell ({Cell.of(record).label[:160]})")
        missing = [cell.label for cell in cells if not groups[cell]]
        if missing:
            raise ToybenchError(f"no runs given for {len(missing)} reference cells: "
                                f"{'; '.join(missing)}"[:300])
    else:
        jobs = cell_jobs(cells, overrides)
        folder, temporary = _gate_folder(out)
        echo(f"runs in {folder}" + (" (temporary)" if temporary else ""))
        groups = run_cells(jobs, folder, echo=echo)
    result = compare(rows, groups)
    echo(result.table)
    if result.passed:
        echo(f"gate passed: {len(result.comparisons)} scores within tolerance")
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        names = ", ".join(f"{c.row.metric} of {c.row.cell.short}" for c in result.failures)
        echo(f"gate FAILED: {len(result.failures)} of {len(result.comparisons)} scores worse "
             f"than the reference beyond tolerance: {names}")
        if folder is not None:
            echo(f"the runs are in {folder}")
    return result


def update(reference: str | os.PathLike = DEFAULT_REFERENCE, run_dirs: Sequence[str] = (), *,
           out: str | os.PathLike | None = None,
           cells: Mapping[Cell, Sequence[int]] | None = None, overrides: Sequence[str] = (),
           echo: Callable[[str], None] = print) -> Path:
    """Rewrite the reference (atomically) from fresh runs of ``cells`` (default: the
    `DEFAULT_MODELS` cells × `DEFAULT_SEEDS`) or from ``run_dirs``.

    The path is checked before any run starts; nothing is written unless every run is done.
    """
    target = check_output(reference)
    if run_dirs:
        if overrides or out is not None or cells is not None:
            raise ToybenchError("--set and --out apply to the gate's own runs, not to given "
                                "run folders")
        runs, _ = read_runs(run_dirs, warn=echo)
        groups = _group_runs(runs)
    else:
        if cells is None:
            cells = {Cell(model): DEFAULT_SEEDS for model in DEFAULT_MODELS}
        extra = tuple(overrides)
        jobs = cell_jobs(cells, extra)
        folder, temporary = _gate_folder(out)
        echo(f"runs in {folder}" + (" (temporary)" if temporary else ""))
        raw = run_cells(jobs, folder, echo=echo)
        groups = {Cell(c.model, c.generator, c.corr, c.protocol, (*c.overrides, *extra)): runs
                  for c, runs in raw.items()}
    for cell in groups:
        if cell.model.startswith("external:"):
            raise ToybenchError(f"{cell.label}: an external encoder cannot be rerun by the gate")
    rows = build_reference(groups)
    atomic_write_text(target, reference_text(rows))
    if not run_dirs and temporary:
        shutil.rmtree(folder, ignore_errors=True)
    first = rows[0]
    echo(f"wrote {short_path(reference)}: {len(groups)} cells × {first.n_metrics} metrics, "
         f"s_pool over df = {first.df}")
    return Path(reference)

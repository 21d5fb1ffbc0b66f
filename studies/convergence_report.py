"""Tables and curves of the convergence study (``python studies/convergence.py report``).

Reads every ``studies/convergence/runs/long/*/curve.json`` (a long run scored along its
training; with the constant learning rate its point at step S is the S-step run), groups the
runs by model x generator x σ, and writes:

- ``docs/img/convergence-<generator>-corr<σ>.png``: each headline score against the step, one
  line per model (mean over seeds; the band spans the seeds' min..max);
- ``docs/protocols-table.md``: per cell, which steps are converged, and the scores at the
  standard protocol's step (2,400) and at 4,800.

The criterion (docs/protocols.md): step S is converged for a cell when, for every headline
score, the mean over the seeds at S lies within the seed spread (min..max over the seeds) at the
longest step, 4,800. Only steps every seed of the cell has are compared.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from studies.convergence import BATCH_LONG_STEPS, BATCH_STEPS

#: (curve key, short label) of the headline scores; the entanglement of each correlated pair
#: is added per generator (every ``test_decorrelated.entanglement.<a>-<b>`` key).
HEADLINE = (
    ("test.recon.bce", "bce"),
    ("test_decorrelated.recon.bce", "bce (decorr)"),
    ("test.active_units", "active units"),
    ("test_decorrelated.dci.disentanglement", "DCI D"),
    ("test_decorrelated.dci.completeness", "DCI C"),
    ("test_decorrelated.dci.informativeness_test", "DCI I"),
    ("test_decorrelated.mig", "MIG"),
)
PAIR_PREFIX = "test_decorrelated.entanglement."


def load_curves(folder: Path, kind: str = "long"
                ) -> dict[tuple[str, str, str], dict[int, list[dict]]]:
    """``{(model, generator, corr): {seed: curve rows}}`` of the finished runs in
    ``folder/<kind>/`` (``long``: the study; ``extended``: its cells trained 4x longer;
    ``batch64`` and ``batch64-long``: those cells at batch 64)."""
    cells: dict[tuple[str, str, str], dict[int, list[dict]]] = defaultdict(dict)
    for path in sorted(folder.glob(f"{kind}/*/curve.json")):
        metrics_path = path.with_name("metrics.json")
        if not metrics_path.is_file():
            continue  # unfinished
        identity = json.loads(metrics_path.read_text())
        key = (identity["model"], identity["generator"], str(identity["corr"]))
        cells[key][int(identity["seed"])] = json.loads(path.read_text())
    return dict(cells)


def headline_keys(curves: dict[int, list[dict]]) -> list[tuple[str, str]]:
    """The headline scores of one cell, with its correlated pairs' entanglement."""
    first = next(iter(curves.values()))[-1]
    pairs = sorted(k for k in first if k.startswith(PAIR_PREFIX))
    return [*HEADLINE, *((k, "ent. " + k[len(PAIR_PREFIX):]) for k in pairs)]


def by_step(curves: dict[int, list[dict]], key: str) -> dict[int, list[float]]:
    """``{step: [value per seed]}`` for the steps every seed has."""
    values: dict[int, list[float]] = defaultdict(list)
    for rows in curves.values():
        for row in rows:
            value = row.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                values[row["step"]].append(float(value))
    return {s: v for s, v in sorted(values.items()) if len(v) == len(curves)}


STEPS = (300, 600, 1200, 2400, 3600, 4800)
STANDARD_STEP = 2400


def outside_spread(curves: dict[int, list[dict]]) -> dict[int, list[str]]:
    """``{step: [labels of the headline scores whose mean over seeds lies outside the seed
    spread at the last step]}`` for the steps every seed has."""
    out: dict[int, list[str]] = {}
    for key, label in headline_keys(curves):
        series = by_step(curves, key)
        if not series:
            continue
        last = max(series)
        for step, values in series.items():
            out.setdefault(step, [])
            if not _within(sum(values) / len(values), series[last]):
                out[step].append(label)
    return out


def _within(mean: float, values: list[float]) -> bool:
    """The criterion's test: ``mean`` lies in the seed spread ``min..max`` of ``values``."""
    return min(values) - 1e-12 <= mean <= max(values) + 1e-12


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _summary(values: list[float]) -> str:
    mean = sum(values) / len(values)
    return f"{mean:.3g} ± {(max(values) - min(values)) / 2:.2g}"


def table(cells, steps: tuple[int, ...] = STEPS) -> str:
    """Per cell and step: ✓ when the step is converged against the cell's last step, else ✗
    and the headline scores outside the last step's seed spread."""
    lines = ["| model | generator | σ | seeds | " + " | ".join(f"{s}" for s in steps) + " |",
             "|---|---|---|---|" + "---|" * len(steps)]
    for (model, generator, corr), curves in sorted(cells.items()):
        if len(curves) < 2:
            lines.append(f"| {model} | {generator} | {corr} | {len(curves)} | "
                         + " | ".join("" for _ in steps) + " |")
            continue
        verdict = outside_spread(curves)
        row = []
        for step in steps:
            if step not in verdict:
                row.append("")
            else:
                row.append("✓" if not verdict[step] else "✗ " + ", ".join(verdict[step]))
        lines.append(f"| {model} | {generator} | {corr} | {len(curves)} | " + " | ".join(row)
                     + " |")
    return "\n".join(lines)


def values_table(cells, step: int) -> str:
    """Mean ± half the seed range of every headline score at ``step``, per cell."""
    lines = []
    for (model, generator, corr), curves in sorted(cells.items()):
        parts = []
        for key, label in headline_keys(curves):
            values = by_step(curves, key).get(step)
            if values:
                parts.append(f"{label} {_summary(values)}")
        if parts:
            lines.append(f"- **{model}**, {generator}, σ = {corr} ({_seeds(len(curves))}): "
                         + "; ".join(parts))
    return "\n".join(lines)


def _mean_at(curves: dict[int, list[dict]], key: str, step: int) -> float | None:
    values = by_step(curves, key).get(step)
    return sum(values) / len(values) if values else None


def gap_table(cells, step: int = STANDARD_STEP) -> str:
    """Test BCE (mean over seeds) at ``step`` and at 4,800, and how much higher it is at
    ``step``, per cell: what a standard run leaves on the table in reconstruction."""
    lines = ["| model | generator | σ | seeds | test BCE at 2,400 | at 4,800 | higher by |",
             "|---|---|---|---|---|---|---|"]
    for (model, generator, corr), curves in sorted(cells.items()):
        early, late = (_mean_at(curves, "test.recon.bce", s) for s in (step, STEPS[-1]))
        if early is None or late is None:
            continue
        lines.append(f"| {model} | {generator} | {corr} | {len(curves)} | {early:.1f} | "
                     f"{late:.1f} | {100 * (early / late - 1):.1f}% |")
    return "\n".join(lines)


def drift_table(cells, steps: tuple[int, ...] = (STANDARD_STEP, 3600)) -> str:
    """Per headline score (the pair entanglements pooled) and step: in how many cells every
    seed moves the same way from the step to 4,800, and in how many the step misses the
    criterion. Seeds that only fluctuate all move the same way with probability 2 / 2**n
    (25% for 3 seeds); a score still learning moves the same way in every cell."""
    counts: dict[str, dict[int, list[int]]] = {}
    for curves in cells.values():
        verdict = outside_spread(curves)
        for key, label in headline_keys(curves):
            group = "entanglement (each pair)" if label.startswith("ent. ") else label
            series = by_step(curves, key)  # per step, one value per seed in seed order
            for step in steps:
                if step not in verdict or step not in series or STEPS[-1] not in series:
                    continue
                moves = [b - a for a, b in zip(series[step], series[STEPS[-1]], strict=True)]
                entry = counts.setdefault(group, {}).setdefault(step, [0, 0, 0])
                entry[0] += all(m > 0 for m in moves) or all(m < 0 for m in moves)
                entry[1] += label in verdict[step]
                entry[2] += 1
    header = " | ".join(f"all seeds move the same way {s:,} → 4,800 | misses at {s:,}"
                        for s in steps)
    lines = [f"| score | {header} |", "|---|" + "---|---|" * len(steps)]
    for group, by in counts.items():
        parts = []
        for step in steps:
            same, missed, n = by.get(step, (0, 0, 0))
            parts.append(f"{same} of {n} | {missed} of {n}")
        lines.append(f"| {group} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def ranking_table(cells, step: int = STANDARD_STEP) -> str:
    """Per generator × σ and headline score: the pairs of models that ``step`` orders
    differently from 4,800 (by their means over seeds), and of those the ones whose seed
    ranges at 4,800 do not overlap (clearly ordered there). A leaderboard at the standard
    protocol ranks the models as the long protocol would where none is clearly ordered."""
    groups: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for (model, generator, corr), curves in cells.items():
        groups[(generator, corr)][model] = curves
    lines = ["| generator | σ | score | models | pairs ordered differently at 2,400 | "
             "of them clearly ordered at 4,800 |", "|---|---|---|---|---|---|"]
    for (generator, corr), models in sorted(groups.items()):
        for key, label in headline_keys(next(iter(models.values()))):
            means, spread = {}, {}
            for model, curves in sorted(models.items()):
                series = by_step(curves, key)
                if step in series and STEPS[-1] in series:
                    means[model] = (_mean_at(curves, key, step), _mean_at(curves, key, STEPS[-1]))
                    spread[model] = (min(series[STEPS[-1]]), max(series[STEPS[-1]]))
            ranked = sorted(means)
            swapped = [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1:]
                       if (means[a][0] - means[b][0]) * (means[a][1] - means[b][1]) < 0]
            clear = [f"{a}/{b}" for a, b in swapped
                     if spread[a][1] < spread[b][0] or spread[b][1] < spread[a][0]]
            n_pairs = len(ranked) * (len(ranked) - 1) // 2
            lines.append(f"| {generator} | {corr} | {label} | {len(ranked)} | "
                         f"{len(swapped)} of {n_pairs} | "
                         + (", ".join(clear) if clear else "none") + " |")
    return "\n".join(lines)


#: The BCE panels' y axis spans the values from this step on (earlier points leave the frame).
ZOOM_FROM = 1200


def scored_steps(cells) -> tuple[int, ...]:
    """Every step at which some run of ``cells`` was scored, ascending."""
    return tuple(sorted({row["step"] for curves in cells.values() for rows in curves.values()
                         for row in rows}))


def extended_values(cells, keys=("test.recon.bce", "test_decorrelated.recon.bce",
                                 "test.active_units", "test_decorrelated.dci.disentanglement",
                                 "test_decorrelated.mig")) -> str:
    """Mean ± half the seed range of a few headline scores at every extended step, per cell."""
    labels = dict(HEADLINE)
    steps = scored_steps(cells)
    lines = ["| model | generator | σ | score | " + " | ".join(f"{s:,}" for s in steps)
             + " |", "|---|---|---|---|" + "---|" * len(steps)]
    for (model, generator, corr), curves in sorted(cells.items()):
        for key in keys:
            series = by_step(curves, key)
            lines.append(f"| {model} | {generator} | {corr} | {labels.get(key, key)} | "
                         + " | ".join(_summary(series[s]) if s in series else ""
                                      for s in steps) + " |")
    return "\n".join(lines)


def batch_table(batch, reference, ratio: int = 4, up_to: int | None = None) -> str:
    """Per cell and headline score: the small-batch runs (``batch``, ``ratio`` times fewer images
    per step) beside the reference runs at the same number of images (step / ``ratio``), mean
    over seeds, at the small-batch steps up to ``up_to`` (all by default); ``*`` marks a mean
    outside the reference's seed spread at its last step."""
    steps = tuple(s for s in scored_steps(batch) if up_to is None or s <= up_to)
    lines = ["| model | generator | σ | score | " + " | ".join(
        f"{s:,} / {s // ratio:,}" for s in steps) + " | reference's last step |",
             "|---|---|---|---|" + "---|" * (len(steps) + 1)]
    for cell, curves in sorted(batch.items()):
        if cell not in reference:
            continue
        for key, label in headline_keys(curves):
            mine, theirs = by_step(curves, key), by_step(reference[cell], key)
            if not theirs:
                continue
            last = max(theirs)
            row = []
            for step in steps:
                values = mine.get(step)
                if values is None:
                    row.append("")
                    continue
                mean = sum(values) / len(values)
                mark = "" if _within(mean, theirs[last]) else "*"
                other = theirs.get(step // ratio)
                row.append(f"{mean:.3g}{mark} / "
                           + ("—" if other is None else f"{sum(other) / len(other):.3g}"))
            lines.append(f"| {cell[0]} | {cell[1]} | {cell[2]} | {label} | " + " | ".join(row)
                         + f" | {_summary(theirs[last])} |")
    return "\n".join(lines)


def plot(cells, generator: str, corr: str, path: Path, what: str = "the long runs",
         mark: tuple[int, str] = (STANDARD_STEP, "standard")) -> None:
    """One panel per headline score; the dotted line is at ``mark``'s step, named in the
    axis label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = {k: v for k, v in cells.items() if k[1] == generator and k[2] == corr}
    if not mine:
        return
    keys = headline_keys(next(iter(mine.values())))
    cols = 4
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    models = sorted({k[0] for k in mine})
    colours = dict(zip(models, plt.cm.tab10.colors, strict=False))
    for ax, (key, label) in zip(axes.flat, keys, strict=False):
        late: list[float] = []  # BCE's values from ZOOM_FROM on set its y range
        for (model, _, _), curves in sorted(mine.items()):
            series = by_step(curves, key)
            if not series:
                continue
            late += [x for step, v in series.items() if step >= ZOOM_FROM for x in v]
            steps = list(series)
            mean = [sum(v) / len(v) for v in series.values()]
            ax.plot(steps, mean, "-", color=colours[model], marker="o", markersize=3,
                    label=f"{model} ({_seeds(len(curves))})")
            ax.fill_between(steps, [min(v) for v in series.values()],
                            [max(v) for v in series.values()], color=colours[model], alpha=0.12)
        title = label
        if label.startswith("bce") and late:  # the early plateau would flatten the rest
            margin = 0.1 * (max(late) - min(late)) or 1.0
            ax.set_ylim(min(late) - margin, max(late) + margin)
            title = f"{label}, y range of steps ≥ {ZOOM_FROM:,}"
        ax.set_title(title, fontsize=10)
        ax.set_xscale("log", base=2)
        ax.axvline(mark[0], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel(f"step (dotted: {mark[1]})")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    fig.suptitle(f"{generator}, σ = {corr}: scores of {what} along training (the point at "
                 f"step S is the S-step run), mean over seeds with min..max band", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_cells(cells, prefix: Path, **options) -> None:
    """``plot`` every generator x σ of ``cells`` to ``<prefix>-<generator>-corr<σ>.png``."""
    for generator, corr in sorted({k[1:3] for k in cells}):
        plot(cells, generator, corr, prefix.with_name(f"{prefix.name}-{generator}-corr{corr}.png"),
             **options)


def write_report(folder: Path, root: Path) -> None:
    cells = load_curves(folder)
    plot_cells(cells, root / "docs" / "img" / "convergence")
    text = ["<!-- written by `python studies/convergence.py report`; do not edit -->",
            "", "### Which steps are converged", "",
            "✓: every headline score's mean over seeds lies within the seed spread (min..max) "
            "at step 4,800; ✗ lists the scores outside it. Step 2,400 is the standard protocol.",
            "", table(cells), "",
            f"### Scores at the standard protocol's step ({STANDARD_STEP})", "",
            values_table(cells, STANDARD_STEP), "",
            "### Scores at the long protocol's step (4800)", "", values_table(cells, 4800), "",
            "### How much reconstruction the standard protocol leaves", "",
            gap_table(cells), "",
            "### Still learning, or seed noise?", "",
            "Cells in which every seed's score moves the same way between the step and 4,800 "
            "(by chance alone 25% of the cells with 3 seeds), beside the cells where the step "
            "misses the criterion. Active units are integers and often do not move at all.", "",
            drift_table(cells), "",
            "### Does the standard protocol rank the models as the long one?", "",
            "Pairs of models whose means over seeds are in the opposite order at 2,400 and at "
            "4,800 steps, and of those the pairs whose seed ranges (min..max) at 4,800 do not "
            "overlap: a swap of models that 4,800 steps cannot tell apart says little.", "",
            ranking_table(cells), ""]
    extended = load_curves(folder, "extended")
    if extended:
        plot_cells(extended, root / "docs" / "img" / "convergence-extended",
                   what="the 19,200-step runs")
        text += ["### Beyond the long protocol: two cells trained for 19,200 steps", "",
                 "`python studies/convergence.py extend`: the same criterion with the 19,200-step "
                 "run as the reference (✓: every headline score's mean over seeds within the "
                 "seed spread at 19,200).", "", table(extended, scored_steps(extended)), "",
                 "Scores along these runs (mean ± half the seed range):", "",
                 extended_values(extended), ""]
        batch = load_curves(folder, "batch64")
        if batch:
            text += ["### What a smaller batch buys: the same cells at 64 images per step", "",
                     "`python studies/convergence.py batch`: the extended cells trained with 64 "
                     "instead of 256 images per step for 19,200 steps (the long run's images). "
                     "Each entry: the batch-64 run after S steps / the 256-batch run after the "
                     "same images (S / 4 steps; — where it was not scored), means over 3 seeds; "
                     "`*`: the batch-64 mean lies outside the seed spread of the 256-batch run "
                     "at 19,200 steps (last column, mean ± half the range).", "",
                     batch_table(batch, extended), ""]
        batch_long = load_curves(folder, "batch64-long")
        if batch_long:
            plot_cells(batch_long, root / "docs" / "img" / "convergence-batch64-long",
                       what=f"the batch-64 runs of {BATCH_LONG_STEPS:,} steps",
                       mark=(BATCH_STEPS, f"{BATCH_STEPS:,}, the batch-64 run"))
            text += [f"### Is batch 64 converged? The same cells at batch 64 for "
                     f"{BATCH_LONG_STEPS:,} steps", "",
                     "`python studies/convergence.py batch-long`: the batch-64 cells trained "
                     "twice as long, scored on the way. With the constant learning rate their "
                     "first 19,200 steps are the batch-64 runs above (the scores at the steps "
                     "both have are bit-identical). ✓: every headline score's mean over seeds "
                     f"within the seed spread at {BATCH_LONG_STEPS:,} steps.", "",
                     table(batch_long, scored_steps(batch_long)), "",
                     "Scores along these runs (mean ± half the seed range):", "",
                     extended_values(batch_long), "",
                     "### Does batch 64 reach the long run's answer?", "",
                     "The batch-64 runs beside the 256-batch long runs of the study at the same "
                     f"images, up to {BATCH_STEPS:,} steps (the long run's 1.2 M images). Each "
                     "entry: batch 64 after S steps / batch 256 after S / 4 steps (— where it "
                     "was not scored), means over seeds; `*`: the batch-64 mean lies outside "
                     "the seed spread of the long run at 4,800 steps (last column).", "",
                     batch_table(batch_long, cells, up_to=BATCH_STEPS), ""]
    (root / "docs" / "protocols-table.md").write_text("\n".join(text), encoding="utf-8")

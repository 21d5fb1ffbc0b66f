"""Tables and curves of the convergence study (``python studies/convergence.py report``).

Reads every ``studies/convergence/runs/<protocol>/*/curve.json`` (a run scored along its
training), groups the runs by model x generator x σ x protocol, and writes:

- ``docs/img/convergence-<generator>-corr<σ>.png``: each headline score against the step, one
  line per model and protocol (mean over seeds; the band spans the seeds' min..max), long solid,
  standard dashed;
- ``docs/protocols-table.md``: per cell, the verdict of the criterion and the scores of both
  protocols (mean ± half the seed range).

The criterion (docs/protocols.md): the standard protocol is converged for a cell when, for
every headline score, the mean over the seeds of its final scores lies within the seed spread
(min..max over the seeds) of the long protocol's final scores. Cells are compared only with
the same seeds in both protocols.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

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


def load_curves(folder: Path) -> dict[tuple[str, str, str, str], dict[int, list[dict]]]:
    """``{(model, generator, corr, protocol): {seed: curve rows}}`` of the finished runs."""
    cells: dict[tuple[str, str, str, str], dict[int, list[dict]]] = defaultdict(dict)
    for path in sorted(folder.glob("*/*/curve.json")):
        metrics_path = path.with_name("metrics.json")
        if not metrics_path.is_file():
            continue  # unfinished
        identity = json.loads(metrics_path.read_text())
        key = (identity["model"], identity["generator"], str(identity["corr"]),
               identity["protocol"])
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


def final(curves: dict[int, list[dict]], key: str, seeds) -> list[float]:
    """The last point's value of ``key`` for each of ``seeds``."""
    return [float(curves[seed][-1][key]) for seed in seeds if key in curves[seed][-1]]


def verdict(standard, long) -> tuple[list[int], list[str]]:
    """``(seeds compared, labels of the headline scores whose standard mean lies outside the
    long runs' seed spread)``."""
    seeds = sorted(set(standard) & set(long))
    outside: list[str] = []
    if not seeds:
        return seeds, outside
    for key, label in headline_keys(long):
        s_values, l_values = final(standard, key, seeds), final(long, key, seeds)
        if len(s_values) != len(seeds) or len(l_values) != len(seeds) or not seeds:
            continue
        mean = sum(s_values) / len(s_values)
        if not min(l_values) - 1e-12 <= mean <= max(l_values) + 1e-12:
            outside.append(label)
    return seeds, outside


def _summary(values: list[float]) -> str:
    mean = sum(values) / len(values)
    return f"{mean:.3g} ± {(max(values) - min(values)) / 2:.2g}"


def table(cells) -> str:
    pairs = sorted({k[:3] for k in cells})
    lines = ["| model | generator | σ | seeds | standard converged? | scores outside the long "
             "runs' seed spread |", "|---|---|---|---|---|---|"]
    for model, generator, corr in pairs:
        standard = cells.get((model, generator, corr, "standard"), {})
        long = cells.get((model, generator, corr, "long"), {})
        seeds, outside = verdict(standard, long)
        if len(seeds) < 2:
            lines.append(f"| {model} | {generator} | {corr} | {len(seeds)} | (needs ≥ 2 seeds "
                         f"of both) | |")
            continue
        lines.append(f"| {model} | {generator} | {corr} | {len(seeds)} | "
                     f"{'✓' if not outside else '✗'} | {', '.join(outside)} |")
    return "\n".join(lines)


def values_table(cells) -> str:
    """Mean ± half the seed range of every headline score, standard and long, per cell."""
    lines = []
    for model, generator, corr in sorted({k[:3] for k in cells}):
        for protocol in ("standard", "long"):
            curves = cells.get((model, generator, corr, protocol))
            if not curves:
                continue
            seeds = sorted(curves)
            parts = [f"{label} {_summary(final(curves, key, seeds))}"
                     for key, label in headline_keys(curves) if final(curves, key, seeds)]
            lines.append(f"- **{model}**, {generator}, σ = {corr}, {protocol} "
                         f"({len(seeds)} seeds): " + "; ".join(parts))
    return "\n".join(lines)


def plot(cells, generator: str, corr: str, path: Path) -> None:
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
        for (model, _, _, protocol), curves in sorted(mine.items()):
            series = by_step(curves, key)
            if not series:
                continue
            steps = list(series)
            mean = [sum(v) / len(v) for v in series.values()]
            style = "-" if protocol == "long" else "--"
            ax.plot(steps, mean, style, color=colours[model], marker="o", markersize=3,
                    label=f"{model} {protocol} ({len(curves)} seeds)")
            ax.fill_between(steps, [min(v) for v in series.values()],
                            [max(v) for v in series.values()], color=colours[model], alpha=0.12)
        ax.set_title(label, fontsize=10)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    fig.suptitle(f"{generator}, σ = {corr}: scores along training, mean over seeds with "
                 f"min..max band; long (4,800 steps) solid, standard (2,400) dashed; cosine "
                 f"learning rate, so a curve's last point is its protocol's result", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(folder: Path, root: Path) -> None:
    cells = load_curves(folder)
    for generator, corr in sorted({k[1:3] for k in cells}):
        plot(cells, generator, corr,
             root / "docs" / "img" / f"convergence-{generator}-corr{corr}.png")
    text = ["<!-- written by `python studies/convergence.py report`; do not edit -->",
            "", "### Is the standard protocol converged?", "",
            "✓: for every headline score, the mean over seeds of the standard runs' final "
            "scores lies within the long runs' seed spread (min..max) at step 4,800; the last "
            "column lists the scores outside it.", "", table(cells), "",
            "### Final scores (mean ± half the seed range)", "", values_table(cells), ""]
    (root / "docs" / "protocols-table.md").write_text("\n".join(text), encoding="utf-8")

"""Data sets drawn from a generator: splits, interventional sets, a torch adapter.

A ``Dataset`` holds rendered images, the factor levels that produced them, the DAG, σ and the data
card (realized Pearson ρ, Spearman ρ and mutual information of every edge and concept pair, as
reported by Träuble et al. 2021, https://arxiv.org/abs/2006.07886, for their correlated data).

Splits: ``train`` and ``test`` are drawn at the requested σ, ``test_decorrelated`` at σ = ∞ (every
factor independent; see ``toybench.scm``). Each split draws from its own random stream, derived
deterministically from the seed with ``np.random.SeedSequence([seed, tag])``, so the same seed gives
the same data and the splits never share noise. Interventional sets apply ``do()`` on the SCM.

Data is drawn and rendered in memory on every call: nothing is written to disk and no home or cache
folder is needed. (An on-disk cache of rendered splits was removed. Measured on the three standard
splits, reading them back was about twice as slow as rendering for toy-causal, within 0.1 s of it
for dSprites, and saved about a second of a 60-90 s run only for the pendulum, while leaving
90-125 MB per generator, σ and seed in the user's cache folder.)
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toybench import seeds
from toybench.errors import ToybenchError, check_allocation
from toybench.io import atomic_save_npz, atomic_write_bytes, check_output
from toybench.scm import DAG, SCM, Generator, Root, corr_label, data_card, parse_corr
from toybench.specs import load_generator

SPLITS = ("train", "test", "test_decorrelated")
FIGURE_FORMATS = ("png", "pdf", "svg")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images with their ground truth.

    Attributes
    ----------
    images : np.ndarray
        ``(n, C, H, W)`` uint8.
    factors : np.ndarray
        ``(n, K)`` int64 level indices, columns in concept order.
    concepts : tuple of str
        Concept names (column names of ``factors``).
    generator : str
        Generator name.
    corr : float
        σ the data was drawn at (``inf`` for independent factors).
    seed : int
    split : str
        ``train``, ``test``, ``test_decorrelated`` or ``interventional``.
    card : dict
        The data card (JSON-serializable), see ``toybench.scm.data_card``.
    dag : DAG
        The generator's causal graph.
    """

    images: np.ndarray
    factors: np.ndarray
    concepts: tuple[str, ...]
    generator: str
    corr: float
    seed: int
    split: str
    card: dict
    dag: DAG | None = None

    def __len__(self) -> int:
        return len(self.factors)


def _resolve(generator: Generator | str | os.PathLike) -> Generator:
    return generator if isinstance(generator, Generator) else load_generator(generator)


def _check_int(value: Any, what: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ToybenchError(f"{what} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def sample_bytes(gen: Generator) -> int:
    """Memory one sample needs while a data set is drawn: its ``C × H × W`` uint8 image plus
    32 bytes per concept (noise, factor level and renderer input, 8 bytes each, and slack)."""
    return math.prod(gen.image_shape) + 32 * len(gen.concepts)


def split_rng(seed: int, split: str) -> np.random.Generator:
    """The random stream of one split (`toybench.seeds`: ``SeedSequence([seed, tag])``)."""
    return seeds.numpy_rng(seed, f"data.{split}")


def make_split(
    generator: Generator | str,
    split: str,
    *,
    corr: float | str,
    n: int,
    seed: int,
) -> Dataset:
    """Draw one split of a generator.

    Parameters
    ----------
    generator : Generator or str
        A generator, a shipped name or a path to a spec.
    split : {"train", "test", "test_decorrelated"} or a ``test_corr<σ>`` name
        ``test_decorrelated`` ignores ``corr`` and uses σ = ∞; an extra test split named by
        `toybench.rundir.split_at_corr` (``test_corr0_4``) ignores it too and uses the σ of
        its name, from a stream of its own (`toybench.seeds`).
    corr : float or str
        σ > 0 or ``inf``.
    n : int
        Number of samples, > 0.
    seed : int
        ≥ 0; each split derives its own stream from it.

    Returns
    -------
    Dataset
    """
    from toybench.rundir import corr_of_split

    test_corr = corr_of_split(split)
    if split not in SPLITS and test_corr is None:
        raise ToybenchError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}, or "
                            f"test_corr<σ> (test_corr0_4 for σ = 0.4)")
    return _make(_resolve(generator), split, parse_corr(corr if test_corr is None else test_corr),
                 n, seed, {})


def make_interventional(
    generator: Generator | str,
    do: Mapping[str, int],
    *,
    corr: float | str,
    n: int,
    seed: int,
) -> Dataset:
    """Draw a data set under the hard intervention ``do`` (concept name → level index).

    The intervened concepts are constant, their incoming edges cut; the data card describes the
    intervened model.
    """
    gen = _resolve(generator)
    if not do:
        raise ToybenchError("do must name at least one concept")
    checked = {}
    for name, level in do.items():
        size = gen.scm.concept(name).n_levels
        checked[name] = _check_int(level, f"do({name}=...)", minimum=0)
        if checked[name] >= size:
            raise ToybenchError(f"do({name}=...): level must be in 0..{size - 1}, got {level}")
    return _make(gen, "interventional", parse_corr(corr), n, seed, checked)


def _make(
    gen: Generator, split: str, corr: float, n: Any, seed: Any, do: dict[str, int]
) -> Dataset:
    n = _check_int(n, "n", minimum=1)
    seed = _check_int(seed, "seed", minimum=0)
    check_allocation(
        n * sample_bytes(gen),
        f"n = {n:,} samples of {gen.name} ({'×'.join(map(str, gen.image_shape))} uint8 images)",
        per_item=sample_bytes(gen),
    )
    if split == "test_decorrelated":
        corr = math.inf
    factors = gen.sample_factors(n, split_rng(seed, split), corr=corr, do=do or None)
    images = gen.render(factors)
    card = _card(gen, corr, factors, do)
    card.update(split=split, seed=seed, n_samples=n)
    return Dataset(images, factors, gen.concept_names, gen.name, corr, seed, split, card, gen.dag)


def _card(gen: Generator, corr: float, factors: np.ndarray, do: Mapping[str, int]) -> dict:
    """Card of the (possibly intervened) model: intervened concepts become constant roots."""
    if not do:
        return gen.card(corr, factors)
    mechanisms = dict(gen.scm.mechanisms)
    for name, level in do.items():
        probs = np.zeros(gen.scm.concept(name).n_levels)
        probs[level] = 1.0
        mechanisms[name] = Root(probs=probs)
    card = {
        "generator": gen.name,
        "spec_hash": gen.spec_hash,
        **data_card(SCM(gen.concepts, mechanisms), corr, factors=factors),
    }
    card["do"] = {name: int(level) for name, level in do.items()}
    return card


# --------------------------------------------------------------------------------------------------
# torch adapter
# --------------------------------------------------------------------------------------------------
class TorchImages:
    """A map-style torch data set over a ``Dataset`` (usable with ``torch.utils.data.DataLoader``).

    ``dataset[i]`` is ``(image, factors)``: a float32 tensor ``(C, H, W)`` in [0, 1] and an int64
    tensor ``(K,)``.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        import torch

        image = torch.from_numpy(self.dataset.images[index]).float().div_(255.0)  # (C, H, W)
        return image, torch.from_numpy(self.dataset.factors[index])  # (K,)


# --------------------------------------------------------------------------------------------------
# Library functions behind the CLI
# --------------------------------------------------------------------------------------------------
def generate(
    data: str, *, corr: float | str, n: int, seed: int, out: str | os.PathLike, split: str = "train"
) -> Path:
    """Draw one split and export it as an ``.npz`` for use in any framework.

    The archive holds ``images`` ``(n, C, H, W)`` uint8, ``factors`` ``(n, K)`` int64,
    ``concepts`` ``(K,)`` unicode names and ``card`` (a JSON string, 0-d unicode array); no object
    arrays, so ``np.load(path, allow_pickle=False)`` reads it.

    Returns
    -------
    Path
        The file written (atomically: nothing is left behind on failure).

    Raises
    ------
    ToybenchError
        Before any sampling: a bad argument, a size this machine cannot hold
        (``toybench.errors.check_allocation``), or an output path that cannot be written
        (``toybench.io.check_output``: a missing folder, a folder, FIFO or device in the way).
    """
    check_output(out)
    dataset = make_split(data, split, corr=corr, n=n, seed=seed)
    return atomic_save_npz(
        out,
        images=dataset.images,
        factors=dataset.factors,
        concepts=np.array(dataset.concepts),
        card=np.array(json.dumps(dataset.card, sort_keys=True)),
    )


def show(
    data: str, *, corr: float | str, out: str | os.PathLike, n: int = 32, seed: int = 0
) -> Path:
    """A contact sheet: samples, the DAG and the data card's realized dependence at σ.

    Top row: a grid of ``n`` training-split samples and the causal graph (edges labelled with
    their realized Pearson ρ and mutual information). Bottom row: heatmaps of the card's Pearson ρ,
    Spearman ρ and mutual information (nats) of every concept pair. Drawn with matplotlib's Agg
    canvas (no display, no global pyplot state); the format follows the file suffix (png, pdf or
    svg).
    """
    fmt = Path(out).suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise ToybenchError(
            f"{out}: unknown figure format {fmt!r}; use {', '.join(FIGURE_FORMATS)}"
        )
    gen = _resolve(data)
    dataset = make_split(gen, "train", corr=corr, n=n, seed=seed)
    buffer = io.BytesIO()
    contact_sheet(gen, dataset).savefig(buffer, format=fmt, dpi=110, bbox_inches="tight")
    return atomic_write_bytes(out, buffer.getvalue())


def contact_sheet(gen: Generator, dataset: Dataset):  # -> matplotlib.figure.Figure
    """The figure of :func:`show` (a ``matplotlib.figure.Figure`` on an Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(gen.concept_names)
    cell = max(0.55, 4.2 / k)  # heatmap cell (inches): text fits at 7-8 pt
    fig = Figure(figsize=(max(16.0, 3 * (k * cell + 2.4)), 5.4 + k * cell + 1.6),
                 layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subfigures(2, 1, height_ratios=[5.4, k * cell + 1.6])
    ax_img, ax_dag = top.subplots(1, 2, width_ratios=[1.3, 1.0])
    _draw_samples(ax_img, dataset.images)
    _draw_dag(ax_dag, gen, dataset.card)
    for ax, stat in zip(bottom.subplots(1, 3), CARD_STATISTICS, strict=True):
        _draw_heatmap(bottom, ax, gen, dataset.card, stat)
    card = dataset.card
    source = ("exact, from the enumerated joint" if card["source"] == "exact"
              else f"empirical, from {card['n']} samples")
    fig.suptitle(
        f"{gen.name} at σ = {corr_label(dataset.corr)}: {gen.description.splitlines()[0]}\n"
        f"bottom: the data card's realized dependence of every concept pair ({source})",
        fontsize=11,
    )
    return fig


#: The data card's pair statistics drawn by ``show``: key -> (title, colour map, range).
CARD_STATISTICS = {
    "pearson": ("realized Pearson ρ", "coolwarm", (-1.0, 1.0)),
    "spearman": ("realized Spearman ρ", "coolwarm", (-1.0, 1.0)),
    "mi": ("realized mutual information (nats)", "viridis", None),
}


def _draw_samples(ax, images: np.ndarray) -> None:
    n, c, h, w = images.shape
    cols = min(8, n)
    rows = -(-n // cols)
    sheet = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, c), 128, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        sheet[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = (
            images[i].transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
        )
    ax.imshow(
        sheet[..., 0] if c == 1 else sheet,
        cmap="gray" if c == 1 else None,
        vmin=0,
        vmax=255,
        interpolation="nearest",
    )
    ax.set_title(f"{n} samples (train split)", fontsize=10)
    ax.axis("off")


def _draw_dag(ax, gen: Generator, card: dict) -> None:
    layers = gen.dag.layers()
    pos = {}
    for depth, layer in enumerate(layers):
        for k, name in enumerate(layer):
            pos[name] = (depth, (len(layer) - 1) / 2 - k)
    edge_stats = {(e["parent"], e["child"]): e for e in card["edges"]}
    # Nodes first: each arrow is clipped to its two nodes' boxes, drawn before it.
    boxes = {
        name: ax.text(x, y, name, ha="center", va="center", fontsize=9,
                      bbox={"boxstyle": "round", "fc": "white", "ec": "0.4"})
        for name, (x, y) in pos.items()
    }
    for e, (parent, child) in enumerate(gen.dag.edges):
        (x0, y0), (x1, y1) = pos[parent], pos[child]
        colour = f"C{e % 10}"  # an edge and its label share a colour: crossing edges stay apart
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops={
                "arrowstyle": "-|>",
                "color": colour,
                "patchA": boxes[parent].get_bbox_patch(),
                "patchB": boxes[child].get_bbox_patch(),
                "shrinkA": 2,
                "shrinkB": 2,
                "connectionstyle": "arc3,rad=0.12",
            },
        )
        stats = edge_stats[(parent, child)]
        ax.text(
            x0 + (x1 - x0) / 3,  # a third of the way: crossing edges keep their labels apart
            y0 + (y1 - y0) / 3 + 0.08,
            f"ρ={stats['pearson']:.2f}, MI={stats['mi']:.2f}",
            fontsize=8,
            ha="center",
            color=colour,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"},
            zorder=5,  # above the arrows it may cross
        )
    ax.set_xlim(-0.6, len(layers) - 0.4)
    span = max(len(layer) for layer in layers)
    ax.set_ylim(-span / 2 - 0.1, span / 2 + 0.1)
    title = ("causal graph (edges: realized Pearson ρ, MI in nats)" if gen.dag.edges
             else "causal graph: no edges (independent factors)")
    ax.set_title(title, fontsize=10)
    ax.axis("off")


def _draw_heatmap(fig, ax, gen: Generator, card: dict, stat: str = "pearson") -> None:
    """Heatmap of one pair statistic of the card (``CARD_STATISTICS``) over all concepts.

    The diagonal is 1 for the correlations and left blank for MI (a concept's MI with itself is
    its entropy, not a dependence). Cell text is black or white by the cell's luminance.
    """
    from matplotlib import colormaps

    from toybench.plots import text_colour

    title, cmap, limits = CARD_STATISTICS[stat]
    names = list(gen.concept_names)
    k = len(names)
    values = np.eye(k) if limits is not None else np.full((k, k), np.nan)
    for pair in card["pairs"]:
        i, j = names.index(pair["a"]), names.index(pair["b"])
        values[i, j] = values[j, i] = pair[stat]
    if limits is None:
        limits = (0.0, max(float(np.nanmax(values, initial=0.0)), 1e-3))
    image = ax.imshow(values, cmap=colormaps[cmap].with_extremes(bad="white"), vmin=limits[0],
                      vmax=limits[1])
    for i in range(k):
        for j in range(k):
            if np.isnan(values[i, j]):
                continue
            ax.text(j, i, f"{round(values[i, j], 2) + 0.0:.2f}", ha="center", va="center",
                    fontsize=8, color=text_colour(image.cmap(image.norm(values[i, j]))))
    ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_yticks(range(k), names, fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8)

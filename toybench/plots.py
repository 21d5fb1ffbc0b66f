"""Figures of a run: reconstructions, latent traversals, KL and activity per unit, code
histograms, pairwise latent scatter coloured by factor, DCI importance and perturbation heatmaps.

Traversals follow Higgins et al. 2017 (β-VAE, https://openreview.net/forum?id=Sy2fzU9gl): vary one
code around an encoded image, keep the others fixed, decode. DCI importance is the matrix of
Eastwood & Williams 2018 (https://openreview.net/forum?id=By-7dz-AZ). A unit is active when
Var_x E[z|x] > 0.01 (Burda et al. 2016, https://arxiv.org/abs/1509.00519, Sec. 5.2; see
``toybench.metrics.units``). Every figure names a code column by what it is (``code_names``):
``shape[0]`` / ``style[1]`` for CSVAE's blocks, ``z1[3]`` for an HVAE layer, ``z3`` for a flat
VAE, ``pc3`` for PCA. Text on a coloured cell is black or white by the cell's WCAG 2 relative
luminance (https://www.w3.org/TR/WCAG21/#dfn-relative-luminance). Figures use matplotlib's
object API (``matplotlib.figure.Figure``, Agg canvas): no pyplot state, safe in worker processes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from toybench.metrics.units import ACTIVE_THRESHOLD

if TYPE_CHECKING:  # torch is imported where it is used: `toybench show` never loads it
    import torch

MAX_TRAVERSED_CODES = 16
TRAVERSAL_STEPS = 9
#: The KL axis always spans at least [0, 1 nat], so a dead unit (KL ≈ 0) shows no bar at all.
KL_AXIS_MIN_NATS = 1.0
#: Floor of the log-scaled Var_x E[z|x] axis: two decades below the activity threshold.
VARIANCE_AXIS_FLOOR = 1e-4
#: Background of the columns / panels of inactive units.
INACTIVE_SHADE = "0.88"
#: Above this many cells a heatmap carries no numbers (they would not fit).
MAX_ANNOTATED_CELLS = 400


# --------------------------------------------------------------------------------------------
# Names, colours and the cell-text rule.
# --------------------------------------------------------------------------------------------


def code_names(units: Sequence, n_codes: int) -> list[str]:
    """One name per code column from a model's ``units()`` (``toybench.models.common.UnitGroup``).

    A model with a single ``"layer"`` group (flat VAE ``z``, PCA ``pc``) names its columns
    ``z0, z1, ...`` / ``pc0, pc1, ...``; otherwise column k of group g is ``g[k]``
    (``shape[0]``, ``style[1]``, ``z2[3]``).

    Parameters
    ----------
    units : sequence of UnitGroup
        Must cover every code column ``0 .. n_codes-1`` exactly once.
    n_codes : int

    Returns
    -------
    list of str
        ``n_codes`` names, in column order.

    Raises
    ------
    ValueError
        If a column is outside ``0 .. n_codes-1``, in two groups, or in none.

    Examples
    --------
    >>> from toybench.models.common import UnitGroup
    >>> code_names([UnitGroup("hue", "concept", (0, 1)), UnitGroup("style", "style", (2,))], 3)
    ['hue[0]', 'hue[1]', 'style[0]']
    >>> code_names([UnitGroup("z", "layer", (0, 1))], 2)
    ['z0', 'z1']
    """
    names: list[str | None] = [None] * n_codes
    flat = len(units) == 1 and units[0].kind == "layer"
    for group in units:
        for k, j in enumerate(group.columns):
            if not 0 <= j < n_codes:
                raise ValueError(f"unit group {group.name!r} has code column {j}, outside "
                                 f"0..{n_codes - 1}")
            if names[j] is not None:
                raise ValueError(f"code column {j} is in two unit groups ({names[j]!r} and "
                                 f"{group.name!r})")
            names[j] = f"{group.name}{k}" if flat else f"{group.name}[{k}]"
    missing = [j for j, name in enumerate(names) if name is None]
    if missing:
        raise ValueError(f"code columns {missing} are in no unit group (units() must cover "
                         f"all {n_codes})")
    return [str(name) for name in names]


def group_colours(units: Sequence) -> list[tuple[float, float, float, float]]:
    """One RGBA colour per unit group (tab10; tab20 beyond ten groups)."""
    cmap = colormaps["tab10" if len(units) <= 10 else "tab20"]
    return [tuple(float(c) for c in cmap(g % cmap.N)) for g in range(len(units))]


def column_colours(units: Sequence, n_codes: int) -> np.ndarray:
    """``(n_codes, 4)`` RGBA: each code column in its unit group's colour."""
    code_names(units, n_codes)  # validates the cover
    colours = np.zeros((n_codes, 4))
    for group, colour in zip(units, group_colours(units), strict=True):
        colours[list(group.columns)] = colour
    return colours


def relative_luminance(rgba: Sequence[float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour with channels in [0, 1] (alpha ignored)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def text_colour(rgba: Sequence[float]) -> str:
    """``"black"`` or ``"white"``, whichever contrasts more with a background colour.

    The crossover luminance L = √(1.05 · 0.05) − 0.05 ≈ 0.179 is where the WCAG contrast ratios
    (L + 0.05) / 0.05 (black text) and 1.05 / (L + 0.05) (white text) are equal.
    """
    return "black" if relative_luminance(rgba) > math.sqrt(1.05 * 0.05) - 0.05 else "white"


# --------------------------------------------------------------------------------------------
# Image tensors (shared by TensorBoard and the PNG figures).
# --------------------------------------------------------------------------------------------


def _no_grad(fn: Callable) -> Callable:
    """``torch.no_grad()`` as a decorator that imports torch only when ``fn`` is called."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


def image_grid(images: torch.Tensor, ncol: int, pad: int = 1) -> torch.Tensor:
    """Tile ``(N, C, H, W)`` images in [0, 1] into one ``(3, rows·(H+pad)+pad, ncol·(W+pad)+pad)``.

    Grey-scale images are repeated to RGB; the padding is white.
    """
    import torch

    images = images.detach().float().clamp(0, 1).cpu()
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)  # (N, 1, H, W) -> (N, 3, H, W)
    n, _c, h, w = images.shape
    nrow = -(-n // ncol)
    grid = torch.ones(3, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, c = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def mean_image(model, z: torch.Tensor) -> torch.Tensor:
    """Decoded mean image ``(B, C, H, W)`` in [0, 1] of codes ``z`` ``(B, n_codes)``."""
    return model.decode(z).float().clamp(0, 1)


@_no_grad
def reconstruction_tensor(model, x: torch.Tensor) -> torch.Tensor:
    """Grid with the inputs ``x`` ``(N, C, H, W)`` on the top row, reconstructions below."""
    import torch

    recon = mean_image(model, model.encode(x).float())  # (N, C, H, W) in [0, 1]
    return image_grid(torch.cat([x.float(), recon.float()]), ncol=x.shape[0])


def traversal_range(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2nd and 98th percentile ``(L,)`` of each code column of ``codes`` ``(B, L)``."""
    import torch

    return (torch.quantile(codes.float(), 0.02, dim=0),
            torch.quantile(codes.float(), 0.98, dim=0))


@_no_grad
def traversal_tensor(model, x0: torch.Tensor, codes: torch.Tensor,
                     columns: Sequence[int] | None = None) -> torch.Tensor:
    """Latent traversals: one row per code column, ``TRAVERSAL_STEPS`` values across its range.

    Parameters
    ----------
    model
        Has ``encode`` and ``decode`` (mean image).
    x0 : torch.Tensor
        ``(1, C, H, W)`` image whose code is the anchor.
    codes : torch.Tensor
        ``(B, n_codes)`` codes of a reference batch; each row spans that column's 2nd–98th
        percentile there.
    columns : sequence of int, optional
        Code columns to traverse (default: the first ``MAX_TRAVERSED_CODES``).
    """
    import torch

    z0 = model.encode(x0).float()  # (1, L)
    columns = list(range(min(codes.shape[1], MAX_TRAVERSED_CODES))) if columns is None \
        else list(columns)
    lo, hi = traversal_range(codes)  # (L,) each
    rows = []
    for j in columns:
        z = z0.repeat(TRAVERSAL_STEPS, 1)  # (S, L)
        z[:, j] = torch.linspace(float(lo[j]), float(hi[j]), TRAVERSAL_STEPS)
        rows.append(mean_image(model, z))  # (S, C, H, W)
    return image_grid(torch.cat(rows), ncol=TRAVERSAL_STEPS)


# --------------------------------------------------------------------------------------------
# PNG figures.
# --------------------------------------------------------------------------------------------


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (via a temporary file and a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    # A constrained layout already fits every artist inside the figure; "tight" would draw twice.
    fig.savefig(tmp, dpi=100, bbox_inches=None if fig.get_layout_engine() else "tight")
    tmp.replace(path)  # never a half-written figure under the final name
    return path


def _image_axes(grid: torch.Tensor, cell: tuple[int, int], title: str, *, pad: int = 1,
                margin: float = 0.0) -> tuple[Figure, Any]:
    """A figure showing a ``(3, H, W)`` grid at ~2.5 screen pixels per image pixel.

    ``cell`` is one tile's ``(h, w)``; ticks sit at the tiles' centres, unlabelled until the
    caller labels them. ``margin`` (inches) widens the figure for row labels.
    """
    h, w = grid.shape[1:]
    fig = Figure(figsize=(max(3.0, w / 40) + margin, max(2.0, h / 40 + 0.6)))
    ax = fig.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=10)
    rows, cols = (h - pad) // (cell[0] + pad), (w - pad) // (cell[1] + pad)
    ax.set_yticks([pad + r * (cell[0] + pad) + cell[0] / 2 for r in range(rows)], labels=[])
    ax.set_xticks([pad + c * (cell[1] + pad) + cell[1] / 2 for c in range(cols)], labels=[])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig, ax


@_no_grad
def reconstruction_figure(model, x: torch.Tensor) -> Figure:
    """Inputs ``x`` ``(N, C, H, W)`` on a row labelled "input", their reconstructions below."""
    fig, ax = _image_axes(reconstruction_tensor(model, x), tuple(x.shape[-2:]),
                          "test images and their reconstructions (posterior mean decoded)",
                          margin=1.0)
    ax.set_yticks(ax.get_yticks(), labels=["input", "reconstruction"], fontsize=9)
    return fig


@_no_grad
def traversal_figure(model, x0: torch.Tensor, codes: torch.Tensor, names: Sequence[str],
                     columns: Sequence[int] | None = None) -> Figure:
    """Latent traversals: one row per code, labelled with its name, its value range on the right.

    Parameters
    ----------
    model, x0, codes, columns
        As :func:`traversal_tensor`.
    names : sequence of str
        Name of every code column (:func:`code_names`).
    """
    n_codes = codes.shape[1]
    columns = list(range(min(n_codes, MAX_TRAVERSED_CODES))) if columns is None \
        else list(columns)
    lo, hi = traversal_range(codes)  # (L,) each
    grid = traversal_tensor(model, x0, codes, columns)
    cell = (x0.shape[-2], x0.shape[-1])
    shown = "" if len(columns) == n_codes else f" (first {len(columns)} of {n_codes} codes)"
    fig, ax = _image_axes(grid, cell, f"latent traversals{shown}", margin=2.0)
    ax.set_yticks(ax.get_yticks(), labels=[names[j] for j in columns], fontsize=9)
    xticks = ax.get_xticks()
    ax.set_xticks([xticks[0], xticks[-1]], labels=["2nd percentile", "98th percentile"],
                  fontsize=8)
    ax.set_xlabel("value of the row's code over the test split; the other codes stay at the "
                  "first test image's", fontsize=8)
    right = grid.shape[2] + 3
    ax.text(right, 0, "range", va="bottom", ha="left", fontsize=8, clip_on=False)
    variances = codes.double().var(dim=0, unbiased=False)  # (L,)
    for r, j in zip(ax.get_yticks(), columns, strict=True):
        dead = not float(variances[j]) > ACTIVE_THRESHOLD
        label = _range_text(float(lo[j]), float(hi[j])) + ("\n(inactive)" if dead else "")
        ax.text(right, r, label, va="center", ha="left", fontsize=8, clip_on=False,
                color="0.4" if dead else "black")
    return fig


def _range_text(lo: float, hi: float) -> str:
    """``"lo … hi"`` with enough decimals that the two ends differ (or ``"lo (constant)"``)."""
    if not hi > lo:
        return f"{lo:.3g} (constant)"
    decimals = min(6, max(1, 1 - math.floor(math.log10(hi - lo))))
    return f"{lo:.{decimals}f} … {hi:.{decimals}f}"


def unit_activity_figure(kl: np.ndarray | None, variances: np.ndarray, units: Sequence, *,
                         split: str = "test", threshold: float = ACTIVE_THRESHOLD) -> Figure:
    """Bars per code column: KL per unit (nats, when the model has one) and Var_x E[z|x].

    The KL axis always spans at least ``[0, KL_AXIS_MIN_NATS]``, so a dead unit has no visible
    bar; the variance axis is logarithmic from ``VARIANCE_AXIS_FLOOR`` with a line at the
    activity threshold. Inactive units (variance ≤ threshold, Burda et al. 2016) get a grey
    column and the word "inactive". Bars and legend share one colour per unit group.

    Parameters
    ----------
    kl : (L,) array or None
        KL per unit in nats (None: the model has no KL, e.g. PCA; only the variance panel).
    variances : (L,) array
        Var_x of each posterior mean over the split.
    units : sequence of UnitGroup
        The model's ``units()``.
    """
    variances = np.asarray(variances, dtype=float)
    n = len(variances)
    names = code_names(units, n)
    colours = column_colours(units, n)
    inactive = np.flatnonzero(~(variances > threshold))
    panels = (["kl"] if kl is not None else []) + ["variance"]
    fig = Figure(figsize=(max(6.0, 0.32 * n + 3.5), 2.4 * len(panels) + 0.7),
                 layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    x = np.arange(n)
    for ax, panel in zip(axes, panels, strict=True):
        for j in inactive:
            ax.axvspan(j - 0.5, j + 0.5, color=INACTIVE_SHADE, lw=0, zorder=0)
        if panel == "kl":
            values = np.nan_to_num(np.asarray(kl, dtype=float), nan=0.0)
            ax.bar(x, values, color=colours, width=0.8, zorder=2)
            ax.set_ylim(0.0, max(KL_AXIS_MIN_NATS, 1.1 * float(values.max(initial=0.0))))
            ax.set_ylabel("KL (nats)")
            ax.set_title("KL(q(z|x) ‖ p(z)) per unit", fontsize=9)
        else:
            shown = np.maximum(variances, VARIANCE_AXIS_FLOOR)
            ax.set_yscale("log")
            ax.bar(x, shown - VARIANCE_AXIS_FLOOR, bottom=VARIANCE_AXIS_FLOOR, color=colours,
                   width=0.8, zorder=2)
            ax.set_ylim(VARIANCE_AXIS_FLOOR, max(1.0, 3.0 * float(variances.max(initial=0.0))))
            ax.axhline(threshold, color="red", ls="--", lw=1.2, zorder=3,
                       label=f"active threshold {threshold:g}")
            ax.set_ylabel("Var_x E[z|x]")
            ax.set_title(f"variance of each posterior mean over the {split} split "
                         f"(log scale, floor {VARIANCE_AXIS_FLOOR:g})", fontsize=9)
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        ax.set_xlim(-0.6, n - 0.4)
    top = axes[0]
    for j in inactive:
        top.text(j, 0.5, "inactive", transform=top.get_xaxis_transform(), rotation=90,
                 ha="center", va="center", fontsize=7, color="0.35", zorder=4)
    handles = [Patch(facecolor=c, edgecolor=c, label=g.name)
               for g, c in zip(units, group_colours(units), strict=True)]
    handles.append(Patch(facecolor=INACTIVE_SHADE, edgecolor="0.6",
                         label=f"inactive unit\n(Var_x E[z|x] ≤ {threshold:g})"))
    top.legend(handles=handles, title="unit group", loc="upper left", bbox_to_anchor=(1.01, 1.0),
               fontsize=8, title_fontsize=8, frameon=False)
    axes[-1].set_xticks(x, labels=names, rotation=90 if n > 12 else 0, fontsize=8)
    axes[-1].set_xlabel("code")
    fig.suptitle(f"units on the {split} split: {n - len(inactive)} of {n} active "
                 f"(Burda et al. 2016: Var_x E[z|x] > {threshold:g})", fontsize=10)
    return fig


def code_histogram_figure(codes: np.ndarray, units: Sequence, *, split: str = "test",
                          max_codes: int = 32, threshold: float = ACTIVE_THRESHOLD) -> Figure:
    """Histogram of each code column (posterior means) over a split, in its unit group's colour.

    Inactive units (variance ≤ ``threshold``) get a grey panel.
    """
    codes = np.asarray(codes, dtype=float)
    n_codes = codes.shape[1]
    names = code_names(units, n_codes)
    colours = column_colours(units, n_codes)
    n = min(n_codes, max_codes)
    ncol = min(6, n)
    nrow = -(-n // ncol)
    fig = Figure(figsize=(2.4 * ncol, 1.9 * nrow + 0.5), layout="constrained")
    for j in range(n):
        ax = fig.add_subplot(nrow, ncol, j + 1)
        var = float(codes[:, j].var())
        ax.hist(codes[:, j], bins=40, color=colours[j])
        dead = not var > threshold
        if dead:
            ax.set_facecolor(INACTIVE_SHADE)
        ax.set_title(f"{names[j]}: var {var:.2g}{' (inactive)' if dead else ''}", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_locator(MaxNLocator(3))
        ax.ticklabel_format(axis="x", useOffset=False)
        ax.tick_params(labelsize=7)
    shown = "" if n == n_codes else f", first {n} of {n_codes} codes"
    fig.suptitle(f"posterior mean of each code over the {split} split ({len(codes)} images"
                 f"{shown}); y: count", fontsize=10)
    return fig


def _level_labels(labels: Sequence[str]) -> list[str]:
    """Level labels for a colour key: numbers to 3 significant digits, words unchanged."""
    out = []
    for label in labels:
        try:
            out.append(f"{float(label):.3g}")
        except ValueError:
            out.append(str(label))
    return out


def latent_scatter_figure(codes: np.ndarray, factors: np.ndarray, factor_names: Sequence[str],
                          level_labels: Sequence[Sequence[str]], units: Sequence, *,
                          split: str = "test", n_codes: int = 3,
                          max_points: int = 2000) -> Figure:
    """Pairwise scatter of the most variant codes, one row per factor, coloured by its level.

    Parameters
    ----------
    codes : (n, L) array
    factors : (n, K) int array of levels
    factor_names : K names
    level_labels : K sequences, the labels of each factor's levels (its colour key)
    units : sequence of UnitGroup
        The model's ``units()`` (names the codes).
    """
    codes = np.asarray(codes, dtype=float)
    names = code_names(units, codes.shape[1])
    top = np.argsort(-codes.var(axis=0), kind="stable")[: min(n_codes, codes.shape[1])]
    pairs = [(a, b) for i, a in enumerate(top) for b in top[i + 1:]] or [(top[0], top[0])]
    m = min(max_points, codes.shape[0])
    k = factors.shape[1]
    fig = Figure(figsize=(2.7 * len(pairs) + 1.6, 2.5 * k + 0.6), layout="constrained")
    grid = fig.subplots(k, len(pairs), squeeze=False)
    for r in range(k):
        n_levels = len(level_labels[r])
        cmap = ListedColormap(colormaps["viridis"](np.linspace(0, 1, n_levels)))
        norm = BoundaryNorm(np.arange(n_levels + 1) - 0.5, n_levels)
        for c, (a, b) in enumerate(pairs):
            ax = grid[r, c]
            points = ax.scatter(codes[:m, a], codes[:m, b], c=factors[:m, r], s=3, cmap=cmap,
                                norm=norm, linewidths=0)
            ax.set_xlabel(names[a], fontsize=8, labelpad=1)
            ax.set_ylabel(names[b], fontsize=8, labelpad=1)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.yaxis.set_major_locator(MaxNLocator(4))
            ax.tick_params(labelsize=7)
        step = -(-n_levels // 10)  # at most ~10 labelled levels on a key
        ticks = list(range(0, n_levels, step))
        key = fig.colorbar(points, ax=list(grid[r]), ticks=ticks, aspect=12, pad=0.02)
        key.ax.set_yticklabels([_level_labels(level_labels[r])[t] for t in ticks], fontsize=7)
        key.set_label(f"colour: {factor_names[r]}", fontsize=9)
    shown = ", ".join(names[j] for j in top)
    fig.suptitle(f"{split} codes, every pair of the {len(top)} with the largest variance "
                 f"({shown}); one row per factor, coloured by its level", fontsize=10)
    return fig


def heatmap_figure(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str],
                   title: str, *, xlabel: str, ylabel: str, cmap: str = "viridis") -> Figure:
    """Annotated heatmap (DCI importance: codes × factors; perturbation: codes × codes).

    Small values are shown scaled by a power of ten (said in the title and on the colour bar);
    each cell's number is black or white by :func:`text_colour` of its cell.
    """
    matrix = np.asarray(matrix, dtype=float)
    rows, cols = matrix.shape
    biggest = float(np.nanmax(np.abs(matrix))) if matrix.size else 0.0
    exponent = math.floor(math.log10(biggest)) if 0.0 < biggest < 0.1 else 0
    shown = matrix / 10.0**exponent
    scale = f" (values × 1e{exponent})" if exponent else ""
    fig = Figure(figsize=(max(4.0, 0.55 * cols + 2.5), max(3.0, 0.32 * rows + 1.6)),
                 layout="constrained")
    ax = fig.add_subplot()
    low = 0.0 if np.nanmin(shown, initial=0.0) >= 0 else None
    image = ax.imshow(shown, aspect="auto", cmap=cmap, vmin=low)
    bar = fig.colorbar(image, ax=ax)
    bar.ax.tick_params(labelsize=8)
    if scale:
        bar.set_label(f"× 1e{exponent}", fontsize=8)
    ax.set_xticks(range(cols), labels=list(col_labels), rotation=45 if cols > 6 else 0,
                  ha="right" if cols > 6 else "center", fontsize=8)
    ax.set_yticks(range(rows), labels=list(row_labels), fontsize=8)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    if rows * cols <= MAX_ANNOTATED_CELLS:
        for i in range(rows):
            for j in range(cols):
                value = shown[i, j]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color=text_colour(image.cmap(image.norm(value))))
    ax.set_title(title + scale, fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# The run folder's plots/.
# --------------------------------------------------------------------------------------------

RUN_PLOTS = ("reconstructions", "traversals", "kl_per_unit", "activation_histograms",
             "latent_scatter", "dci_importance", "perturbation_matrix")


def write_run_plots(folder: Path, model, generator, test,
                    artefacts: Mapping[str, Any]) -> list[Path]:
    """Write a run's figures (``RUN_PLOTS``, one PNG each) into ``folder``.

    Parameters
    ----------
    folder : Path
        The run's ``plots/``.
    model
        The trained model (``encode``, ``decode``, ``units()``).
    generator : toybench.scm.Generator
        Names the factors and their levels.
    test : toybench.data.Dataset
        The test split.
    artefacts : Mapping
        ``"codes"``: {split: (n, L) float codes}, ``"test"`` required; ``"kl_per_unit"``: (L,) KL
        per unit on the test split or None; optional ``"importance"``: (L, K) DCI importance on
        the test split and ``"perturbation"``: (L, L) perturbation matrix (computed here when
        absent, as ``toybench.metrics.dci.importance_matrix`` and
        ``toybench.evaluate.perturbation_matrix_of`` on the first 500 test images).

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    ValueError
        If an artefact has the wrong shape; nothing is written then.
    """
    import torch

    codes = np.asarray(artefacts["codes"]["test"], dtype=np.float64)  # (n, L)
    n_codes, n_factors = codes.shape[1], test.factors.shape[1]
    units = model.units()
    names = code_names(units, n_codes)
    kl = artefacts.get("kl_per_unit")
    expected = {"kl_per_unit": (n_codes,), "importance": (n_codes, n_factors),
                "perturbation": (n_codes, n_codes)}
    for key, shape in expected.items():
        value = artefacts.get(key)
        if value is not None and np.shape(value) != shape:
            raise ValueError(f"artefacts[{key!r}] has shape {np.shape(value)}, expected {shape} "
                             f"({n_codes} codes, {n_factors} factors)")
    importance = artefacts.get("importance")
    if importance is None:
        from toybench.metrics.dci import importance_matrix

        importance = importance_matrix(codes, test.factors)[0]
    perturbation = artefacts.get("perturbation")
    if perturbation is None:
        perturbation = _perturbation(model, test.images[:500])
    factor_names = list(generator.concept_names)
    x = torch.from_numpy(np.ascontiguousarray(test.images[:16])).float().div_(255.0)
    model.eval()
    figures = {
        "reconstructions": lambda: reconstruction_figure(model, x),
        "traversals": lambda: traversal_figure(model, x[:1], torch.from_numpy(codes).float(),
                                               names),
        "kl_per_unit": lambda: unit_activity_figure(kl, codes.var(axis=0), units),
        "activation_histograms": lambda: code_histogram_figure(codes, units),
        "latent_scatter": lambda: latent_scatter_figure(
            codes, test.factors, factor_names, [c.labels for c in generator.concepts], units),
        "dci_importance": lambda: heatmap_figure(
            importance, names, factor_names,
            "DCI importance of each code for each factor, test split",
            xlabel="factor", ylabel="code"),
        "perturbation_matrix": lambda: heatmap_figure(
            perturbation, names, names,
            "perturbation: mean squared change of code j after adding 1 to code i, "
            "decoding and re-encoding",
            xlabel="code j (re-encoded)", ylabel="code i (perturbed by +1)", cmap="magma"),
    }
    return [save_figure(figures[name](), Path(folder) / f"{name}.png") for name in RUN_PLOTS]


@_no_grad
def _perturbation(model, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """``toybench.evaluate.perturbation_matrix_of`` with the model's encode / mean-image decode."""
    import torch

    from toybench.evaluate import perturbation_matrix_of

    def encode(batch: np.ndarray) -> np.ndarray:  # uint8 (n, C, H, W) -> (n, L) float64
        x = torch.from_numpy(np.ascontiguousarray(batch)).float().div_(255.0)
        return np.concatenate([model.encode(x[s:s + batch_size]).float().numpy()
                               for s in range(0, len(x), batch_size)]).astype(np.float64)

    def decode(codes: np.ndarray) -> np.ndarray:  # (n, L) -> (n, C, H, W) float in [0, 1]
        z = torch.from_numpy(np.ascontiguousarray(codes)).float()
        return np.concatenate([mean_image(model, z[s:s + batch_size]).numpy()
                               for s in range(0, len(z), batch_size)])

    return perturbation_matrix_of(encode, decode, images)

"""Figures of a run: reconstructions, latent traversals, KL per unit, code histograms, pairwise
latent scatter coloured by factor, DCI importance and perturbation heatmaps.

Traversals follow Higgins et al. 2017 (β-VAE, https://openreview.net/forum?id=Sy2fzU9gl): vary one
code around an encoded image, keep the others fixed, decode. DCI importance is the matrix of
Eastwood & Williams 2018 (https://openreview.net/forum?id=By-7dz-AZ). Figures use matplotlib's
object API (``matplotlib.figure.Figure``, Agg canvas): no pyplot state, safe in worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

MAX_TRAVERSED_CODES = 16
TRAVERSAL_STEPS = 9


# --------------------------------------------------------------------------------------------
# Image tensors (shared by TensorBoard and the PNG figures).
# --------------------------------------------------------------------------------------------


def image_grid(images: torch.Tensor, ncol: int, pad: int = 1) -> torch.Tensor:
    """Tile ``(N, C, H, W)`` images in [0, 1] into one ``(3, rows·(H+pad)+pad, ncol·(W+pad)+pad)``.

    Grey-scale images are repeated to RGB; the padding is white.
    """
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


@torch.no_grad()
def reconstruction_tensor(model, x: torch.Tensor) -> torch.Tensor:
    """Grid with the inputs ``x`` ``(N, C, H, W)`` on the top row, reconstructions below."""
    recon = mean_image(model, model.encode(x).float())  # (N, C, H, W) in [0, 1]
    return image_grid(torch.cat([x.float(), recon.float()]), ncol=x.shape[0])


@torch.no_grad()
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
    z0 = model.encode(x0).float()  # (1, L)
    columns = list(range(min(codes.shape[1], MAX_TRAVERSED_CODES))) if columns is None \
        else list(columns)
    lo = torch.quantile(codes.float(), 0.02, dim=0)  # (L,)
    hi = torch.quantile(codes.float(), 0.98, dim=0)  # (L,)
    rows = []
    for j in columns:
        z = z0.repeat(TRAVERSAL_STEPS, 1)  # (S, L)
        z[:, j] = torch.linspace(float(lo[j]), float(hi[j]), TRAVERSAL_STEPS)
        rows.append(mean_image(model, z))  # (S, C, H, W)
    return image_grid(torch.cat(rows), ncol=TRAVERSAL_STEPS)


# --------------------------------------------------------------------------------------------
# PNG figures.
# --------------------------------------------------------------------------------------------


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    tmp.replace(path)  # never a half-written figure under the final name
    return path


def save_image_tensor(grid: torch.Tensor, path: Path, title: str) -> Path:
    """Save a ``(3, H, W)`` grid from :func:`image_grid` as a PNG with a title."""
    h, w = grid.shape[1:]
    fig = Figure(figsize=(max(3.0, w / 40), max(2.0, h / 40 + 0.4)))
    ax = fig.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    return _save(fig, path)


def bar_per_unit(values: np.ndarray, groups: Sequence, path: Path, title: str,
                 ylabel: str) -> Path:
    """Bar chart of one value per code column, coloured by unit group (layer / DAG node)."""
    values = np.asarray(values, dtype=float)
    colours = np.zeros(len(values), dtype=int)
    labels = {}
    for g, group in enumerate(groups):
        colours[list(group.columns)] = g
        labels[g] = group.name
    fig = Figure(figsize=(max(4.0, 0.25 * len(values) + 1), 3))
    ax = fig.add_subplot()
    palette = [f"C{g % 10}" for g in colours]
    ax.bar(np.arange(len(values)), values, color=palette)
    for g, name in labels.items():
        ax.bar([], [], color=f"C{g % 10}", label=name)
    if 1 < len(labels) <= 12:
        ax.legend(fontsize=7, ncol=2)
    ax.set_xlabel("code column")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def code_histograms(codes: np.ndarray, path: Path, max_codes: int = 32) -> Path:
    """Histogram of each code column (posterior means) over a data split."""
    codes = np.asarray(codes, dtype=float)[:, :max_codes]
    n = codes.shape[1]
    ncol = min(8, n)
    nrow = -(-n // ncol)
    fig = Figure(figsize=(1.8 * ncol, 1.5 * nrow))
    for j in range(n):
        ax = fig.add_subplot(nrow, ncol, j + 1)
        ax.hist(codes[:, j], bins=40, color="C0")
        ax.set_title(f"z{j} var={codes[:, j].var():.2g}", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle("posterior means per code (test split)")
    return _save(fig, path)


def latent_scatter(codes: np.ndarray, factors: np.ndarray, factor_names: Sequence[str],
                   path: Path, n_codes: int = 3, max_points: int = 2000) -> Path:
    """Pairwise scatter of the most variant codes, one row per factor, coloured by its level."""
    codes = np.asarray(codes, dtype=float)
    top = np.argsort(-codes.var(axis=0), kind="stable")[: min(n_codes, codes.shape[1])]
    pairs = [(a, b) for i, a in enumerate(top) for b in top[i + 1:]] or [(top[0], top[0])]
    m = min(max_points, codes.shape[0])
    k = factors.shape[1]
    fig = Figure(figsize=(2.4 * len(pairs), 2.2 * k))
    for r in range(k):
        for c, (a, b) in enumerate(pairs):
            ax = fig.add_subplot(k, len(pairs), r * len(pairs) + c + 1)
            ax.scatter(codes[:m, a], codes[:m, b], c=factors[:m, r], s=2, cmap="viridis")
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(f"z{a} vs z{b}", fontsize=8)
            if c == 0:
                ax.set_ylabel(factor_names[r], fontsize=8)
    fig.suptitle("latent pairs coloured by factor level")
    return _save(fig, path)


def heatmap(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str],
            path: Path, title: str, cmap: str = "viridis") -> Path:
    """Annotated heatmap (DCI importance: codes × factors; perturbation: factors × codes)."""
    matrix = np.asarray(matrix, dtype=float)
    rows, cols = matrix.shape
    fig = Figure(figsize=(max(3.0, 0.6 * cols + 2), max(2.5, 0.3 * rows + 1)))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, aspect="auto", cmap=cmap)
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(cols), labels=list(col_labels), rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(rows), labels=list(row_labels), fontsize=7)
    if rows * cols <= 400:
        for i in range(rows):
            for j in range(cols):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white")
    ax.set_title(title)
    return _save(fig, path)

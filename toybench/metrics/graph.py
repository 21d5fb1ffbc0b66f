"""Correlation- and graph-aware scores: concept→latent assignment, pairwise entanglement of
correlated concepts, DAG leakage and intervention consistency.

None of disentanglement_lib's metrics has these; they share its ingredients (20-bin histogram
discretization of each code, plug-in mutual information in nats, normalization by the concept's
entropy) and use *all* rows given (no held-out part is needed). Pass codes and factors of a
decorrelated test set (σ = ∞) to read entanglement and leakage as properties of the encoder
rather than of the data's correlations.

- **Pairwise entanglement** (headline, toybench's calibrated score, `pairwise_entanglement`):
  the share of what the *active* units know about the less-encoded concept of a pair that sits
  in units which also know the other, ``Σ_j min(m_ja, m_jb) / max(min(Σ_j m_ja, Σ_j m_jb),
  0.05)`` with ``m`` a bias-corrected normalized MI (`shared_information_matrix`). Separate
  codes score ~0, 45°-rotated codes and one code holding both ~1, and a third concept cannot
  raise a pair's score (known answers in the function's docstring). Dead units earn no credit.
- **Threshold entanglement** (`pairwise_entanglement_threshold`) after Träuble et al. 2021,
  "On Disentangled Representations Learned from Correlated Data" (ICML 2021),
  https://arxiv.org/abs/2006.07886: correlated concept pairs
  end up sharing latents, and the paper scores each pair of factors by how hard the two are to
  separate through their latent codes. Threshold a non-negative factor–latent association
  matrix ``M (L, K)``; the entries at or above the threshold are the edges of a bipartite
  factor–latent graph, and factors in one connected component cannot be told apart. Lowering
  the threshold merges the factors into a single-linkage dendrogram; a pair's entanglement is
  the threshold at which the two first share a component, i.e. the best bottleneck
  ``max_path min_edge M`` over all factor–latent–factor–… paths joining them. It is 1 (with
  normalized MI) when one latent determines both concepts, and 0 when no latent carries
  information about both, directly or through a chain of other concepts.
  Provenance: the paper's full text could not be retrieved while this was written. Public
  reading notes of the paper place the score in its study of unsupervised methods on correlated
  factors ("how difficult it is to separate two factors of variation across their latent
  codes"; the correlated pair scores far above the median of all other pairs). The procedure
  above is transcribed from the authors' code — their disentanglement_lib fork
  (github.com/ftraeuble/disentanglement_lib; read as the public copy ChFunke/disentanglement_lib,
  ``evaluation/metrics/entanglement_metrics_afa.py`` and ``visualize/visualize_entanglement.py``).
  Unverified against the text: the paper's exact wording, section number and which matrix its
  figures use. Deviations from that code: it thresholds the raw plug-in MI in nats (and, as an
  alternative, DCI's GBT importances); toybench's default divides the MI by H(c) so that scores
  lie in [0, 1] and pairs with different numbers of levels compare (pass ``matrix=`` for either
  of theirs). Its threshold grid is the sorted distinct matrix entries with a strict ``>``, so
  it records the next-lower entry below the merging weight; toybench reports the merging weight.
- **DAG leakage** (toybench's definition): for a concept c with parents pa(c) and best latent
  ``z_c``, the share of the latent's uncertainty left after knowing c that the parents explain:
  ``I(z_c; pa(c) | c) / H(z_c | c)`` in [0, 1] (0 if ``z_c`` is a function of c). It is 0 when
  the latent encodes c alone, and grows when it also encodes c's causes.
- **Assignment**: the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) matches
  each concept to a distinct latent maximizing total normalized MI (or a given importance
  matrix).
- **Intervention consistency**: for encoded do(c = v) counterfactual pairs, the share of the
  squared code change that lands in c's assigned latents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from toybench.metrics._common import (
    N_BINS,
    check_codes,
    check_inputs,
    discrete_entropy,
    discrete_mutual_info,
    histogram_discretize,
)
from toybench.metrics.units import ACTIVE_THRESHOLD


def mi_matrix(codes, factors, *, n_bins: int = N_BINS) -> np.ndarray:
    """Normalized mutual information ``I(z_i; c_k) / H(c_k)`` on all rows, shape ``(L, K)``."""
    codes, factors = check_inputs(codes, factors)
    m = discrete_mutual_info(histogram_discretize(codes, n_bins), factors)
    return m / discrete_entropy(factors)[None, :]


def _association_matrix(codes, factors, matrix, n_bins: int) -> np.ndarray:
    """The ``(L, K)`` matrix a graph score works on: ``matrix`` if given (validated against the
    inputs' shapes), else the normalized mutual information `mi_matrix`."""
    if matrix is None:
        return mi_matrix(codes, factors, n_bins=n_bins)
    matrix = np.asarray(matrix, dtype=np.float64)
    codes, factors = check_inputs(codes, factors)
    if matrix.shape != (codes.shape[1], factors.shape[1]):
        raise ValueError(
            f"matrix has shape {matrix.shape}, expected (n_codes, n_factors) = "
            f"{(codes.shape[1], factors.shape[1])}"
        )
    if not np.isfinite(matrix).all():
        raise ValueError(f"matrix with shape {matrix.shape} contains NaN or inf")
    return matrix


class Assignment(NamedTuple):
    """Hungarian concept→latent matching."""

    latent_of_concept: np.ndarray  # (K,) int, -1 where L < K left a concept unmatched
    score: float  # mean matched matrix entry over concepts (unmatched count as 0)
    matrix: np.ndarray  # (L, K) the matrix that was matched


def concept_assignment(
    codes, factors, *, matrix=None, active=None, n_bins: int = N_BINS
) -> Assignment:
    """Match every concept to a distinct latent, maximizing the summed normalized MI.

    With ``active`` ((L,) bool) the rows of the other (dead) units are zeroed before matching,
    so a dead unit earns no credit (it may still be matched, at 0, when too few are active).

    Parameters
    ----------
    codes : (n, L) array of floats
    factors : (n, K) array of integer levels
    matrix : (L, K) array, optional
        A non-negative association matrix to match on instead (e.g. DCI importances).
    active : (L,) bool array, optional
        Units allowed to earn credit; default all of them.
    n_bins : int

    Returns
    -------
    Assignment(latent_of_concept (K,), score, matrix (L, K))

    Examples
    --------
    >>> import numpy as np
    >>> factors = np.random.default_rng(0).integers(0, 5, size=(500, 2))
    >>> concept_assignment(factors[:, ::-1].astype(float), factors).latent_of_concept.tolist()
    [1, 0]
    """
    matrix = _association_matrix(codes, factors, matrix, n_bins)
    if active is not None:
        matrix = np.where(_active_mask(np.asarray(codes), active)[:, None], matrix, 0.0)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(matrix, maximize=True)
    latent_of_concept = np.full(matrix.shape[1], -1, dtype=np.int64)
    latent_of_concept[cols] = rows
    score = float(matrix[rows, cols].sum() / matrix.shape[1])
    return Assignment(latent_of_concept, score, matrix)


def _check_pairs(pairs, n_factors: int) -> list[tuple[int, int]]:
    out = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"pair {pair!r} must name two factor columns")
        a, b = (int(p) for p in pair)
        if not (0 <= a < n_factors and 0 <= b < n_factors) or a == b:
            raise ValueError(f"pair {pair!r} must be two distinct columns in [0, {n_factors})")
        out.append((a, b))
    return out


def _bottleneck_linkage(matrix: np.ndarray) -> np.ndarray:
    """Pairwise merge thresholds of the factors of a non-negative ``(L, K)`` matrix, ``(K, K)``.

    Entry ``[a, b]`` is the largest ``t`` at which factors a and b are connected in the
    bipartite graph with an edge (latent j, factor k) wherever ``matrix[j, k] >= t``: the best
    path's smallest edge. One latent hop gives ``S[a, b] = max_j min(M[j, a], M[j, b])``; longer
    paths are chains of such hops, closed under max-min composition (Floyd–Warshall on the
    (max, min) semiring). The diagonal holds each factor's largest entry.
    """
    strength = np.minimum(matrix[:, :, None], matrix[:, None, :]).max(axis=0)  # (K, K)
    for k in range(strength.shape[0]):
        via_k = np.minimum(strength[:, k, None], strength[None, k, :])  # (K, K)
        strength = np.maximum(strength, via_k)
    return strength


def pairwise_entanglement_threshold(
    codes, factors, pairs, *, matrix=None, n_bins: int = N_BINS
) -> np.ndarray:
    """Threshold pairwise entanglement (Träuble et al. 2021) of each concept pair; lower is
    better. Kept for comparison with the paper; the headline is `pairwise_entanglement`.

    The threshold at which the two concepts first fall into one connected component of the
    factor–latent graph ``{(j, k): M[j, k] >= t}`` as ``t`` is lowered (see the module
    docstring): ``max`` over paths joining a and b of the path's smallest entry of ``M``. With
    the default ``M`` (normalized MI ``I(z_j; c_k) / H(c_k)``) the score lies in [0, 1]: 1 when
    a latent determines both concepts, ~0 when none carries information about both. It is
    symmetric in (a, b) and transitive in the single-linkage sense: a ↔ z ↔ c ↔ z' ↔ b counts.
    Rows used: all.

    Parameters
    ----------
    codes : (n, L) array of floats
    factors : (n, K) array of integer levels
    pairs : sequence of (a, b) factor column pairs (e.g. the DAG's edges)
    matrix : (L, K) non-negative array, optional
        The association matrix to threshold instead: the authors' raw MI in nats
        (``discrete_mutual_info(histogram_discretize(codes), factors)``) or DCI importances.
    n_bins : int
        Histogram bins per code for the default matrix.

    Returns
    -------
    (n_pairs,) float array, in the units of ``matrix``.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.random.default_rng(0).integers(0, 4, size=(4000, 2))
    >>> float(pairwise_entanglement_threshold(f.astype(float), f, [(0, 1)])[0]) < 0.01
    True
    >>> shared = (f[:, 0] * 4 + f[:, 1]).astype(float)[:, None]  # one latent holds both
    >>> round(float(pairwise_entanglement_threshold(shared, f, [(0, 1)])[0]), 6)
    1.0
    """
    matrix = _association_matrix(codes, factors, matrix, n_bins)  # (L, K)
    if (matrix < 0).any():
        raise ValueError(f"matrix with shape {matrix.shape} has negative entries")
    pairs = _check_pairs(pairs, matrix.shape[1])
    linkage = _bottleneck_linkage(matrix)  # (K, K)
    return np.array([linkage[a, b] for a, b in pairs], dtype=np.float64)


#: Fewest rows per distinct value for a code to be read at its own levels (else 20-bin histogram).
ROWS_PER_LEVEL = 8
#: Floor on the smaller concept's total information in `pairwise_entanglement`'s denominator.
ENTANGLEMENT_FLOOR = 0.05


def _adaptive_labels(column: np.ndarray, n_bins: int) -> np.ndarray:
    """Integer labels of one code column: its distinct values when there are at most
    ``n / ROWS_PER_LEVEL`` of them (a discrete code is read at its own resolution), else the
    ``n_bins`` equal-width histogram bins the other scores use."""
    values, labels = np.unique(column, return_inverse=True)
    if values.size * ROWS_PER_LEVEL <= column.size:
        return labels.reshape(-1)
    return histogram_discretize(column[:, None], n_bins)[:, 0] - 1


def _plugin_mi(z: np.ndarray, c: np.ndarray) -> float:
    """Plug-in ``I(z; c)`` in nats of two integer label columns."""
    joint = z.astype(np.int64) * (int(c.max()) + 1) + c
    return _entropy(z) + _entropy(c) - _entropy(np.unique(joint, return_inverse=True)[1])


def shared_information_matrix(
    codes, factors, *, active=None, n_bins: int = N_BINS
) -> np.ndarray:
    """Bias-corrected normalized MI ``I(z_j; c_k) / H(c_k)`` clipped to [0, 1], ``(L, K)``.

    Codes with at most ``n / 8`` distinct values are read at their own levels, others in
    ``n_bins`` equal-width bins. The plug-in MI is corrected for its upward bias by subtracting
    the plug-in MI of the same labels against the factor with its rows permuted (one fixed
    permutation, ``default_rng(0)``: the metric stays a deterministic function of its input):
    independent labels then score ~0 however many levels they have. Rows of units outside
    ``active`` ((L,) bool, default: ``Var > ACTIVE_THRESHOLD``) are 0.
    """
    codes, factors = check_inputs(codes, factors)
    active = _active_mask(codes, active)
    out = np.zeros((codes.shape[1], factors.shape[1]))
    h = discrete_entropy(factors)  # (K,)
    order = np.random.default_rng(0).permutation(codes.shape[0])  # (n,)
    labels = [np.unique(factors[:, k], return_inverse=True)[1].reshape(-1)
              for k in range(factors.shape[1])]
    for j in np.flatnonzero(active):
        z = _adaptive_labels(codes[:, j], n_bins)
        for k, c in enumerate(labels):
            out[j, k] = (_plugin_mi(z, c) - _plugin_mi(z, c[order])) / h[k]
    return np.clip(out, 0.0, 1.0)


def _active_mask(codes: np.ndarray, active) -> np.ndarray:
    """``active`` validated as an ``(L,)`` bool mask, or the units with ``Var > 0.01``."""
    if active is None:
        return codes.astype(np.float64).var(axis=0) > ACTIVE_THRESHOLD
    mask = np.asarray(active)
    if mask.dtype != bool or mask.shape != (codes.shape[1],):
        raise ValueError(f"active must be a bool mask of shape ({codes.shape[1]},), "
                         f"got {mask.dtype} {mask.shape}")
    return mask


def pairwise_entanglement(
    codes, factors, pairs, *, active=None, n_bins: int = N_BINS
) -> np.ndarray:
    """Calibrated pairwise entanglement of each concept pair, in [0, 1]; lower is better.

    The share of what the active units know about the less-encoded concept of the pair that
    sits in units which also know the other: with ``m_jk`` = `shared_information_matrix`
    (bias-corrected ``I(z_j; c_k) / H(c_k)``, dead units zeroed),

        E(a, b) = Σ_j min(m_ja, m_jb) / max(min(Σ_j m_ja, Σ_j m_jb), 0.05).

    0 when no unit carries both, 1 when every unit that carries the weaker concept carries the
    other at least as much. The 0.05 floor keeps a concept the code barely encodes (where the
    ratio would be noise over noise) from scoring high. This is toybench's headline entanglement:
    the Träuble-style threshold score (`pairwise_entanglement_threshold`) is a bottleneck of
    single-unit MI and scores 45°-rotated codes only ~0.14, though rotation is the failure the
    benchmark exposes; it also rises through chains via third concepts. Dead units
    (``Var ≤ 0.01``, `toybench.metrics.units.ACTIVE_THRESHOLD`) earn no credit: there is no
    reference implementation to stay compatible with. Rows used: all.

    Known answers (three independent uniform 32-level factors x, y, c; n = 10,000, seed 0;
    pinned in `tests/test_metrics_graph.py`; the threshold score in brackets):

    - separate codes (x, y): 0.000 [0.008]
    - 45°-rotated codes (x + y, x − y): 1.000 [0.137]
    - one code 32·x + y encoding both bijectively: 1.000 [0.022]
    - (x, 32·c + y), a third concept sharing y's unit: 0.003 [0.010]
    - (32·x + c, 32·y + c), x and y linked only through c: 0.006 [0.022]
    - (x + y, x − y, c): 0.999 — adding an unrelated concept's unit does not change it
    - (x, y, 0.001·(x + y)), a dead unit holding both: 0.000 [0.137]

    Limitation: a code is read at its own levels only when it has at most n / 8 distinct values
    (32·x + y needs n ≥ 8,192; at n = 5,000 it scores 0.18); a continuous code is read in
    ``n_bins`` equal-width bins, so two concepts packed at a scale finer than a bin are missed.

    Parameters
    ----------
    codes : (n, L) array of floats
    factors : (n, K) array of integer levels
    pairs : sequence of (a, b) factor column pairs (e.g. the DAG's edges)
    active : (L,) bool array, optional
        Units that may earn credit; default ``Var(codes) > 0.01``. Pass all True to count dead
        units too.
    n_bins : int
        Histogram bins of continuous codes.

    Returns
    -------
    (n_pairs,) float array in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> f = np.random.default_rng(0).integers(0, 8, size=(4000, 2))
    >>> float(pairwise_entanglement(f.astype(float), f, [(0, 1)])[0]) < 0.05
    True
    >>> rotated = np.c_[f[:, 0] + f[:, 1], f[:, 0] - f[:, 1]].astype(float)
    >>> float(pairwise_entanglement(rotated, f, [(0, 1)])[0]) > 0.95
    True
    """
    m = shared_information_matrix(codes, factors, active=active, n_bins=n_bins)  # (L, K)
    pairs = _check_pairs(pairs, m.shape[1])
    out = []
    for a, b in pairs:
        shared = np.minimum(m[:, a], m[:, b]).sum()
        total = max(min(m[:, a].sum(), m[:, b].sum()), ENTANGLEMENT_FLOOR)
        out.append(min(shared / total, 1.0))
    return np.array(out, dtype=np.float64)


def _joint_labels(*columns: np.ndarray) -> np.ndarray:
    """One integer label per row for the joint value of several discrete columns."""
    stacked = np.column_stack(columns)
    return np.unique(stacked, axis=0, return_inverse=True)[1].reshape(-1)


def _entropy(labels: np.ndarray) -> float:
    counts = np.bincount(labels)
    p = counts[counts > 0] / labels.size
    return float(-(p * np.log(p)).sum())


def conditional_leakage(latent: np.ndarray, concept: np.ndarray, parents: np.ndarray) -> float:
    """``I(z; pa | c) / H(z | c)`` of discrete labels, in [0, 1] (0 when ``H(z | c) = 0``)."""
    z_c = _joint_labels(latent, concept)
    h_c = _entropy(_joint_labels(concept))
    h_z_given_c = _entropy(z_c) - h_c
    if h_z_given_c <= 1e-12:
        return 0.0
    cmi = (
        _entropy(z_c)
        + _entropy(_joint_labels(parents, concept))
        - _entropy(_joint_labels(latent, parents, concept))
        - h_c
    )
    return float(np.clip(cmi / h_z_given_c, 0.0, 1.0))


def dag_leakage(
    codes, factors, parents: Sequence[Sequence[int]], *, active=None, n_bins: int = N_BINS
) -> dict[int, float]:
    """DAG leakage of every concept that has parents (see the module docstring).

    With ``active`` ((L,) bool) each concept's latent is the best *active* one; with no active
    unit there is no latent to leak into and every leakage is 0.

    Parameters
    ----------
    codes : (n, L) array of floats
    factors : (n, K) array of integer levels
    parents : length-K sequence; ``parents[k]`` lists the factor columns of concept k's parents
    active : (L,) bool array, optional
        Units that may be a concept's latent; default all of them.
    n_bins : int

    Returns
    -------
    dict mapping factor column → leakage in [0, 1] (roots are left out).

    Examples
    --------
    >>> import numpy as np
    >>> f = np.random.default_rng(0).integers(0, 4, size=(4000, 2))
    >>> mixed = np.c_[f[:, 0], f[:, 1] * 4 + f[:, 0]].astype(float)  # child's latent holds parent
    >>> dag_leakage(mixed, f, [[], [0]])[1] > 0.5
    True
    """
    codes, factors = check_inputs(codes, factors)
    if len(parents) != factors.shape[1]:
        raise ValueError(
            f"parents has {len(parents)} entries but factors has shape {factors.shape}"
        )
    discrete = histogram_discretize(codes, n_bins)
    nmi = discrete_mutual_info(discrete, factors) / discrete_entropy(factors)[None, :]
    mask = np.ones(codes.shape[1], dtype=bool) if active is None else _active_mask(codes, active)
    nmi = np.where(mask[:, None], nmi, -1.0)  # a dead unit is never the best latent
    out = {}
    for k, pa in enumerate(parents):
        pa = [int(p) for p in pa]
        if not pa:
            continue
        if any(not 0 <= p < factors.shape[1] or p == k for p in pa):
            raise ValueError(
                f"parents[{k}] = {pa} must be other columns in [0, {factors.shape[1]})"
            )
        if not mask.any():
            out[k] = 0.0
            continue
        best = int(np.argmax(nmi[:, k]))
        out[k] = conditional_leakage(discrete[:, best], factors[:, k], factors[:, pa])
    return out


def intervention_consistency(codes_before, codes_after, latents, *, scale=None) -> float:
    """Share of the squared code change under do(c = v) that lands in c's latents, in [0, 1].

    ``Σ_rows Σ_{j ∈ latents} (Δ_j / s_j)² / Σ_rows Σ_j (Δ_j / s_j)²`` where ``Δ`` is the code
    change of each counterfactual pair and ``s`` the per-latent ``scale`` (default 1: raw code
    units, which for VAEs share the N(0, 1) prior's scale). An encoder whose codes do not move
    at all scores 0.

    Parameters
    ----------
    codes_before : (n, L) codes of the factual images
    codes_after : (n, L) codes of the do(c = v) counterfactual images
    latents : sequence of int, the latent columns assigned to c
    scale : (L,) positive array, optional

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> before = np.zeros((4, 3)); after = before + [1.0, 0.0, 1.0]
    >>> intervention_consistency(before, after, [0])
    0.5
    """
    before = check_codes(codes_before, name="codes_before")
    after = check_codes(codes_after, name="codes_after")
    if before.shape != after.shape:
        raise ValueError(f"codes_before has shape {before.shape} but codes_after {after.shape}")
    latents = [int(j) for j in latents]
    if not latents or any(not 0 <= j < before.shape[1] for j in latents):
        raise ValueError(f"latents {latents} must be non-empty columns in [0, {before.shape[1]})")
    delta = after.astype(np.float64) - before  # (n, L)
    if scale is not None:
        scale = np.asarray(scale, dtype=np.float64)
        if scale.shape != (before.shape[1],) or not (
            np.isfinite(scale).all() and (scale > 0).all()
        ):
            raise ValueError(f"scale must be {before.shape[1]} positive finite values")
        delta = delta / scale
    energy = np.square(delta).sum(axis=0)  # (L,)
    total = energy.sum()
    if total == 0:
        return 0.0
    return float(energy[sorted(set(latents))].sum() / total)

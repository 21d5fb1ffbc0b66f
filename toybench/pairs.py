"""Weakly supervised training pairs: (x₁, x₂) where x₂ shares all but k factors with x₁.

The weak supervision of Locatello et al. 2020, "Weakly-Supervised Disentanglement Without
Compromises" (https://arxiv.org/abs/2002.02886): a model sees pairs of images that differ in a few
factors, never which ones. Here the pairs are exact — drawn from the generator's SCM, not searched
for in a fixed grid — in one of two modes (``PAIR_MODES``):

``conditional``
    the changed factors are redrawn from the generator's distribution given the kept ones, so the
    second image stays on the correlated training distribution (the setting of Träuble et al.
    2021, https://arxiv.org/abs/2006.07886, Sec. 5).
``intervention``
    the changed factors are set by do(): each takes a level drawn uniformly from its other
    levels, independent of the kept factors (the intervention cuts their parents), so pairs
    leave the correlated distribution. This is disentanglement_lib's ``simple_dynamics``
    (uniform redraws of the chosen factors) with every changed factor really changed.

A pair (row ``i``):

1. x₁ is row ``i`` of the run's training split — the same images and factors as every other
   baseline's training split of this seed (stream ``data.train``);
2. k is ``PairSpec.k``, or drawn uniformly from 1..K − 1 when ``k = 0`` (Locatello et al.'s
   default); the k changed factors S are a uniformly random k-subset (stream ``pairs.changed``);
3. their new levels a (stream ``pairs.levels``) differ from x₁'s in every changed factor, so x₂
   differs from x₁ in exactly k factors; every other factor keeps x₁'s level — in intervention
   mode too: a child of a changed factor is not recomputed, it is one of the kept factors;
4. x₂ is the generator's rendering of x₁'s factors with S set to a.

Exact conditional draws. With the factorization p(f) = Π_v p(f_v | f_pa(v)), the conditional of
the changed factors given the kept ones is

    p(f_S = a | f_−S) ∝ Π_{v ∈ S ∪ ch(S)} p(f_v | f_pa(v)) at (a, f_−S):

every other factor's term does not involve a and cancels. The remaining terms read the kept
factors only through E(S) = pa(S) ∪ ch(S) ∪ pa(ch(S)) minus S (S's Markov blanket), so all pairs
with the same S and the same levels on E(S) share one table over the M_S = Π_{s ∈ S} L_s joint
levels of S. Each distinct (S, E(S)-levels) group's table is enumerated once (the sum of the
|S ∪ ch(S)| log-CPT terms at every joint level, then normalized); each pair draws from its
group's table by inverse CDF and rejects draws that leave a changed factor at x₁'s level —
accepted draws follow the table restricted to the joint levels where every changed factor
changes, which is the target p(f_S = a | f_−S, a_s ≠ x₁_s for all s ∈ S) exactly. A pair still
rejected after ``REJECTION_ROUNDS`` rounds draws from its table with those levels zeroed (also
exact). A pair whose restricted table has no mass — its kept factors leave a changed factor no
other level, e.g. a deterministic table row or a σ so small that the band underflows — is an
error (intervention mode has no such limit).

Cost (conditional mode): time O(Σ_groups M_S · |S ∪ ch(S)|) for the tables plus O(n log M_S) per
rejection round for the draws; memory O(max(``TABLE_CHUNK``, M_S)) for the tables in flight
(groups are enumerated a chunk at a time); there are at most min(n, Π_{e ∈ E(S)} L_e) groups
per subset S. M_S must be at most ``MAX_JOINT_STATES`` (checked by
`check_pairing` before any work). Examples: toy-causal (K = 6) has tables of at most
6·8·8·8·5 = 15,360 levels; dsprites-pairs (K = 5, k ≤ 4) at most 6·40·32·32 = 245,760 levels
(S = all but shape, three groups: one per shape). Intervention mode is O(n·K).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from toybench import seeds
from toybench.configs import PAIR_MODES
from toybench.data import Dataset
from toybench.errors import ToybenchError
from toybench.scm import MAX_JOINT_STATES, Generator, corr_label, data_card, inverse_cdf

#: Rounds of rejection before a pair draws from its restricted table directly.
REJECTION_ROUNDS = 16
#: Table entries (groups × joint levels) enumerated at once.
TABLE_CHUNK = 1 << 20


@dataclass(frozen=True)
class PairSpec:
    """How a model's training pairs are drawn.

    Attributes
    ----------
    mode : str
        ``"conditional"`` or ``"intervention"`` (``PAIR_MODES``).
    k : int
        Factors that differ within a pair, 1..K − 1; 0 = drawn uniformly from 1..K − 1 per pair.
    """

    mode: str
    k: int

    def __post_init__(self) -> None:
        if self.mode not in PAIR_MODES:
            raise ToybenchError(f"pair mode {self.mode!r}; valid: {', '.join(PAIR_MODES)}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise ToybenchError(f"pair k must be an integer ≥ 0 (0 = uniform), got {self.k!r}")

    @property
    def k_label(self) -> str:
        """``"2"`` or ``"uniform 1..K-1"``, for cards and messages."""
        return str(self.k) if self.k else "uniform 1..K-1"


@dataclass(frozen=True, eq=False)
class PairedDataset:
    """Training pairs: x₁ (the training split) and x₂ (x₁ with k factors changed).

    Attributes
    ----------
    images : np.ndarray
        ``(n, 2, C, H, W)`` uint8: ``images[:, 0]`` is x₁, ``images[:, 1]`` is x₂.
    factors : np.ndarray
        ``(n, 2, K)`` int64 level indices of x₁ and x₂.
    changed : np.ndarray
        ``(n, K)`` bool: the factors in which x₂ differs from x₁ (exactly ``k[i]`` per row).
        Known for tests and cards; models never see it.
    k : np.ndarray
        ``(n,)`` int64, the number of changed factors of each pair.
    spec : PairSpec
    concepts : tuple of str
    generator : str
    corr : float
    seed : int
    card : dict
        The training split's data card plus ``"pairing"``: ``mode``, ``k``, ``n_pairs``,
        ``k_counts``, ``changed_counts`` and the realized dependence of the x₂ factors
        (``second``: empirical ``edges`` and ``pairs`` as in the data card).
    """

    images: np.ndarray
    factors: np.ndarray
    changed: np.ndarray
    k: np.ndarray
    spec: PairSpec
    concepts: tuple[str, ...]
    generator: str
    corr: float
    seed: int
    card: dict

    def __len__(self) -> int:
        return len(self.factors)


def check_pairing(generator: Generator, spec: PairSpec) -> None:
    """Refuse (one line) pairs that ``generator`` cannot give, before anything is drawn.

    k must be at most K − 1 (a pair must keep a factor) and K at least 2; in conditional mode
    the largest changed subset's joint levels must be enumerable (≤ ``MAX_JOINT_STATES``).
    """
    sizes = generator.scm.sizes
    n_factors = len(sizes)
    if n_factors < 2:
        raise ToybenchError(f"{generator.name} has {n_factors} factor; pairs that keep some "
                            f"factors and change others need at least 2")
    if spec.k > n_factors - 1:
        raise ToybenchError(f"pair_k={spec.k}: {generator.name} has {n_factors} factors, so a "
                            f"pair changes 1..{n_factors - 1} of them (0 = uniform)")
    if spec.mode == "conditional":
        largest = spec.k or n_factors - 1
        states = math.prod(sorted(sizes, reverse=True)[:largest])
        if states > MAX_JOINT_STATES:
            raise ToybenchError(f"conditional pairs of {generator.name} with k={largest} "
                                f"enumerate up to {states:,} joint levels of the changed "
                                f"factors, more than {MAX_JOINT_STATES:,}; use a smaller "
                                f"pair_k or pair_mode=intervention")


def make_pairs(generator: Generator, first: Dataset, spec: PairSpec, *, seed: int
               ) -> PairedDataset:
    """Draw the second image of each training pair (see the module docstring).

    Parameters
    ----------
    generator : Generator
        The generator ``first`` was drawn from.
    first : Dataset
        The training split: x₁ of every pair (its factors, images and σ).
    spec : PairSpec
    seed : int
        The run seed: streams ``pairs.changed`` and ``pairs.levels``.

    Returns
    -------
    PairedDataset

    Raises
    ------
    ToybenchError
        A spec the generator cannot give (`check_pairing`), or, in conditional mode, a pair
        whose kept factors leave a changed factor no other level.
    """
    check_pairing(generator, spec)
    if tuple(first.concepts) != generator.concept_names:
        raise ToybenchError(f"the training split has concepts {list(first.concepts)}, not "
                            f"{generator.name}'s {list(generator.concept_names)}")
    seed = seeds.check_seed(seed)
    x1 = np.asarray(first.factors, dtype=np.int64)  # (n, K)
    changed, k = _changed_factors(len(x1), x1.shape[1], spec.k,
                                  seeds.numpy_rng(seed, "pairs.changed"))
    levels_rng = seeds.numpy_rng(seed, "pairs.levels")
    if spec.mode == "intervention":
        x2 = _intervened(generator, x1, changed, levels_rng)
    else:
        x2 = _conditional(generator, first.corr, x1, changed, levels_rng)
    images = np.stack([first.images, generator.render(x2)], axis=1)  # (n, 2, C, H, W)
    factors = np.stack([x1, x2], axis=1)  # (n, 2, K)
    card = _pairs_card(generator, first, spec, x2, changed, k)
    return PairedDataset(images, factors, changed, k, spec, generator.concept_names,
                         generator.name, first.corr, seed, card)


def _changed_factors(n: int, n_factors: int, k: int, rng: np.random.Generator):
    """``(changed (n, K) bool, k (n,) int64)``: k per row (fixed or uniform in 1..K − 1), then
    the first k columns of a uniformly random permutation of the K factors."""
    ks = (np.full(n, k, dtype=np.int64) if k else
          rng.integers(1, n_factors, size=n, dtype=np.int64))  # (n,) in 1..K-1
    # rank of each factor's key within its row: a uniformly random order of the K factors
    rank = np.argsort(np.argsort(rng.random((n, n_factors)), axis=1), axis=1)  # (n, K)
    return rank < ks[:, None], ks


def _intervened(generator: Generator, x1: np.ndarray, changed: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """do(f_S = a): each changed factor takes a uniformly drawn other level; the rest kept."""
    sizes = np.asarray(generator.scm.sizes, dtype=np.int64)  # (K,)
    shift = rng.integers(1, sizes[None, :], size=x1.shape)  # (n, K) in 1..L-1 per column
    return np.where(changed, (x1 + shift) % sizes[None, :], x1)


def _conditional(generator: Generator, corr: float, x1: np.ndarray, changed: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """Exact draws of the changed factors given the kept ones, every changed factor changed."""
    scm = generator.scm
    names = scm.concept_names
    log_cpt = {}
    with np.errstate(divide="ignore"):
        for name in names:
            log_cpt[name] = np.log(scm.cpt(name, corr))  # (Π parent levels, L); -inf = no mass
    x2 = x1.copy()
    subsets = np.packbits(changed, axis=1, bitorder="little")  # (n, ceil(K/8)) subset keys
    keys, which = np.unique(subsets, axis=0, return_inverse=True)
    for key_index in range(len(keys)):  # one subset S at a time, in a fixed (sorted) order
        rows = np.flatnonzero(which.ravel() == key_index)
        cols = tuple(int(c) for c in np.flatnonzero(changed[rows[0]]))
        x2[rows[:, None], np.array(cols)[None, :]] = _draw_subset(
            scm, log_cpt, cols, x1[rows], rng, generator.name, corr)
    return x2


def _draw_subset(scm, log_cpt, cols: tuple[int, ...], x1: np.ndarray,
                 rng: np.random.Generator, name: str, corr: float) -> np.ndarray:
    """New levels ``(m, |S|)`` of the changed columns ``cols`` for the rows ``x1`` ``(m, K)``."""
    names = scm.concept_names
    changed = [names[c] for c in cols]
    terms = sorted({*changed, *(ch for c in changed for ch in scm.dag.children(c))},
                   key=names.index)  # S ∪ ch(S): the factors whose CPT term involves S
    read = {scm.index(p) for t in terms for p in (t, *scm.mechanisms[t].parents)}
    evidence = tuple(sorted(read - set(cols)))  # E(S): the kept factors those terms read
    s_sizes = tuple(scm.sizes[c] for c in cols)
    n_joint = math.prod(s_sizes)
    grid = np.indices(s_sizes).reshape(len(cols), n_joint)  # (|S|, M): level of each changed col
    if evidence:
        groups, group_of = np.unique(x1[:, list(evidence)], axis=0, return_inverse=True)
    else:
        groups, group_of = np.zeros((1, 0), np.int64), np.zeros(len(x1), np.int64)
    group_of = group_of.ravel()  # (m,) group of each row
    original = x1[:, list(cols)]  # (m, |S|)
    drawn = np.empty_like(original)
    chunk = max(1, TABLE_CHUNK // n_joint)  # groups whose tables are enumerated at once
    for start in range(0, len(groups), chunk):
        tables = _group_tables(scm, log_cpt, terms, cols, evidence, grid,
                               groups[start:start + chunk])  # (G, M)
        todo = np.flatnonzero((group_of >= start) & (group_of < start + chunk))
        for _round in range(REJECTION_ROUNDS):
            if not len(todo):
                break
            flat = inverse_cdf(tables, group_of[todo] - start, rng.random(len(todo)))  # (t,)
            levels = grid[:, flat].T  # (t, |S|)
            ok = np.all(levels != original[todo], axis=1)
            drawn[todo[ok]] = levels[ok]
            todo = todo[~ok]
        for row in todo:  # rare: most of the table's mass leaves some changed factor unchanged
            keep = np.all(grid != original[row][:, None], axis=0)  # (M,) every factor changes
            masked = np.where(keep, tables[group_of[row] - start], 0.0)
            total = masked.sum()
            if not total > 0:
                kept = ", ".join(f"{names[c]}={scm.concepts[c].labels[x1[row, c]]}"
                                 for c in range(len(names)) if c not in cols)
                raise ToybenchError(
                    f"conditional pairs of {name} at σ = {corr_label(corr)}: given {kept}, "
                    f"{', '.join(changed)} cannot {'all ' if len(changed) > 1 else ''}change "
                    f"(the kept factors leave no other level); use pair_mode=intervention, a "
                    f"larger σ or another pair_k")
            flat = inverse_cdf((masked / total)[None, :], np.zeros(1, np.int64), rng.random(1))
            drawn[row] = grid[:, flat[0]]
    return drawn


def _group_tables(scm, log_cpt, terms, cols, evidence, grid, groups) -> np.ndarray:
    """``(G, M)`` normalized tables of the changed columns' joint levels for evidence rows
    ``groups`` ``(G, |E|)``: the sum of the terms' log-CPTs, exponentiated and normalized."""
    def level(column: int) -> np.ndarray:  # (1, M) for a changed column, (G, 1) for a kept one
        if column in cols:
            return grid[cols.index(column)][None, :]
        return groups[:, evidence.index(column)][:, None]

    log_p = np.zeros((len(groups), grid.shape[1]))  # (G, M)
    for name in terms:
        row = np.zeros((1, 1), dtype=np.int64)  # flat parent combination, row-major
        for parent in scm.mechanisms[name].parents:
            row = row * scm.concept(parent).n_levels + level(scm.index(parent))
        log_p = log_p + log_cpt[name][row, level(scm.index(name))]
    top = log_p.max(axis=1, keepdims=True)  # finite: x1's own levels have mass
    p = np.exp(log_p - top)
    return p / p.sum(axis=1, keepdims=True)


def _pairs_card(generator: Generator, first: Dataset, spec: PairSpec, x2: np.ndarray,
                changed: np.ndarray, k: np.ndarray) -> dict[str, Any]:
    """The training split's card plus what the pairs are: mode, k, counts and x₂'s dependence."""
    second = data_card(generator.scm, first.corr, factors=x2, max_states=0)  # empirical
    names = generator.concept_names
    values, counts = np.unique(k, return_counts=True)
    return {
        **first.card,
        "pairing": {
            "mode": spec.mode,
            "k": spec.k if spec.k else "uniform 1..K-1",
            "n_pairs": int(len(x2)),
            "k_counts": {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
            "changed_counts": {n: int(c) for n, c in zip(names, changed.sum(axis=0),
                                                         strict=True)},
            "second": {"source": second["source"], "edges": second["edges"],
                       "pairs": second["pairs"]},
        },
    }

"""The causal engine: concepts with finite levels, a DAG, mechanisms, sampling, interventions.

A generator is a structural causal model (SCM) over *concepts*, each taking one of a finite ordered
set of levels with a normalized value ``u`` in [0, 1]. A child's level given its parents follows one
of three mechanisms:

``band``
    P(child = j | parents) ∝ exp(−(u_j − g)² / (2σ²)) with g = bias + Σ_i α_i · u(parent_i) — the
    correlation model of Träuble et al. 2021, "On Disentangled Representations Learned from
    Correlated Data" (https://arxiv.org/abs/2006.07886) and Roth et al. 2023, "Disentanglement of
    Correlated Factors via Hausdorff Factorized Support" (https://arxiv.org/abs/2209.15456).
    Categorical parents enter through a per-level value table (by default the concept's own ``u``).
``table``
    an explicit conditional probability table, one row per combination of parent levels.
``function``
    a named deterministic function of the parents' physical values (``FUNCTIONS``, a plain dict —
    nothing is ever evaluated from a spec), with the band noise of width σ around its value.

σ (``corr``) is the band width: the smaller, the stronger the dependence. One global σ applies to
every mechanism unless the spec fixes the mechanism's own ``sigma``. ``corr = inf`` decorrelates
the whole model: every non-root concept becomes uniform over its levels (the σ → ∞ limit of the
band), whatever its mechanism or fixed σ; roots keep their own distribution. This makes the
σ = ∞ test split a product of independent factors.

Sampling draws one exogenous uniform per node and inverts the conditional CDF, so the factors are a
deterministic function of the noise. ``do(c = v)`` replaces c's mechanism by the constant v (cutting
its incoming edges); a counterfactual keeps the noise, intervenes and recomputes the descendants of
the intervened concepts only (Pearl's abduction–action–prediction, exact here because the noise is
stored rather than inferred). Where the state space is small enough, the exact joint distribution is
enumerated through the factorization, and the data card's statistics are computed exactly from it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from toybench.errors import ToybenchError

KINDS = ("categorical", "ordinal")
MAX_JOINT_STATES = (
    1 << 22
)  # ~4.2 M states: the exact joint of the full dSprites grid fits (737,280)


# --------------------------------------------------------------------------------------------------
# σ
# --------------------------------------------------------------------------------------------------
def parse_corr(value: Any) -> float:
    """Validate a correlation width σ given as a number or a string ("0.2", "inf").

    Every float σ > 0 works (``band_probs`` is exact from the smallest subnormal to the largest
    float); text that a float cannot hold is refused rather than rounded to 0 or to ``inf``
    (which would silently mean "independent", see the module docstring).

    Parameters
    ----------
    value : float, int or str
        σ > 0; ``inf`` (or "inf", "infinity") means independent.

    Returns
    -------
    float
        σ as a float (``math.inf`` for independent).

    Raises
    ------
    ToybenchError
        If σ is not a number, is NaN, or is ≤ 0; or is text whose value rounds to 0 or to
        infinity as a float ("1e-400", "1e400").
    """
    if isinstance(value, bool):
        raise ToybenchError(f"corr must be a number > 0 or 'inf', got {value!r}")
    text = None
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            sigma = float(text)
        except ValueError:
            raise ToybenchError(
                f"corr must be a number > 0 or 'inf', got {value[:60]!r}"
            ) from None
    elif isinstance(value, (int, float, np.integer, np.floating)):
        try:
            sigma = float(value)
        except OverflowError:  # an int beyond the float range
            raise ToybenchError(
                "corr is too large for a float (the largest finite σ is 1.8e308); use 'inf' "
                "for independent factors"
            ) from None
    else:
        raise ToybenchError(f"corr must be a number > 0 or 'inf', got {value!r}")
    if math.isnan(sigma) or sigma <= 0:
        if text is not None and sigma == 0 and any(c in "123456789" for c in text.split("e")[0]):
            raise ToybenchError(
                f"corr {value!r} rounds to 0 as a float (the smallest σ > 0 is 5e-324)"
            )
        raise ToybenchError(f"corr must be a number > 0 or 'inf', got {value!r}")
    if text is not None and math.isinf(sigma) and text.lstrip("+") not in ("inf", "infinity"):
        raise ToybenchError(
            f"corr {value!r} is too large for a float (the largest finite σ is 1.8e308); use "
            "'inf' for independent factors"
        )
    return sigma


def _json_sigma(sigma: float | None) -> float | str | None:
    """σ for JSON (which has no infinity): a number, ``"inf"``, or None."""
    return None if sigma is None else ("inf" if math.isinf(sigma) else float(sigma))


def corr_label(sigma: float) -> str:
    """σ as text for file names and JSON: ``"inf"`` or the shortest float repr (``"0.2"``)."""
    return "inf" if math.isinf(sigma) else repr(float(sigma))


# --------------------------------------------------------------------------------------------------
# Concepts and the DAG
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Concept:
    """A ground-truth variable with a finite ordered set of levels.

    Attributes
    ----------
    name : str
    kind : {"categorical", "ordinal"}
    labels : tuple of str
        One label per level (categorical: the level names; ordinal: the values as text).
    values : np.ndarray
        Physical value per level, float64 ``(L,)`` (categorical: the level index).
    u : np.ndarray
        Normalized value per level in [0, 1], float64 ``(L,)``: ordinal values rescaled min→0,
        max→1; categorical levels from the spec's value table (default evenly spaced).
    doc : str
        What the concept means, one or two sentences.
    """

    name: str
    kind: str
    labels: tuple[str, ...]
    values: np.ndarray
    u: np.ndarray
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ToybenchError(
                f"concept {self.name!r}: kind {self.kind!r}; allowed: {', '.join(KINDS)}"
            )
        if len(self.labels) < 2:
            raise ToybenchError(
                f"concept {self.name!r} needs at least 2 levels, got {len(self.labels)}"
            )
        for attr in ("values", "u"):
            arr = np.asarray(getattr(self, attr), dtype=np.float64)
            if arr.shape != (len(self.labels),) or not np.all(np.isfinite(arr)):
                raise ToybenchError(
                    f"concept {self.name!r}: {attr} must be {len(self.labels)} finite numbers"
                )
            arr.setflags(write=False)
            object.__setattr__(self, attr, arr)
        if np.any(self.u < 0) or np.any(self.u > 1):
            raise ToybenchError(f"concept {self.name!r}: normalized values u must lie in [0, 1]")

    @property
    def n_levels(self) -> int:
        """Number of levels L."""
        return len(self.labels)

    @classmethod
    def ordinal(cls, name: str, values: Sequence[float], doc: str = "") -> Concept:
        """An ordinal concept whose ``u`` rescales ``values`` (strictly increasing) to [0, 1]."""
        vals = np.asarray(values, dtype=np.float64)
        if vals.ndim != 1 or len(vals) < 2:
            raise ToybenchError(f"concept {name!r} needs at least 2 levels, got {vals.size}")
        if not np.all(np.diff(vals) > 0):
            raise ToybenchError(f"concept {name!r}: ordinal values must be strictly increasing")
        u = (vals - vals[0]) / (vals[-1] - vals[0])
        return cls(name, "ordinal", tuple(f"{v:g}" for v in vals), vals, u, doc)

    @classmethod
    def categorical(
        cls, name: str, labels: Sequence[str], u: Sequence[float] | None = None, doc: str = ""
    ) -> Concept:
        """A categorical concept; ``u`` is its value table (default ``i / (L − 1)``)."""
        labels = tuple(labels)
        if len(set(labels)) != len(labels):
            raise ToybenchError(f"concept {name!r}: level names must be distinct")
        n = len(labels)
        table = np.linspace(0.0, 1.0, n) if u is None else np.asarray(u, dtype=np.float64)
        return cls(name, "categorical", labels, np.arange(n, dtype=np.float64), table, doc)

    def physical_to_u(self, value: np.ndarray) -> np.ndarray:
        """Map physical values onto the normalized scale (ordinal concepts: linear in the value)."""
        lo, hi = self.values[0], self.values[-1]
        return (np.asarray(value, dtype=np.float64) - lo) / (hi - lo)


@dataclass(frozen=True)
class DAG:
    """A directed acyclic graph over concept names.

    Parameters
    ----------
    nodes : tuple of str
        Node names; their order is the concept order and breaks ties in ``topological_order``.
    edges : tuple of (parent, child)

    Raises
    ------
    ToybenchError
        On an unknown node in an edge, a duplicate edge, a self-loop or a cycle (the message names
        the cycle, e.g. ``a -> b -> c -> a``).
    """

    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str], ...] = ()
    _parents: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _children: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nodes, edges = tuple(self.nodes), tuple((str(a), str(b)) for a, b in self.edges)
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "edges", edges)
        if len(set(nodes)) != len(nodes):
            raise ToybenchError(f"duplicate node names in {list(nodes)}")
        known = set(nodes)
        for a, b in edges:
            for end in (a, b):
                if end not in known:
                    raise ToybenchError(
                        f"edge {a} -> {b}: unknown concept {end!r}; known: {', '.join(nodes)}"
                    )
        if len(set(edges)) != len(edges):
            raise ToybenchError("duplicate edge in the DAG")
        parents = {n: tuple(a for a, b in edges if b == n) for n in nodes}
        children = {n: tuple(b for a, b in edges if a == n) for n in nodes}
        object.__setattr__(self, "_parents", parents)
        object.__setattr__(self, "_children", children)
        cycle = self._find_cycle()
        if cycle:
            raise ToybenchError(f"the DAG has a cycle: {' -> '.join(cycle)}")

    def _find_cycle(self) -> list[str] | None:
        """Depth-first search; returns the first cycle found as ``[a, b, ..., a]`` or None."""
        state = dict.fromkeys(self.nodes, 0)  # 0 unseen, 1 on the stack, 2 done
        stack: list[str] = []

        def visit(node: str) -> list[str] | None:
            state[node] = 1
            stack.append(node)
            for child in self._children[node]:
                if state[child] == 1:
                    return stack[stack.index(child) :] + [child]
                if state[child] == 0 and (found := visit(child)):
                    return found
            stack.pop()
            state[node] = 2
            return None

        for node in self.nodes:
            if state[node] == 0 and (found := visit(node)):
                return found
        return None

    def parents(self, name: str) -> tuple[str, ...]:
        """Direct causes of ``name`` in edge order."""
        return self._parents[self._check(name)]

    def children(self, name: str) -> tuple[str, ...]:
        """Direct effects of ``name``."""
        return self._children[self._check(name)]

    def descendants(self, name: str) -> frozenset[str]:
        """All nodes reachable from ``name`` (excluding ``name``)."""
        seen: set[str] = set()
        todo = list(self.children(name))
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(self._children[node])
        return frozenset(seen)

    def ancestors(self, name: str) -> frozenset[str]:
        """All nodes from which ``name`` is reachable (excluding ``name``)."""
        seen: set[str] = set()
        todo = list(self.parents(name))
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(self._parents[node])
        return frozenset(seen)

    def layers(self) -> list[tuple[str, ...]]:
        """Nodes grouped by depth: roots first, then nodes whose parents lie in earlier layers."""
        depth: dict[str, int] = {}
        remaining = list(self.nodes)
        while remaining:
            ready = [n for n in remaining if all(p in depth for p in self._parents[n])]
            for n in ready:
                depth[n] = 1 + max((depth[p] for p in self._parents[n]), default=-1)
            remaining = [n for n in remaining if n not in depth]
        n_layers = 1 + max(depth.values(), default=-1)
        return [tuple(n for n in self.nodes if depth[n] == k) for k in range(n_layers)]

    def topological_order(self) -> tuple[str, ...]:
        """Parents before children; ties keep the node order."""
        return tuple(n for layer in self.layers() for n in layer)

    def _check(self, name: str) -> str:
        if name not in self._parents:
            raise KeyError(f"unknown concept {name!r}; valid: {', '.join(self.nodes)}")
        return name


# --------------------------------------------------------------------------------------------------
# Mechanisms: each returns a conditional probability table (M, L) over all M parent combinations
# (row-major over the parents in their declared order) and the child's L levels.
# --------------------------------------------------------------------------------------------------
#: σ range where the textbook form −(u − g)² / (2σ²) is computed as written: 2σ² is a normal,
#: finite float. Outside it (and wherever that form overflows) ``band_probs`` uses the scaled form.
_PLAIN_SIGMA = (math.sqrt(sys.float_info.min), math.sqrt(sys.float_info.max / 2))


def band_probs(g: np.ndarray, u_child: np.ndarray, sigma: float) -> np.ndarray:
    """P(j) ∝ exp(−(u_j − g)² / (2σ²)) per row (Träuble et al. 2021, eq. 1).

    Exact for every σ > 0. For 1.5e-154 ≤ σ ≤ 9.5e153 it is computed as written (shifted by the
    row maximum); outside that range σ² underflows or overflows, so it is computed as
    exp(−½ · (d_j − d_min)/σ · (d_j + d_min)/σ) with d = |u − g|, which never forms σ²: tiny σ
    gives the argmax limit (all mass on the nearest level, split equally between exact ties), huge
    σ the uniform limit.

    Parameters
    ----------
    g : np.ndarray
        Band centres ``(M,)`` on the normalized scale.
    u_child : np.ndarray
        Normalized level values ``(L,)`` of the child.
    sigma : float
        Band width > 0; ``inf`` gives the uniform distribution.

    Returns
    -------
    np.ndarray
        ``(M, L)`` rows summing to 1.
    """
    g = np.asarray(g, dtype=np.float64)
    if math.isinf(sigma):
        return np.full((g.size, u_child.size), 1.0 / u_child.size)
    if _PLAIN_SIGMA[0] <= sigma <= _PLAIN_SIGMA[1]:
        with np.errstate(over="ignore"):
            logits = -((u_child[None, :] - g[:, None]) ** 2) / (2.0 * sigma**2)  # (M, L)
        top = logits.max(axis=1, keepdims=True)
        if np.isfinite(top).all():
            logits -= top  # stable at tiny σ: the nearest level keeps mass
            probs = np.exp(logits)
            return probs / probs.sum(axis=1, keepdims=True)
    return _band_probs_scaled(np.abs(u_child[None, :] - g[:, None]), sigma)


def _band_probs_scaled(distance: np.ndarray, sigma: float) -> np.ndarray:
    """``band_probs`` from distances ``|u_j − g|`` ``(M, L)`` without forming σ² or d²/σ²:
    logit_j = −½ · (d_j − d_min)/σ · (d_j + d_min)/σ = −(d_j² − d_min²)/(2σ²), 0 at the nearest."""
    nearest = distance.min(axis=1, keepdims=True)  # (M, 1)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        gap = (distance - nearest) / sigma  # ≥ 0; inf where σ is tiny
        span = (distance + nearest) / sigma
        logits = np.where(gap == 0, 0.0, -0.5 * gap * span)  # (M, L), −inf = no mass
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def _parent_grid(sizes: Sequence[int]) -> list[np.ndarray]:
    """Level index of each parent for every one of the M = Π sizes combinations (row-major)."""
    if not sizes:
        return []
    return [a.ravel() for a in np.indices(tuple(sizes))]


@dataclass(frozen=True, eq=False)
class Root:
    """A root concept: uniform over its levels or given probabilities."""

    probs: np.ndarray | None = None  # (L,) or None = uniform
    parents: tuple[str, ...] = ()
    sigma: float | None = None
    kind: str = "root"

    def cpt(self, parents: Sequence[Concept], child: Concept, sigma: float) -> np.ndarray:
        if self.probs is None:
            return np.full((1, child.n_levels), 1.0 / child.n_levels)
        return np.asarray(self.probs, dtype=np.float64)[None, :]


@dataclass(frozen=True, eq=False)
class Band:
    """g = bias + Σ α_i · u(parent_i); categorical parents through ``parent_u`` value tables."""

    parents: tuple[str, ...]
    weights: tuple[float, ...]  # α per parent
    bias: float = 0.0
    parent_u: Mapping[str, np.ndarray] = field(default_factory=dict)
    sigma: float | None = None  # fixed σ of this child's incoming edges; None = the global corr
    kind: str = "band"

    def centre(self, parents: Sequence[Concept]) -> np.ndarray:
        """Band centre g for every parent combination, ``(M,)``."""
        grid = _parent_grid([p.n_levels for p in parents])
        g = np.full(grid[0].shape if grid else (1,), float(self.bias))
        for concept, idx, alpha in zip(parents, grid, self.weights, strict=True):
            table = self.parent_u.get(concept.name, concept.u)
            g = g + alpha * np.asarray(table, dtype=np.float64)[idx]
        return g

    def cpt(self, parents: Sequence[Concept], child: Concept, sigma: float) -> np.ndarray:
        return band_probs(self.centre(parents), child.u, sigma)


@dataclass(frozen=True, eq=False)
class Table:
    """An explicit conditional probability table ``(Π parent levels, L)``, used as given for
    finite σ (σ only matters through ``corr = inf``, which makes the child uniform)."""

    parents: tuple[str, ...]
    table: np.ndarray
    sigma: float | None = None
    kind: str = "table"

    def cpt(self, parents: Sequence[Concept], child: Concept, sigma: float) -> np.ndarray:
        return np.asarray(self.table, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Function:
    """A named deterministic function of the parents (``FUNCTIONS[name]``) plus band noise:
    g = u_child(f(parent values)). Parents enter as physical values (categorical: level index)."""

    parents: tuple[str, ...]
    function: str
    sigma: float | None = None
    kind: str = "function"

    def centre(self, parents: Sequence[Concept], child: Concept) -> np.ndarray:
        """Band centre g = u_child(f(parent values)) for every parent combination, ``(M,)``."""
        grid = _parent_grid([p.n_levels for p in parents])
        inputs = [p.values[idx] for p, idx in zip(parents, grid, strict=True)]
        target = np.asarray(FUNCTIONS[self.function](*inputs), dtype=np.float64)  # (M,)
        return child.physical_to_u(target)

    def cpt(self, parents: Sequence[Concept], child: Concept, sigma: float) -> np.ndarray:
        return band_probs(self.centre(parents, child), child.u, sigma)


Mechanism = Root | Band | Table | Function


def _pendulum_shadow(index: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Shadow length (index 0) or position (index 1) from the pendulum renderer's geometry."""

    def shadow(angle: np.ndarray, light: np.ndarray) -> np.ndarray:
        from toybench.render.pendulum import shadow_geometry  # the renderer owns the geometry

        return np.asarray(shadow_geometry(angle, light)[index], dtype=np.float64)

    return shadow


# Named deterministic mechanisms a spec may refer to (never evaluated from text).
FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "pendulum_shadow_length": _pendulum_shadow(0),
    "pendulum_shadow_position": _pendulum_shadow(1),
    "identity": lambda x: np.asarray(x, dtype=np.float64),
    "sum": lambda *xs: np.sum(np.stack(xs), axis=0),
}


def get_function(name: str) -> Callable[..., np.ndarray]:
    """Look up a named mechanism function; the error lists the valid names."""
    try:
        return FUNCTIONS[name]
    except KeyError:
        raise ToybenchError(f"unknown function {name!r}; valid: {', '.join(FUNCTIONS)}") from None


# --------------------------------------------------------------------------------------------------
# The SCM
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SCM:
    """Concepts, DAG and one mechanism per concept; sampling, interventions, the exact joint.

    Parameters
    ----------
    concepts : tuple of Concept
        In concept order (the column order of every factor array).
    mechanisms : dict
        Concept name → mechanism (``Root``, ``Band``, ``Table`` or ``Function``); concepts without
        an entry are uniform roots.
    """

    concepts: tuple[Concept, ...]
    mechanisms: Mapping[str, Mechanism]
    dag: DAG = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(c.name for c in self.concepts)
        mechs = {n: self.mechanisms.get(n, Root()) for n in names}
        for name in self.mechanisms:
            if name not in names:
                raise ToybenchError(
                    f"mechanism for unknown concept {name!r}; known: {', '.join(names)}"
                )
        edges = tuple((p, n) for n in names for p in mechs[n].parents)
        object.__setattr__(self, "dag", DAG(names, edges))
        object.__setattr__(self, "mechanisms", mechs)
        for name in names:
            self._validate_mechanism(name)

    # -- structure ---------------------------------------------------------------------------------
    @property
    def concept_names(self) -> tuple[str, ...]:
        return self.dag.nodes

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of levels of each concept, in concept order."""
        return tuple(c.n_levels for c in self.concepts)

    def concept(self, name: str) -> Concept:
        return self.concepts[self.index(name)]

    def index(self, name: str) -> int:
        """Column of ``name`` in factor arrays."""
        try:
            return self.concept_names.index(name)
        except ValueError:
            raise ToybenchError(
                f"unknown concept {name!r}; valid: {', '.join(self.concept_names)}"
            ) from None

    def edge_sigma(self, child: str, corr: float) -> float:
        """σ on ``child``'s incoming edges: inf if corr is inf, else the fixed or the global σ."""
        if math.isinf(corr):
            return math.inf
        fixed = self.mechanisms[child].sigma
        return corr if fixed is None else float(fixed)

    def cpt(self, name: str, corr: float) -> np.ndarray:
        """Conditional probability table of ``name``: ``(Π parent levels, L)``, rows sum to 1."""
        mech = self.mechanisms[name]
        child = self.concept(name)
        if mech.parents and math.isinf(corr):
            return np.full(
                (int(np.prod([self.concept(p).n_levels for p in mech.parents])), child.n_levels),
                1.0 / child.n_levels,
            )
        parents = [self.concept(p) for p in mech.parents]
        return mech.cpt(parents, child, self.edge_sigma(name, corr))

    def _validate_mechanism(self, name: str) -> None:
        mech, child = self.mechanisms[name], self.concept(name)
        parents = [self.concept(p) for p in mech.parents]
        m = math.prod(p.n_levels for p in parents)  # Python int: no overflow
        if m * child.n_levels > MAX_JOINT_STATES:
            raise ToybenchError(
                f"mechanism of {name!r}: its probability table would have {m:,} parent "
                f"combinations × {child.n_levels:,} levels; at most {MAX_JOINT_STATES:,} entries"
            )
        if mech.sigma is not None and not (mech.sigma > 0):
            raise ToybenchError(f"mechanism of {name!r}: sigma must be > 0, got {mech.sigma}")
        if isinstance(mech, Band):
            if len(mech.weights) != len(mech.parents):
                raise ToybenchError(f"mechanism of {name!r}: one weight per parent")
            for pname, table in mech.parent_u.items():
                if pname not in mech.parents or np.shape(table) != (self.concept(pname).n_levels,):
                    raise ToybenchError(
                        f"mechanism of {name!r}: value table for {pname!r} must be a parent's "
                        f"table of {self.concept(pname).n_levels} numbers"
                    )
            with np.errstate(over="ignore", invalid="ignore"):
                finite = np.isfinite(mech.centre(parents)).all()
            if not finite:
                raise ToybenchError(
                    f"mechanism of {name!r}: the band centre bias + Σ α·u overflows; use "
                    "smaller weights and bias"
                )
        if isinstance(mech, Function):
            get_function(mech.function)
            if child.kind != "ordinal":
                raise ToybenchError(
                    f"mechanism of {name!r}: a function mechanism needs an ordinal child"
                )
            with np.errstate(over="ignore", invalid="ignore"):
                finite = np.isfinite(mech.centre(parents, child)).all()
            if not finite:
                raise ToybenchError(
                    f"mechanism of {name!r}: {mech.function}() of the parents' values is not "
                    "finite for every parent combination"
                )
        if isinstance(mech, (Root, Table)):
            cpt = mech.cpt(parents, child, 1.0)
            if isinstance(mech, Root) and mech.probs is None:
                return
            if cpt.shape != (m, child.n_levels):
                raise ToybenchError(
                    f"mechanism of {name!r}: probabilities must have shape ({m}, {child.n_levels}) "
                    f"(rows: parent combinations, columns: levels), got {cpt.shape}"
                )
            if np.any(cpt < 0) or not np.allclose(cpt.sum(axis=1), 1.0, atol=1e-6):
                raise ToybenchError(
                    f"mechanism of {name!r}: probabilities must be ≥ 0 and sum to 1"
                )

    # -- sampling ----------------------------------------------------------------------------------
    def sample_noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """One exogenous uniform per node: ``(n, K)`` float64 in [0, 1)."""
        return rng.random((_check_n(n), len(self.concepts)))

    def factors_from_noise(
        self, noise: np.ndarray, *, corr: float, do: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """Levels ``(n, K)`` int64 from the noise by inverse CDF, in topological order.

        Parameters
        ----------
        noise : np.ndarray
            ``(n, K)`` uniforms in [0, 1).
        corr : float
            Global σ (``inf`` = independent).
        do : dict, optional
            Concept name → level index (int) or ``(n,)`` int array: hard interventions.
        """
        noise = self._check_noise(noise)
        factors = np.zeros(noise.shape, dtype=np.int64)
        return self._fill(
            factors,
            noise,
            parse_corr(corr),
            self._check_do(do, len(noise)),
            self.dag.topological_order(),
        )

    def sample_factors(
        self, n: int, rng: np.random.Generator, *, corr: float, do: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """Draw ``n`` factor rows ``(n, K)`` int64 (``do`` as in ``factors_from_noise``)."""
        return self.factors_from_noise(self.sample_noise(n, rng), corr=corr, do=do)

    def counterfactual(
        self, factors: np.ndarray, noise: np.ndarray, do: Mapping[str, Any], *, corr: float
    ) -> np.ndarray:
        """Same noise, intervene, recompute the descendants of the intervened concepts only.

        Every other column is returned unchanged from ``factors``.
        """
        noise = self._check_noise(noise)
        factors = np.asarray(factors)
        if factors.shape != noise.shape:
            raise ToybenchError(f"factors {factors.shape} and noise {noise.shape} differ in shape")
        do = self._check_do(do, len(noise))
        affected = set(do).union(*(self.dag.descendants(c) for c in do))
        order = tuple(n for n in self.dag.topological_order() if n in affected)
        return self._fill(factors.astype(np.int64, copy=True), noise, parse_corr(corr), do, order)

    def _fill(self, factors, noise, corr, do, order) -> np.ndarray:
        for name in order:
            k = self.index(name)
            if name in do:
                factors[:, k] = do[name]
                continue
            mech = self.mechanisms[name]
            row = np.zeros(len(factors), dtype=np.int64)  # flat parent combination index
            for p in mech.parents:
                row = row * self.concept(p).n_levels + factors[:, self.index(p)]
            factors[:, k] = inverse_cdf(self.cpt(name, corr), row, noise[:, k])
        return factors

    def _check_noise(self, noise: np.ndarray) -> np.ndarray:
        noise = np.asarray(noise, dtype=np.float64)
        if noise.ndim != 2 or noise.shape[1] != len(self.concepts):
            raise ToybenchError(
                f"noise must have shape (n, {len(self.concepts)}), got {noise.shape}"
            )
        return noise

    def _check_do(self, do: Mapping[str, Any] | None, n: int) -> dict[str, np.ndarray]:
        checked = {}
        for name, level in (do or {}).items():
            size = self.concept(name).n_levels  # unknown name -> ToybenchError listing the valid
            arr = np.asarray(level)
            if arr.dtype.kind not in "iu" or arr.ndim > 1 or (arr.ndim == 1 and len(arr) != n):
                raise ToybenchError(
                    f"do({name}=...) needs an int level or an int array of length {n}"
                )
            if np.any(arr < 0) or np.any(arr >= size):
                raise ToybenchError(f"do({name}=...): level must be in 0..{size - 1}")
            checked[name] = np.broadcast_to(arr.astype(np.int64), (n,))
        return checked

    # -- exact distribution ------------------------------------------------------------------------
    def joint(self, corr: float, *, max_states: int = MAX_JOINT_STATES) -> np.ndarray | None:
        """Exact joint P(levels) ``(L_1, ..., L_K)`` via the factorization, or None if too large."""
        corr = parse_corr(corr)
        if math.prod(self.sizes) > max_states:
            return None
        joint = np.ones(self.sizes, dtype=np.float64)
        for name in self.concept_names:
            axes = [self.index(p) for p in self.mechanisms[name].parents] + [self.index(name)]
            local = self.cpt(name, corr).reshape([self.sizes[a] for a in axes])
            # Put the CPT's axes at their concept positions, broadcasting over the others.
            order = np.argsort(axes)
            shape = [1] * len(self.sizes)
            for a in axes:
                shape[a] = self.sizes[a]
            joint *= np.transpose(local, order).reshape(shape)
        return joint


def inverse_cdf(cpt: np.ndarray, row: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Level = #{j : CDF_row(j) ≤ noise} for each sample, vectorized with one ``searchsorted``.

    Row r's CDF is shifted by r, so all rows form one nondecreasing sequence and sample i searches
    ``r_i + noise_i`` in it.

    Parameters
    ----------
    cpt : np.ndarray
        ``(M, L)`` conditional probabilities.
    row : np.ndarray
        ``(n,)`` int row index per sample.
    noise : np.ndarray
        ``(n,)`` uniforms in [0, 1).

    Returns
    -------
    np.ndarray
        ``(n,)`` int64 levels in 0..L−1.
    """
    m, n_levels = cpt.shape
    cdf = np.cumsum(cpt, axis=1)
    cdf[:, -1] = 1.0  # no rounding gap above the last level
    shifted = (cdf + np.arange(m)[:, None]).ravel()  # (M·L,)
    pos = np.searchsorted(shifted, row + noise, side="right")
    return np.minimum(pos - row * n_levels, n_levels - 1).astype(np.int64)


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ToybenchError(f"n must be a positive integer, got {n!r}")
    return int(n)


# --------------------------------------------------------------------------------------------------
# Data card: realized dependence per edge and per concept pair
# --------------------------------------------------------------------------------------------------
def _pair_stats_exact(p: np.ndarray, ua: np.ndarray, ub: np.ndarray) -> dict[str, float]:
    """Pearson (on u), Spearman (Pearson of mid-rank CDF values) and MI (nats) of a 2-D table."""
    pa, pb = p.sum(axis=1), p.sum(axis=0)

    def pearson(xa: np.ndarray, xb: np.ndarray) -> float:
        ma, mb = pa @ xa, pb @ xb
        cov = (xa - ma) @ p @ (xb - mb)
        va, vb = pa @ (xa - ma) ** 2, pb @ (xb - mb) ** 2
        return float(cov / math.sqrt(va * vb)) if va > 1e-15 and vb > 1e-15 else 0.0

    def midrank(marg: np.ndarray) -> np.ndarray:  # population analogue of average ranks with ties
        return np.cumsum(marg) - marg / 2

    outer = np.outer(pa, pb)
    nz = p > 0
    mi = float(np.sum(p[nz] * np.log(p[nz] / outer[nz])))
    return {
        "pearson": pearson(ua, ub),
        "spearman": pearson(midrank(pa), midrank(pb)),
        "mi": max(mi, 0.0),
    }


def _pair_stats_empirical(a: np.ndarray, b: np.ndarray, ua: np.ndarray, ub: np.ndarray):
    """Empirical counterpart of ``_pair_stats_exact`` from paired level samples."""
    table = np.zeros((len(ua), len(ub)))
    np.add.at(table, (a, b), 1.0)
    return _pair_stats_exact(table / table.sum(), ua, ub)


def data_card(
    scm: SCM,
    corr: float,
    *,
    factors: np.ndarray | None = None,
    max_states: int = MAX_JOINT_STATES,
) -> dict[str, Any]:
    """The data card: σ and the realized Pearson ρ, Spearman ρ and MI of every edge and pair.

    Statistics are exact (from the enumerated joint) where the state space has at most
    ``max_states`` states, otherwise empirical from ``factors``; ``card["source"]`` says which.
    Pearson ρ uses the normalized values u (for categorical concepts, their value table);
    Spearman ρ uses mid-ranks of the level order (exact with ties); MI is in nats and order-free.

    Parameters
    ----------
    scm : SCM
    corr : float
        Global σ.
    factors : np.ndarray, optional
        ``(n, K)`` int levels, required when the joint is too large to enumerate.

    Returns
    -------
    dict
        JSON-serializable: ``corr`` (number or "inf"), ``source``, ``n``, ``concepts``, ``edges``,
        ``pairs``.
    """
    corr = parse_corr(corr)
    joint = scm.joint(corr, max_states=max_states)
    if joint is None and factors is None:
        raise ToybenchError(
            "the joint is too large to enumerate; pass factors for an empirical card"
        )
    names, k = scm.concept_names, len(scm.concepts)

    def stats(i: int, j: int) -> dict[str, float]:
        ui, uj = scm.concepts[i].u, scm.concepts[j].u
        if joint is not None:
            other = tuple(a for a in range(k) if a not in (i, j))
            return _pair_stats_exact(joint.sum(axis=other), ui, uj)
        return _pair_stats_empirical(factors[:, i], factors[:, j], ui, uj)

    pairs = {(i, j): stats(i, j) for i, j in combinations(range(k), 2)}

    def pair_entry(i: int, j: int) -> dict[str, float]:
        s = pairs[(min(i, j), max(i, j))]
        return {k_: round(v, 6) for k_, v in s.items()}

    edges = []
    for parent, child in scm.dag.edges:
        i, j = scm.index(parent), scm.index(child)
        mechanism = scm.mechanisms[child].kind
        # A table's strength is its table; σ only enters through corr = inf.
        sigma = (
            None if mechanism == "table" and not math.isinf(corr) else scm.edge_sigma(child, corr)
        )
        edges.append(
            {
                "parent": parent,
                "child": child,
                "mechanism": mechanism,
                "sigma": _json_sigma(sigma),
                **pair_entry(i, j),
            }
        )
    return {
        "corr": _json_sigma(corr),
        "source": "exact" if joint is not None else "empirical",
        "n": None if joint is not None else int(len(factors)),
        "concepts": [
            {
                "name": c.name,
                "kind": c.kind,
                "labels": list(c.labels),
                "values": [float(v) for v in c.values],
                "u": [float(v) for v in c.u],
                "doc": c.doc,
            }
            for c in scm.concepts
        ],
        "edges": edges,
        "pairs": [{"a": names[i], "b": names[j], **pair_entry(i, j)} for i, j in pairs],
    }


# --------------------------------------------------------------------------------------------------
# Generator: an SCM plus the renderer that draws its factors
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Generator:
    """A benchmark data generator: the SCM of a spec and the renderer that draws it.

    Built by ``toybench.specs.load_generator``; stateless apart from the spec.
    """

    name: str
    description: str
    scm: SCM
    renderer: str
    size: int
    spec_hash: str
    source: str = ""

    @property
    def concepts(self) -> tuple[Concept, ...]:
        return self.scm.concepts

    @property
    def concept_names(self) -> tuple[str, ...]:
        return self.scm.concept_names

    @property
    def dag(self) -> DAG:
        return self.scm.dag

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the rendered images."""
        from toybench.render import RENDERERS

        return (RENDERERS[self.renderer].channels, self.size, self.size)

    def sample_noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, K)`` exogenous uniforms in [0, 1)."""
        return self.scm.sample_noise(n, rng)

    def factors_from_noise(self, noise: np.ndarray, *, corr: float, do=None) -> np.ndarray:
        """``(n, K)`` int64 levels from the noise (see ``SCM.factors_from_noise``)."""
        return self.scm.factors_from_noise(noise, corr=corr, do=do)

    def sample_factors(self, n: int, rng: np.random.Generator, *, corr: float, do=None):
        """``(n, K)`` int64 levels (see ``SCM.sample_factors``)."""
        return self.scm.sample_factors(n, rng, corr=corr, do=do)

    def counterfactual(self, factors: np.ndarray, noise: np.ndarray, do, *, corr: float):
        """Same noise, intervene, recompute descendants (see ``SCM.counterfactual``)."""
        return self.scm.counterfactual(factors, noise, do, corr=corr)

    def joint(self, corr: float) -> np.ndarray | None:
        """Exact joint ``(L_1, ..., L_K)`` or None when the state space is too large."""
        return self.scm.joint(corr)

    def card(self, corr: float, factors: np.ndarray | None = None) -> dict[str, Any]:
        """The data card at σ = ``corr`` (see ``data_card``), naming the generator and spec hash."""
        return {
            "generator": self.name,
            "spec_hash": self.spec_hash,
            **data_card(self.scm, corr, factors=factors),
        }

    def render_inputs(self, factors: np.ndarray) -> dict[str, np.ndarray]:
        """Renderer inputs: level index (categorical) or physical value (ordinal) per concept."""
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != len(self.concepts):
            raise ToybenchError(
                f"factors must have shape (n, {len(self.concepts)}), got {factors.shape}"
            )
        return {
            c.name: factors[:, k] if c.kind == "categorical" else c.values[factors[:, k]]
            for k, c in enumerate(self.concepts)
        }

    def render(self, factors: np.ndarray) -> np.ndarray:
        """Images ``(n, C, H, W)`` uint8 of the factor rows ``(n, K)``."""
        from toybench.render import render

        return render(self.renderer, self.render_inputs(factors), self.size)

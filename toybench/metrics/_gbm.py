"""Fast exact gradient boosting for DCI, re-implementing scikit-learn's GradientBoostingClassifier.

DCI (Eastwood & Williams 2018, https://openreview.net/forum?id=By-7dz-AZ) as computed by
disentanglement_lib (Locatello et al. 2019, https://arxiv.org/abs/1811.12359) fits, per factor,
scikit-learn's ``GradientBoostingClassifier()`` with its defaults and reads its impurity-based
feature importances. That model is Friedman's gradient boosting (Friedman 2001, "Greedy function
approximation: a gradient boosting machine", https://doi.org/10.1214/aos/1013203451) with the
multinomial deviance (binomial deviance for two classes). scikit-learn needs minutes for one DCI
score at n = 10,000 (8,000 training rows, 10 codes, factors of 3, 6, 40, 32 and 32 classes); this
module fits the same five models in 6-7 s of CPU time, split over the available cores.

What is reproduced, following scikit-learn 1.9's ``ensemble/_gb.py``, ``_loss``, and ``tree/``:

* inputs are cast to float32 (scikit-learn's tree ``DTYPE``); thresholds are float64 midpoints
  ``x[p-1] / 2 + x[p] / 2`` of neighbouring sorted values, and neighbours closer than the float32
  ``FEATURE_THRESHOLD`` (1e-7) are not split apart;
* init: class prior log-odds (``logit`` for two classes, the symmetric multinomial logit
  ``log p_k - mean_k log p_k`` otherwise), priors clipped to ``[eps, 1 - eps]``;
* each stage fits one regression tree per class (one in total for two classes) on the negative
  gradient ``y_k - p_k`` computed once per stage; exact best splits over presorted features by the
  squared-error proxy ``S_L² / n_L + S_R² / n_R`` (the same ranking as ``friedman_mse``); depth
  ``max_depth``, ``min_samples_split = 2``, ``min_samples_leaf = 1``; a node whose impurity is at
  most float64 ``eps`` stays a leaf;
* leaf values are the single Newton step of ``_update_terminal_regions``:
  ``mean(y - p) · (K - 1) / K / mean(p (1 - p))`` (no ``(K - 1) / K`` for two classes), zero when
  the denominator is below 1e-150; predictions add ``learning_rate ×`` the leaf value;
* importances: per tree, ``Σ_nodes n_t·imp_t − n_L·imp_L − n_R·imp_R`` over split nodes (divided
  by the root size), averaged over all trees with a split, then normalized to sum 1 (zeros when no
  tree splits);
* predictions: ``argmax`` of the raw scores (``raw >= 0`` for two classes).

Differences: scikit-learn visits features in a random order per node, so among *exactly* tied
candidate splits it may choose another feature than this module (which breaks ties between
features uniformly at random with a hash of ``seed``); sums are accumulated in a different order,
so importances agree to about 1e-12 relative where no tie intervenes. No global random state is
used.

How it is fast: every tree of a stage — all classes of all factors given to `fit_gbm_factors` —
is grown at once, level by level. Per level and feature, one pass over the presorted rows updates
every (node, tree) lane (running left sum and count; a candidate split is scored when a row of
the lane's node arrives), branch-free over contiguous lanes so that it compiles to SIMD code,
taking four rows per lane visit so the lane state stays in registers; the root level, where every
row is in every tree's node, has a cheaper pass of its own. Every other per-stage step is a pass
over rows with the trees innermost. The cost is about ``stages × levels × features × rows ×
nodes per level × trees`` lane updates, and a lane's result never depends on the other lanes, so
factors are split into groups fitted in parallel threads with bit-identical results.

The boosting core is compiled with numba (``cache=True``: compiled once per installation, 10-15
s, not per call) and releases the GIL.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numba
import numpy as np

__all__ = ["GBMFit", "fit_gbm", "fit_gbm_factors", "load_compiled"]

#: scikit-learn's ``FEATURE_THRESHOLD``: float32 neighbours closer than this are one value.
_FEATURE_THRESHOLD = np.float32(1e-7)
#: scikit-learn's tree ``EPSILON``: a node with impurity at most this stays a leaf.
_EPSILON = float(np.finfo(np.float64).eps)
#: ``_safe_divide`` in ``ensemble/_gb.py``: a Newton step with a smaller denominator is 0.
_TINY_HESSIAN = 1e-150
#: Deepest trees supported (leaf codes ``-2 - heap index`` are stored as int16).
_MAX_DEPTH = 14
#: Trees per stage are padded to a multiple of this (doubles per 512-bit register).
_LANES = 8


class GBMFit(NamedTuple):
    """Result of `fit_gbm`.

    Attributes
    ----------
    importance : np.ndarray, shape (L,)
        Impurity-based feature importances (``feature_importances_``), summing to 1 unless no
        tree ever split (then all zeros).
    train_accuracy : float
        Fraction of training rows whose predicted class equals the label.
    test_accuracy : float
        Fraction of test rows whose predicted class equals the label.
    """

    importance: np.ndarray
    train_accuracy: float
    test_accuracy: float


@numba.njit(cache=True, nogil=True, inline="always")
def _candidate(
    member,
    g,
    x,
    x_plus,
    position,
    s_left,
    n_left,
    last_plus,
    best_num,
    best_den,
    best_position,
    lane_total,
    lane_count,
):
    """One row of one lane in `_scan_feature`: score the split just before the row (if the row
    belongs to the lane's node and its value exceeds the previous member's by more than
    ``FEATURE_THRESHOLD``; ``last_plus`` starts at +inf, so never at the node's first row),
    then take the row in.

    Branch-free (selects only) so that the loop over lanes compiles to SIMD code.
    """
    s_right = lane_total - s_left
    n_right = lane_count - n_left
    num = s_left * s_left * n_right + s_right * s_right * n_left
    den = n_left * n_right
    better = member & (x > last_plus) & (num * best_den > best_num * den)
    best_num = num if better else best_num
    best_den = den if better else best_den
    best_position = position if better else best_position
    last_plus = x_plus if member else last_plus
    s_left = s_left + g if member else s_left
    n_left = n_left + 1.0 if member else n_left
    return s_left, n_left, last_plus, best_num, best_den, best_position


@numba.njit(cache=True, nogil=True)
def _scan_feature(order, values, neg_gradient, node, n_nodes, lane_total, lane_count):
    """Best split of every (node, tree) lane along one feature, in one pass over its rows.

    ``order (n,)`` lists the training rows by ascending ``values (n,)`` (float32). Row ``i``
    belongs, in tree ``t``, to node ``node[i, t]`` of the current level (-1: in a leaf);
    ``neg_gradient`` and ``node`` have one extra all-leaf row ``n`` that pads the last block.
    Every lane ``(a, t)`` keeps its running left sum and count; the candidate split between a
    lane's previous row and row ``i`` is scored when row ``i`` arrives, if the two values are
    more than ``FEATURE_THRESHOLD`` apart (compared as float32, like scikit-learn). The proxy
    ``S_L²/n_L + S_R²/n_R`` is compared as the fraction ``(S_L² n_R + S_R² n_L) / (n_L n_R)``
    so the loop has no division. Rows are taken four at a time so that each lane's state stays
    in registers across them; lanes are independent, so the result does not depend on which
    other lanes are scanned alongside.

    Returns ``numerator, denominator, threshold``, each ``(n_nodes, T)``; ``numerator < 0`` marks
    a lane without any valid split. The threshold is scikit-learn's float64 midpoint
    ``x[p-1] / 2 + x[p] / 2`` of the best row and the lane's previous row.
    """
    n = order.shape[0]
    n_trees = neg_gradient.shape[1]
    pad = neg_gradient.shape[0] - 1  # the all-leaf row
    left_sum = np.zeros((n_nodes, n_trees))
    left_count = np.zeros((n_nodes, n_trees))
    last_plus = np.full((n_nodes, n_trees), np.inf)  # previous member's value + threshold
    best_num = np.full((n_nodes, n_trees), -1.0)
    best_den = np.ones((n_nodes, n_trees))
    best_position = np.zeros((n_nodes, n_trees))
    for j in range(0, n, 4):
        i0 = order[j]
        i1 = order[j + 1] if j + 1 < n else pad
        i2 = order[j + 2] if j + 2 < n else pad
        i3 = order[j + 3] if j + 3 < n else pad
        v0 = values[j]
        v1 = values[min(j + 1, n - 1)]
        v2 = values[min(j + 2, n - 1)]
        v3 = values[min(j + 3, n - 1)]
        # float32 sums, as scikit-learn's ``Xf[p] > Xf[p - 1] + FEATURE_THRESHOLD``.
        p0 = np.float64(v0 + _FEATURE_THRESHOLD)
        p1 = np.float64(v1 + _FEATURE_THRESHOLD)
        p2 = np.float64(v2 + _FEATURE_THRESHOLD)
        p3 = np.float64(v3 + _FEATURE_THRESHOLD)
        x0, x1, x2, x3 = np.float64(v0), np.float64(v1), np.float64(v2), np.float64(v3)
        g0, g1, g2, g3 = neg_gradient[i0], neg_gradient[i1], neg_gradient[i2], neg_gradient[i3]
        n0, n1, n2, n3 = node[i0], node[i1], node[i2], node[i3]
        for a in range(n_nodes):
            s_row, c_row, l_row = left_sum[a], left_count[a], last_plus[a]
            bn_row, bd_row, bp_row = best_num[a], best_den[a], best_position[a]
            total_row, count_row = lane_total[a], lane_count[a]
            for t in range(n_trees):
                s, c, last = s_row[t], c_row[t], l_row[t]
                bn, bd, bp = bn_row[t], bd_row[t], bp_row[t]
                total, count = total_row[t], count_row[t]
                s, c, last, bn, bd, bp = _candidate(
                    n0[t] == a, g0[t], x0, p0, j, s, c, last, bn, bd, bp, total, count
                )
                s, c, last, bn, bd, bp = _candidate(
                    n1[t] == a, g1[t], x1, p1, j + 1, s, c, last, bn, bd, bp, total, count
                )
                s, c, last, bn, bd, bp = _candidate(
                    n2[t] == a, g2[t], x2, p2, j + 2, s, c, last, bn, bd, bp, total, count
                )
                s, c, last, bn, bd, bp = _candidate(
                    n3[t] == a, g3[t], x3, p3, j + 3, s, c, last, bn, bd, bp, total, count
                )
                s_row[t], c_row[t], l_row[t] = s, c, last
                bn_row[t], bd_row[t], bp_row[t] = bn, bd, bp
    return best_num, best_den, _thresholds(order, values, node, best_num, best_position)


@numba.njit(cache=True, nogil=True)
def _thresholds(order, values, node, best_num, best_position):
    """Per lane ``(a, t)`` with a split before sorted position ``p``: scikit-learn's float64
    midpoint ``x[q] / 2 + x[p] / 2``, ``q`` the previous position holding a row of node ``a``."""
    n_nodes, n_trees = best_num.shape
    threshold = np.zeros((n_nodes, n_trees))
    for a in range(n_nodes):
        for t in range(n_trees):
            if best_num[a, t] >= 0.0:
                p = np.int64(best_position[a, t])
                q = p - 1
                while node[order[q], t] != a:
                    q -= 1
                threshold[a, t] = np.float64(values[q]) / 2.0 + np.float64(values[p]) / 2.0
    return threshold


@numba.njit(cache=True, nogil=True, inline="always")
def _root_candidate(
    valid, g, position, n_left, n_right, den, s_left, best_num, best_den, best_position, lane_total
):
    """`_candidate` at the root, where every row belongs to every lane's node: counts and the
    ``FEATURE_THRESHOLD`` test are the same for all lanes (scalars)."""
    s_right = lane_total - s_left
    num = s_left * s_left * n_right + s_right * s_right * n_left
    better = valid & (num * best_den > best_num * den)
    best_num = num if better else best_num
    best_den = den if better else best_den
    best_position = position if better else best_position
    return s_left + g, best_num, best_den, best_position


@numba.njit(cache=True, nogil=True)
def _scan_root(order, values, neg_gradient, node, lane_total, lane_count):
    """`_scan_feature` at depth 0, ``(1, T)`` results."""
    n = order.shape[0]
    n_trees = neg_gradient.shape[1]
    pad = neg_gradient.shape[0] - 1  # the all-leaf row (zero gradient)
    left_sum = np.zeros(n_trees)
    best_num = np.full((1, n_trees), -1.0)
    best_den = np.ones((1, n_trees))
    best_position = np.zeros((1, n_trees))
    bn_row, bd_row, bp_row = best_num[0], best_den[0], best_position[0]
    total_row = lane_total[0]
    count = lane_count[0].max()  # n for every lane that can split
    previous_plus = np.float32(np.inf)
    for j in range(0, n, 4):
        i0 = order[j]
        i1 = order[j + 1] if j + 1 < n else pad
        i2 = order[j + 2] if j + 2 < n else pad
        i3 = order[j + 3] if j + 3 < n else pad
        v0 = values[j]
        v1 = values[min(j + 1, n - 1)]
        v2 = values[min(j + 2, n - 1)]
        v3 = values[min(j + 3, n - 1)]
        ok0 = v0 > previous_plus  # float32, as scikit-learn
        ok1 = v1 > v0 + _FEATURE_THRESHOLD and j + 1 < n
        ok2 = v2 > v1 + _FEATURE_THRESHOLD and j + 2 < n
        ok3 = v3 > v2 + _FEATURE_THRESHOLD and j + 3 < n
        previous_plus = v3 + _FEATURE_THRESHOLD
        c0, c1, c2, c3 = np.float64(j), np.float64(j + 1), np.float64(j + 2), np.float64(j + 3)
        r0, r1, r2, r3 = count - c0, count - c1, count - c2, count - c3
        d0, d1, d2, d3 = c0 * r0, c1 * r1, c2 * r2, c3 * r3
        g0, g1, g2, g3 = neg_gradient[i0], neg_gradient[i1], neg_gradient[i2], neg_gradient[i3]
        for t in range(n_trees):
            s, bn, bd, bp = left_sum[t], bn_row[t], bd_row[t], bp_row[t]
            total = total_row[t]
            s, bn, bd, bp = _root_candidate(ok0, g0[t], j, c0, r0, d0, s, bn, bd, bp, total)
            s, bn, bd, bp = _root_candidate(ok1, g1[t], j + 1, c1, r1, d1, s, bn, bd, bp, total)
            s, bn, bd, bp = _root_candidate(ok2, g2[t], j + 2, c2, r2, d2, s, bn, bd, bp, total)
            s, bn, bd, bp = _root_candidate(ok3, g3[t], j + 3, c3, r3, d3, s, bn, bd, bp, total)
            left_sum[t], bn_row[t], bd_row[t], bp_row[t] = s, bn, bd, bp
    for t in range(n_trees):
        if node[order[0], t] != 0:  # the root is a leaf: no split
            bn_row[t] = -1.0
    return best_num, best_den, _thresholds(order, values, node, best_num, best_position)


@numba.njit(cache=True, nogil=True)
def _mix(key):
    """splitmix64 finalizer: a well-spread 64-bit hash of ``key`` (uint64)."""
    key = (key ^ (key >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    key = (key ^ (key >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return key ^ (key >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _pick_features(num, den, seed, stage, depth, splittable, tree_index):
    """Per lane, the feature with the best proxy; near-ties (relative 1e-12) are broken uniformly
    at random by a hash of (seed, stage, depth, node, tree index within its factor, tie count),
    as scikit-learn's random feature order does in distribution. Returns ``feature (S, T)``
    (-1: no split) and the proxy."""
    n_features, n_nodes, n_trees = num.shape
    best_feature = np.full((n_nodes, n_trees), -1, dtype=np.int64)
    best_proxy = np.full((n_nodes, n_trees), -np.inf)
    for a in range(n_nodes):
        for t in range(n_trees):
            if not splittable[a, t]:
                continue
            ties = 0
            for f in range(n_features):
                if num[f, a, t] < 0.0:
                    continue
                proxy = num[f, a, t] / den[f, a, t]
                best = best_proxy[a, t]
                if best_feature[a, t] < 0 or proxy > best + 1e-12 * abs(best):
                    best_proxy[a, t] = proxy
                    best_feature[a, t] = f
                    ties = 1
                elif proxy >= best - 1e-12 * abs(best):
                    ties += 1
                    key = np.uint64(seed)
                    for part in (stage, depth, a, tree_index[t], ties):
                        key = _mix(key ^ np.uint64(part))
                    if key % np.uint64(ties) == np.uint64(0):
                        best_feature[a, t] = f
                    best_proxy[a, t] = max(best, proxy)
    return best_feature, best_proxy


@numba.njit(cache=True, nogil=True, inline="always")
def _add_leaf_values(raw_row, node_row, value, learning_rate):
    """Add ``learning_rate ×`` the value of each tree's leaf (``node_row`` holds ``-2 - leaf``;
    rows of no leaf yet, ``>= -1``, are skipped) to one row of raw scores."""
    for t in range(raw_row.shape[0]):
        code = node_row[t]
        if code <= -2:
            raw_row[t] += learning_rate * value[t, -2 - code]


@numba.njit(cache=True, nogil=True)
def _start_stage(
    labels,  # (n, K)
    first_tree,  # (K,)
    tree_count,  # (K,)
    tree_factor,  # (T,)
    raw_train,  # (n, T) in/out
    value,  # (T, n_heap): the previous stage's leaf values (zeros before the first stage)
    learning_rate,
    neg_gradient,  # (n + 1, T) out
    node,  # (n + 1, T) in/out
    root_total,  # (T,) out
    root_square_total,  # (T,) out
):
    """One pass over the rows: the previous stage's leaf values join the raw scores, then the
    negative gradient of the half multinomial / binomial deviance (scikit-learn's _loss) of
    every factor's trees (padding lanes keep a zero gradient), and every tree's row goes to its
    root, whose gradient sums are taken (rows in ascending order, as in every sum here)."""
    n_trees = raw_train.shape[1]
    for i in range(labels.shape[0]):
        raw = raw_train[i]
        _add_leaf_values(raw, node[i], value, learning_rate)
        for k in range(labels.shape[1]):
            first, size = first_tree[k], tree_count[k]
            if size > 1:
                top = raw[first]
                for t in range(first + 1, first + size):
                    top = max(top, raw[t])
                sum_exp = 0.0
                for t in range(first, first + size):
                    e = np.exp(raw[t] - top)
                    neg_gradient[i, t] = e
                    sum_exp += e
                for t in range(first, first + size):
                    target = 1.0 if labels[i, k] == t - first else 0.0
                    neg_gradient[i, t] = -(neg_gradient[i, t] / sum_exp - target)
            else:
                y = np.float64(labels[i, k])
                if raw[first] > -37.0:
                    e = np.exp(-raw[first])
                    neg_gradient[i, first] = -(((1.0 - y) - y * e) / (1.0 + e))
                else:
                    neg_gradient[i, first] = -(np.exp(raw[first]) - y)
        for t in range(n_trees):
            if tree_factor[t] >= 0:
                g = neg_gradient[i, t]
                root_total[t] += g
                root_square_total[t] += g * g
                node[i, t] = 0


@numba.njit(cache=True, nogil=True)
def _boost(
    labels,  # (n, K) int64: per factor, class index in [0, n_classes[k])
    n_classes,  # (K,) int64
    first_tree,  # (K,) int64: factor k's trees are lanes first_tree[k] .. + tree_count[k] - 1
    tree_count,  # (K,) int64: n_classes[k] trees, or 1 for two classes
    x_rows,  # (n, L) float32 training features
    order,  # (L, n) int32: per feature, training rows in ascending order of value
    sorted_values,  # (L, n) float32: the feature's values in that order
    x_test,  # (m, L) float32
    raw_train,  # (n, T) float64 in/out, starts at the init scores
    raw_test,  # (m, T) float64 in/out
    importance,  # (K, L) float64 out: summed unnormalized tree importances per factor
    node,  # (n + 1, T) signed integers, all -1: work space (see below)
    n_estimators,
    learning_rate,
    max_depth,
    seed,
):
    """All stages of boosting for several factors at once; the T trees of a stage (all classes
    of all factors, plus idle padding lanes) are grown together, level by level. Every tree's
    computation depends only on its own factor, whatever else shares the call.

    ``node[i, t]`` says where training row ``i`` is in tree ``t``: ``a >= 0``, in node ``a`` of
    the level being grown; ``-2 - h``, in the leaf at heap index ``h``; -1, nowhere (padding
    lanes, and the extra row ``n`` that pads the last block of `_scan_feature`).
    """
    n, n_features = x_rows.shape
    n_trees = raw_train.shape[1]
    n_heap = 2 ** (max_depth + 1) - 1
    tree_factor = np.full(n_trees, -1, dtype=np.int64)  # -1: padding lane
    tree_index = np.zeros(n_trees, dtype=np.int64)  # index of the tree within its factor
    for k in range(labels.shape[1]):
        for t in range(tree_count[k]):
            tree_factor[first_tree[k] + t] = k
            tree_index[first_tree[k] + t] = t
    neg_gradient = np.zeros((n + 1, n_trees))  # row n: the padding row (zero gradient)
    value = np.zeros((n_trees, n_heap))  # leaf values of the last stage
    for stage in range(n_estimators):
        # Per tree and heap node: row count, gradient sum, squared sum, impurity, split.
        count = np.zeros((n_trees, n_heap))
        total = np.zeros((n_trees, n_heap))
        square_total = np.zeros((n_trees, n_heap))
        impurity = np.zeros((n_trees, n_heap))
        feature = np.full((n_trees, n_heap), -1, dtype=np.int64)
        threshold = np.zeros((n_trees, n_heap))
        root_total = np.zeros(n_trees)
        root_square_total = np.zeros(n_trees)
        _start_stage(
            labels,
            first_tree,
            tree_count,
            tree_factor,
            raw_train,
            value,
            learning_rate,
            neg_gradient,
            node,
            root_total,
            root_square_total,
        )
        for t in range(n_trees):
            if tree_factor[t] >= 0:
                total[t, 0] = root_total[t]
                square_total[t, 0] = root_square_total[t]
                count[t, 0] = n
                impurity[t, 0] = square_total[t, 0] / n - (total[t, 0] / n) ** 2

        level_base = 0  # heap index of the first node of the level `node` refers to
        for depth in range(max_depth):
            n_nodes = 2**depth
            base = n_nodes - 1  # heap index of the level's first node
            splittable = np.zeros((n_nodes, n_trees), dtype=np.bool_)
            lane_total = np.zeros((n_nodes, n_trees))
            lane_count = np.zeros((n_nodes, n_trees))
            for a in range(n_nodes):
                for t in range(n_trees):
                    h = base + a
                    splittable[a, t] = count[t, h] >= 2 and impurity[t, h] > _EPSILON
                    lane_total[a, t] = total[t, h]
                    lane_count[a, t] = count[t, h]
            if not splittable.any():
                break
            # Rows of nodes that cannot split stay there for the scans (whose results for those
            # lanes `_pick_features` ignores) and become leaves when the rows move below.

            num = np.empty((n_features, n_nodes, n_trees))
            den = np.empty((n_features, n_nodes, n_trees))
            cut = np.empty((n_features, n_nodes, n_trees))
            for f in range(n_features):
                if depth == 0:
                    num[f], den[f], cut[f] = _scan_root(
                        order[f], sorted_values[f], neg_gradient, node, lane_total, lane_count
                    )
                else:
                    num[f], den[f], cut[f] = _scan_feature(
                        order[f],
                        sorted_values[f],
                        neg_gradient,
                        node,
                        n_nodes,
                        lane_total,
                        lane_count,
                    )
            chosen, _ = _pick_features(num, den, seed, stage, depth, splittable, tree_index)

            # Rows move to their children (rows of nodes without a split are in a leaf), then
            # the children's statistics (count, sum, squared sum) are summed (two loops: the
            # sums' addresses are known early, which makes both faster than one fused loop).
            chosen_cut = np.empty((n_nodes, n_trees))
            for a in range(n_nodes):
                for t in range(n_trees):
                    chosen_cut[a, t] = cut[max(chosen[a, t], 0), a, t]
            for i in range(n):
                x_row, node_row = x_rows[i], node[i]
                for t in range(n_trees):
                    a = np.int64(node_row[t])
                    if a < 0:
                        continue
                    f = chosen[a, t]
                    if f < 0:
                        node_row[t] = -2 - (base + a)
                    else:  # left child: x <= threshold
                        node_row[t] = 2 * a + np.int64(x_row[f] > chosen_cut[a, t])
            child_stats = np.zeros((n_trees, 2 * n_nodes, 3))
            for i in range(n):
                node_row, gradient_row = node[i], neg_gradient[i]
                for t in range(n_trees):
                    c = np.int64(node_row[t])
                    if c >= 0:
                        g = gradient_row[t]
                        stats = child_stats[t, c]
                        stats[0] += 1.0
                        stats[1] += g
                        stats[2] += g * g
            # scikit-learn's children_impurity / improvement.
            cancelled = False
            for t in range(n_trees):
                for a in range(n_nodes):
                    f = chosen[a, t]
                    if f < 0:
                        continue
                    h = base + a
                    left, right = 2 * h + 1, 2 * h + 2
                    for side in range(2):
                        count[t, left + side] = child_stats[t, 2 * a + side, 0]
                        total[t, left + side] = child_stats[t, 2 * a + side, 1]
                        square_total[t, left + side] = child_stats[t, 2 * a + side, 2]
                    n_left, n_right = count[t, left], count[t, h] - count[t, left]
                    impurity[t, left] = (
                        square_total[t, left] / n_left - (total[t, left] / n_left) ** 2
                    )
                    impurity[t, right] = (square_total[t, h] - square_total[t, left]) / n_right - (
                        (total[t, h] - total[t, left]) / n_right
                    ) ** 2
                    improvement = (count[t, h] / n) * (
                        impurity[t, h]
                        - n_right / count[t, h] * impurity[t, right]
                        - n_left / count[t, h] * impurity[t, left]
                    )
                    if improvement + _EPSILON < 0.0:  # rounding made the best split useless
                        chosen[a, t] = -1
                        count[t, left] = 0.0
                        count[t, right] = 0.0
                        cancelled = True
                        continue
                    feature[t, h] = f
                    threshold[t, h] = cut[f, a, t]
            if cancelled:  # (rare) rows of a cancelled split go back to the node, a leaf
                for i in range(n):
                    for t in range(n_trees):
                        c = node[i, t]
                        if c >= 0 and chosen[c // 2, t] < 0:
                            node[i, t] = -2 - (base + c // 2)
            level_base = 2 * base + 1
            # Importances: sum of weighted impurity decreases over split nodes / root size.
            for a in range(n_nodes):
                for t in range(n_trees):
                    h = base + a
                    f = feature[t, h]
                    if f >= 0 and chosen[a, t] >= 0:
                        importance[tree_factor[t], f] += (
                            count[t, h] * impurity[t, h]
                            - count[t, 2 * h + 1] * impurity[t, 2 * h + 1]
                            - count[t, 2 * h + 2] * impurity[t, 2 * h + 2]
                        ) / n

        # _update_terminal_regions: one Newton-Raphson step per leaf. Rows still in a node of
        # the last level reached are in that node's leaf.
        numerator = np.zeros((n_trees, n_heap))
        denominator = np.zeros((n_trees, n_heap))
        leaf_count = np.zeros((n_trees, n_heap))
        for i in range(n):
            for t in range(n_trees):
                k = tree_factor[t]
                if k < 0:
                    continue
                code = node[i, t]
                if code >= 0:
                    code = -2 - (level_base + code)
                    node[i, t] = code
                h = -2 - code
                g = neg_gradient[i, t]
                if tree_count[k] > 1:
                    target = 1.0 if labels[i, k] == tree_index[t] else 0.0
                else:
                    target = np.float64(labels[i, k])
                prob = target - g  # scikit-learn recovers p as y - (y - p)
                numerator[t, h] += g
                denominator[t, h] += prob * (1.0 - prob)
                leaf_count[t, h] += 1.0
        value[:] = 0.0
        for t in range(n_trees):
            k = tree_factor[t]
            if k < 0:
                continue
            factor = (n_classes[k] - 1) / n_classes[k] if tree_count[k] > 1 else 1.0
            for h in range(n_heap):
                if leaf_count[t, h] > 0:
                    mean_hessian = denominator[t, h] / leaf_count[t, h]
                    if abs(mean_hessian) >= _TINY_HESSIAN:
                        value[t, h] = numerator[t, h] / leaf_count[t, h] * factor / mean_hessian
        for i in range(x_test.shape[0]):
            for t in range(n_trees):
                h = 0
                for _ in range(max_depth):  # branch-free descent; a leaf keeps its index
                    f = feature[t, h]
                    down = 2 * h + 1 + np.int64(x_test[i, max(f, 0)] > threshold[t, h])
                    h = down if f >= 0 else h
                raw_test[i, t] += learning_rate * value[t, h]
    for i in range(n):  # the last stage's leaf values
        _add_leaf_values(raw_train[i], node[i], value, learning_rate)


def _as_float32_features(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} with shape {arr.shape} has non-numeric dtype {arr.dtype}")
    with np.errstate(over="ignore"):
        arr32 = arr.astype(np.float32)
    if not np.isfinite(arr32).all():
        raise ValueError(
            f"{name} with shape {arr.shape} contains NaN, inf or values too large for float32"
        )
    return arr32


def _as_labels(y, name: str, n_rows: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(f"{name} must have shape ({n_rows},), got shape {arr.shape}")
    return arr


def _as_label_columns(y, name: str, n_rows: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 2 or arr.shape[0] != n_rows:
        raise ValueError(f"{name} must have shape ({n_rows}, n_factors), got shape {arr.shape}")
    return arr


def _init_scores(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Class-prior raw scores, ``(T,)``: scikit-learn's ``DummyClassifier(strategy="prior")``
    probabilities, clipped to [eps, 1 - eps], through the loss's link."""
    prior = np.bincount(labels, minlength=n_classes) / labels.shape[0]
    eps = np.finfo(np.float64).eps
    prior = np.clip(prior, eps, 1 - eps)
    if n_classes == 2:
        return np.array([np.log(prior[1] / (1.0 - prior[1]))])
    log_prior = np.log(prior)
    return np.log(prior / np.exp(np.mean(log_prior)))


def _check_settings(n_estimators, learning_rate, max_depth, n_threads) -> None:
    if not (isinstance(n_estimators, int | np.integer) and n_estimators >= 1):
        raise ValueError(f"n_estimators must be a positive integer, got {n_estimators!r}")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    if not (isinstance(max_depth, int | np.integer) and 1 <= max_depth <= _MAX_DEPTH):
        raise ValueError(f"max_depth must be an integer in [1, {_MAX_DEPTH}], got {max_depth!r}")
    if n_threads is not None and not (isinstance(n_threads, int | np.integer) and n_threads >= 1):
        raise ValueError(f"n_threads must be a positive integer or None, got {n_threads!r}")


class _Factor(NamedTuple):
    classes: np.ndarray  # (C,) sorted unique training labels
    labels: np.ndarray  # (n,) int64 class index of each training row
    n_trees: int  # trees per stage: C, or 1 for two classes


def _encode_factor(y_train: np.ndarray, column: int) -> _Factor:
    classes, labels = np.unique(y_train, return_inverse=True)
    if classes.shape[0] < 2:
        raise ValueError(
            f"y_train column {column} with shape {y_train.shape} has {classes.shape[0]} class; "
            "gradient boosting needs at least 2"
        )
    n_classes = int(classes.shape[0])
    return _Factor(classes, labels.astype(np.int64), 1 if n_classes == 2 else n_classes)


def _thread_groups(n_trees: list[int], n_groups: int) -> list[list[int]]:
    """Factors split into ``n_groups`` groups of similar padded tree counts (longest first,
    each to the lightest group); each group keeps the factors in their original order."""
    groups: list[list[int]] = [[] for _ in range(min(n_groups, len(n_trees)))]
    load = [0] * len(groups)
    for k in sorted(range(len(n_trees)), key=lambda k: -n_trees[k]):
        lightest = load.index(min(load))
        groups[lightest].append(k)
        load[lightest] += n_trees[k]
    return [sorted(group) for group in groups]


def fit_gbm_factors(
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    n_estimators: int = 100,
    learning_rate: float = 0.1,
    max_depth: int = 3,
    seed: int = 0,
    n_threads: int | None = None,
) -> list[GBMFit]:
    """`fit_gbm` for several label columns on the same features, at once.

    All trees of all factors share each pass over the presorted features (SIMD lanes), and
    the factors are split into ``n_threads`` groups fitted in parallel threads (the numba core
    releases the GIL). Each factor's model depends only on its own labels: the result is the
    same as `fit_gbm` column by column, bit for bit, whatever ``n_threads``.

    Parameters
    ----------
    x_train : array of shape (n_train, L)
        Training features (cast to float32, as scikit-learn does).
    y_train : array of shape (n_train, K)
        One column of labels per factor; each column's classes are its sorted unique values.
    x_test : array of shape (n_test, L)
        Test features; ``n_test`` may be 0 (then the test accuracies are NaN).
    y_test : array of shape (n_test, K)
        Test labels; labels never seen in training count as wrong predictions.
    n_estimators, learning_rate, max_depth, seed
        As in `fit_gbm`.
    n_threads : int or None, default None
        Threads to use (at most one per factor); None: the CPUs this process may run on, at
        most the ``TOYBENCH_THREADS`` cap of `toybench.hardware.cap_threads`.

    Returns
    -------
    list of GBMFit
        One per column of ``y_train``, in order.

    Raises
    ------
    ValueError
        Wrong shapes, non-finite features, a column with fewer than two training classes or
        bad settings.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(20.0).reshape(10, 2)
    >>> y = np.column_stack([np.arange(10) // 5, np.arange(10) % 3])
    >>> fits = fit_gbm_factors(x[:8], y[:8], x[8:], y[8:], n_estimators=5)
    >>> [fit.train_accuracy for fit in fits]
    [1.0, 1.0]
    """
    _check_settings(n_estimators, learning_rate, max_depth, n_threads)
    x_train = _as_float32_features(x_train, "x_train")
    x_test = _as_float32_features(x_test, "x_test")
    y_train = _as_label_columns(y_train, "y_train", x_train.shape[0])
    y_test = _as_label_columns(y_test, "y_test", x_test.shape[0])
    if x_test.shape[1] != x_train.shape[1]:
        raise ValueError(
            f"x_train {x_train.shape} and x_test {x_test.shape} have different feature counts"
        )
    if y_test.shape[1] != y_train.shape[1]:
        raise ValueError(
            f"y_train {y_train.shape} and y_test {y_test.shape} have different column counts"
        )
    factors = [_encode_factor(y_train[:, k], k) for k in range(y_train.shape[1])]

    order = np.argsort(x_train, axis=0, kind="stable").T.astype(np.int32)  # (L, n)
    sorted_values = np.ascontiguousarray(np.take_along_axis(x_train, order.T, axis=0).T)  # (L, n)
    order = np.ascontiguousarray(order)
    x_train = np.ascontiguousarray(x_train)
    x_test = np.ascontiguousarray(x_test)

    def fit_group(group: list[int]) -> list[GBMFit]:
        n_trees = [factors[k].n_trees for k in group]
        first = np.cumsum([0] + n_trees[:-1]).astype(np.int64)  # (G,)
        width = -(-sum(n_trees) // _LANES) * _LANES  # padded to whole SIMD registers
        raw_train = np.zeros((x_train.shape[0], width))  # (n, T)
        raw_test = np.zeros((x_test.shape[0], width))  # (m, T)
        for k, start, size in zip(group, first, n_trees, strict=True):
            init = _init_scores(factors[k].labels, factors[k].classes.shape[0])  # (C or 1,)
            raw_train[:, start : start + size] = init
            raw_test[:, start : start + size] = init
        importance = np.zeros((len(group), x_train.shape[1]))  # (G, L)
        # Leaf codes -2 - h must fit: int8 up to depth 5, int16 beyond.
        node = np.full((x_train.shape[0] + 1, width), -1, np.int8 if max_depth <= 5 else np.int16)
        _boost(
            np.ascontiguousarray(np.column_stack([factors[k].labels for k in group])),
            np.array([factors[k].classes.shape[0] for k in group], dtype=np.int64),
            first,
            np.array(n_trees, dtype=np.int64),
            x_train,
            order,
            sorted_values,
            x_test,
            raw_train,
            raw_test,
            importance,
            node,
            int(n_estimators),
            float(learning_rate),
            int(max_depth),
            int(seed),
        )
        fits = []
        for g, (k, start, size) in enumerate(zip(group, first, n_trees, strict=True)):
            total = importance[g].sum()
            classes = factors[k].classes
            fits.append(
                GBMFit(
                    importance[g] / total if total > 0 else importance[g],
                    _accuracy(
                        raw_train[:, start : start + size],
                        factors[k].labels,
                        np.arange(classes.shape[0]),
                    ),
                    _accuracy(raw_test[:, start : start + size], y_test[:, k], classes),
                )
            )
        return fits

    if n_threads is None:  # the CPUs this process may use, at most its cap (toybench.hardware)
        from toybench.hardware import available_threads

        n_threads = available_threads()
    groups = _thread_groups([factor.n_trees for factor in factors], n_threads)
    if len(groups) == 1:
        results = [fit_group(groups[0])]
    else:
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            results = list(pool.map(fit_group, groups))
    by_factor: dict[int, GBMFit] = {}
    for group, fits in zip(groups, results, strict=True):
        by_factor.update(zip(group, fits, strict=True))
    return [by_factor[k] for k in range(len(factors))]


def fit_gbm(
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    n_estimators: int = 100,
    learning_rate: float = 0.1,
    max_depth: int = 3,
    seed: int = 0,
) -> GBMFit:
    """Fit scikit-learn's default ``GradientBoostingClassifier`` exactly, fast.

    Same model as ``GradientBoostingClassifier(n_estimators, learning_rate, max_depth)`` with
    every other setting at its default (log loss, prior init, subsample 1, min_samples_split 2,
    min_samples_leaf 1, exact best splits); see the module docstring for the details reproduced.

    Parameters
    ----------
    x_train : array of shape (n_train, L)
        Training features (cast to float32, as scikit-learn does).
    y_train : array of shape (n_train,)
        Integer (or any sortable) labels; the classes are the sorted unique training labels.
    x_test : array of shape (n_test, L)
        Test features; ``n_test`` may be 0 (then ``test_accuracy`` is NaN).
    y_test : array of shape (n_test,)
        Test labels; labels never seen in training count as wrong predictions.
    n_estimators : int, default 100
        Boosting stages.
    learning_rate : float, default 0.1
        Shrinkage of each tree's contribution.
    max_depth : int, default 3
        Depth of each regression tree.
    seed : int, default 0
        Breaks exact ties between candidate features (scikit-learn draws a random feature order
        per node); the same seed gives the same result.

    Returns
    -------
    GBMFit
        ``importance (L,)`` (``feature_importances_``), ``train_accuracy`` and ``test_accuracy``.

    Raises
    ------
    ValueError
        Wrong shapes, non-finite features, fewer than two training classes or bad settings.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.column_stack([np.arange(10.0), np.zeros(10)])  # only column 0 informs
    >>> y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    >>> fit = fit_gbm(x[:8], y[:8], x[8:], y[8:], n_estimators=5)
    >>> fit.importance.round(3).tolist(), fit.train_accuracy, fit.test_accuracy
    ([1.0, 0.0], 1.0, 1.0)
    """
    x_train = _as_float32_features(x_train, "x_train")
    x_test = _as_float32_features(x_test, "x_test")
    y_train = _as_labels(y_train, "y_train", x_train.shape[0])
    y_test = _as_labels(y_test, "y_test", x_test.shape[0])
    (fit,) = fit_gbm_factors(
        x_train,
        y_train[:, None],
        x_test,
        y_test[:, None],
        n_estimators=n_estimators,
        learning_rate=learning_rate,
        max_depth=max_depth,
        seed=seed,
        n_threads=1,
    )
    return fit


def load_compiled() -> None:
    """Load the compiled boosting code now (numba's cache: about 0.15 s, and the compilation
    itself on the first call after an install) with a one-stage fit of 8 rows, binary and
    multiclass, so that the next fit pays only for its own work."""
    x = np.arange(16, dtype=np.float32).reshape(8, 2)
    y = np.column_stack([np.arange(8) % 2, np.arange(8) % 3])
    fit_gbm_factors(x, y, x[:0], y[:0], n_estimators=1, n_threads=1)


def _accuracy(raw: np.ndarray, y: np.ndarray, classes: np.ndarray) -> float:
    """Accuracy of the predicted classes from raw scores ``(n, T)`` against labels ``y (n,)``."""
    if raw.shape[0] == 0:
        return float("nan")
    encoded = (raw[:, 0] >= 0).astype(np.int64) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
    return float(np.mean(classes[encoded] == y))

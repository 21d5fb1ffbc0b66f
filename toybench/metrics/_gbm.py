"""Fast exact gradient boosting for DCI, re-implementing scikit-learn's GradientBoostingClassifier.

DCI (Eastwood & Williams 2018, https://openreview.net/forum?id=By-7dz-AZ) as computed by
disentanglement_lib (Locatello et al. 2019, https://arxiv.org/abs/1811.12359) fits, per factor,
scikit-learn's ``GradientBoostingClassifier()`` with its defaults and reads its impurity-based
feature importances. That model is Friedman's gradient boosting (Friedman 2001, "Greedy function
approximation: a gradient boosting machine", https://doi.org/10.1214/aos/1013203451) with the
multinomial deviance (binomial deviance for two classes). scikit-learn needs minutes for one DCI
score at n = 10,000; this module computes the same model in about a second.

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
candidate splits it may choose another feature than this module (which keeps the first feature
in column order); sums are accumulated in a different order, so importances agree to about 1e-12
relative where no tie intervenes. No global random state is used.

The boosting core is compiled with numba (``cache=True``, so compilation happens once per
installation, not per call) and releases the GIL, so factors can be fitted in threads.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

__all__ = ["GBMFit", "fit_gbm"]

#: scikit-learn's ``FEATURE_THRESHOLD``: float32 neighbours closer than this are one value.
_FEATURE_THRESHOLD = np.float32(1e-7)
#: scikit-learn's tree ``EPSILON``: a node with impurity at most this stays a leaf.
_EPSILON = float(np.finfo(np.float64).eps)
#: ``_safe_divide`` in ``ensemble/_gb.py``: a Newton step with a smaller denominator is 0.
_TINY_HESSIAN = 1e-150


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


@numba.njit(cache=True, nogil=True)
def _scan_feature(order, values, neg_gradient, node, n_nodes, lane_total, lane_count):
    """Best split of every (node, class) lane along one feature, in one pass over its rows.

    ``order (n,)`` lists the training rows by ascending ``values (n,)`` (float32). Row ``i``
    belongs, in the tree of class ``t``, to node ``node[i, t]`` of the current level (-1: in a
    leaf). Every lane ``(a, t)`` keeps its running left sum and count; the candidate split between
    a lane's previous row and row ``i`` is scored when row ``i`` arrives, if the two values are
    more than ``FEATURE_THRESHOLD`` apart. The proxy ``S_L²/n_L + S_R²/n_R`` is compared as the
    fraction ``(S_L² n_R + S_R² n_L) / (n_L n_R)`` so the loop has no division.

    Returns ``numerator, denominator, threshold``, each ``(n_nodes, T)``; ``numerator < 0`` marks
    a lane without any valid split.
    """
    n_trees = neg_gradient.shape[1]
    left_sum = np.zeros((n_nodes, n_trees))
    left_count = np.zeros((n_nodes, n_trees))
    previous = np.full((n_nodes, n_trees), -np.inf, dtype=np.float32)
    best_num = np.full((n_nodes, n_trees), -1.0)
    best_den = np.ones((n_nodes, n_trees))
    best_threshold = np.zeros((n_nodes, n_trees))
    for j in range(order.shape[0]):
        i = order[j]
        x = values[j]
        half_x = np.float64(x) / 2.0
        for a in range(n_nodes):
            for t in range(n_trees):
                member = 1.0 if node[i, t] == a else 0.0
                s_left = left_sum[a, t]
                n_left = left_count[a, t]
                last = previous[a, t]
                s_right = lane_total[a, t] - s_left
                n_right = lane_count[a, t] - n_left
                num = s_left * s_left * n_right + s_right * s_right * n_left
                den = n_left * n_right
                old_num = best_num[a, t]
                old_den = best_den[a, t]
                better = (
                    (member * n_left > 0.0)
                    & (x > last + _FEATURE_THRESHOLD)
                    & (num * old_den > old_num * den)
                )
                best_num[a, t] = num if better else old_num
                best_den[a, t] = den if better else old_den
                best_threshold[a, t] = (
                    np.float64(last) / 2.0 + half_x if better else best_threshold[a, t]
                )
                previous[a, t] = x if member > 0.0 else last
                left_sum[a, t] = s_left + neg_gradient[i, t] * member
                left_count[a, t] = n_left + member
    return best_num, best_den, best_threshold


@numba.njit(cache=True, nogil=True)
def _mix(key):
    """splitmix64 finalizer: a well-spread 64-bit hash of ``key`` (uint64)."""
    key = (key ^ (key >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    key = (key ^ (key >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return key ^ (key >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _pick_features(num, den, seed, stage, depth, splittable):
    """Per lane, the feature with the best proxy; near-ties (relative 1e-12) are broken uniformly
    at random by a hash of (seed, stage, depth, lane, tie count), as scikit-learn's random feature
    order does in distribution. Returns ``feature (S, T)`` (-1: no split) and the proxy."""
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
                    for part in (stage, depth, a, t, ties):
                        key = _mix(key ^ np.uint64(part))
                    if key % np.uint64(ties) == np.uint64(0):
                        best_feature[a, t] = f
                    best_proxy[a, t] = max(best, proxy)
    return best_feature, best_proxy


@numba.njit(cache=True, nogil=True)
def _boost(
    labels,  # (n,) int64 in [0, n_classes)
    n_classes,
    x_rows,  # (n, L) float32 training features
    order,  # (L, n) int32: per feature, training rows in ascending order of value
    sorted_values,  # (L, n) float32: the feature's values in that order
    x_test,  # (m, L) float32
    raw_train,  # (n, T) float64 in/out, starts at the init scores
    raw_test,  # (m, T) float64 in/out
    importance,  # (L,) float64 out: summed unnormalized tree importances
    n_estimators,
    learning_rate,
    max_depth,
    seed,
):
    """All stages of boosting; the T trees of a stage are grown together, level by level."""
    n, n_features = x_rows.shape
    n_trees = raw_train.shape[1]
    multiclass = n_trees > 1
    n_heap = 2 ** (max_depth + 1) - 1
    neg_gradient = np.empty((n, n_trees))
    node = np.empty((n, n_trees), dtype=np.int8)  # node of the current level; -1: in a leaf
    leaf = np.empty((n, n_trees), dtype=np.int64)  # heap index of the row's leaf
    for stage in range(n_estimators):
        # Negative gradient of the half multinomial / binomial deviance (scikit-learn's _loss).
        for i in range(n):
            if multiclass:
                top = raw_train[i, 0]
                for t in range(1, n_trees):
                    top = max(top, raw_train[i, t])
                sum_exp = 0.0
                for t in range(n_trees):
                    e = np.exp(raw_train[i, t] - top)
                    neg_gradient[i, t] = e
                    sum_exp += e
                for t in range(n_trees):
                    target = 1.0 if labels[i] == t else 0.0
                    neg_gradient[i, t] = -(neg_gradient[i, t] / sum_exp - target)
            else:
                y = np.float64(labels[i])
                raw = raw_train[i, 0]
                if raw > -37.0:
                    e = np.exp(-raw)
                    neg_gradient[i, 0] = -(((1.0 - y) - y * e) / (1.0 + e))
                else:
                    neg_gradient[i, 0] = -(np.exp(raw) - y)

        # Per tree and heap node: row count, gradient sum, squared sum, impurity, split.
        count = np.zeros((n_trees, n_heap))
        total = np.zeros((n_trees, n_heap))
        square_total = np.zeros((n_trees, n_heap))
        impurity = np.zeros((n_trees, n_heap))
        feature = np.full((n_trees, n_heap), -1, dtype=np.int64)
        threshold = np.zeros((n_trees, n_heap))
        for t in range(n_trees):
            for i in range(n):
                g = neg_gradient[i, t]
                total[t, 0] += g
                square_total[t, 0] += g * g
                node[i, t] = 0
            count[t, 0] = n
            impurity[t, 0] = square_total[t, 0] / n - (total[t, 0] / n) ** 2

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
            for t in range(n_trees):  # rows of nodes that cannot split are in a leaf
                for i in range(n):
                    a = node[i, t]
                    if a >= 0 and not splittable[a, t]:
                        leaf[i, t] = base + a
                        node[i, t] = -1

            num = np.empty((n_features, n_nodes, n_trees))
            den = np.empty((n_features, n_nodes, n_trees))
            cut = np.empty((n_features, n_nodes, n_trees))
            for f in range(n_features):
                num[f], den[f], cut[f] = _scan_feature(
                    order[f],
                    sorted_values[f],
                    neg_gradient,
                    node,
                    n_nodes,
                    lane_total,
                    lane_count,
                )
            chosen, _ = _pick_features(num, den, seed, stage, depth, splittable)

            for t in range(n_trees):
                # Children statistics, then scikit-learn's children_impurity / improvement.
                for i in range(n):
                    a = node[i, t]
                    if a < 0 or chosen[a, t] < 0:
                        continue
                    f = chosen[a, t]
                    child = 2 * (base + a) + (1 if x_rows[i, f] <= cut[f, a, t] else 2)
                    g = neg_gradient[i, t]
                    count[t, child] += 1.0
                    total[t, child] += g
                    square_total[t, child] += g * g
                for a in range(n_nodes):
                    f = chosen[a, t]
                    if f < 0:
                        continue
                    h = base + a
                    left, right = 2 * h + 1, 2 * h + 2
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
                        continue
                    feature[t, h] = f
                    threshold[t, h] = cut[f, a, t]
                # Rows move to their children; rows of nodes that did not split are in a leaf.
                for i in range(n):
                    a = node[i, t]
                    if a < 0:
                        continue
                    if chosen[a, t] < 0:
                        leaf[i, t] = base + a
                        node[i, t] = -1
                    else:
                        h = base + a
                        side = 0 if x_rows[i, feature[t, h]] <= threshold[t, h] else 1
                        node[i, t] = 2 * a + side
            # Importances: sum of weighted impurity decreases over split nodes / root size.
            for a in range(n_nodes):
                for t in range(n_trees):
                    h = base + a
                    f = feature[t, h]
                    if f >= 0 and chosen[a, t] >= 0:
                        importance[f] += (
                            count[t, h] * impurity[t, h]
                            - count[t, 2 * h + 1] * impurity[t, 2 * h + 1]
                            - count[t, 2 * h + 2] * impurity[t, 2 * h + 2]
                        ) / n

        for t in range(n_trees):
            # Rows still in a node at the last level are in that node's leaf.
            for i in range(n):
                if node[i, t] >= 0:
                    h = 0
                    while feature[t, h] >= 0:
                        h = 2 * h + (1 if x_rows[i, feature[t, h]] <= threshold[t, h] else 2)
                    leaf[i, t] = h
            # _update_terminal_regions: one Newton-Raphson step per leaf.
            numerator = np.zeros(n_heap)
            denominator = np.zeros(n_heap)
            leaf_count = np.zeros(n_heap)
            for i in range(n):
                g = neg_gradient[i, t]
                if multiclass:
                    target = 1.0 if labels[i] == t else 0.0
                else:
                    target = np.float64(labels[i])
                prob = target - g  # scikit-learn recovers p as y - (y - p)
                h = leaf[i, t]
                numerator[h] += g
                denominator[h] += prob * (1.0 - prob)
                leaf_count[h] += 1.0
            value = np.zeros(n_heap)
            factor = (n_classes - 1) / n_classes if multiclass else 1.0
            for h in range(n_heap):
                if leaf_count[h] > 0:
                    mean_hessian = denominator[h] / leaf_count[h]
                    if abs(mean_hessian) >= _TINY_HESSIAN:
                        value[h] = numerator[h] / leaf_count[h] * factor / mean_hessian
            for i in range(n):
                raw_train[i, t] += learning_rate * value[leaf[i, t]]
            for i in range(x_test.shape[0]):
                h = 0
                while feature[t, h] >= 0:
                    h = 2 * h + (1 if x_test[i, feature[t, h]] <= threshold[t, h] else 2)
                raw_test[i, t] += learning_rate * value[h]


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
    >>> x = np.arange(20.0).reshape(10, 2)
    >>> y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    >>> fit = fit_gbm(x[:8], y[:8], x[8:], y[8:], n_estimators=5)
    >>> fit.importance.round(3).tolist(), fit.train_accuracy, fit.test_accuracy
    ([1.0, 0.0], 1.0, 1.0)
    """
    if not (isinstance(n_estimators, int | np.integer) and n_estimators >= 1):
        raise ValueError(f"n_estimators must be a positive integer, got {n_estimators!r}")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    if not (isinstance(max_depth, int | np.integer) and 1 <= max_depth <= 30):
        raise ValueError(f"max_depth must be an integer in [1, 30], got {max_depth!r}")
    x_train = _as_float32_features(x_train, "x_train")
    x_test = _as_float32_features(x_test, "x_test")
    y_train = _as_labels(y_train, "y_train", x_train.shape[0])
    y_test = _as_labels(y_test, "y_test", x_test.shape[0])
    if x_test.shape[1] != x_train.shape[1]:
        raise ValueError(
            f"x_train {x_train.shape} and x_test {x_test.shape} have different feature counts"
        )
    classes, labels = np.unique(y_train, return_inverse=True)
    if classes.shape[0] < 2:
        raise ValueError(
            f"y_train with shape {y_train.shape} has {classes.shape[0]} class; "
            "gradient boosting needs at least 2"
        )
    n_classes = int(classes.shape[0])
    labels = labels.astype(np.int64)

    order = np.argsort(x_train, axis=0, kind="stable").T.astype(np.int32)  # (L, n)
    sorted_values = np.ascontiguousarray(np.take_along_axis(x_train, order.T, axis=0).T)  # (L, n)

    init = _init_scores(labels, n_classes)  # (T,)
    raw_train = np.repeat(init[None, :], x_train.shape[0], axis=0)  # (n, T)
    raw_test = np.repeat(init[None, :], x_test.shape[0], axis=0)  # (m, T)
    importance = np.zeros(x_train.shape[1])  # (L,)
    _boost(
        labels,
        n_classes,
        np.ascontiguousarray(x_train),
        np.ascontiguousarray(order),
        sorted_values,
        np.ascontiguousarray(x_test),
        raw_train,
        raw_test,
        importance,
        int(n_estimators),
        float(learning_rate),
        int(max_depth),
        int(seed),
    )

    total = importance.sum()
    return GBMFit(
        importance / total if total > 0 else importance,
        _accuracy(raw_train, labels, np.arange(n_classes)),
        _accuracy(raw_test, y_test, classes),
    )


def _accuracy(raw: np.ndarray, y: np.ndarray, classes: np.ndarray) -> float:
    """Accuracy of the predicted classes from raw scores ``(n, T)`` against labels ``y (n,)``."""
    if raw.shape[0] == 0:
        return float("nan")
    encoded = (raw[:, 0] >= 0).astype(np.int64) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
    return float(np.mean(classes[encoded] == y))

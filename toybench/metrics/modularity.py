"""Modularity and explicitness of Ridgeway & Zemel 2018, "Learning Deep Disentangled Embeddings
With the F-Statistic Loss", https://arxiv.org/abs/1802.05312 — as in disentanglement_lib's
``evaluation/metrics/modularity_explicitness.py``.

Modularity: for each code, how concentrated its mutual information is on a single factor
(1 − normalized deviation of the squared MI from an ideal one-hot template). Explicitness: per
factor, the macro one-vs-rest ROC AUC of a logistic regression predicting the factor from all
(standardized) codes.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from toybench.metrics._common import (
    N_BINS,
    check_inputs,
    discrete_mutual_info,
    histogram_discretize,
    train_test_split,
)


def modularity_from_mi(mutual_information: np.ndarray) -> float:
    """Modularity from a ``(L, K)`` mutual information matrix (disentanglement_lib's formula).

    Per code: ``1 − (Σ_k m_k² − max_k m_k²) / (max_k m_k² (K − 1))``; a code with no information
    scores 0; the result is the mean over codes. With one factor (K = 1) every informative code is
    trivially modular and scores 1 (disentanglement_lib divides 0 by 0 there).
    """
    squared = np.square(mutual_information)  # (L, K)
    top = squared.max(axis=1)
    per_code = np.zeros(squared.shape[0])
    informative = top > 0
    if squared.shape[1] == 1:
        per_code[informative] = 1.0
    else:
        spread = squared.sum(axis=1) - top
        per_code[informative] = 1.0 - spread[informative] / (
            top[informative] * (squared.shape[1] - 1.0)
        )
    return float(np.mean(per_code))


def modularity(codes, factors, *, n_bins: int = N_BINS) -> float:
    """Modularity score, higher-better in [0, 1].

    Rows used: the train rows only, the first ⌈0.8 n⌉ (disentanglement_lib computes the mutual
    information on ``mus_train``). Discretization: 20-bin histograms per code; MI in nats
    (``mutual_info_score``), not normalized — exactly as disentanglement_lib.

    Parameters
    ----------
    codes : (n, L) array of floats
    factors : (n, K) array of integer levels
    n_bins : int

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> factors = np.random.default_rng(0).integers(0, 4, size=(2000, 3))
    >>> round(modularity(factors.astype(float), factors), 2)
    1.0
    """
    codes, factors = check_inputs(codes, factors)
    split = train_test_split(codes, factors)
    mi = discrete_mutual_info(histogram_discretize(split.codes_train, n_bins), split.factors_train)
    return modularity_from_mi(mi)


class Explicitness(NamedTuple):
    """Mean over factors of the one-vs-rest macro ROC AUC on the train and on the test rows."""

    train: float
    test: float


def roc_auc(indicator: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score (n,)`` for the binary labels ``indicator (n,)``: the Mann–Whitney
    statistic, P(score of a positive > score of a negative) + ½ P(tie).

    Computed from average ranks (``scipy.stats.rankdata``): the rank sum of the positives is a
    sum of half-integers, exact in float64, so the AUC is the exact rational value rounded
    once. scikit-learn's ``roc_auc_score`` (the trapezoid under the ROC curve, ties as
    diagonal steps) is the same number up to its own rounding (≤ 1e-15 apart, tested), at
    about a fiftieth of the time for the hundreds of calls one evaluation makes.

    Raises
    ------
    ValueError
        If ``indicator`` holds a single class (no AUC is defined).
    """
    from scipy.stats import rankdata

    indicator = np.asarray(indicator, dtype=bool)
    n_pos = int(indicator.sum())
    n_neg = indicator.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both classes; the labels hold one")
    ranks = rankdata(score)  # (n,) average ranks, 1-based
    return float((ranks[indicator].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _macro_auc(classes: np.ndarray, labels: np.ndarray, proba: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC (`roc_auc`) over the classes ``labels`` actually contains.

    ``proba (n, len(classes))`` are the classifier's probabilities in ``classes`` order. A level
    present in ``labels`` but unseen in training has no probability column; it is scored with
    a constant 0 (AUC 0.5). A level absent from ``labels`` has no defined AUC and is skipped.
    """
    aucs = []
    column_of = {c: i for i, c in enumerate(classes.tolist())}
    for level in np.unique(labels):
        indicator = labels == level
        if indicator.all():
            continue
        score = proba[:, column_of[level]] if level in column_of else np.zeros(labels.size)
        aucs.append(roc_auc(indicator, score))
    return float(np.mean(aucs))


def explicitness(codes, factors) -> Explicitness:
    """Explicitness (Ridgeway & Zemel 2018), higher-better in [0, 1] (0.5 = chance).

    Rows used: fit on the first ⌈0.8 n⌉ rows, ``train`` is the AUC on those rows and ``test`` on
    the remaining rows. Codes are standardized with the train rows' mean and (ddof 0) standard
    deviation; estimator ``LogisticRegression()`` with scikit-learn defaults, one per factor; AUC
    is the macro average of one-vs-rest ROC AUCs over the factor's levels — all as
    disentanglement_lib.

    Deviations from disentanglement_lib (which crashes in each case):
    a code constant over the train rows is divided by 1 instead of 0 (it becomes all zeros and
    carries no information); a level missing from the test rows is left out of the test macro
    average (its AUC is undefined); a test level unseen in training is scored 0.5.

    Parameters
    ----------
    codes : (n, L) array of floats
    factors : (n, K) array of integer levels

    Returns
    -------
    Explicitness(train: float, test: float)

    Examples
    --------
    >>> import numpy as np
    >>> factors = np.random.default_rng(0).integers(0, 3, size=(500, 2))
    >>> explicitness(factors.astype(float), factors).test > 0.9
    True
    """
    from sklearn.exceptions import ConvergenceWarning  # scikit-learn loads lazily
    from sklearn.linear_model import LogisticRegression

    codes, factors = check_inputs(codes, factors)
    split = train_test_split(codes, factors)
    mean = split.codes_train.mean(axis=0)
    std = split.codes_train.std(axis=0)
    std = np.where(std == 0, 1.0, std)
    x_train = (split.codes_train - mean) / std  # (n_train, L)
    x_test = (split.codes_test - mean) / std  # (n_test, L)
    train_auc, test_auc = [], []
    for k in range(factors.shape[1]):
        y_train, y_test = split.factors_train[:, k], split.factors_test[:, k]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            classifier = LogisticRegression().fit(x_train, y_train)
        train_auc.append(
            _macro_auc(classifier.classes_, y_train, classifier.predict_proba(x_train))
        )
        if np.unique(y_test).size < 2:
            raise ValueError(
                f"factors with shape {factors.shape}: column {k} takes a single level over the "
                "test rows, so no ROC AUC is defined"
            )
        test_auc.append(_macro_auc(classifier.classes_, y_test, classifier.predict_proba(x_test)))
    return Explicitness(float(np.mean(train_auc)), float(np.mean(test_auc)))

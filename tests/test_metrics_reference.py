"""toybench's metrics against independent transcriptions of disentanglement_lib's definitions.

The helpers below are written in disentanglement_lib's own ``(codes, points)`` layout, straight
from its formulas (histogram discretizer, ``sklearn.metrics.mutual_info_score``, LinearSVC,
LogisticRegression + MultiLabelBinarizer ROC AUC) with scikit-learn doing the estimation, so a
transposition or data-use slip in toybench shows up as a mismatch.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score, roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import LinearSVC

from toybench.metrics import explicitness, mig, modularity, n_train_rows, sap


def _discretize_points(mus, n_bins=20):  # mus: (num_codes, num_points)
    out = np.zeros_like(mus)
    for i, row in enumerate(mus):
        out[i] = np.digitize(row, np.histogram(row, n_bins)[1][:-1])
    return out


def _mi_points(mus, ys):  # -> (num_codes, num_factors)
    return np.array([[mutual_info_score(y, m) for y in ys] for m in mus])


def _mig_points(mus, ys):
    m = _mi_points(_discretize_points(mus), ys)
    entropy = np.array([mutual_info_score(y, y) for y in ys])
    ordered = np.sort(m, axis=0)[::-1]
    return np.mean((ordered[0] - ordered[1]) / entropy)


def _modularity_points(mus, ys):
    sq = np.square(_mi_points(_discretize_points(mus), ys))
    top = sq.max(axis=1)
    per_code = 1.0 - (sq.sum(axis=1) - top) / (top * (sq.shape[1] - 1.0))
    per_code[top == 0] = 0.0
    return per_code.mean()


def _sap_points(mus, ys, mus_test, ys_test):
    matrix = np.zeros((len(mus), len(ys)))
    for i in range(len(mus)):
        for j in range(len(ys)):
            clf = LinearSVC(C=0.01, class_weight="balanced").fit(mus[i][:, None], ys[j])
            matrix[i, j] = np.mean(clf.predict(mus_test[i][:, None]) == ys_test[j])
    ordered = np.sort(matrix, axis=0)
    return np.mean(ordered[-1] - ordered[-2])


def _explicitness_points(mus, ys, mus_test, ys_test):
    mean, std = mus.mean(axis=1), mus.std(axis=1)
    train = ((mus - mean[:, None]) / std[:, None]).T
    test = ((mus_test - mean[:, None]) / std[:, None]).T
    aucs_train, aucs_test = [], []
    for y, y_test in zip(ys, ys_test, strict=True):
        clf = LogisticRegression().fit(train, y)
        binarizer = MultiLabelBinarizer()
        aucs_train.append(
            roc_auc_score(binarizer.fit_transform(y[:, None]), clf.predict_proba(train))
        )
        aucs_test.append(
            roc_auc_score(binarizer.fit_transform(y_test[:, None]), clf.predict_proba(test))
        )
    return np.mean(aucs_train), np.mean(aucs_test)


def _case(seed, dtype):
    rng = np.random.default_rng(seed)
    n = 1003
    factors = np.stack([rng.integers(0, s, n) for s in (3, 6, 10)], axis=1)
    codes = np.c_[factors + rng.normal(0, 0.7, factors.shape), rng.normal(size=(n, 2))]
    codes = (codes + 0.3 * codes @ rng.normal(size=(5, 5))).astype(dtype)
    n_train = n_train_rows(n)
    points = (codes[:n_train].T, factors[:n_train].T, codes[n_train:].T, factors[n_train:].T)
    return codes, factors, points


CASES = [(0, np.float64), (1, np.float64), (2, np.float32)]


@pytest.mark.parametrize(("seed", "dtype"), CASES)
def test_mig_matches_reference_on_all_rows(seed, dtype):
    # disentanglement_lib computes MIG on every point it draws (no test set): all n rows here,
    # and the same operations in the same order give the same float exactly.
    codes, factors, _ = _case(seed, dtype)
    assert mig(codes, factors) == _mig_points(codes.T, factors.T)


@pytest.mark.parametrize(("seed", "dtype"), CASES)
def test_modularity_matches_reference(seed, dtype):
    codes, factors, (mus, ys, _, _) = _case(seed, dtype)
    assert modularity(codes, factors) == pytest.approx(_modularity_points(mus, ys), abs=1e-12)


@pytest.mark.parametrize(("seed", "dtype"), CASES)
def test_sap_matches_reference(seed, dtype):
    codes, factors, points = _case(seed, dtype)
    assert sap(codes, factors) == pytest.approx(_sap_points(*points), abs=1e-12)


@pytest.mark.parametrize(("seed", "dtype"), CASES)
def test_explicitness_matches_reference(seed, dtype):
    codes, factors, points = _case(seed, dtype)
    expected = _explicitness_points(*points)
    assert tuple(explicitness(codes, factors)) == pytest.approx(expected, abs=1e-12)

"""Known answers for every metric, after disentanglement_lib's own ``*_test.py`` files and
closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from toybench.metrics import (
    active_units,
    completeness,
    dci,
    disentanglement,
    explicitness,
    kl_per_unit,
    mig,
    mig_active,
    modularity,
    n_train_rows,
    sap,
    sap_matrix,
    score,
)
from toybench.metrics._common import histogram_discretize, mutual_info
from toybench.metrics.modularity import modularity_from_mi, roc_auc


def _factors(sizes, n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


# --- split and shared pieces -------------------------------------------------------------------


@pytest.mark.parametrize(("n", "n_train"), [(10, 8), (11, 9), (12, 10), (14, 12), (10000, 8000)])
def test_train_rows_is_ceil_of_80_percent(n, n_train):
    assert n_train_rows(n) == n_train


def test_histogram_discretize_matches_numpy_recipe():
    x = np.random.default_rng(0).normal(size=(300, 3))
    expected = np.stack(
        [np.digitize(x[:, j], np.histogram(x[:, j], 20)[1][:-1]) for j in range(3)], axis=1
    )
    np.testing.assert_array_equal(histogram_discretize(x), expected)
    assert histogram_discretize(x).min() == 1 and histogram_discretize(x).max() == 20


def test_mutual_info_matches_sklearn():
    from sklearn.metrics import mutual_info_score

    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 7, 500), rng.integers(0, 5, 500)
    b = np.where(rng.random(500) < 0.5, a % 5, b)
    assert mutual_info(a, b) == pytest.approx(mutual_info_score(a, b), abs=1e-14)
    assert mutual_info(a, a) == pytest.approx(np.log(7), abs=0.01)


# --- DCI ---------------------------------------------------------------------------------------


def test_dci_diagonal_importance():
    assert disentanglement(np.diag([5.0] * 5)) == pytest.approx(1.0)
    assert completeness(np.diag([5.0] * 5)) == pytest.approx(1.0)


def test_dci_one_code_two_factors():
    importance = np.hstack([np.diag([5.0] * 5)] * 2)  # (5 codes, 10 factors)
    assert disentanglement(importance) == pytest.approx(1.0 - np.log(2) / np.log(10))
    assert completeness(importance) == pytest.approx(1.0)


def test_dci_one_factor_two_codes():
    importance = np.vstack([np.diag([5.0] * 5)] * 2)  # (10 codes, 5 factors)
    assert completeness(importance) == pytest.approx(1.0 - np.log(2) / np.log(10))
    assert disentanglement(importance) == pytest.approx(1.0)


def test_dci_zero_importance_is_zero():
    assert disentanglement(np.zeros((4, 3))) == pytest.approx(0.0, abs=1e-9)
    assert completeness(np.zeros((4, 3))) == pytest.approx(0.0, abs=1e-9)


def test_dci_identity_codes_reference():
    factors = _factors([3, 4], n=300)
    result = dci(factors.astype(float), factors, backend="reference")
    assert result.disentanglement >= 0.9 and result.completeness >= 0.9
    assert result.informativeness_test >= 0.95
    assert result.importance.shape == (2, 2)


def test_dci_random_codes_reference():
    factors = _factors([3, 4], n=300)
    codes = np.random.default_rng(5).normal(size=(300, 2))
    result = dci(codes, factors, backend="reference")
    assert result.disentanglement <= 0.2 and result.completeness <= 0.2
    assert result.informativeness_test <= 0.5  # chance is 1/3 and 1/4


def test_dci_constant_codes_reference():
    factors = _factors([3, 4], n=200)
    result = dci(np.ones((200, 3)), factors, backend="reference")
    assert result.disentanglement == pytest.approx(0.0, abs=1e-6)
    assert result.completeness == pytest.approx(0.0, abs=1e-6)


def test_dci_unknown_backend_lists_valid():
    factors = _factors([3, 4], n=50)
    with pytest.raises(KeyError, match="reference"):
        dci(factors.astype(float), factors, backend="lightgbm")


# --- MIG ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [2, 5, 10, 20])
def test_mig_identity_codes_near_one(levels):
    factors = _factors([levels, levels], n=10000)
    assert mig(factors.astype(float), factors) >= 0.9


def test_mig_random_codes_low():
    factors = _factors([5, 10])
    assert mig(np.random.default_rng(3).normal(size=(2000, 3)), factors) <= 0.2


def test_mig_duplicated_codes_zero():
    factors = _factors([5, 10])
    codes = np.repeat(factors.astype(float), 2, axis=1)
    assert mig(codes, factors) == pytest.approx(0.0, abs=1e-12)


def test_mig_constant_codes_zero():
    assert mig(np.zeros((500, 3)), _factors([3, 4], n=500)) == 0.0


def test_mig_uses_every_row():
    # disentanglement_lib's MIG has no test set: the last 20% of the rows count as much as the
    # first 80% (scrambling them lowers the score) and the score is invariant to the row order.
    factors = _factors([4, 4], n=1000)
    codes = factors.astype(float)
    scrambled = codes.copy()
    scrambled[800:] = np.random.default_rng(0).normal(size=(200, 2))  # the last 20% of rows
    assert mig(scrambled, factors) < mig(codes, factors) - 0.05
    noisy = codes + np.random.default_rng(1).normal(0, 0.5, codes.shape)
    order = np.random.default_rng(2).permutation(1000)
    assert mig(noisy[order], factors[order]) == pytest.approx(mig(noisy, factors), abs=1e-12)


def test_mig_active_ignores_a_dead_runner_up():
    # a dead copy of factor 0 (Var ≈ 1e-6 · Var(f0) < 0.01) is the runner-up of factor 0 and
    # halves the reference MIG; the active-only variant does not count it
    factors = _factors([10, 10], n=4000)
    codes = np.c_[factors, 1e-3 * factors[:, 0]].astype(float)
    assert mig(codes, factors) < 0.6
    assert mig_active(codes, factors) >= 0.9
    assert mig_active(codes[:, :2], factors) == pytest.approx(mig(codes[:, :2], factors))
    assert mig_active(codes, factors, active=np.ones(3, bool)) == mig(codes, factors)


def test_mig_active_edge_cases():
    factors = _factors([4, 4], n=1000)
    assert mig_active(np.zeros((1000, 3)), factors) == 0.0  # no active unit
    one = np.c_[factors[:, :1], np.zeros(1000)].astype(float)  # one active unit: its NMI
    assert mig_active(one, factors) == pytest.approx(mig(one[:, :1], factors))
    with pytest.raises(ValueError, match="bool mask"):
        mig_active(one, factors, active=[True])


# --- SAP ---------------------------------------------------------------------------------------


def test_sap_identity_binary_codes():
    factors = _factors([2, 2], n=2000)
    matrix = sap_matrix(factors.astype(float), factors)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    assert sap(factors.astype(float), factors) >= 0.45  # 1 minus the other code's chance level


def test_sap_random_and_constant_codes():
    factors = _factors([3, 4])
    assert sap(np.random.default_rng(2).normal(size=(2000, 3)), factors) <= 0.2
    assert sap(np.zeros((2000, 3)), factors) == 0.0


def test_sap_constant_code_scores_zero_not_majority_share():
    factors = _factors([3, 2])
    factors[:, 0] = np.where(np.random.default_rng(1).random(2000) < 0.8, 0, factors[:, 0])
    codes = np.c_[np.ones(2000), factors[:, 1].astype(float)]
    assert sap_matrix(codes, factors)[0].tolist() == [0.0, 0.0]


# --- modularity and explicitness ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mi", "expected"),
    [
        (np.eye(3), 1.0),
        (np.vstack([np.eye(2), np.zeros((1, 2))]), 2 / 3),  # an empty code scores 0
        (np.zeros((3, 2)), 0.0),
        (np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), 1.0),  # redundant codes
        (np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), 1.0),  # a missed factor
        (np.array([[1.0, 1.0], [0.0, 1.0]]), 0.5),  # one code for two factors
        (np.array([[2.0, 1.0]]), 1.0 - 1.0 / 4.0),  # squared MI: 1 - 1 / (4 * 1)
    ],
)
def test_modularity_known_mi(mi, expected):
    assert modularity_from_mi(mi) == pytest.approx(expected)


def test_modularity_identity_and_random():
    factors = _factors([3, 4, 5])
    assert modularity(factors.astype(float), factors) >= 0.99
    binary = _factors([2, 2, 2])
    mixed = binary @ np.ones((3, 3))  # every code carries the three factors equally
    assert modularity(mixed, binary) <= 0.1


@pytest.mark.parametrize(
    ("labels", "score", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0),  # perfect ranking
        ([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], 0.0),  # reversed
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied: half credit for every pair
        ([0, 1, 1], [0.2, 0.2, 0.9], 0.75),  # one tied pair, one won: (0.5 + 1) / 2
        ([0, 0, 1], [0.3, 0.1, 0.2], 0.5),  # the positive beats one of two negatives
    ],
)
def test_roc_auc_known_answers(labels, score, expected):
    assert roc_auc(np.array(labels) == 1, np.array(score)) == expected


def test_roc_auc_is_the_pair_count_and_matches_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    for n in (7, 50, 4000):
        labels = rng.integers(0, 2, n).astype(bool)
        score = np.round(rng.normal(size=n), 1)  # many ties
        pos, neg = score[labels], score[~labels]
        wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
        # both are the exact rational rounded once
        assert roc_auc(labels, score) == wins / (pos.size * neg.size)
        assert roc_auc(labels, score) == pytest.approx(roc_auc_score(labels, score), abs=1e-15)


def test_roc_auc_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.ones(5, dtype=bool), np.arange(5.0))


def test_explicitness_identity_and_random():
    factors = _factors([3, 4])
    assert explicitness(factors.astype(float), factors).test >= 0.95
    random = explicitness(np.random.default_rng(4).normal(size=(2000, 2)), factors)
    assert random.test == pytest.approx(0.5, abs=0.05)


def test_explicitness_constant_code_does_not_crash():
    factors = _factors([3, 4])
    with_constant = np.c_[factors.astype(float), np.full(2000, 7.0)]
    result = explicitness(with_constant, factors)
    assert result.test >= 0.95
    assert explicitness(np.full((2000, 1), 3.0), factors).test == pytest.approx(0.5)


def test_explicitness_level_missing_from_test_rows():
    factors = _factors([3, 4], n=200)
    factors[:160, 1] = np.arange(160) % 4  # all levels in train rows
    factors[160:, 1] = np.arange(40) % 2  # levels 2 and 3 absent from the test rows
    result = explicitness(factors.astype(float), factors)
    assert 0.5 <= result.test <= 1.0


# --- active units and KL -----------------------------------------------------------------------


def test_active_units_counts_active_not_total():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(5000, 4)) * np.array(
        [1.0, 0.2, 0.05, 0.0]
    )  # variances 1, .04, .0025, 0
    result = active_units(codes)
    assert result.n_active == 2
    assert result.fraction == 0.5
    assert result.active.tolist() == [True, True, False, False]
    np.testing.assert_allclose(result.variances, [1.0, 0.04, 0.0025, 0.0], rtol=0.06, atol=1e-12)
    assert active_units(np.zeros((100, 6))).n_active == 0


def test_kl_per_unit_closed_form():
    mean = np.array([[1.0, 0.0], [1.0, 0.0]])
    logvar = np.array([[0.0, np.log(2.0)], [0.0, np.log(2.0)]])
    np.testing.assert_allclose(kl_per_unit(mean, logvar), [0.5, 0.5 * (1.0 - np.log(2.0))])


# --- score -------------------------------------------------------------------------------------


def test_score_keys_and_values():
    factors = _factors([3, 4], n=300)
    scores = score(factors.astype(float), factors, dci_backend="reference")
    assert set(scores) >= {
        "mig",
        "sap",
        "modularity",
        "explicitness_train",
        "explicitness_test",
        "dci.disentanglement",
        "dci.completeness",
        "dci.informativeness_train",
        "dci.informativeness_test",
        "active_units",
    }
    assert all(type(v) is float for v in scores.values())
    assert scores["active_units"] == 2.0
    assert scores["mig"] >= 0.9 and scores["dci.disentanglement"] >= 0.9


def test_score_unknown_backend():
    factors = _factors([3, 4], n=50)
    with pytest.raises(KeyError, match="valid"):
        score(factors.astype(float), factors, dci_backend="xgboost")

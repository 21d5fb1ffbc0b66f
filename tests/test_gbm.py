"""toybench.metrics._gbm.fit_gbm against scikit-learn's GradientBoostingClassifier.

Tolerances: while no exact tie between candidate features has occurred (the first stages on
continuous features) importances agree to 1e-10 and every prediction is the same. Over 100 stages,
tiny nodes (e.g. two rows at depth 2) produce exact ties that scikit-learn breaks by its random
feature order; those change which feature gets credited (and test predictions through the
threshold), not the training fit. There, importances agree to 0.01 — scikit-learn itself moves by
~2e-3 between random_state values on these problems — and train accuracies are identical.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from toybench.metrics._gbm import GBMFit, fit_gbm, fit_gbm_factors


def _problem(seed, n, n_features, n_classes, *, noise=0.7):
    """Labels plus two informative features (one exact, one noisy) and pure-noise features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    x = rng.normal(size=(n, n_features))
    x[:, 0] += y
    x[:, 1] = y + noise * rng.normal(size=n)
    n_train = int(np.ceil(0.8 * n))
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _reference(x_train, y_train, x_test, y_test, **settings):
    model = GradientBoostingClassifier(random_state=0, **settings).fit(x_train, y_train)
    return GBMFit(
        model.feature_importances_,
        float(np.mean(model.predict(x_train) == y_train)),
        float(np.mean(model.predict(x_test) == y_test)),
    )


@pytest.mark.parametrize(
    ("n", "n_features", "n_classes", "n_estimators"),
    [(300, 4, 2, 2), (400, 5, 3, 2), (900, 3, 5, 2), (800, 3, 6, 1)],
)
def test_first_stages_match_sklearn_exactly(n, n_features, n_classes, n_estimators):
    data = _problem(n, n, n_features, n_classes)
    fast = fit_gbm(*data, n_estimators=n_estimators)
    ref = _reference(*data, n_estimators=n_estimators)
    np.testing.assert_allclose(fast.importance, ref.importance, rtol=0, atol=1e-10)
    assert fast.train_accuracy == ref.train_accuracy
    assert fast.test_accuracy == ref.test_accuracy


@pytest.mark.parametrize(("n", "n_classes"), [(300, 2), (400, 3), (500, 6)])
def test_full_boosting_matches_sklearn(n, n_classes):
    data = _problem(n + 1, n, 5, n_classes)
    fast = fit_gbm(*data)
    ref = _reference(*data)
    np.testing.assert_allclose(fast.importance, ref.importance, rtol=0, atol=0.01)
    assert fast.train_accuracy == ref.train_accuracy
    assert abs(fast.test_accuracy - ref.test_accuracy) <= 0.02
    assert fast.importance.sum() == pytest.approx(1.0)


def test_other_settings_match_sklearn():
    data = _problem(3, 300, 4, 3)
    settings = dict(n_estimators=3, learning_rate=0.5, max_depth=2)
    fast = fit_gbm(*data, **settings)
    ref = _reference(*data, **settings)
    np.testing.assert_allclose(fast.importance, ref.importance, rtol=0, atol=1e-10)
    assert (fast.train_accuracy, fast.test_accuracy) == (ref.train_accuracy, ref.test_accuracy)


def test_ties_constant_and_near_equal_values():
    """Rounded values (many exact ties), a constant feature, and values 1 float32 ulp apart,
    which scikit-learn's FEATURE_THRESHOLD treats as one value."""
    rng = np.random.default_rng(5)
    n = 400
    y = rng.integers(0, 4, n)
    x = np.column_stack(
        [
            np.round(y + rng.normal(size=n), 1),  # ties everywhere
            np.full(n, 3.0),  # constant
            1.0 + np.spacing(np.float32(1.0)) * (y % 2),  # two values closer than 1e-7
            rng.normal(size=n),
        ]
    )
    data = (x[:320], y[:320], x[320:], y[320:])
    fast = fit_gbm(*data, n_estimators=3)
    ref = _reference(*data, n_estimators=3)
    np.testing.assert_allclose(fast.importance, ref.importance, rtol=0, atol=1e-10)
    assert fast.importance[1] == 0.0 and fast.importance[2] == 0.0
    assert (fast.train_accuracy, fast.test_accuracy) == (ref.train_accuracy, ref.test_accuracy)


def test_duplicated_feature_shares_the_same_credit():
    """Two identical columns tie exactly at every split; how the credit is divided between them
    is a coin toss in both implementations, but their sum is the same."""
    x_train, y_train, x_test, y_test = _problem(7, 400, 3, 2)
    dup_train = np.column_stack([x_train, x_train[:, 1]])
    dup_test = np.column_stack([x_test, x_test[:, 1]])
    fast = fit_gbm(dup_train, y_train, dup_test, y_test, n_estimators=1)
    ref = _reference(dup_train, y_train, dup_test, y_test, n_estimators=1)
    pair = [1, 3]
    assert fast.importance[pair].sum() == pytest.approx(ref.importance[pair].sum(), abs=1e-10)
    np.testing.assert_allclose(fast.importance[[0, 2]], ref.importance[[0, 2]], atol=1e-10)
    assert fast.train_accuracy == ref.train_accuracy


def test_arbitrary_labels_and_unseen_test_labels():
    x_train, y_train, x_test, y_test = _problem(11, 300, 3, 3)
    codes = np.array([-5, 7, 100])
    y_train, y_test = codes[y_train], codes[y_test].copy()
    y_test[:10] = 42  # never seen in training: always a wrong prediction
    fast = fit_gbm(x_train, y_train, x_test, y_test, n_estimators=5)
    ref = _reference(x_train, y_train, x_test, y_test, n_estimators=5)
    assert (fast.train_accuracy, fast.test_accuracy) == (ref.train_accuracy, ref.test_accuracy)
    assert fast.test_accuracy <= 1 - 10 / len(y_test)


def test_deterministic_and_no_global_rng():
    data = _problem(13, 300, 4, 4)
    state = np.random.get_state()[1].copy()
    first = fit_gbm(*data, n_estimators=20)
    second = fit_gbm(*data, n_estimators=20)
    np.testing.assert_array_equal(first.importance, second.importance)
    assert first[1:] == second[1:]
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_perfectly_separable_binary_feature():
    x = np.array([[0.0, 5.0], [1.0, 5.0]] * 10)
    y = np.array([0, 1] * 10)
    fit = fit_gbm(x[:16], y[:16], x[16:], y[16:], n_estimators=10)
    np.testing.assert_allclose(fit.importance, [1.0, 0.0])
    assert fit.train_accuracy == 1.0 and fit.test_accuracy == 1.0


def test_empty_test_set_gives_nan_accuracy():
    x_train, y_train, _, _ = _problem(17, 100, 2, 2)
    fit = fit_gbm(x_train, y_train, np.empty((0, 2)), np.empty(0, dtype=int), n_estimators=2)
    assert np.isnan(fit.test_accuracy)


@pytest.mark.parametrize(
    ("x_train", "y_train", "x_test", "y_test", "match"),
    [
        (np.zeros((10, 2)), np.zeros(10, dtype=int), np.zeros((2, 2)), np.zeros(2), "1 class"),
        (np.zeros(10), np.arange(10) % 2, np.zeros((2, 1)), np.zeros(2), "2-D"),
        (np.zeros((10, 2)), np.arange(9) % 2, np.zeros((2, 2)), np.zeros(2), r"shape \(10,\)"),
        (np.zeros((10, 2)), np.arange(10) % 2, np.zeros((2, 3)), np.zeros(2), "feature counts"),
        (np.full((10, 2), np.nan), np.arange(10) % 2, np.zeros((2, 2)), np.zeros(2), "NaN"),
        (np.full((10, 2), 1e39), np.arange(10) % 2, np.zeros((2, 2)), np.zeros(2), "float32"),
    ],
)
def test_bad_input_raises_value_error(x_train, y_train, x_test, y_test, match):
    with pytest.raises(ValueError, match=match):
        fit_gbm(x_train, y_train, x_test, y_test)


@pytest.mark.parametrize(
    "bad", [dict(n_estimators=0), dict(learning_rate=-1.0), dict(max_depth=0), dict(max_depth=15)]
)
def test_bad_settings_raise_value_error(bad):
    with pytest.raises(ValueError):
        fit_gbm(*_problem(19, 50, 2, 2), **bad)


def test_deep_trees_match_sklearn():
    """Beyond depth 5 the node codes are int16. Tiny deep nodes tie exactly between features,
    so (as over 100 stages) importances agree to 0.01, not bit for bit (measured 2.6e-3)."""
    data = _problem(43, 3000, 3, 3)
    fast = fit_gbm(*data, n_estimators=1, max_depth=8)
    ref = _reference(*data, n_estimators=1, max_depth=8)
    np.testing.assert_allclose(fast.importance, ref.importance, rtol=0, atol=0.01)
    assert abs(fast.train_accuracy - ref.train_accuracy) <= 0.01
    assert abs(fast.test_accuracy - ref.test_accuracy) <= 0.02


def _factor_columns(seed, n):
    """Four label columns (binary and multiclass) on the same rounded features (many ties)."""
    rng = np.random.default_rng(seed)
    y = np.column_stack([rng.integers(0, size, n) for size in (2, 3, 5, 2)])
    x = np.round(rng.normal(size=(n, 4)) + 0.5 * y[:, :4], 1)
    n_train = int(np.ceil(0.8 * n))
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_factors_at_once_equal_one_by_one_bit_for_bit(n_threads):
    """All factors' trees share each scan and thread groups differ with n_threads, yet every
    factor's model is exactly its own fit_gbm model."""
    x_train, y_train, x_test, y_test = _factor_columns(47, 400)
    fits = fit_gbm_factors(x_train, y_train, x_test, y_test, n_estimators=8, n_threads=n_threads)
    assert len(fits) == y_train.shape[1]
    for k, fit in enumerate(fits):
        alone = fit_gbm(x_train, y_train[:, k], x_test, y_test[:, k], n_estimators=8)
        np.testing.assert_array_equal(fit.importance, alone.importance)
        assert fit[1:] == alone[1:]


@pytest.mark.parametrize(
    ("y_train", "y_test", "settings", "match"),
    [
        (np.zeros(8, dtype=int), np.zeros((2, 1)), {}, r"shape \(8, n_factors\)"),
        (np.c_[np.arange(8) % 2, np.arange(8) % 3], np.zeros((2, 1)), {}, "column counts"),
        (np.c_[np.arange(8) % 2, np.zeros(8)], np.zeros((2, 2)), {}, "column 1 .* 1 class"),
        (np.c_[np.arange(8) % 2], np.zeros((2, 1)), dict(n_threads=0), "n_threads"),
    ],
)
def test_factors_bad_input_raises_value_error(y_train, y_test, settings, match):
    x = np.arange(16.0).reshape(8, 2)
    with pytest.raises(ValueError, match=match):
        fit_gbm_factors(x, y_train, x[:2], y_test, **settings)


def _entropy_score(importance: np.ndarray) -> float:
    """1 − H in base ``n_columns`` per row, weighted by row sums (disentanglement of (L, K))."""
    p = (importance + 1e-11) / (importance + 1e-11).sum(axis=1, keepdims=True)
    per_row = 1 + (p * np.log(p)).sum(axis=1) / np.log(importance.shape[1])
    return float(per_row @ (importance.sum(axis=1) / importance.sum()))


def _dci(codes, factors, fitter):
    n_train = int(np.ceil(0.8 * len(codes)))
    fits = [fitter(codes[:n_train], y[:n_train], codes[n_train:], y[n_train:]) for y in factors.T]
    importance = np.column_stack([np.abs(fit.importance) for fit in fits])  # (L, K)
    return (
        _entropy_score(importance),  # disentanglement
        _entropy_score(importance.T),  # completeness
        np.mean([fit.train_accuracy for fit in fits]),
        np.mean([fit.test_accuracy for fit in fits]),
    )


def _code_sets(n, sizes, seed):
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
    u = (factors + 0.5) / np.asarray(sizes)
    mixed = (u + 0.1 * rng.normal(size=u.shape)) @ (
        np.eye(len(sizes)) + 0.3 * rng.normal(size=(len(sizes),) * 2)
    )
    yield "entangled", np.column_stack([mixed, rng.normal(size=(n, 2))]), factors
    yield "identity", factors.astype(float) + 0.01 * rng.normal(size=factors.shape), factors


@pytest.mark.parametrize("which", ["entangled", "identity"])
def test_dci_scores_match_reference_within_0_01(which):
    codes, factors = dict((name, (c, f)) for name, c, f in _code_sets(300, (2, 3, 4), 23))[which]
    fast = _dci(codes, factors, fit_gbm)
    ref = _dci(codes, factors, _reference)
    np.testing.assert_allclose(fast, ref, rtol=0, atol=0.01)


@pytest.mark.slow
def test_larger_problem_matches_sklearn():
    data = _problem(29, 3000, 8, 10, noise=1.5)
    fast = fit_gbm(*data)
    ref = _reference(*data)
    np.testing.assert_allclose(fast.importance, ref.importance, rtol=0, atol=0.01)
    assert abs(fast.train_accuracy - ref.train_accuracy) <= 0.01
    # Tie-broken thresholds send some test rows elsewhere (measured 0.015 here).
    assert abs(fast.test_accuracy - ref.test_accuracy) <= 0.02


@pytest.mark.slow
def test_dci_scores_match_reference_on_larger_code_sets():
    for _, codes, factors in _code_sets(2000, (3, 6, 10), 31):
        fast = _dci(codes, factors, fit_gbm)
        ref = _dci(codes, factors, _reference)
        np.testing.assert_allclose(fast, ref, rtol=0, atol=0.01)

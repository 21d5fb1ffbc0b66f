"""Disentanglement, completeness and informativeness (DCI) of Eastwood & Williams 2018, "A
Framework for the Quantitative Evaluation of Disentangled Representations",
https://openreview.net/forum?id=By-7dz-AZ — as in disentanglement_lib's
``evaluation/metrics/dci.py``.

Per factor, a gradient-boosted tree classifier (scikit-learn ``GradientBoostingClassifier``
defaults: 100 stages, learning rate 0.1, depth 3, friedman_mse) predicts the factor from all
codes; the absolute feature importances form the importance matrix ``R (L, K)``. Disentanglement
is the importance-weighted mean over codes of ``1 − H_K(R[i, :] / Σ_k R[i, k])``, completeness the
importance-weighted mean over factors of ``1 − H_L(R[:, k] / Σ_i R[i, k])``, and informativeness
the classifiers' mean train and test *accuracy* (disentanglement_lib names these ``train_err`` /
``test_err`` though they are accuracies).

Two backends give the same numbers: ``"reference"`` runs scikit-learn, ``"fast"`` (the default)
runs toybench's exact re-implementation in `toybench.metrics._gbm`, fitting all factors' models
at once and in parallel threads (seconds instead of minutes at n = 10,000).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from toybench.metrics._common import check_inputs, train_test_split

BACKENDS = ("fast", "reference")


class DCIResult(NamedTuple):
    """Importance matrix (L, K) and the four DCI scores."""

    importance: np.ndarray
    disentanglement: float
    completeness: float
    informativeness_train: float
    informativeness_test: float


class _FactorFit(NamedTuple):
    importance: np.ndarray  # (L,)
    train_accuracy: float
    test_accuracy: float


def _fit_reference(x_train, y_train, x_test, y_test) -> _FactorFit:
    """scikit-learn's ``GradientBoostingClassifier()`` exactly as disentanglement_lib uses it.

    ``random_state=0`` only fixes the order in which tied candidate features are visited, so the
    result is reproducible (disentanglement_lib leaves it unseeded).
    """
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(random_state=0)
    model.fit(x_train, y_train)
    return _FactorFit(
        np.abs(model.feature_importances_),
        float(np.mean(model.predict(x_train) == y_train)),
        float(np.mean(model.predict(x_test) == y_test)),
    )


def _fit_fast(x_train, y_train, x_test, y_test, n_threads=None) -> list[_FactorFit]:
    """`toybench.metrics._gbm.fit_gbm_factors`: every factor's model at once (all their trees
    share each pass over the presorted codes; factor groups run in ``n_threads`` parallel
    threads, by default one per available CPU)."""
    from toybench.metrics._gbm import fit_gbm_factors  # imported lazily: needs numba

    return [
        _FactorFit(
            np.abs(np.asarray(fit.importance, dtype=np.float64)),
            float(fit.train_accuracy),
            float(fit.test_accuracy),
        )
        for fit in fit_gbm_factors(x_train, y_train, x_test, y_test, n_threads=n_threads)
    ]


def prepare(backend: str = "fast") -> None:
    """Import and load the compiled code of ``backend`` (the fast one's numba core: about
    0.3 s in a fresh process), so that a later `dci` takes only the time of its fits."""
    if backend == "fast":
        from toybench.metrics._gbm import load_compiled

        load_compiled()


def _fit_reference_factors(x_train, y_train, x_test, y_test, n_threads=None
                           ) -> list[_FactorFit]:
    """`_fit_reference` for each column of ``y_train (n, K)``, one after the other (one thread:
    ``n_threads`` is ignored)."""
    return [
        _fit_reference(x_train, y_train[:, k], x_test, y_test[:, k])
        for k in range(y_train.shape[1])
    ]


#: Per backend: ``(x_train, y_train (n, K), x_test, y_test (m, K), n_threads) -> list of K
#: _FactorFit``.
_FITTERS = {"fast": _fit_fast, "reference": _fit_reference_factors}


def importance_matrix(codes, factors, *, backend: str = "fast", n_threads: int | None = None
                      ) -> tuple[np.ndarray, float, float]:
    """Gradient-boosting importance matrix ``(L, K)`` and mean train / test accuracy.

    Rows used: fit on the first ⌈0.8 n⌉ rows; train accuracy on those rows, test accuracy on
    the rest (disentanglement_lib's ``num_train`` / ``num_test`` sets). ``n_threads``: threads
    of the fast backend (default: one per available CPU); the result does not depend on it.
    """
    try:
        fitter = _FITTERS[backend]
    except KeyError:
        raise KeyError(f"unknown DCI backend {backend!r}; valid: {sorted(_FITTERS)}") from None
    codes, factors = check_inputs(codes, factors)
    split = train_test_split(codes, factors)
    fits = fitter(split.codes_train, split.factors_train, split.codes_test, split.factors_test,
                  n_threads)
    importance = np.column_stack([fit.importance for fit in fits])  # (L, K)
    train_acc = [fit.train_accuracy for fit in fits]
    test_acc = [fit.test_accuracy for fit in fits]
    return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def _weighted_one_minus_entropy(weights: np.ndarray) -> float:
    """Importance-weighted mean over rows of ``1 − H(row)`` with entropy in base ``n_columns``.

    ``weights (R, C)``: disentanglement uses ``R = codes``, completeness the transpose. As
    disentanglement_lib: 1e-11 is added before normalizing each row, and an all-zero matrix
    weighs rows uniformly. With a single column every row is trivially pure (1 − H = 1), where
    disentanglement_lib divides by log 1 = 0.
    """
    n_columns = weights.shape[1]
    if n_columns == 1:
        per_row = np.ones(weights.shape[0])
    else:
        p = weights + 1e-11
        p = p / p.sum(axis=1, keepdims=True)  # (R, C)
        per_row = 1.0 + (p * np.log(p)).sum(axis=1) / np.log(n_columns)
    total = weights.sum()
    row_weight = (
        weights.sum(axis=1) / total if total > 0 else np.full(len(weights), 1 / len(weights))
    )
    return float(np.sum(per_row * row_weight))


def disentanglement(importance: np.ndarray) -> float:
    """DCI disentanglement of an importance matrix ``(L codes, K factors)``, in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> round(disentanglement(np.eye(3)), 6)
    1.0
    """
    return _weighted_one_minus_entropy(np.asarray(importance, dtype=np.float64))


def completeness(importance: np.ndarray) -> float:
    """DCI completeness of an importance matrix ``(L codes, K factors)``, in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> round(completeness(np.array([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])), 6)
    1.0
    """
    return _weighted_one_minus_entropy(np.asarray(importance, dtype=np.float64).T)


def dci(codes, factors, *, backend: str = "fast", n_threads: int | None = None) -> DCIResult:
    """DCI scores (Eastwood & Williams 2018) as computed by disentanglement_lib.

    Rows used: classifiers fit on the first ⌈0.8 n⌉ rows; ``informativeness_train`` is their mean
    accuracy on those rows, ``informativeness_test`` on the rest. All scores are higher-better in
    [0, 1].

    Parameters
    ----------
    codes : (n, L) array of floats
    factors : (n, K) array of integer levels
    backend : {"fast", "reference"}
        ``"reference"``: scikit-learn ``GradientBoostingClassifier`` (slow: minutes at
        n = 10,000); ``"fast"``: `toybench.metrics._gbm.fit_gbm`, the same model re-implemented.
    n_threads : int, optional
        Threads of the fast backend (default: one per available CPU); bit-identical results
        whatever the count.

    Returns
    -------
    DCIResult(importance (L, K), disentanglement, completeness, informativeness_train,
    informativeness_test)

    Examples
    --------
    >>> import numpy as np
    >>> factors = np.random.default_rng(0).integers(0, 3, size=(200, 2))
    >>> result = dci(factors.astype(float), factors, backend="reference")
    >>> round(result.disentanglement, 2), round(result.informativeness_test, 2)
    (1.0, 1.0)
    """
    importance, train_accuracy, test_accuracy = importance_matrix(codes, factors, backend=backend,
                                                                 n_threads=n_threads)
    return DCIResult(
        importance,
        disentanglement(importance),
        completeness(importance),
        train_accuracy,
        test_accuracy,
    )

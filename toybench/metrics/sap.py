"""Separated Attribute Predictability (SAP) of Kumar et al. 2018, "Variational Inference of
Disentangled Latent Concepts from Unlabeled Observations", https://arxiv.org/abs/1711.00848 —
as in disentanglement_lib's ``evaluation/metrics/sap_score.py`` with discrete factors
(``continuous_factors=False``, the setting of every shipped config).

For each (code, factor) a one-feature linear SVM (``LinearSVC(C=0.01, class_weight="balanced")``)
predicts the factor from the code; the score matrix holds test accuracies, and SAP is the mean
over factors of the gap between the two most predictive codes.
"""

from __future__ import annotations

import warnings

import numpy as np

from toybench.metrics._common import check_inputs, is_constant_column, top_two_gap, train_test_split


def sap_matrix(codes, factors) -> np.ndarray:
    """Test accuracy of predicting each factor from each single code, shape ``(L, K)``.

    Rows used: fit on the first ⌈0.8 n⌉ rows, accuracy on the remaining rows.

    Deviation from disentanglement_lib: a code that is constant over the train rows carries no
    information and gets 0 (disentanglement_lib fits the SVM anyway, whose intercept alone then
    predicts one class and earns that class's share of the test rows; its continuous branch
    already uses 0 for zero-variance codes).

    Parameters
    ----------
    codes : (n, L) array of floats
    factors : (n, K) array of integer levels

    Returns
    -------
    (L, K) float array of accuracies in [0, 1].
    """
    from sklearn.exceptions import ConvergenceWarning  # scikit-learn loads lazily
    from sklearn.svm import LinearSVC

    codes, factors = check_inputs(codes, factors)
    split = train_test_split(codes, factors)
    constant = is_constant_column(split.codes_train)
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for i in range(codes.shape[1]):
        if constant[i]:
            continue
        x_train = split.codes_train[:, i : i + 1]  # (n_train, 1)
        x_test = split.codes_test[:, i : i + 1]  # (n_test, 1)
        for k in range(factors.shape[1]):
            classifier = LinearSVC(C=0.01, class_weight="balanced")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                classifier.fit(x_train, split.factors_train[:, k])
            scores[i, k] = np.mean(classifier.predict(x_test) == split.factors_test[:, k])
    return scores


def sap(codes, factors) -> float:
    """SAP score, higher-better in [0, 1].

    Rows used: train on the first ⌈0.8 n⌉ rows, evaluate on the rest (disentanglement_lib's
    ``num_train`` / ``num_test`` sets). Estimator: ``LinearSVC(C=0.01, class_weight="balanced")``
    on the raw (unstandardized) code, as in disentanglement_lib; so, unlike MIG, SAP is not
    invariant to rescaling a code. See `sap_matrix` for the treatment of constant codes. With a
    single code the gap is that code's accuracy (disentanglement_lib raises an IndexError).

    Parameters
    ----------
    codes : (n, L) array of floats
    factors : (n, K) array of integer levels

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> factors = np.random.default_rng(0).integers(0, 2, size=(500, 2))
    >>> round(sap(factors.astype(float), factors), 1)
    0.5
    """
    return float(np.mean(top_two_gap(sap_matrix(codes, factors))))

"""Shared pieces of the metrics: input validation, disentanglement_lib's train/test split,
histogram discretization and discrete mutual information.

Everything here follows disentanglement_lib's ``evaluation/metrics/utils.py``
(Locatello et al. 2019, https://arxiv.org/abs/1811.12359) with toybench's row layout: codes are
``(n_samples, n_codes)`` and factors ``(n_samples, n_factors)``; disentanglement_lib's
``(codes, points)`` layout never appears outside this docstring.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: Fewest rows a score accepts (8 train rows and 2 test rows under the 80/20 split).
MIN_ROWS = 10
#: disentanglement_lib's ``discretizer.num_bins`` in every shipped metric config.
N_BINS = 20


def check_codes(codes, *, name: str = "codes", min_rows: int = 1) -> np.ndarray:
    """Validate a ``(n, L)`` array of codes and return it as a floating array.

    Floating input keeps its dtype (so that histogram edges are computed exactly as
    disentanglement_lib would on the same array); integers and booleans become float64.

    Raises
    ------
    ValueError
        Wrong number of dimensions, no columns, too few rows, non-numeric or non-finite values.
    """
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_codes), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has shape {arr.shape}: it needs at least one column")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} has shape {arr.shape}: at least {min_rows} rows are needed")
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64)
    elif not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} with shape {arr.shape} has non-numeric dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} with shape {arr.shape} contains NaN or inf")
    return arr


def check_factors(factors, *, n_rows: int | None = None, min_rows: int = MIN_ROWS) -> np.ndarray:
    """Validate a ``(n, K)`` array of integer factor levels and return it as int64.

    Integral floats (as a careless ``.npz`` may hold them) are accepted; every factor must take
    at least two distinct levels.

    Raises
    ------
    ValueError
        Wrong number of dimensions, row count differing from ``n_rows``, too few rows, NaN/inf,
        non-integer levels, or a constant factor.
    """
    arr = np.asarray(factors)
    if arr.ndim != 2:
        raise ValueError(f"factors must be 2-D (n_samples, n_factors), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"factors has shape {arr.shape}: it needs at least one column")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise ValueError(
            f"codes have {n_rows} rows but factors has shape {arr.shape}: row counts differ"
        )
    if arr.shape[0] < min_rows:
        raise ValueError(f"factors has shape {arr.shape}: at least {min_rows} rows are needed")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"factors with shape {arr.shape} contains NaN or inf")
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"factors with shape {arr.shape} must hold integer levels")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"factors with shape {arr.shape} has non-numeric dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    constant = [k for k in range(arr.shape[1]) if (arr[:, k] == arr[0, k]).all()]
    if constant:
        raise ValueError(
            f"factors with shape {arr.shape}: column(s) {constant} are constant; "
            "a score needs every factor to vary"
        )
    return arr


def check_inputs(codes, factors, *, min_rows: int = MIN_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``codes (n, L)`` and ``factors (n, K)`` together (see the two checks above)."""
    codes_arr = np.asarray(codes)
    factors_arr = np.asarray(factors)
    if codes_arr.ndim == 2 and factors_arr.ndim == 2 and codes_arr.shape[0] != factors_arr.shape[0]:
        raise ValueError(
            f"codes has shape {codes_arr.shape} but factors has shape {factors_arr.shape}: "
            "row counts differ"
        )
    codes_arr = check_codes(codes_arr, min_rows=min_rows)
    factors_arr = check_factors(factors_arr, n_rows=codes_arr.shape[0], min_rows=min_rows)
    return codes_arr, factors_arr


def n_train_rows(n: int) -> int:
    """``ceil(0.8 n)`` in integer arithmetic: the number of leading rows used for training."""
    return -(-4 * n // 5)


class Split(NamedTuple):
    """disentanglement_lib's train/test data as rows of one array: the first ⌈0.8 n⌉ rows train."""

    codes_train: np.ndarray  # (n_train, L)
    factors_train: np.ndarray  # (n_train, K)
    codes_test: np.ndarray  # (n - n_train, L)
    factors_test: np.ndarray  # (n - n_train, K)


def train_test_split(codes: np.ndarray, factors: np.ndarray) -> Split:
    """Split validated inputs into the first ⌈0.8 n⌉ rows (train) and the rest (test), in order.

    Raises
    ------
    ValueError
        If a factor is constant over the train rows (no classifier or entropy is defined then).
    """
    n_train = n_train_rows(codes.shape[0])
    f_train = factors[:n_train]
    constant = [k for k in range(f_train.shape[1]) if (f_train[:, k] == f_train[0, k]).all()]
    if constant:
        raise ValueError(
            f"factors with shape {factors.shape}: column(s) {constant} are constant over the "
            f"first {n_train} (train) rows"
        )
    return Split(codes[:n_train], f_train, codes[n_train:], factors[n_train:])


def histogram_discretize(codes: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Discretize each code column into ``n_bins`` equal-width bins over its own range.

    As disentanglement_lib's ``_histogram_discretize``: ``np.digitize(x, edges[:-1])`` with the
    edges of ``np.histogram(x, n_bins)``, giving labels 1..n_bins (a constant column lands in a
    single bin).

    Parameters
    ----------
    codes : (n, L) floating array
    n_bins : int

    Returns
    -------
    (n, L) int64 array of bin labels.
    """
    out = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        column = codes[:, j]
        edges = np.histogram_bin_edges(column, n_bins)
        out[:, j] = np.digitize(column, edges[:-1])
    return out


def _dense_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel to 0..m-1 (sorted order) and return the labels and m."""
    uniques, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(-1), uniques.size


def mutual_info(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two discrete label vectors.

    The same estimator and numerical safeguards as ``sklearn.metrics.mutual_info_score``
    (contingency table, terms below machine epsilon set to 0, result clipped at 0), vectorized
    with ``np.bincount`` because the metrics call it ``L * K`` times.
    """
    a, n_a = _dense_labels(labels_a)
    b, n_b = _dense_labels(labels_b)
    if n_a == 1 or n_b == 1:
        return 0.0
    joint = np.bincount(a * n_b + b, minlength=n_a * n_b).reshape(n_a, n_b)
    nzx, nzy = np.nonzero(joint)
    nz = joint[nzx, nzy].astype(np.float64)
    total = float(a.size)
    pi = joint.sum(axis=1)
    pj = joint.sum(axis=0)
    p_nz = nz / total
    outer = pi[nzx].astype(np.int64) * pj[nzy].astype(np.int64)
    log_outer = -np.log(outer.astype(np.float64)) + 2.0 * np.log(total)
    terms = p_nz * (np.log(nz) - np.log(total)) + p_nz * log_outer
    terms = np.where(np.abs(terms) < np.finfo(np.float64).eps, 0.0, terms)
    return float(max(terms.sum(), 0.0))


def discrete_mutual_info(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Mutual information matrix ``m[i, k] = I(code_i; factor_k)`` in nats, shape ``(L, K)``."""
    n_codes, n_factors = discrete_codes.shape[1], factors.shape[1]
    m = np.zeros((n_codes, n_factors))
    for i in range(n_codes):
        for k in range(n_factors):
            m[i, k] = mutual_info(factors[:, k], discrete_codes[:, i])
    return m


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each factor column, ``H(y) = I(y; y)``, shape ``(K,)``."""
    return np.array([mutual_info(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


def is_constant_column(x: np.ndarray) -> np.ndarray:
    """``(L,)`` bool: which columns of ``x (n, L)`` hold a single value (scale-free test)."""
    return (x.max(axis=0) - x.min(axis=0)) == 0


def top_two_gap(matrix: np.ndarray) -> np.ndarray:
    """Per column of ``matrix (L, K)``: largest minus second largest entry, shape ``(K,)``.

    With a single row (one code) the second largest is taken as 0: every entry is a
    non-negative information or accuracy, and no other code competes.
    """
    if matrix.shape[0] == 1:
        return matrix[0].copy()
    ordered = np.sort(matrix, axis=0)
    return ordered[-1] - ordered[-2]

"""toybench's scores: pure numpy functions of ``codes (n_samples, n_codes)`` and
``factors (n_samples, n_factors)``, one module per family.

Definitions and data use follow disentanglement_lib (Locatello et al. 2019,
https://arxiv.org/abs/1811.12359) exactly, except where its code is wrong (each deviation is
documented where it happens). Where a score needs train and test rows, the first ⌈0.8 n⌉ rows
are train and the rest test, in the given order (shuffle ordered data first). As in
disentanglement_lib, MIG uses every row (it has no test set), modularity the train rows (its
test rows serve explicitness), DCI, SAP and explicitness fit on train and score both.

``METRICS`` maps a name to a function ``(codes, factors) -> float | NamedTuple``; `score` runs
the standard set and returns a flat ``dict[str, float]``. ``METRIC_INFO`` (`registry`) says, for
every key a run's ``metrics.json`` can hold, its direction, bounds and meaning; `metric_info`
resolves a full key (``test.consistency.hue``) to its entry. Importing this package loads neither
torch nor scikit-learn (estimators are imported when first used).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from toybench.metrics._common import MIN_ROWS, N_BINS, check_inputs, n_train_rows
from toybench.metrics.dci import BACKENDS as DCI_BACKENDS
from toybench.metrics.dci import DCIResult, completeness, dci, disentanglement
from toybench.metrics.diagnostics import perturbation_matrix, responsibilities
from toybench.metrics.graph import (
    Assignment,
    concept_assignment,
    dag_leakage,
    intervention_consistency,
    mi_matrix,
    pairwise_entanglement,
    pairwise_entanglement_threshold,
    shared_information_matrix,
)
from toybench.metrics.mig import mig, mig_active, normalized_mutual_info
from toybench.metrics.modularity import Explicitness, explicitness, modularity
from toybench.metrics.recon import (
    PCAReference,
    ReconErrors,
    bce_per_image,
    bce_with_logits_per_image,
    errors_per_image,
    mse_per_image,
    pca_reference,
    reconstruction_errors,
)
from toybench.metrics.registry import (
    METRIC_INFO,
    SPLIT_INFO,
    MetricInfo,
    metric_info,
    split_info,
)
from toybench.metrics.sap import sap, sap_matrix
from toybench.metrics.units import ACTIVE_THRESHOLD, ActiveUnits, active_units, kl_per_unit

#: Every score of ``(codes, factors)``; values are floats or NamedTuples of floats and arrays.
METRICS: dict[str, Callable] = {
    "dci": dci,
    "mig": mig,
    "sap": sap,
    "modularity": modularity,
    "explicitness": explicitness,
    "active_units": active_units,
}


def get_metric(name: str) -> Callable:
    """The metric registered under ``name``; a KeyError lists the valid names."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; valid: {sorted(METRICS)}") from None


def score(
    codes,
    factors,
    *,
    dci_backend: str = "fast",
    active_threshold: float = ACTIVE_THRESHOLD,
) -> dict[str, float]:
    """The standard scores of ``codes`` against ``factors`` as one flat dict of floats.

    Keys: ``mig`` (reference-compatible: all codes), ``mig.active`` (active units only),
    ``sap``, ``modularity``, ``explicitness_train``, ``explicitness_test``,
    ``dci.disentanglement``, ``dci.completeness``, ``dci.informativeness_train``,
    ``dci.informativeness_test``, ``active_units`` (count of active units) and
    ``active_units.fraction``. Rows used by each score are documented in its function.

    Parameters
    ----------
    codes : (n, L) array of floats (posterior means)
    factors : (n, K) array of integer levels
    dci_backend : {"fast", "reference"}
    active_threshold : float
        Burda et al. 2016's threshold on ``Var_x E[z|x]``.

    Returns
    -------
    dict[str, float]

    Examples
    --------
    >>> import numpy as np
    >>> factors = np.random.default_rng(0).integers(0, 3, size=(300, 2))
    >>> scores = score(factors.astype(float), factors, dci_backend="reference")
    >>> round(scores["mig"], 1), scores["active_units"]
    (1.0, 2.0)
    """
    return score_with_importance(
        codes, factors, dci_backend=dci_backend, active_threshold=active_threshold
    )[0]


def score_with_importance(
    codes,
    factors,
    *,
    dci_backend: str = "fast",
    active_threshold: float = ACTIVE_THRESHOLD,
) -> tuple[dict[str, float], np.ndarray]:
    """`score` and the DCI importance matrix ``(L, K)`` of the same fit (for the figures)."""
    if dci_backend not in DCI_BACKENDS:
        raise KeyError(f"unknown DCI backend {dci_backend!r}; valid: {sorted(DCI_BACKENDS)}")
    from concurrent.futures import ThreadPoolExecutor

    from toybench.hardware import available_threads

    codes, factors = check_inputs(codes, factors)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # With a second core, the fast DCI's boosting (numba, releases the GIL) runs beside the
        # other scores (single-threaded scikit-learn and numpy); each result is the same either way.
        pending = pool.submit(dci, codes, factors, backend=dci_backend) \
            if available_threads() > 1 and dci_backend == "fast" else None
        others = scores_but_dci(codes, factors, active_threshold=active_threshold)
        dci_result = dci(codes, factors, backend=dci_backend) if pending is None \
            else pending.result()
    return {**others, **dci_scores(dci_result)}, dci_result.importance


def scores_but_dci(codes, factors, *, active_threshold: float = ACTIVE_THRESHOLD
                   ) -> dict[str, float]:
    """The keys of `score` except ``dci.*``: MIG (both), SAP, modularity, explicitness and the
    active units."""
    codes, factors = check_inputs(codes, factors)
    explicit = explicitness(codes, factors)
    units = active_units(codes, threshold=active_threshold)
    return {"mig": mig(codes, factors),
            "mig.active": mig_active(codes, factors, active=units.active),
            "sap": sap(codes, factors), "modularity": modularity(codes, factors),
            "explicitness_train": explicit.train, "explicitness_test": explicit.test,
            "active_units": float(units.n_active), "active_units.fraction": units.fraction}


def dci_scores(result: DCIResult) -> dict[str, float]:
    """The ``dci.*`` keys of `score` from one `dci` result."""
    return {"dci.disentanglement": result.disentanglement,
            "dci.completeness": result.completeness,
            "dci.informativeness_train": result.informativeness_train,
            "dci.informativeness_test": result.informativeness_test}


__all__ = [
    "ACTIVE_THRESHOLD",
    "DCI_BACKENDS",
    "METRICS",
    "METRIC_INFO",
    "MIN_ROWS",
    "N_BINS",
    "SPLIT_INFO",
    "ActiveUnits",
    "Assignment",
    "DCIResult",
    "Explicitness",
    "MetricInfo",
    "PCAReference",
    "ReconErrors",
    "active_units",
    "bce_per_image",
    "bce_with_logits_per_image",
    "check_inputs",
    "completeness",
    "concept_assignment",
    "dag_leakage",
    "dci",
    "dci_scores",
    "disentanglement",
    "errors_per_image",
    "explicitness",
    "get_metric",
    "intervention_consistency",
    "kl_per_unit",
    "metric_info",
    "mi_matrix",
    "mig",
    "mig_active",
    "modularity",
    "mse_per_image",
    "n_train_rows",
    "normalized_mutual_info",
    "pairwise_entanglement",
    "pairwise_entanglement_threshold",
    "shared_information_matrix",
    "split_info",
    "pca_reference",
    "perturbation_matrix",
    "reconstruction_errors",
    "responsibilities",
    "sap",
    "sap_matrix",
    "score",
    "score_with_importance",
    "scores_but_dci",
]

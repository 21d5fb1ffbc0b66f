"""Dead and active latent units.

Active units follow Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders",
https://arxiv.org/abs/1509.00519 (Sec. 5.2): unit ``u`` is active when
``A_u = Var_x(E_{q(u|x)}[u]) > 0.01``. Both disentanglement_lib and disent report the *total*
number of latent dimensions where they mean the active ones; here the count is of active units.

Per-unit KL is the closed-form ``KL(N(μ, σ²) || N(0, 1))`` of a diagonal Gaussian posterior
(Kingma & Welling 2014, https://arxiv.org/abs/1312.6114, Appendix B), averaged over samples.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from toybench.metrics._common import check_codes, check_factors

#: Burda et al. 2016's activity threshold on Var_x E[z|x].
ACTIVE_THRESHOLD = 0.01


class ActiveUnits(NamedTuple):
    """Count of active units, their share of all units, and the per-unit statistics."""

    n_active: int
    fraction: float
    variances: np.ndarray  # (L,) Var_x of each posterior mean
    active: np.ndarray  # (L,) bool


def active_units(codes, factors=None, *, threshold: float = ACTIVE_THRESHOLD) -> ActiveUnits:
    """Active units (Burda et al. 2016): posterior means whose variance over inputs exceeds 0.01.

    Rows used: all rows (the statistic needs no held-out data; disentanglement_lib has no
    counterpart). Variance is the population variance (ddof 0) of each code column.

    Parameters
    ----------
    codes : (n, L) array of posterior means
    factors : (n, K) array of integer levels, optional
        Not used by the statistic; accepted (and validated) so that every entry of
        `toybench.metrics.METRICS` has the signature ``(codes, factors)``.
    threshold : float
        Activity threshold on ``Var_x E[z|x]``.

    Returns
    -------
    ActiveUnits(n_active: int, fraction: float, variances (L,), active (L,) bool)

    Examples
    --------
    >>> import numpy as np
    >>> codes = np.random.default_rng(0).normal(size=(1000, 3)) * [1.0, 0.01, 0.5]
    >>> active_units(codes).n_active
    2
    """
    codes = check_codes(codes, min_rows=2)
    if factors is not None:
        check_factors(factors, n_rows=codes.shape[0])
    variances = codes.astype(np.float64).var(axis=0)
    active = variances > threshold
    n_active = int(active.sum())
    return ActiveUnits(n_active, n_active / codes.shape[1], variances, active)


def kl_per_unit(mean, logvar) -> np.ndarray:
    """Mean over samples of ``KL(N(μ, σ²) || N(0, 1))`` per unit, shape ``(L,)``, in nats.

    ``KL = ½ (μ² + σ² − 1 − log σ²)`` (Kingma & Welling 2014, Appendix B).

    Parameters
    ----------
    mean : (n, L) posterior means
    logvar : (n, L) posterior log-variances

    Returns
    -------
    (L,) float array.

    Examples
    --------
    >>> import numpy as np
    >>> kl_per_unit(np.zeros((4, 2)), np.zeros((4, 2))).tolist()
    [0.0, 0.0]
    """
    mean = check_codes(mean, name="mean").astype(np.float64)
    logvar = check_codes(logvar, name="logvar").astype(np.float64)
    if mean.shape != logvar.shape:
        raise ValueError(f"mean has shape {mean.shape} but logvar has shape {logvar.shape}")
    kl = 0.5 * (np.square(mean) + np.exp(logvar) - 1.0 - logvar)  # (n, L)
    return kl.mean(axis=0)

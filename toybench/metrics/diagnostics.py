"""Diagnostic matrices from practice (for heatmaps): responsibilities and the perturbation matrix.

- **Responsibilities**: how much each latent moves, in units of its own standard deviation,
  when exactly one factor changes — the quantitative form of the latent-traversal plots of
  Higgins et al. 2017 (https://openreview.net/forum?id=Sy2fzU9gl) read in the encoder direction.
- **Perturbation matrix**: perturb code i by δ, decode, re-encode, and record the squared change
  of every code — a diagonal matrix means the decoder–encoder loop keeps the latents apart (the
  "latent consistency" check of e.g. Zhu et al. 2020, https://arxiv.org/abs/2004.06092, here
  unit by unit).

These are the pure cores: they take the already encoded arrays. `toybench.evaluate` produces
the arrays from an encoder, a decoder and a generator.
"""

from __future__ import annotations

import numpy as np

from toybench.metrics._common import check_codes


def responsibilities(
    codes_before, codes_after, changed, n_factors: int, *, scale=None
) -> np.ndarray:
    """Mean z-scored absolute change of each latent per changed factor, shape ``(K, L)``.

    ``R[k, j] = mean over pairs whose factor k changed of |z_after_j − z_before_j| / s_j``.

    Parameters
    ----------
    codes_before : (n, L) codes of the original images
    codes_after : (n, L) codes after changing exactly one factor of each image
    changed : (n,) int, which factor column changed in each pair
    n_factors : int
    scale : (L,) array, optional
        Per-latent standard deviation ``s``; defaults to the std of ``codes_before`` (a constant
        latent gets 1, so its changes are reported in code units).

    Returns
    -------
    (K, L) float array.

    Examples
    --------
    >>> import numpy as np
    >>> before = np.array([[0.0, 0.0], [1.0, 1.0]])
    >>> after = before + np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> responsibilities(before, after, np.array([0, 1]), 2).tolist()
    [[2.0, 0.0], [0.0, 2.0]]
    """
    before = check_codes(codes_before, name="codes_before", min_rows=1).astype(np.float64)
    after = check_codes(codes_after, name="codes_after", min_rows=1).astype(np.float64)
    if before.shape != after.shape:
        raise ValueError(f"codes_before has shape {before.shape} but codes_after {after.shape}")
    changed = np.asarray(changed)
    if changed.shape != (before.shape[0],) or not np.issubdtype(changed.dtype, np.integer):
        raise ValueError(f"changed must be ({before.shape[0]},) integers, got {changed.shape}")
    if changed.min() < 0 or changed.max() >= n_factors:
        raise ValueError(f"changed holds factor indices outside [0, {n_factors})")
    if scale is None:
        scale = before.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
    scale = np.asarray(scale, dtype=np.float64)
    if scale.shape != (before.shape[1],) or not (scale > 0).all():
        raise ValueError(f"scale must be {before.shape[1]} positive values")
    z_change = np.abs(after - before) / scale  # (n, L)
    out = np.zeros((n_factors, before.shape[1]))
    for k in range(n_factors):
        rows = changed == k
        if not rows.any():
            raise ValueError(f"no pair changes factor {k}; responsibilities need every factor")
        out[k] = z_change[rows].mean(axis=0)
    return out


def perturbation_matrix(recoded_base, recoded_perturbed) -> np.ndarray:
    """Mean squared change of every code after perturbing each code, shape ``(L_p, L)``.

    ``P[i, j] = mean_n (enc(dec(z + δ e_i))_j − enc(dec(z))_j)²``. The reference is the
    re-encoded *unperturbed* code, so that the decode–encode round trip's own drift cancels.

    Parameters
    ----------
    recoded_base : (n, L) ``enc(dec(z))``
    recoded_perturbed : (L_p, n, L) ``enc(dec(z + δ e_i))`` for each perturbed code i

    Returns
    -------
    (L_p, L) float array.

    Examples
    --------
    >>> import numpy as np
    >>> base = np.zeros((3, 2)); perturbed = np.stack([base + [2.0, 0.0], base + [0.0, 1.0]])
    >>> perturbation_matrix(base, perturbed).tolist()
    [[4.0, 0.0], [0.0, 1.0]]
    """
    base = check_codes(recoded_base, name="recoded_base").astype(np.float64)
    perturbed = np.asarray(recoded_perturbed)
    if perturbed.ndim != 3 or perturbed.shape[1:] != base.shape:
        raise ValueError(
            f"recoded_perturbed has shape {perturbed.shape}, expected (L_p, {base.shape[0]}, "
            f"{base.shape[1]}) for recoded_base of shape {base.shape}"
        )
    if not np.isfinite(perturbed).all():
        raise ValueError(f"recoded_perturbed with shape {perturbed.shape} contains NaN or inf")
    return np.square(perturbed.astype(np.float64) - base[None]).mean(axis=1)

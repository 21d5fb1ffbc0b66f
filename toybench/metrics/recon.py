"""Reconstruction errors and a PCA reference.

Per-image Bernoulli cross-entropy (the VAE likelihood of Kingma & Welling 2014,
https://arxiv.org/abs/1312.6114, for images in [0, 1]) and squared error, summed over pixels;
the ELBO is passed through from a model; and the reconstruction error of a PCA with as many
components as the model has codes (Pearson 1901; fitted with scikit-learn), so that "better
than PCA" is a number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before taking logs


def _as_unit_images(images, *, name: str) -> np.ndarray:
    """``(n, ...)`` images as float64 in [0, 1]: uint8 is divided by 255, floats are checked."""
    arr = np.asarray(images)
    if arr.ndim < 2:
        raise ValueError(f"{name} must be (n, ...) images, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has shape {arr.shape}: no images")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} with shape {arr.shape} must be uint8 or float, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} with shape {arr.shape} contains NaN or inf")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"{name} with shape {arr.shape} has values outside [0, 1]")
    return arr.astype(np.float64)


def _check_pair(target, recon) -> tuple[np.ndarray, np.ndarray]:
    target = _as_unit_images(target, name="target")
    recon = np.asarray(recon)
    if recon.shape != target.shape:
        raise ValueError(f"target has shape {target.shape} but reconstruction has {recon.shape}")
    return target, recon


def bce_per_image(target, recon_probs) -> np.ndarray:
    """Bernoulli cross-entropy per image, summed over pixels, shape ``(n,)``, in nats.

    ``−Σ_p [x_p log r_p + (1 − x_p) log(1 − r_p)]`` with ``r`` clipped to [1e-7, 1 − 1e-7].

    Parameters
    ----------
    target : (n, C, H, W) uint8 or float in [0, 1]
    recon_probs : (n, C, H, W) float in [0, 1] (or uint8), the decoder's pixel means

    Returns
    -------
    (n,) float array.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[[[0.0, 1.0]]]])
    >>> bce_per_image(x, np.array([[[[0.5, 0.5]]]])).round(4).tolist()
    [1.3863]
    """
    target, recon = _check_pair(target, recon_probs)
    probs = np.clip(_as_unit_images(recon, name="recon_probs"), _EPS, 1 - _EPS)
    terms = target * np.log(probs) + (1 - target) * np.log1p(-probs)
    return -terms.reshape(len(target), -1).sum(axis=1)


def bce_with_logits_per_image(target, logits) -> np.ndarray:
    """Bernoulli cross-entropy per image from decoder logits (numerically stable), ``(n,)``.

    ``Σ_p [max(l, 0) − l x + log(1 + e^{−|l|})]``, the same value as `bce_per_image` on
    ``sigmoid(l)`` without clipping.

    Examples
    --------
    >>> import numpy as np
    >>> target = np.array([[[[0.0, 1.0]]]])
    >>> bce_with_logits_per_image(target, np.zeros((1, 1, 1, 2))).round(4).tolist()
    [1.3863]
    """
    target, logits = _check_pair(target, logits)
    logits = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(logits).all():
        raise ValueError(f"logits with shape {logits.shape} contains NaN or inf")
    terms = np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))
    return terms.reshape(len(target), -1).sum(axis=1)


def mse_per_image(target, recon) -> np.ndarray:
    """Squared error per image, summed over pixels, on the [0, 1] scale, shape ``(n,)``.

    Examples
    --------
    >>> import numpy as np
    >>> mse_per_image(np.array([[[[0.0, 1.0]]]]), np.array([[[[0.5, 0.5]]]])).tolist()
    [0.5]
    """
    target, recon = _check_pair(target, recon)
    recon = _as_unit_images(recon, name="recon") if recon.dtype == np.uint8 else recon
    recon = np.asarray(recon, dtype=np.float64)
    if not np.isfinite(recon).all():
        raise ValueError(f"reconstruction with shape {recon.shape} contains NaN or inf")
    return np.square(target - recon).reshape(len(target), -1).sum(axis=1)


class ReconErrors(NamedTuple):
    """Mean per-image reconstruction errors (and the ELBO when a model reports one)."""

    bce: float
    mse: float
    elbo: float | None


def reconstruction_errors(target, recon_probs, *, elbo: float | None = None) -> ReconErrors:
    """Mean per-image BCE and MSE of reconstructions, with the model's ELBO passed through.

    Parameters
    ----------
    target : (n, C, H, W) uint8 or float in [0, 1]
    recon_probs : (n, C, H, W) float in [0, 1]
    elbo : float, optional
        The model's evidence lower bound per image (higher-better), reported unchanged.

    Returns
    -------
    ReconErrors(bce: float, mse: float, elbo: float | None)
    """
    if elbo is not None and not np.isfinite(elbo):
        raise ValueError(f"elbo must be finite, got {elbo}")
    return ReconErrors(
        float(bce_per_image(target, recon_probs).mean()),
        float(mse_per_image(target, recon_probs).mean()),
        None if elbo is None else float(elbo),
    )


class PCAReference(NamedTuple):
    """Test-set reconstruction errors of PCA with ``n_components`` components."""

    n_components: int
    bce: float
    mse: float
    explained_variance_ratio: float


def pca_reference(train_images, test_images, n_components: int, *, seed: int = 0) -> PCAReference:
    """Reconstruction error of a PCA with as many components as the model has codes.

    PCA (scikit-learn, randomized SVD seeded by ``seed``) is fitted on the flattened train images
    in [0, 1]; test images are projected, reconstructed, clipped to [0, 1] and scored with the
    per-image `mse_per_image` and `bce_per_image` (means over test images).

    Parameters
    ----------
    train_images : (n_train, C, H, W) uint8 or float in [0, 1]
    test_images : (n_test, C, H, W) uint8 or float in [0, 1]
    n_components : int
        The model's number of codes; at most ``min(n_train, C·H·W)``.
    seed : int

    Returns
    -------
    PCAReference(n_components, bce, mse, explained_variance_ratio)
    """
    return pca_references(train_images, {"test": test_images}, n_components, seed=seed)["test"]


def pca_references(
    train_images, test_sets: Mapping[str, np.ndarray], n_components: int, *, seed: int = 0
) -> dict[str, PCAReference]:
    """`pca_reference` for several test sets from one PCA fit (the fit is the costly part).

    Returns
    -------
    dict[str, PCAReference]
        One entry per key of ``test_sets``.
    """
    from sklearn.decomposition import PCA

    train = _as_unit_images(train_images, name="train_images")
    x_train = train.reshape(len(train), -1)  # (n_train, D)
    if not 1 <= n_components <= min(x_train.shape):
        raise ValueError(
            f"n_components={n_components} must be in [1, {min(x_train.shape)}] for train images "
            f"of shape {train.shape}"
        )
    pca = PCA(n_components=n_components, svd_solver="randomized", random_state=seed)
    pca.fit(x_train)
    references = {}
    for name, test_images in test_sets.items():
        test = _as_unit_images(test_images, name="test_images")
        if train.shape[1:] != test.shape[1:]:
            raise ValueError(
                f"train images {train.shape} and test images {test.shape} differ in shape"
            )
        x_test = test.reshape(len(test), -1)  # (n_test, D)
        recon = np.clip(pca.inverse_transform(pca.transform(x_test)), 0.0, 1.0).reshape(test.shape)
        references[name] = PCAReference(
            n_components,
            float(bce_per_image(test, recon).mean()),
            float(mse_per_image(test, recon).mean()),
            float(pca.explained_variance_ratio_.sum()),
        )
    return references

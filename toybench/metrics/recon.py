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


def _check_unit_images(images, *, name: str) -> np.ndarray:
    """``(n, ...)`` uint8 images, or floats checked to be finite and in [0, 1] (not converted)."""
    arr = np.asarray(images)
    if arr.ndim < 2:
        raise ValueError(f"{name} must be (n, ...) images, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has shape {arr.shape}: no images")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} with shape {arr.shape} must be uint8 or float, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} with shape {arr.shape} contains NaN or inf")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"{name} with shape {arr.shape} has values outside [0, 1]")
    return arr


def _to_unit_float(arr: np.ndarray) -> np.ndarray:
    """float64 copy on the [0, 1] scale: uint8 is divided by 255, anything else converted."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    return arr.astype(np.float64)


def _as_unit_images(images, *, name: str) -> np.ndarray:
    """``(n, ...)`` images as float64 in [0, 1]: uint8 is divided by 255, floats are checked."""
    return _to_unit_float(_check_unit_images(images, name=name))


def _check_pair(target, recon) -> tuple[np.ndarray, np.ndarray]:
    target = _as_unit_images(target, name="target")
    recon = np.asarray(recon)
    if recon.shape != target.shape:
        raise ValueError(f"target has shape {target.shape} but reconstruction has {recon.shape}")
    return target, recon


#: Images per chunk of the per-image errors: float64 temporaries of a few MB (cache-sized)
#: instead of whole-split arrays of hundreds of MB. Each image's sum is reduced on its own row,
#: so the values do not depend on the chunk size.
CHUNK_IMAGES = 64


def _per_image(target, recon, *, bce: bool, mse: bool, name: str):
    """Per-image BCE and/or squared error ``(n,)``, computed ``CHUNK_IMAGES`` images at a time.

    BCE needs the reconstruction in [0, 1]; the squared error alone only needs it finite.
    """
    target = _check_unit_images(target, name="target")
    recon = np.asarray(recon)
    if recon.shape != target.shape:
        raise ValueError(f"target has shape {target.shape} but reconstruction has {recon.shape}")
    if bce:
        recon = _check_unit_images(recon, name=name)
    elif recon.dtype != np.uint8 and not np.isfinite(recon).all():
        raise ValueError(f"{name} with shape {recon.shape} contains NaN or inf")
    n = len(target)
    bce_out = np.empty(n) if bce else None
    mse_out = np.empty(n) if mse else None
    for start in range(0, n, CHUNK_IMAGES):
        rows = slice(start, start + CHUNK_IMAGES)
        x = _to_unit_float(target[rows])  # (m, C, H, W) float64
        r = _to_unit_float(recon[rows])
        m = len(x)
        if mse_out is not None:
            mse_out[rows] = np.square(x - r).reshape(m, -1).sum(axis=1)
        if bce_out is not None:
            p = np.clip(r, _EPS, 1 - _EPS)
            terms = x * np.log(p) + (1 - x) * np.log1p(-p)
            bce_out[rows] = -terms.reshape(m, -1).sum(axis=1)
    return bce_out, mse_out


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
    return _per_image(target, recon_probs, bce=True, mse=False, name="recon_probs")[0]


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
    return _per_image(target, recon, bce=False, mse=True, name="reconstruction")[1]


def errors_per_image(target, recon_probs) -> tuple[np.ndarray, np.ndarray]:
    """`bce_per_image` and `mse_per_image` in one pass over the images: ``(n,)`` each.

    Parameters
    ----------
    target : (n, C, H, W) uint8 or float in [0, 1]
    recon_probs : (n, C, H, W) float in [0, 1] (or uint8)

    Returns
    -------
    (bce (n,), mse (n,)) float arrays, equal to the two functions' values bit for bit.
    """
    return _per_image(target, recon_probs, bce=True, mse=True, name="recon_probs")


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
    bce, mse = errors_per_image(target, recon_probs)
    return ReconErrors(float(bce.mean()), float(mse.mean()), None if elbo is None else float(elbo))


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
        bce, mse = errors_per_image(test, recon)
        references[name] = PCAReference(
            n_components, float(bce.mean()), float(mse.mean()),
            float(pca.explained_variance_ratio_.sum()),
        )
    return references

"""Decoder likelihoods p(x|z) for images in [0, 1]: Bernoulli, fixed-σ Gaussian, learned-σ Gaussian.

- ``"bernoulli"``: cross-entropy with logits, the disentanglement_lib / Higgins et al. 2017
  (https://openreview.net/forum?id=Sy2fzU9gl) convention for grey-level images in [0, 1].
- ``"gaussian"``: N(x; sigmoid(o), σ²) with a fixed σ (``sigma``).
- ``"gaussian_learned"``: N(x; sigmoid(o₁), σ²(o₂)) with a per-pixel learned variance
  σ² = ``variance_floor`` + softplus(o₂). The floor is what keeps the NLL bounded below: without it
  a decoder can drive σ² → 0 on well-predicted pixels and the loss to −∞ (the NaN explosions of
  learned-variance VAEs; Rybkin et al. 2021, https://orybkin.github.io/sigma-vae/, discuss it).

Every NLL is per image, summed over pixels and channels (``(B,)``), computed in float32. The
decoder produces ``channels * params`` output maps; ``mean`` maps them back to image space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from toybench.configs import LIKELIHOODS as LIKELIHOODS  # the names live with the configs

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class Likelihood:
    """A pixel likelihood; decoders output ``params * C`` maps that it interprets.

    Attributes
    ----------
    name : str
        One of ``LIKELIHOODS``.
    sigma : float
        Standard deviation of ``"gaussian"`` (ignored otherwise).
    variance_floor : float
        Minimum variance of ``"gaussian_learned"`` (ignored otherwise).
    """

    name: str
    sigma: float = 0.1
    variance_floor: float = 1e-3

    def __post_init__(self) -> None:
        if self.name not in LIKELIHOODS:
            raise ValueError(f"likelihood {self.name!r}; valid: {', '.join(LIKELIHOODS)}")
        if not self.sigma > 0 or not self.variance_floor > 0:
            raise ValueError("likelihood sigma and variance_floor must be > 0")

    @property
    def params(self) -> int:
        """Decoder output maps per image channel (2 for the learned-variance Gaussian)."""
        return 2 if self.name == "gaussian_learned" else 1

    def mean(self, out: Tensor) -> Tensor:
        """Decoder output ``(B, params*C, H, W)`` -> expected image ``(B, C, H, W)`` in [0, 1]."""
        channels = out.shape[1] // self.params
        return torch.sigmoid(out[:, :channels].float())

    def nll(self, out: Tensor, x: Tensor) -> Tensor:
        """NLL of images ``x`` ``(B, C, H, W)``, summed over pixels per image -> ``(B,)``."""
        out = out.float()
        x = x.float()
        channels = x.shape[1]
        if self.name == "bernoulli":
            # −[x log p + (1 − x) log(1 − p)], p = sigmoid(out), in the stable logits form.
            per_pixel = F.binary_cross_entropy_with_logits(out, x, reduction="none")
        elif self.name == "gaussian":
            # −log N(x; μ, σ²) = (x − μ)²/(2σ²) + log σ + ½ log 2π.
            mean = torch.sigmoid(out)
            per_pixel = (x - mean).pow(2) / (2.0 * self.sigma**2) + (
                math.log(self.sigma) + _HALF_LOG_2PI
            )
        else:
            mean = torch.sigmoid(out[:, :channels])
            variance = self.variance_floor + F.softplus(out[:, channels:])
            per_pixel = 0.5 * ((x - mean).pow(2) / variance + variance.log()) + _HALF_LOG_2PI
        return per_pixel.reshape(x.shape[0], -1).sum(dim=1)  # (B, C, H, W) -> (B,)

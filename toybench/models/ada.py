"""Ada-GVAE and Ada-ML-VAE: weakly supervised VAEs trained on pairs of images.

Locatello et al. 2020, "Weakly-Supervised Disentanglement Without Compromises"
(https://arxiv.org/abs/2002.02886), Sec. 4. A pair (x₁, x₂) differs in a few unknown factors
(``toybench.pairs``). Both images go through the β-VAE network of ``vae.py`` (same conv backbone,
likelihood and β; ``aggregation`` is the only difference between the two baselines). Per latent
unit i the distance of the two posteriors is

    δ_i = KL(q(z_i | x₁) || q(z_i | x₂))                                  (eq. 5)

and the units with δ_i below the adaptive threshold τ = ½ (max_i δ_i + min_i δ_i) (eq. 6: the
midpoint between the largest and the smallest distance, disentanglement_lib's two equal-width
bins) are taken to encode the shared factors: their two posteriors are replaced by one aggregate
a(q(z_i | x₁), q(z_i | x₂)) in both images' posteriors, the other units keep their own (eq. 7).
The aggregate of a shared unit:

``gvae`` (Ada-GVAE, the averaging of Hosoya 2019, https://arxiv.org/abs/1809.02383)
    mean ½ (μ₁ + μ₂) and variance ½ (σ₁² + σ₂²): the average of the Gaussians' parameters.
``ml-vae`` (Ada-ML-VAE, the multilevel VAE of Bouchacourt et al. 2018,
https://arxiv.org/abs/1705.08841)
    the normalized product q₁^½ q₂^½ (a product of experts): precision-weighted mean
    (μ₁/σ₁² + μ₂/σ₂²) / (1/σ₁² + 1/σ₂²) and variance 2 σ₁² σ₂² / (σ₁² + σ₂²), the harmonic mean
    of the two variances.

Both follow disentanglement_lib (``methods/weak/weak_vae.py``: ``GroupVAEArgmax``,
``MLVaeArgmax``, ``aggregate_argmax``): a unit exactly at τ is kept apart, so a pair whose
distances are all equal (identical posteriors) shares nothing; the mask carries no gradient.
The objective per pair is the β-VAE's of each image under the aggregated posteriors, averaged
over the two images (disentanglement_lib's ½ · (loss₁ + loss₂)), so ``recon`` and ``kl`` are per
image like every other family's and β means what it means for the β-VAE:

    recon_weight · ½ Σ_j −log p(x_j | z̃_j)  +  kl_weight · β · ½ Σ_j KL(q̃(z | x_j) || p(z)),

z̃_j ~ q̃(z | x_j) with independent noise for the two images.

Batches: ``loss`` takes the pairs stacked along the batch, ``x`` = ``(2B, C, H, W)`` with
x₁ = ``x[:B]`` and x₂ = ``x[B:]`` (what the training loop builds from ``(n, 2, C, H, W)``
training data); ``image_loss`` (the evaluation's ELBO pass), ``encode``, ``decode`` and
``posteriors`` take single images like every model's, so scores, plots and ``load_run`` see a
plain VAE.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from toybench.configs import AdaConfig, VAEConfig, effective_beta
from toybench.models.common import (
    LossOutput,
    UnitGroup,
    kl_standard_normal,
    sample_gaussian,
)
from toybench.models.vae import VAE
from toybench.pairs import PairSpec

_LOG_2 = math.log(2.0)


def unit_kl(mu_1: Tensor, logvar_1: Tensor, mu_2: Tensor, logvar_2: Tensor) -> Tensor:
    """δ_i = KL(N(μ₁, σ₁²) || N(μ₂, σ₂²)) per unit (eq. 5), elementwise.

    Computed as ½ (expm1(d) − d + (μ₁ − μ₂)² / σ₂²) with d = log σ₁² − log σ₂², which is exactly
    0 for equal posteriors (the textbook form `common.kl_normal` leaves rounding noise of about
    1e-8 there, enough to move τ between units that do not differ at all).
    """
    d = logvar_1 - logvar_2
    return 0.5 * (torch.expm1(d) - d + (mu_1 - mu_2).pow(2) * torch.exp(-logvar_2))


def shared_units(mu_1: Tensor, logvar_1: Tensor, mu_2: Tensor, logvar_2: Tensor) -> Tensor:
    """Units taken to be shared by each pair: δ_i < τ = ½ (max δ + min δ) (eqs. 5–6).

    Parameters
    ----------
    mu_1, logvar_1, mu_2, logvar_2 : Tensor
        ``(B, D)`` posterior parameters of the two images of each pair.

    Returns
    -------
    Tensor
        ``(B, D)`` bool, True where the unit is shared (averaged); no gradient.
    """
    with torch.no_grad():
        delta = unit_kl(mu_1, logvar_1, mu_2, logvar_2)  # (B, D): δ_i, eq. 5
        tau = 0.5 * (delta.amax(dim=1, keepdim=True) + delta.amin(dim=1, keepdim=True))  # (B, 1)
        return delta < tau


def aggregate(mu_1: Tensor, logvar_1: Tensor, mu_2: Tensor, logvar_2: Tensor,
              aggregation: str) -> tuple[Tensor, Tensor]:
    """The aggregate posterior of a shared unit: ``(mean, log variance)``, each ``(B, D)``.

    ``"gvae"``: mean and variance averaged. ``"ml-vae"``: normalized geometric mean of the two
    Gaussians (precision-weighted mean, harmonic-mean variance). Computed from the
    log-variances without forming ratios of variances, so it is stable over the clamp range.
    """
    if aggregation == "gvae":
        mean = 0.5 * (mu_1 + mu_2)
        logvar = torch.logaddexp(logvar_1, logvar_2) - _LOG_2  # log(½ σ₁² + ½ σ₂²)
    elif aggregation == "ml-vae":
        weight_1 = torch.sigmoid(logvar_2 - logvar_1)  # σ₂² / (σ₁² + σ₂²): x₁'s precision share
        mean = weight_1 * mu_1 + (1.0 - weight_1) * mu_2
        logvar = _LOG_2 + logvar_1 + logvar_2 - torch.logaddexp(logvar_1, logvar_2)
    else:
        raise ValueError(f"aggregation {aggregation!r}; valid: gvae, ml-vae")
    return mean, logvar


class AdaVAE(nn.Module):
    """The β-VAE network trained on pairs with adaptive aggregation (module docstring).

    Parameters
    ----------
    config : AdaConfig
    image_shape : (int, int, int)
        ``(C, H, W)`` of the images.
    """

    trainable = True

    def __init__(self, config: AdaConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.config = config
        self.image_shape = tuple(image_shape)
        self.beta = effective_beta(config, self.image_shape)  # β for this image size
        # The network (encoder, Gaussian head, decoder, likelihood) is the VAE's.
        self.vae = VAE(VAEConfig(latent_dim=config.latent_dim, beta=config.beta,
                                 beta_normalized=config.beta_normalized, arch=config.arch,
                                 likelihood=config.likelihood, sigma=config.sigma,
                                 variance_floor=config.variance_floor), self.image_shape)

    @property
    def n_codes(self) -> int:
        return self.config.latent_dim

    @property
    def pairing(self) -> PairSpec:
        """The pairs this model is trained on (``toybench.pairs``)."""
        return PairSpec(self.config.pair_mode, self.config.pair_k)

    def units(self) -> list[UnitGroup]:
        return self.vae.units()

    def posteriors(self, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"z": (μ, σ)}`` of single images, each ``(B, latent_dim)``."""
        return self.vae.posteriors(x)

    def encode(self, x: Tensor) -> Tensor:
        """Codes: posterior means ``(B, latent_dim)`` of single images."""
        return self.vae.encode(x)

    def decode(self, z: Tensor) -> Tensor:
        """``(B, latent_dim)`` -> expected image ``(B, C, H, W)`` in [0, 1]."""
        return self.vae.decode(z)

    def image_loss(
        self,
        x: Tensor,
        step: int,
        *,
        factors: Tensor | None = None,
        kl_weight: float = 1.0,
        recon_weight: float = 1.0,
        generator: torch.Generator | None = None,
        diagnostics: bool = True,
    ) -> LossOutput:
        """The β-VAE objective of single images ``x`` ``(B, C, H, W)``: the model's ELBO (with
        weights 1) of one image, nothing shared. ``diagnostics`` as in ``VAE.loss``."""
        return self.vae.loss(x, step, factors=factors, kl_weight=kl_weight,
                             recon_weight=recon_weight, generator=generator,
                             diagnostics=diagnostics)

    def loss(
        self,
        x: Tensor,
        step: int,
        *,
        factors: Tensor | None = None,
        kl_weight: float = 1.0,
        recon_weight: float = 1.0,
        generator: torch.Generator | None = None,
        diagnostics: bool = True,
    ) -> LossOutput:
        """The objective of the module docstring on pairs ``x`` ``(2B, C, H, W)`` in [0, 1]:
        x₁ = ``x[:B]``, x₂ = ``x[B:]``.

        ``step``, ``factors`` and ``diagnostics`` are accepted for the common model interface and
        unused (weak supervision sees no labels; the diagnostic is free). ``extras["shared"]`` is
        the mean number of units aggregated per pair (D − shared estimates k).

        Raises
        ------
        ValueError
            An odd batch (not a stack of pairs).
        """
        del step, factors, diagnostics
        if x.shape[0] % 2:
            raise ValueError(f"{type(self).__name__}.loss takes pairs stacked along the batch "
                             f"(2B images: x1 then x2), got {x.shape[0]} images")
        mu, logvar = self.vae.posterior(x)  # (2B, D) each: one encoder pass for both images
        mu_1, mu_2 = mu.chunk(2)
        logvar_1, logvar_2 = logvar.chunk(2)
        shared = shared_units(mu_1, logvar_1, mu_2, logvar_2)  # (B, D)
        mean, log_var = aggregate(mu_1, logvar_1, mu_2, logvar_2, self.config.aggregation)
        mu_pair = torch.cat([torch.where(shared, mean, mu_1), torch.where(shared, mean, mu_2)])
        logvar_pair = torch.cat([torch.where(shared, log_var, logvar_1),
                                 torch.where(shared, log_var, logvar_2)])  # (2B, D) eq. 7
        z = sample_gaussian(mu_pair, logvar_pair, generator)  # (2B, D)
        recon = self.vae.likelihood.nll(self.vae.decoder(z), x).mean()  # ½ (mean₁ + mean₂)
        kl_per_unit = kl_standard_normal(mu_pair, logvar_pair).mean(dim=0)  # (D,)
        kl = kl_per_unit.sum()
        total = recon_weight * recon + kl_weight * self.beta * kl
        extras = {"shared": shared.sum(dim=1).float().mean()}
        return LossOutput(total, recon, kl, kl_per_unit, extras)

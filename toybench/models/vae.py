"""VAE, β-VAE and β-TCVAE in one model: β and the total-correlation weight are config values.

- VAE: Kingma & Welling 2014, https://arxiv.org/abs/1312.6114 (``beta = 1``, ``tc_beta = 1``).
- β-VAE: Higgins et al. 2017, https://openreview.net/forum?id=Sy2fzU9gl (``beta > 1``).
- β-TCVAE: Chen et al. 2018, https://arxiv.org/abs/1802.04942 (``tc_beta > 1``).

Per image, with q(z|x) = N(μ(x), diag σ²(x)) and p(z) = N(0, I), the minimized objective is

    recon_weight · (−log p(x|z))  +  kl_weight · [β · KL(q(z|x) || p(z))  +  (β_TC − 1) · TC]

(β and β_TC as configured, or for 64x64 and normalized to the image size with
``beta_normalized``: `toybench.configs.normalized_weight`)

averaged over the batch, where −log p(x|z) is summed over pixels (see ``likelihoods.py``),
``kl_weight`` is the training loop's schedule value, and TC is a minibatch estimate of the total
correlation KL(q(z) || Π_d q(z_d)) (Chen et al. 2018, Sec. 4.1; see ``total_correlation``).
Since E_x KL(q(z|x) || p(z)) = MI(x; z) + TC + Σ_d KL(q(z_d) || p(z_d)) (Chen et al. eq. 2), adding
(β_TC − 1)·TC to the analytic KL weighs TC by β_TC and the other two terms by 1 — Chen et al.'s
eq. 4 with α = γ = 1, in the form used by disentanglement_lib (lower variance than estimating all
three terms from the minibatch).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from toybench.configs import VAEConfig, effective_beta
from toybench.models.common import (
    LossOutput,
    UnitGroup,
    gaussian_params,
    kl_standard_normal,
    log_normal,
    sample_gaussian,
)
from toybench.models.likelihoods import Likelihood
from toybench.models.nets import ConvDecoder, ConvEncoder, resolve_arch


def total_correlation(z: Tensor, mu: Tensor, logvar: Tensor, dataset_size: int) -> Tensor:
    """Minibatch estimate of TC = KL(q(z) || Π_d q(z_d)) (Chen et al. 2018, Sec. 4.1).

    The aggregate posterior q(z) = (1/N) Σ_n q(z|x_n) is estimated at each z_i ~ q(z|x_i) from the
    M batch members with importance weights: 1/N for the sample's own image and (N − 1)/(N(M − 1))
    for each other one. Those are uniform draws from the other N − 1 images, so the estimate of
    q(z_i) is unbiased (the weights sum to 1); this is Chen et al.'s minibatch-weighted sampling
    with the own-sample term weighted exactly (their released code divides every term by N·M,
    which shifts TC by (D − 1)·log N). The same weights give each marginal q(z_{i,d}), and
    TC ≈ mean_i [log q(z_i) − Σ_d log q(z_{i,d})].

    Parameters
    ----------
    z, mu, logvar : Tensor
        ``(M, D)`` samples and the posterior parameters they were drawn from (float32).
    dataset_size : int
        N (at least M).

    Returns
    -------
    Tensor
        Scalar estimate (0 when all posteriors coincide; can be slightly negative).
    """
    batch = z.shape[0]
    n = max(dataset_size, batch)
    # log q(z_{i,d} | x_j) for all pairs: (M, 1, D) vs (1, M, D) -> (M, M, D).
    log_q_pairs = log_normal(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))
    other = math.log((n - 1) / (n * (batch - 1))) if batch > 1 else 0.0
    log_w = torch.full((batch, batch), other, dtype=z.dtype, device=z.device)
    log_w.fill_diagonal_(-math.log(n))  # (M, M): row i weights the images j for the sample z_i
    log_qz = torch.logsumexp(log_w + log_q_pairs.sum(dim=2), dim=1)  # (M,)
    log_qz_marginals = torch.logsumexp(log_w.unsqueeze(2) + log_q_pairs, dim=1).sum(dim=1)  # (M,)
    return (log_qz - log_qz_marginals).mean()


class VAE(nn.Module):
    """Conv VAE with one Gaussian latent layer ``"z"`` of ``latent_dim`` units.

    Parameters
    ----------
    config : VAEConfig
    image_shape : (int, int, int)
        ``(C, H, W)`` of the images.
    """

    trainable = True

    def __init__(self, config: VAEConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.config = config
        self.image_shape = tuple(image_shape)
        self.beta = effective_beta(config, self.image_shape)  # β for this image size
        self.tc_beta = effective_beta(config, self.image_shape, "tc_beta")
        arch = resolve_arch(config.arch, self.image_shape)
        self.likelihood = Likelihood(config.likelihood, config.sigma, config.variance_floor)
        channels = self.image_shape[0]
        self.encoder = ConvEncoder(arch, channels)
        self.head = nn.Linear(arch.hidden, 2 * config.latent_dim)  # -> (μ, log σ²)
        self.decoder = ConvDecoder(arch, config.latent_dim, channels * self.likelihood.params)

    @property
    def n_codes(self) -> int:
        return self.config.latent_dim

    def units(self) -> list[UnitGroup]:
        return [UnitGroup("z", "layer", tuple(range(self.config.latent_dim)))]

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x): ``(B, C, H, W)`` -> (μ, log σ²), each ``(B, latent_dim)`` float32."""
        return gaussian_params(self.head(self.encoder(x)))

    def posteriors(self, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"z": (μ, σ)}``, each ``(B, latent_dim)``."""
        mu, logvar = self.posterior(x)
        return {"z": (mu, torch.exp(0.5 * logvar))}

    def encode(self, x: Tensor) -> Tensor:
        """Codes: posterior means ``(B, latent_dim)``."""
        return self.posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """``(B, latent_dim)`` -> expected image ``(B, C, H, W)`` in [0, 1]."""
        return self.likelihood.mean(self.decoder(z))

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
        """The objective of the module docstring on a batch ``x`` ``(B, C, H, W)`` in [0, 1].

        ``step`` and ``factors`` are accepted for the common model interface and unused (the
        schedule arrives as ``kl_weight``; this family is unsupervised). With ``tc_beta == 1``
        the TC estimate is only a diagnostic (``extras["tc"]``, about 5 ms per batch of 256):
        ``diagnostics=False`` skips it (training passes False on steps it does not log).
        """
        del step, factors
        mu, logvar = self.posterior(x)  # (B, D) each
        z = sample_gaussian(mu, logvar, generator)  # (B, D)
        recon = self.likelihood.nll(self.decoder(z), x).mean()
        kl_per_unit = kl_standard_normal(mu, logvar).mean(dim=0)  # (D,)
        kl = kl_per_unit.sum()
        regularizer = self.beta * kl
        extras: dict[str, Tensor] = {}
        if self.tc_beta != 1.0:
            tc = total_correlation(z, mu, logvar, self.config.dataset_size)
            regularizer = regularizer + (self.tc_beta - 1.0) * tc
            extras["tc"] = tc.detach()
        elif diagnostics:
            with torch.no_grad():
                extras["tc"] = total_correlation(z, mu, logvar, self.config.dataset_size)
        total = recon_weight * recon + kl_weight * regularizer
        return LossOutput(total, recon, kl, kl_per_unit, extras)

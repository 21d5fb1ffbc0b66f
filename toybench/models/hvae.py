"""HVAE: a ladder VAE with 2–3 stochastic layers and the NVAE/VDVAE stabilisers.

Ladder VAE: Sønderby et al. 2016, https://arxiv.org/abs/1602.02282. Stabilisers from NVAE (Vahdat &
Kautz 2020, https://arxiv.org/abs/2007.03898) and VDVAE (Child 2021,
https://arxiv.org/abs/2011.10650):

- Residual Normal parameterization (NVAE eq. 3): below the top layer, the posterior is defined
  relative to the prior, q(z_l | ·) = N(μ_p + Δμ, σ_p² · Δσ²), so its KL (NVAE eq. 4,
  ½(Δμ²/σ_p² + Δσ² − log Δσ² − 1)) is small whenever the prior moves, and the posterior cannot drift
  far from it early in training.
- KL warm-up: the training loop's ``kl_weight`` schedule (``TrainConfig.kl_schedule = "linear"``).
- KL balancing (NVAE App. A): while ``kl_weight < 1`` (the warm-up), layer l's KL is multiplied by
  γ_l ∝ (KL_l + 0.01) / d_l, normalized to mean 1 over layers and not differentiated, so layers
  that already use many nats per unit are pushed harder than nearly-collapsed ones.
- Free bits (Kingma et al. 2016, https://arxiv.org/abs/1606.04934, eq. 15): each layer's
  batch-averaged KL enters the objective as max(KL_l, ``free_bits`` · d_l).

Layers are named ``z1`` (bottom, next to the pixels) … ``zL`` (top). Bottom-up: the conv backbone
gives h₁ (256 features), an MLP per level gives h₂, …, h_L. Top-down:
q(z_L | x) = N(μ(h_L), σ²(h_L)) with p(z_L) = N(0, I); a deterministic state s (``ladder_hidden``
wide) is updated from each z; below the top, p(z_l | z_{>l}) reads s and q reads (h_l, s). The
decoder reads all layers' samples [z1, …, zL] through skip connections (as in BIVA, Maaløe et al.
2019, https://arxiv.org/abs/1902.02102): every layer reaches the pixels directly and the decoder
has the VAE's fan-in. With the decoder on the final top-down state instead, the ladder sat on
the mean-image plateau ~6x longer than the VAE in a seed-0 run (toy-causal, 32×32: ~950 vs ~150
steps).

Objective per batch: recon_weight · NLL + kl_weight · β · Σ_l γ_l · max(KL_l, free_bits · d_l).
Codes are the concatenated posterior means (z1, …, zL), computed with the top-down pass
conditioned on posterior means; ``units()`` reports the per-layer split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from toybench.configs import HVAEConfig, effective_beta
from toybench.models.common import (
    LOGVAR_MAX,
    LOGVAR_MIN,
    LossOutput,
    UnitGroup,
    gaussian_params,
    kl_normal,
    posteriors_to_codes,
    sample_gaussian,
)
from toybench.models.likelihoods import Likelihood
from toybench.models.nets import ConvDecoder, ConvEncoder, resolve_arch

# Added to each layer's KL before balancing (NVAE App. A), so a collapsed layer keeps a weight > 0.
_BALANCE_EPS = 0.01


def _mlp(in_features: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, out_features), nn.ReLU())


@dataclass
class _Layer:
    mu: Tensor  # (B, d) posterior mean
    logvar: Tensor  # (B, d) posterior log-variance
    prior_mu: Tensor  # (B, d)
    prior_logvar: Tensor  # (B, d)


class HVAE(nn.Module):
    """Ladder VAE (see the module docstring).

    Parameters
    ----------
    config : HVAEConfig
    image_shape : (int, int, int)
        ``(C, H, W)``.
    """

    trainable = True

    def __init__(self, config: HVAEConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.config = config
        self.image_shape = tuple(image_shape)
        self.beta = effective_beta(config, self.image_shape)  # β for this image size
        dims = config.latent_dims
        width = config.ladder_hidden
        self.names = tuple(f"z{i + 1}" for i in range(len(dims)))
        starts = [sum(dims[:i]) for i in range(len(dims))]
        self.columns = {name: tuple(range(s, s + d))
                        for name, s, d in zip(self.names, starts, dims, strict=True)}

        arch = resolve_arch(config.arch, self.image_shape)
        self.likelihood = Likelihood(config.likelihood, config.sigma, config.variance_floor)
        channels = self.image_shape[0]
        self.encoder = ConvEncoder(arch, channels)
        # Bottom-up: h1 = backbone (hidden), h_{l+1} = MLP(h_l) (ladder_hidden).
        feature_sizes = [arch.hidden] + [width] * (len(dims) - 1)
        self.up = nn.ModuleList(_mlp(feature_sizes[i], width) for i in range(len(dims) - 1))
        # Top layer: q(z_L | h_L); prior N(0, I).
        self.top_posterior = nn.Linear(feature_sizes[-1], 2 * dims[-1])
        # Layers below the top (index l = 0 .. L-2): prior from s, residual posterior from (h_l, s).
        self.priors = nn.ModuleList(nn.Linear(width, 2 * d) for d in dims[:-1])
        self.posterior_deltas = nn.ModuleList(
            nn.Linear(feature_sizes[i] + width, 2 * d) for i, d in enumerate(dims[:-1])
        )
        # Top-down state: s = MLP(z_L), then s = MLP([s, z_l]) for l = L-1 .. 2 (z1 needs no
        # state below it; entry i of state_updates follows layer i + 2).
        self.state_top = _mlp(dims[-1], width)
        self.state_updates = nn.ModuleList(_mlp(width + d, width) for d in dims[1:-1])
        self.decoder = ConvDecoder(arch, self.n_codes, channels * self.likelihood.params)

    @property
    def n_codes(self) -> int:
        return sum(self.config.latent_dims)

    def units(self) -> list[UnitGroup]:
        return [UnitGroup(name, "layer", cols) for name, cols in self.columns.items()]

    def _infer(
        self, x: Tensor, generator: torch.Generator | None, sample: bool
    ) -> tuple[dict[str, _Layer], Tensor]:
        """Bottom-up then top-down pass; returns layers (keys z1..zL) and their values (B, n_codes).

        The values are samples when ``sample`` else posterior means, in code-column order.
        """
        features = [self.encoder(x)]  # h1: (B, hidden)
        for up in self.up:
            features.append(up(features[-1]))  # h_{l+1}: (B, ladder_hidden)
        top = len(self.names) - 1
        mu, logvar = gaussian_params(self.top_posterior(features[top]))  # (B, d_L) each
        zeros = torch.zeros_like(mu)
        layers = {self.names[top]: _Layer(mu, logvar, zeros, zeros)}
        z = sample_gaussian(mu, logvar, generator) if sample else mu
        values = {self.names[top]: z}
        state = self.state_top(z)  # (B, ladder_hidden)
        for level in reversed(range(top)):
            prior_mu, prior_logvar = gaussian_params(self.priors[level](state))
            delta = self.posterior_deltas[level](torch.cat([features[level], state], dim=1))
            delta_mu, delta_logvar = gaussian_params(delta)
            # Residual Normal (NVAE eq. 3): μ_q = μ_p + Δμ, log σ_q² = log σ_p² + log Δσ².
            mu = prior_mu + delta_mu
            logvar = (prior_logvar + delta_logvar).clamp(LOGVAR_MIN, LOGVAR_MAX)
            layers[self.names[level]] = _Layer(mu, logvar, prior_mu, prior_logvar)
            z = sample_gaussian(mu, logvar, generator) if sample else mu
            values[self.names[level]] = z
            if level > 0:
                state = self.state_updates[level - 1](torch.cat([state, z], dim=1))
        codes = torch.cat([values[name] for name in self.names], dim=1)  # (B, n_codes)
        return {name: layers[name] for name in self.names}, codes

    def posteriors(self, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """Per layer ``z1``..``zL`` (top included): (μ, σ) of q, conditioned on means above."""
        layers, _ = self._infer(x, None, sample=False)
        return {name: (layer.mu, torch.exp(0.5 * layer.logvar)) for name, layer in layers.items()}

    def encode(self, x: Tensor) -> Tensor:
        """Codes ``(B, n_codes)``: posterior means of z1, …, zL concatenated."""
        return posteriors_to_codes(self.posteriors(x))

    def decode(self, z: Tensor) -> Tensor:
        """Codes ``(B, n_codes)`` (layer values z1..zL) -> expected image ``(B, C, H, W)``."""
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
        """Objective of the module docstring on ``x`` ``(B, C, H, W)`` in [0, 1].

        ``step``, ``factors`` and ``diagnostics`` are unused (the warm-up arrives as ``kl_weight``;
        the extras are cheap and always computed).
        """
        del step, factors, diagnostics
        layers, z = self._infer(x, generator, sample=True)
        recon = self.likelihood.nll(self.decoder(z), x).mean()
        # KL(q || p) per unit (NVAE eq. 4 for residual layers; the top layer's prior is N(0, I)).
        kl_units = [kl_normal(l.mu, l.logvar, l.prior_mu, l.prior_logvar).mean(dim=0)
                    for l in layers.values()]  # each (d_l,)
        kl_per_unit = torch.cat(kl_units)  # (n_codes,)
        kl_layers = torch.stack([k.sum() for k in kl_units])  # (L,)
        dims = torch.tensor(self.config.latent_dims, dtype=kl_layers.dtype, device=kl_layers.device)
        penalized = torch.maximum(kl_layers, self.config.free_bits * dims)  # free bits per layer
        if self.config.kl_balance and kl_weight < 1.0:
            coeff = (kl_layers.detach() + _BALANCE_EPS) / dims
            coeff = coeff / coeff.mean()
        else:
            coeff = torch.ones_like(kl_layers)
        kl_penalty = (coeff * penalized).sum()  # what the objective sees, after free bits/balance
        total = recon_weight * recon + kl_weight * self.beta * kl_penalty
        extras = {f"kl_balance.{name}": c
                  for name, c in zip(self.names, coeff.detach(), strict=True)}
        extras["kl_penalty"] = kl_penalty.detach()
        return LossOutput(total, recon, kl_per_unit.sum(), kl_per_unit, extras)

"""CSVAE: a causally structured VAE whose latent blocks follow the generator's DAG.

Not the Conditional Subspace VAE of Klys et al. 2018 (which shares the acronym): here "CS" means
*causally structured*. Related ideas: CausalVAE (Yang et al. 2021, https://arxiv.org/abs/2004.08697)
and the ladder VAE (Sønderby et al. 2016, https://arxiv.org/abs/1602.02282) whose inference scheme
this model uses along the DAG.

Latents: one block z_c of ``unit_dim`` units per concept c, plus ``style_dim`` free "style" units
for what no concept explains. Codes are the posterior means, concept blocks in factor-column order,
then style.

- Generative model: p(z) = Π_c p(z_c | z_pa(c)) · N(z_style; 0, I). Roots have p(z_c) = N(0, I); a
  node with parents has p(z_c | z_pa(c)) = N(μ_c, σ_c²) from a small MLP per node on the
  concatenated parent blocks. The decoder sees all units.
- Inference, bottom-up: a shared conv backbone with the capacity of a normal VAE encoder
  (``toybench.models.nets``) maps x to 256 features; one linear head per concept (stored as one
  ``nn.Linear`` split by columns) reads *all* 256 features and proposes N(μ̂_c(x), σ̂_c²(x)). Image
  features are never squeezed through concept-sized layers (the failure of DAG-shaped encoders).
- Inference, top-down, ladder style: nodes are visited in the DAG's topological layers; the
  posterior q(z_c | x, z_pa(c)) is the precision-weighted combination of the bottom-up proposal
  and the top-down prior p(z_c | z_pa(c)) evaluated at the parents' sampled values (Sønderby et
  al. 2016, eq. 17-18): σ_q² = 1 / (σ̂⁻² + σ_p⁻²), μ_q = (μ̂ σ̂⁻² + μ_p σ_p⁻²) σ_q².
- KL: Σ_c KL(q(z_c | x, z_pa) || p(z_c | z_pa)) in closed form given the sampled parents (one-sample
  Monte Carlo over the parents), plus KL(q(z_style|x) || N(0, I)).
- Optional concept supervision (``supervision_weight`` λ > 0): a linear classifier per concept on
  its block's posterior mean, trained with cross-entropy on the labelled rows of ``factors``
  (−1 = unlabelled; the training loop decides the labelled fraction). It localizes concept c in
  block c. Objective: recon_weight·NLL + kl_weight·β·KL + λ·Σ_c CE_c, each averaged over the batch
  (CE over the labelled rows only).

Works for any DAG, including one with no edges (then every block has a N(0, I) prior and CSVAE is a
VAE whose units are grouped, and optionally supervised, per concept).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toybench.checks import require
from toybench.configs import CSVAEConfig, effective_beta
from toybench.errors import ToybenchError
from toybench.models.common import (
    LossOutput,
    UnitGroup,
    gaussian_params,
    kl_normal,
    posteriors_to_codes,
    sample_gaussian,
)
from toybench.models.likelihoods import Likelihood
from toybench.models.nets import ConvDecoder, ConvEncoder, resolve_arch

STYLE = "style"


def precision_weighted(
    mu_a: Tensor, logvar_a: Tensor, mu_b: Tensor, logvar_b: Tensor
) -> tuple[Tensor, Tensor]:
    """Product of two Gaussians, renormalized (Sønderby et al. 2016, eq. 17-18).

    σ² = 1 / (σ_a⁻² + σ_b⁻²) and μ = (μ_a σ_a⁻² + μ_b σ_b⁻²) σ², computed stably: the weight of
    μ_a is σ_a⁻² / (σ_a⁻² + σ_b⁻²) = sigmoid(log σ_b² − log σ_a²). All inputs share one shape.

    Returns
    -------
    (Tensor, Tensor)
        μ and log σ² of the combination.
    """
    weight_a = torch.sigmoid(logvar_b - logvar_a)
    mu = weight_a * mu_a + (1.0 - weight_a) * mu_b
    logvar = -torch.logaddexp(-logvar_a, -logvar_b)
    return mu, logvar


@dataclass
class _Block:
    """One latent block after inference: posterior, prior (None = N(0, I)) and the value used."""

    mu: Tensor  # (B, d)
    logvar: Tensor  # (B, d)
    prior_mu: Tensor | None
    prior_logvar: Tensor | None
    z: Tensor  # (B, d): a sample (training) or the posterior mean (codes)


class CSVAE(nn.Module):
    """Causally structured VAE (see the module docstring).

    Parameters
    ----------
    config : CSVAEConfig
    image_shape : (int, int, int)
        ``(C, H, W)``.
    dag : DAG
        The generator's DAG; uses ``nodes``, ``parents(name)`` and ``layers()``.
    concept_sizes : Mapping[str, int]
        Concept name -> number of levels, in factor-column order (the order of ``factors[:, k]``
        and of the code blocks). Must name exactly the DAG's nodes.
    """

    trainable = True

    def __init__(
        self,
        config: CSVAEConfig,
        image_shape: tuple[int, int, int],
        dag,  # noqa: ANN001 - toybench.scm.DAG or anything with nodes/parents/layers
        concept_sizes: Mapping[str, int],
    ) -> None:
        super().__init__()
        self.config = config
        self.image_shape = tuple(image_shape)
        self.beta = effective_beta(config, self.image_shape)  # β for this image size
        self.concepts = tuple(concept_sizes)
        if set(self.concepts) != set(dag.nodes) or len(self.concepts) != len(dag.nodes):
            raise ToybenchError(f"csvae: concepts {list(self.concepts)} do not match the DAG's "
                                f"nodes {list(dag.nodes)}")
        for name in self.concepts:
            require(name != STYLE and name and "." not in name,
                    f"csvae: concept name {name!r} cannot name a latent block")
        self.layers = [tuple(layer) for layer in dag.layers()]
        self.parents = {name: tuple(dag.parents(name)) for name in self.concepts}
        u = config.unit_dim
        self.columns: dict[str, tuple[int, ...]] = {
            name: tuple(range(i * u, (i + 1) * u)) for i, name in enumerate(self.concepts)
        }
        if config.style_dim:
            start = len(self.concepts) * u
            self.columns[STYLE] = tuple(range(start, start + config.style_dim))
        self._n_codes = len(self.concepts) * u + config.style_dim

        arch = resolve_arch(config.arch, self.image_shape)
        self.likelihood = Likelihood(config.likelihood, config.sigma, config.variance_floor)
        channels = self.image_shape[0]
        self.encoder = ConvEncoder(arch, channels)
        # All per-block bottom-up heads in one layer: (B, 256) -> (B, 2 * n_codes) = (μ̂, log σ̂²).
        self.heads = nn.Linear(arch.hidden, 2 * self._n_codes)
        self.priors = nn.ModuleDict({
            name: nn.Sequential(
                nn.Linear(len(pa) * u, config.prior_hidden),
                nn.SiLU(),
                nn.Linear(config.prior_hidden, 2 * u),  # -> (μ_p, log σ_p²)
            )
            for name, pa in self.parents.items() if pa
        })
        self.classifiers = nn.ModuleDict(
            {name: nn.Linear(u, int(concept_sizes[name])) for name in self.concepts}
            if config.supervision_weight > 0 else {}
        )
        self.decoder = ConvDecoder(arch, self._n_codes, channels * self.likelihood.params)

    @property
    def n_codes(self) -> int:
        return self._n_codes

    def units(self) -> list[UnitGroup]:
        return [UnitGroup(name, "style" if name == STYLE else "concept", cols)
                for name, cols in self.columns.items()]

    def _infer(
        self, x: Tensor, generator: torch.Generator | None, sample: bool
    ) -> dict[str, _Block]:
        """Bottom-up heads, then the top-down pass over the DAG's layers (keys in column order)."""
        mu_hat, logvar_hat = gaussian_params(self.heads(self.encoder(x)))  # (B, n_codes) each
        blocks: dict[str, _Block] = {}
        for layer in self.layers:
            for name in layer:
                cols = slice(self.columns[name][0], self.columns[name][-1] + 1)
                mu_b, logvar_b = mu_hat[:, cols], logvar_hat[:, cols]  # bottom-up proposal (B, u)
                if self.parents[name]:
                    context = torch.cat([blocks[p].z for p in self.parents[name]], dim=1)
                    prior_mu, prior_logvar = gaussian_params(self.priors[name](context))
                else:
                    prior_mu = torch.zeros_like(mu_b)
                    prior_logvar = torch.zeros_like(logvar_b)
                mu, logvar = precision_weighted(mu_b, logvar_b, prior_mu, prior_logvar)
                z = sample_gaussian(mu, logvar, generator) if sample else mu
                blocks[name] = _Block(mu, logvar, prior_mu, prior_logvar, z)
        if STYLE in self.columns:
            cols = slice(self.columns[STYLE][0], self.columns[STYLE][-1] + 1)
            mu, logvar = mu_hat[:, cols], logvar_hat[:, cols]
            z = sample_gaussian(mu, logvar, generator) if sample else mu
            blocks[STYLE] = _Block(mu, logvar, None, None, z)
        return {name: blocks[name] for name in self.columns}

    def posteriors(self, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """Per block (concepts in column order, then ``"style"``): (μ, σ) of q, each ``(B, d)``.

        The top-down pass conditions each node on its parents' posterior *means*.
        """
        return {name: (b.mu, torch.exp(0.5 * b.logvar))
                for name, b in self._infer(x, None, sample=False).items()}

    def encode(self, x: Tensor) -> Tensor:
        """Codes ``(B, n_codes)``: posterior means, concept blocks in column order, then style."""
        return posteriors_to_codes(self.posteriors(x))

    def decode(self, z: Tensor) -> Tensor:
        """``(B, n_codes)`` -> expected image ``(B, C, H, W)`` in [0, 1]."""
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

        ``factors`` ``(B, K)`` int64 (−1 = unlabelled) feeds the concept classifiers when
        ``supervision_weight > 0``; ``None`` means no labels in this batch. ``step`` and
        ``diagnostics`` are unused (this family has no logging-only extras).
        """
        del step, diagnostics
        blocks = self._infer(x, generator, sample=True)
        z = torch.cat([b.z for b in blocks.values()], dim=1)  # (B, n_codes)
        recon = self.likelihood.nll(self.decoder(z), x).mean()
        kl_blocks = []
        for b in blocks.values():
            if b.prior_mu is None:  # N(0, I) prior
                zeros = torch.zeros_like(b.mu)
                kl_blocks.append(kl_normal(b.mu, b.logvar, zeros, zeros))
            else:
                kl_blocks.append(kl_normal(b.mu, b.logvar, b.prior_mu, b.prior_logvar))
        kl_per_unit = torch.cat(kl_blocks, dim=1).mean(dim=0)  # (n_codes,)
        kl = kl_per_unit.sum()
        total = recon_weight * recon + kl_weight * self.beta * kl
        extras: dict[str, Tensor] = {}
        if self.classifiers and factors is not None:
            supervision = self._supervision(blocks, factors)
            total = total + self.config.supervision_weight * supervision
            extras["supervision"] = supervision.detach()
        return LossOutput(total, recon, kl, kl_per_unit, extras)

    def _supervision(self, blocks: dict[str, _Block], factors: Tensor) -> Tensor:
        """Σ_c mean cross-entropy of classifier c over the rows with ``factors[:, c] >= 0``."""
        require(factors.ndim == 2 and factors.shape[1] == len(self.concepts),
                f"csvae: factors must be (B, {len(self.concepts)}), got {tuple(factors.shape)}")
        terms = []
        for k, name in enumerate(self.concepts):
            target = factors[:, k].long()  # (B,), -1 = unlabelled
            logits = self.classifiers[name](blocks[name].mu).float()  # (B, levels)
            n_labelled = (target >= 0).sum().clamp(min=1)
            ce = F.cross_entropy(logits, target, ignore_index=-1, reduction="sum")
            terms.append(ce / n_labelled)
        return torch.stack(terms).sum()

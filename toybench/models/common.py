"""Shared pieces of every model family: the model contract, the loss record, unit groups and
diagonal-Gaussian algebra.

``Model`` is the contract every family satisfies (a ``typing.Protocol``, checkable with
``isinstance``); training, scoring and plotting call these members and nothing else, never probing
for optional ones. A family without gradient training (``trainable = False``, PCA) also satisfies
``Fittable``: it is fitted once on the training images instead of optimized. A family trained on
pairs of images (weak supervision, ``ada``) also satisfies ``Paired``: the run draws its training
pairs as its ``pairing`` says.

The Gaussian helpers implement the closed forms used by all VAEs here: the reparameterized sample
(Kingma & Welling 2014, https://arxiv.org/abs/1312.6114, eq. 10), the KL divergence between two
diagonal Gaussians, and the Gaussian log density used by the β-TCVAE total-correlation estimator
(Chen et al. 2018, https://arxiv.org/abs/1802.04942).

Numerical conventions: every log-variance that leaves a network is clamped to
``[LOGVAR_MIN, LOGVAR_MAX]`` and cast to float32 before it enters a loss, so losses are computed in
fp32 even under ``torch.autocast(..., dtype=torch.bfloat16)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from toybench.pairs import PairSpec

# exp(-10) ≈ 4.5e-5 (σ ≈ 0.007) and exp(10) ≈ 2.2e4: wide enough never to bind in healthy training,
# narrow enough that exp() cannot overflow fp32 or underflow to a zero variance.
LOGVAR_MIN = -10.0
LOGVAR_MAX = 10.0
LOG_2PI = math.log(2.0 * math.pi)
UNIT_KINDS = ("concept", "style", "layer")


@dataclass(frozen=True)
class UnitGroup:
    """Which code columns belong to one latent block.

    Attributes
    ----------
    name : str
        The DAG node (CSVAE concept), ``"style"``, or the layer name (``"z"``, ``"z1"``, ...).
    kind : str
        ``"concept"``, ``"style"`` or ``"layer"``.
    columns : tuple of int
        Code columns (indices into ``encode(x)[:, j]``) of this block.
    """

    name: str
    kind: str
    columns: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.kind not in UNIT_KINDS:
            raise ValueError(f"UnitGroup.kind={self.kind!r}; valid: {', '.join(UNIT_KINDS)}")


@dataclass
class LossOutput:
    """One evaluation of a model's objective on a batch (all tensors, all float32).

    Attributes
    ----------
    total : Tensor
        Scalar the optimizer minimizes (weighted sum of all terms, averaged over the batch).
    recon : Tensor
        Scalar negative log-likelihood of the images, summed over pixels, averaged over the batch
        (unweighted).
    kl : Tensor
        Scalar KL(q(z|x) || p(z)) summed over all latent units, averaged over the batch
        (unweighted: before β, the schedule's ``kl_weight``, free bits or balancing).
    kl_per_unit : Tensor
        ``(n_codes,)`` batch-averaged KL of each code column (sums to ``kl``); for dead-unit counts.
    extras : dict of str to Tensor
        Family-specific scalar diagnostics (``"tc"``, ``"supervision"``, ...), for logging only.
    """

    total: Tensor
    recon: Tensor
    kl: Tensor
    kl_per_unit: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


@runtime_checkable
class Model(Protocol):
    """What every model family provides (``toybench.models.MODELS``; docs/architecture.md).

    Attributes
    ----------
    trainable : bool
        Class attribute. True: trained by gradient steps on ``loss(...).total``. False: has no
        gradient training and satisfies ``Fittable`` (PCA).
    n_codes : int
        Number of code columns ``encode`` returns.
    """

    trainable: ClassVar[bool]

    @property
    def n_codes(self) -> int: ...

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
        """The objective on a batch ``x`` ``(B, C, H, W)`` float32 in [0, 1].

        ``factors`` ``(B, K)`` int64 (−1 = unlabelled; ``None`` = no labels) for supervised
        families; ``kl_weight`` the schedule's value; ``generator`` supplies the
        reparameterization noise (``None`` = torch's default); ``diagnostics=False`` lets a model
        skip logging-only extras (never a loss term). Every family accepts every keyword.
        """
        ...

    def encode(self, x: Tensor) -> Tensor:
        """Codes (posterior means) ``(B, n_codes)`` of images ``(B, C, H, W)`` in [0, 1]."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """Codes ``(B, n_codes)`` -> expected image ``(B, C, H, W)`` in [0, 1]."""
        ...

    def posteriors(self, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """``{layer or block: (μ (B, d), σ (B, d))}`` of q(z|x) in code-column order, every
        stochastic layer including the top; ``{}`` for a model without a posterior (PCA)."""
        ...

    def units(self) -> list[UnitGroup]:
        """Which code columns belong to which layer / DAG node (every column exactly once)."""
        ...


@runtime_checkable
class Fittable(Model, Protocol):
    """A ``Model`` with ``trainable = False``: fitted once, no optimizer steps (PCA)."""

    def fit(self, images: Tensor) -> None:
        """Fit to the training images ``(n, C, H, W)``: uint8 in 0..255 or float in [0, 1]."""
        ...


@runtime_checkable
class Paired(Model, Protocol):
    """A ``Model`` trained on pairs of images (``toybench.pairs``): its ``loss`` takes each batch
    of B pairs as ``(2B, C, H, W)``, the first images then the second ones; ``image_loss`` is
    the objective of single images (what the evaluation's ELBO pass calls)."""

    @property
    def pairing(self) -> PairSpec:
        """How its training pairs are drawn (mode and k)."""
        ...

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
        """The objective of single images ``x`` ``(B, C, H, W)`` (no pairs, nothing shared);
        the keywords of ``Model.loss``."""
        ...


def gaussian_params(raw: Tensor) -> tuple[Tensor, Tensor]:
    """Split a head's output into (μ, clamped log σ²), both float32.

    Parameters
    ----------
    raw : Tensor
        ``(B, 2d)``: the first ``d`` columns are means, the last ``d`` log-variances.

    Returns
    -------
    (Tensor, Tensor)
        μ ``(B, d)`` and log σ² ``(B, d)`` in ``[LOGVAR_MIN, LOGVAR_MAX]``.
    """
    mu, logvar = raw.float().chunk(2, dim=1)  # (B, 2d) -> 2 x (B, d)
    return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


def sample_gaussian(mu: Tensor, logvar: Tensor, generator: torch.Generator | None) -> Tensor:
    """Reparameterized sample z = μ + σ·ε, ε ~ N(0, I) (Kingma & Welling 2014, eq. 10).

    ``generator`` supplies ε; ``None`` means torch's default generator (the training loop passes
    its own so that a run's randomness lives in its checkpoint). ε is drawn on the generator's
    device and moved to μ's: a run's CPU generator gives a model on a GPU the same noise.
    """
    device = mu.device if generator is None else generator.device
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=device)
    eps = eps.to(mu.device)  # a no-op on one device
    return mu + torch.exp(0.5 * logvar) * eps


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise KL(N(μ, σ²) || N(0, 1)) = ½(μ² + σ² − log σ² − 1).

    Kingma & Welling 2014, Appendix B. Returns a tensor of the same shape as ``mu``.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


def kl_normal(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """Elementwise KL(N(μ_q, σ_q²) || N(μ_p, σ_p²)).

    = ½(log σ_p² − log σ_q² + (σ_q² + (μ_q − μ_p)²) / σ_p² − 1); same shape as the inputs.
    """
    return 0.5 * (
        logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p) - 1.0
    )


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(z; μ, σ²) = −½(log 2π + log σ² + (z − μ)²/σ²); inputs broadcast."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def batch_mean_sum(per_element: Tensor) -> Tensor:
    """Sum over all non-batch dimensions, mean over the batch: ``(B, ...) -> ()``."""
    return per_element.reshape(per_element.shape[0], -1).sum(dim=1).mean()


def posteriors_to_codes(stats: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
    """Concatenate the posterior means of ``stats`` (in its order) into codes ``(B, n_codes)``."""
    return torch.cat([mu for mu, _sigma in stats.values()], dim=1)



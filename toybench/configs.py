"""Every config dataclass of toybench: ``[train]`` and each model family's ``[model]`` table.

Frozen dataclasses with no torch, so a run's configuration can be resolved, hashed and checked
(`toybench.rundir.RunSpec`) without importing the models: a sweep checks thousands of runs in a
fraction of a second. Each family's modules and loss live in ``toybench/models/<family>.py``,
which imports its config from here; the evaluation's `toybench.evaluate.EvalConfig` is beside
the evaluation, which needs no torch either. Every value is validated in ``__post_init__``
(one-line `toybench.errors.ToybenchError`, via `toybench.checks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from toybench.checks import check_bool, check_choice, check_int, check_real, require
from toybench.errors import ToybenchError

KL_SCHEDULES = ("constant", "linear", "cyclic")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("bf16", "fp32")
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")  # toybench.models.likelihoods
ARCH_NAMES = ("conv32", "conv64")  # toybench.models.nets.ARCHS
PAIR_MODES = ("conditional", "intervention")  # toybench.pairs
ADA_AGGREGATIONS = ("gvae", "ml-vae")  # toybench.models.ada
# A normalized β is given for an image of this many pixels: 64x64, the dSprites images on which
# Higgins et al. 2017 and disentanglement_lib set beta-VAE's beta.
BETA_REFERENCE_PIXELS = 64 * 64


@dataclass(frozen=True)
class TrainConfig:
    """How a baseline is trained (the ``[train]`` table of ``baselines/*.toml``).

    Every value is checked on construction (finite numbers, the ranges below); integers given
    for float fields become floats.

    Attributes
    ----------
    steps : int
        Optimizer steps (>= 1).
    batch_size : int
        Images per step (>= 1; at most ``n_train`` are used).
    lr : float
        Adam's peak learning rate (> 0).
    lr_schedule : str
        ``"constant"`` (``lr`` after the warm-up) or ``"cosine"`` (after the warm-up, a half
        cosine from ``lr`` down to ``lr · lr_min_ratio`` at the last step; Loshchilov & Hutter
        2017, https://arxiv.org/abs/1608.03983, without restarts).
    lr_warmup_steps : int
        Linear learning-rate warm-up from ``lr / lr_warmup_steps`` to ``lr`` (>= 0; 0 = none).
    lr_min_ratio : float
        Final learning rate of the cosine schedule as a fraction of ``lr``, in ``[0, 1]``.
    adam_beta1, adam_beta2 : float
        Adam's moment decay rates, in ``[0, 1)``.
    weight_decay : float
        Adam's L2 weight decay (>= 0; 0 = none).
    grad_clip : float
        Max global gradient norm (``clip_grad_norm_``, >= 0); 0 disables clipping.
    recon_weight : float
        Weight of the reconstruction term, passed to ``model.loss`` (>= 0).
    kl_weight : float
        Final weight of the KL term (>= 0; multiplies the model's own β); the schedule ramps up
        to it.
    kl_schedule : str
        ``"constant"`` (``kl_weight`` after the delay), ``"linear"`` (0 → ``kl_weight`` over
        ``kl_warmup_steps`` after the delay) or ``"cyclic"`` (Fu et al. 2019: period
        ``kl_cycle_steps``, each period ramps 0 → ``kl_weight`` over ``kl_warmup_steps`` and holds;
        the ramp must fit in the period).
    kl_delay_steps : int
        Steps with KL weight 0 before the schedule starts (>= 0).
    kl_warmup_steps : int
        Length of the linear ramp (linear and cyclic schedules; >= 0).
    kl_cycle_steps : int
        Period of the cyclic schedule (>= 1).
    n_train, n_test : int
        Training images; images in each test split (``test`` and ``test_decorrelated``); >= 1.
    checkpoint_every : int
        Steps between atomic checkpoints (``ckpt/last.pt``); the last step is always saved.
    nan_patience : int
        Consecutive non-finite losses/gradients after which training stops (exit code 3).
    precision : str
        ``"bf16"`` (CPU autocast to bfloat16, the default: faster, same results within noise) or
        ``"fp32"``.
    log_every : int
        Steps between scalar logs (history.csv, TensorBoard); the last step is always logged.
    hist_every : int
        Steps between TensorBoard histograms and images; the last step always has them.
    supervised_fraction : float
        Fraction of training images whose factors are shown to the model (concept supervision;
        0 = unsupervised), in ``[0, 1]``. The labelled subset is fixed by the seed.
    """

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    lr_min_ratio: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.0
    grad_clip: float = 100.0
    recon_weight: float = 1.0
    kl_weight: float = 1.0
    kl_schedule: str = "linear"
    kl_delay_steps: int = 0
    kl_warmup_steps: int = 500
    kl_cycle_steps: int = 1000
    n_train: int = 20000
    n_test: int = 5000
    checkpoint_every: int = 500
    nan_patience: int = 20
    precision: str = "bf16"
    log_every: int = 25
    hist_every: int = 500
    supervised_fraction: float = 0.0

    def __post_init__(self) -> None:
        check_choice(self.kl_schedule, "train.kl_schedule", KL_SCHEDULES)
        check_choice(self.precision, "train.precision", PRECISIONS)
        check_choice(self.lr_schedule, "train.lr_schedule", LR_SCHEDULES)
        for name in ("steps", "batch_size", "n_train", "n_test", "checkpoint_every",
                     "nan_patience", "log_every", "hist_every", "kl_cycle_steps"):
            check_int(getattr(self, name), f"train.{name}", minimum=1)
        for name in ("kl_delay_steps", "kl_warmup_steps", "lr_warmup_steps"):
            check_int(getattr(self, name), f"train.{name}", minimum=0)
        reals = {"lr": {"above": 0.0}, "lr_min_ratio": {"minimum": 0.0, "maximum": 1.0},
                 "adam_beta1": {"minimum": 0.0, "below": 1.0},
                 "adam_beta2": {"minimum": 0.0, "below": 1.0}, "weight_decay": {"minimum": 0.0},
                 "grad_clip": {"minimum": 0.0}, "recon_weight": {"minimum": 0.0},
                 "kl_weight": {"minimum": 0.0},
                 "supervised_fraction": {"minimum": 0.0, "maximum": 1.0}}
        for name, bounds in reals.items():
            # float(int) for float fields: history rows and checkpoints then have one type.
            object.__setattr__(self, name, check_real(getattr(self, name), f"train.{name}",
                                                      **bounds))
        if self.kl_schedule == "cyclic" and self.kl_warmup_steps > self.kl_cycle_steps:
            raise ToybenchError(f"train.kl_warmup_steps={self.kl_warmup_steps} is longer than "
                                f"the cyclic period train.kl_cycle_steps={self.kl_cycle_steps}")


# --------------------------------------------------------------------------------------------
# The model families (toybench/models/).
# --------------------------------------------------------------------------------------------


def normalized_weight(weight: float, image_shape: tuple[int, ...]) -> float:
    """A KL-term weight given for 64x64 images, for images of ``image_shape`` ``(C, H, W)``.

    The objective is the ELBO plus extra pressure: β·KL = KL + (β − 1)·KL (and for β-TCVAE
    KL + (β_TC − 1)·TC). The ELBO part needs no normalization (it is a bound on the
    likelihood at any size), but the reconstruction term is a sum over pixels, so at 32x32 a
    quarter of the pixels pay for the same extra pressure. Scaling the excess over 1 by
    ``H·W / BETA_REFERENCE_PIXELS`` keeps its ratio to the reconstruction term (the idea of
    Higgins et al. 2017's β_norm = β·M/N, https://openreview.net/forum?id=Sy2fzU9gl, applied to
    the part of β beyond the ELBO), keeps β = 1 a plain VAE at every size, and keeps the
    literature's values at 64x64. Channels are not counted: the colour of a toy-causal pixel is
    one concept (hue) spread over three channels, and a grey and an RGB rendering of one scene
    should get the same β. Examples: 4 -> 4 at 64x64, 1.75 at 32x32 (grey or RGB); 6 -> 2.25.
    """
    pixels = math.prod(int(d) for d in image_shape[-2:])
    return 1.0 + (float(weight) - 1.0) * pixels / BETA_REFERENCE_PIXELS


def effective_beta(config, image_shape: tuple[int, ...], name: str = "beta") -> float:  # noqa: ANN001
    """The KL-term weight ``name`` (``"beta"``, or the vae family's ``"tc_beta"``) a family
    config puts on images of ``image_shape`` ``(C, H, W)``: the config's value, or with
    ``config.beta_normalized`` its `normalized_weight`."""
    weight = getattr(config, name)
    if not config.beta_normalized:
        return float(weight)
    return normalized_weight(weight, image_shape)


def check_decoder_fields(family: str, config) -> None:  # noqa: ANN001 - any family config
    """Validate the fields every family config shares (``arch``, likelihood, ``beta``)."""
    archs = ("auto", *ARCH_NAMES)
    require(config.arch in archs, f"{family}.arch={config.arch!r}; valid: {', '.join(archs)}")
    require(config.likelihood in LIKELIHOODS,
            f"{family}.likelihood={config.likelihood!r}; valid: {', '.join(LIKELIHOODS)}")
    check_real(config.sigma, f"{family}.sigma", above=0.0)
    check_real(config.variance_floor, f"{family}.variance_floor", above=0.0)
    check_real(config.beta, f"{family}.beta", minimum=0.0)
    check_bool(config.beta_normalized, f"{family}.beta_normalized")


@dataclass(frozen=True)
class VAEConfig:
    """The ``[model]`` table of the ``vae`` family (VAE, β-VAE, β-TCVAE).

    Attributes
    ----------
    latent_dim : int
        Number of latent units (= code columns).
    beta : float
        Weight of the KL term (Higgins et al. 2017); 1 is the plain VAE.
    beta_normalized : bool
        ``beta`` (and in the vae family ``tc_beta``) are given for 64x64 images; the part above
        1 scales with ``H·W / 4096`` (`normalized_weight`).
    tc_beta : float
        Weight of the total-correlation term (Chen et al. 2018's β); 1 adds nothing.
    dataset_size : int
        N, the number of training images, for the importance weights of the TC estimator
        (``total_correlation``); the ``beta-tcvae`` baseline derives it from ``train.n_train``
        (its ``[derived]`` table).
    arch : str
        Conv backbone: ``"auto"`` (by image size), ``"conv32"`` or ``"conv64"``.
    likelihood : str
        ``"bernoulli"``, ``"gaussian"`` (fixed ``sigma``) or ``"gaussian_learned"``
        (variance ≥ ``variance_floor``).
    sigma, variance_floor : float
        Likelihood parameters (see ``toybench.models.likelihoods``).
    """

    latent_dim: int = 10
    beta: float = 1.0
    beta_normalized: bool = False
    tc_beta: float = 1.0
    dataset_size: int = 20000
    arch: str = "auto"
    likelihood: str = "bernoulli"
    sigma: float = 0.1
    variance_floor: float = 1e-3

    def __post_init__(self) -> None:
        check_decoder_fields("vae", self)
        check_int(self.latent_dim, "vae.latent_dim", minimum=1)
        check_real(self.tc_beta, "vae.tc_beta", minimum=0.0)
        check_int(self.dataset_size, "vae.dataset_size", minimum=1)


@dataclass(frozen=True)
class CSVAEConfig:
    """The ``[model]`` table of the ``csvae`` family.

    Attributes
    ----------
    unit_dim : int
        Latent units per concept.
    style_dim : int
        Free style units with an N(0, I) prior (0 = none).
    prior_hidden : int
        Hidden width of each node's prior MLP p(z_c | z_pa(c)).
    supervision_weight : float
        λ of the concept cross-entropy; 0 builds no classifier heads.
    beta : float
        Weight of the KL term.
    beta_normalized : bool
        As in ``VAEConfig``.
    arch, likelihood, sigma, variance_floor
        As in ``VAEConfig``.
    """

    unit_dim: int = 2
    style_dim: int = 2
    prior_hidden: int = 32
    supervision_weight: float = 0.0
    beta: float = 1.0
    beta_normalized: bool = False
    arch: str = "auto"
    likelihood: str = "bernoulli"
    sigma: float = 0.1
    variance_floor: float = 1e-3

    def __post_init__(self) -> None:
        check_decoder_fields("csvae", self)
        check_int(self.unit_dim, "csvae.unit_dim", minimum=1)
        check_int(self.style_dim, "csvae.style_dim", minimum=0)
        check_int(self.prior_hidden, "csvae.prior_hidden", minimum=1)
        check_real(self.supervision_weight, "csvae.supervision_weight", minimum=0.0)


@dataclass(frozen=True)
class HVAEConfig:
    """The ``[model]`` table of the ``hvae`` family.

    Attributes
    ----------
    latent_dims : tuple of int
        Units per stochastic layer, bottom (z1) to top; 2 or 3 layers.
    ladder_hidden : int
        Width of the bottom-up MLPs above the backbone and of the top-down state.
    free_bits : float
        Nats per latent unit below which a layer's KL is not penalized (0 = off).
    kl_balance : bool
        NVAE KL balancing while ``kl_weight < 1``.
    beta : float
        Weight of the KL term.
    beta_normalized : bool
        As in ``VAEConfig``.
    arch, likelihood, sigma, variance_floor
        As in ``VAEConfig``.
    """

    latent_dims: tuple[int, ...] = (5, 3, 2)
    ladder_hidden: int = 128
    free_bits: float = 0.05
    kl_balance: bool = True
    beta: float = 1.0
    beta_normalized: bool = False
    arch: str = "auto"
    likelihood: str = "bernoulli"
    sigma: float = 0.1
    variance_floor: float = 1e-3

    def __post_init__(self) -> None:
        check_decoder_fields("hvae", self)
        require(isinstance(self.latent_dims, tuple | list),
                f"hvae.latent_dims must be a list of 2 or 3 positive ints, got "
                f"{self.latent_dims!r}")
        dims = tuple(self.latent_dims)
        require(2 <= len(dims) <= 3 and all(isinstance(d, int) and not isinstance(d, bool)
                                            and d >= 1 for d in dims),
                f"hvae.latent_dims must be 2 or 3 positive ints, got {list(dims)}")
        object.__setattr__(self, "latent_dims", dims)
        check_int(self.ladder_hidden, "hvae.ladder_hidden", minimum=1)
        check_real(self.free_bits, "hvae.free_bits", minimum=0.0)
        check_bool(self.kl_balance, "hvae.kl_balance")


@dataclass(frozen=True)
class AdaConfig:
    """The ``[model]`` table of the ``ada`` family (Ada-GVAE, Ada-ML-VAE; Locatello et al. 2020,
    https://arxiv.org/abs/2002.02886), trained on pairs of images (``toybench.pairs``).

    Attributes
    ----------
    latent_dim : int
        Number of latent units (= code columns).
    aggregation : str
        How a shared unit's two posteriors become one: ``"gvae"`` (the average of the two
        Gaussians' means and variances, Ada-GVAE) or ``"ml-vae"`` (their normalized geometric
        mean, a product of experts: precision-weighted mean, harmonic-mean variance; Ada-ML-VAE).
    pair_mode : str
        How the second image of a training pair is drawn: ``"conditional"`` (the changed factors
        redrawn from the generator's distribution given the kept ones) or ``"intervention"``
        (set by do(), independent of the kept factors); see ``toybench.pairs``.
    pair_k : int
        Factors that differ within a pair: 1 ≤ k ≤ K − 1 for a generator with K factors, or 0
        for k drawn uniformly from 1..K − 1 per pair (Locatello et al.'s default).
    beta : float
        Weight of the KL term, as in ``VAEConfig``.
    beta_normalized : bool
        As in ``VAEConfig``.
    arch, likelihood, sigma, variance_floor
        As in ``VAEConfig``.
    """

    latent_dim: int = 10
    aggregation: str = "gvae"
    pair_mode: str = "conditional"
    pair_k: int = 0
    beta: float = 1.0
    beta_normalized: bool = False
    arch: str = "auto"
    likelihood: str = "bernoulli"
    sigma: float = 0.1
    variance_floor: float = 1e-3

    def __post_init__(self) -> None:
        check_decoder_fields("ada", self)
        check_int(self.latent_dim, "ada.latent_dim", minimum=1)
        check_choice(self.aggregation, "ada.aggregation", ADA_AGGREGATIONS)
        check_choice(self.pair_mode, "ada.pair_mode", PAIR_MODES)
        check_int(self.pair_k, "ada.pair_k", minimum=0)


@dataclass(frozen=True)
class PCAConfig:
    """The ``[model]`` table of the ``pca`` family.

    Attributes
    ----------
    n_components : int
        Number of principal components (= code columns).
    """

    n_components: int = 10

    def __post_init__(self) -> None:
        check_int(self.n_components, "pca.n_components", minimum=1)

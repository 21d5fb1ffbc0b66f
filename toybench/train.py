"""The training loop: Adam, KL schedules, NaN guard, atomic checkpoints, exact resume, TensorBoard.

KL schedules: a delay of ``kl_delay_steps`` with weight 0, then a linear warm-up (Bowman et al.
2016, https://arxiv.org/abs/1511.06349) or a cyclical schedule (Fu et al. 2019,
https://arxiv.org/abs/1903.10145). Optimizer: Adam (Kingma & Ba 2015,
https://arxiv.org/abs/1412.6980).
"""

from __future__ import annotations

from dataclasses import dataclass

KL_SCHEDULES = ("constant", "linear", "cyclic")
PRECISIONS = ("bf16", "fp32")


@dataclass(frozen=True)
class TrainConfig:
    """How a baseline is trained (the ``[train]`` table of ``baselines/*.toml``).

    Attributes
    ----------
    steps : int
        Optimizer steps.
    batch_size : int
        Images per step.
    lr : float
        Adam learning rate.
    adam_beta1, adam_beta2 : float
        Adam's moment decay rates.
    weight_decay : float
        Adam's L2 weight decay (0 = none).
    grad_clip : float
        Max global gradient norm (``clip_grad_norm_``); 0 disables clipping.
    recon_weight : float
        Weight of the reconstruction term, passed to ``model.loss``.
    kl_weight : float
        Final weight of the KL term (multiplies the model's own β); the schedule ramps up to it.
    kl_schedule : str
        ``"constant"`` (``kl_weight`` after the delay), ``"linear"`` (0 → ``kl_weight`` over
        ``kl_warmup_steps`` after the delay) or ``"cyclic"`` (Fu et al. 2019: period
        ``kl_cycle_steps``, each period ramps 0 → ``kl_weight`` over ``kl_warmup_steps`` and holds).
    kl_delay_steps : int
        Steps with KL weight 0 before the schedule starts.
    kl_warmup_steps : int
        Length of the linear ramp (linear and cyclic schedules).
    kl_cycle_steps : int
        Period of the cyclic schedule.
    n_train, n_test : int
        Training images; images in each test split (``test`` and ``test_decorrelated``).
    checkpoint_every : int
        Steps between atomic checkpoints (``ckpt/last.pt``); the last step is always saved.
    nan_patience : int
        Consecutive non-finite losses/gradients after which training stops (exit code 3).
    precision : str
        ``"bf16"`` (CPU autocast to bfloat16, the default: faster, same results within noise) or
        ``"fp32"``.
    log_every : int
        Steps between scalar logs (history.csv, TensorBoard).
    hist_every : int
        Steps between TensorBoard histograms and images (and at the last step).
    supervised_fraction : float
        Fraction of training images whose factors are shown to the model (concept supervision;
        0 = unsupervised). The labelled subset is fixed by the seed.
    """

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
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
        from toybench.errors import ToybenchError

        if self.kl_schedule not in KL_SCHEDULES:
            raise ToybenchError(
                f"train.kl_schedule={self.kl_schedule!r}; valid: {', '.join(KL_SCHEDULES)}"
            )
        if self.precision not in PRECISIONS:
            raise ToybenchError(
                f"train.precision={self.precision!r}; valid: {', '.join(PRECISIONS)}"
            )
        positive = ("steps", "batch_size", "n_train", "n_test", "checkpoint_every",
                    "nan_patience", "log_every", "hist_every", "kl_cycle_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ToybenchError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "kl_weight", "recon_weight", "grad_clip", "weight_decay",
                     "kl_delay_steps", "kl_warmup_steps"):
            if getattr(self, name) < 0:
                raise ToybenchError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.supervised_fraction <= 1.0:
            raise ToybenchError(
                f"train.supervised_fraction must be in [0, 1], got {self.supervised_fraction}"
            )


def kl_weight_at(config: TrainConfig, step: int) -> float:
    """KL weight at optimizer step ``step`` (0-based) under ``config``'s schedule.

    Parameters
    ----------
    config : TrainConfig
        Supplies ``kl_schedule``, ``kl_weight``, ``kl_delay_steps``, ``kl_warmup_steps`` and
        ``kl_cycle_steps``.
    step : int
        The step about to be taken.

    Returns
    -------
    float
        0 during the delay, then the scheduled weight in ``[0, kl_weight]``.
    """
    t = step - config.kl_delay_steps
    if t < 0:
        return 0.0
    if config.kl_schedule == "constant":
        return config.kl_weight
    if config.kl_schedule == "cyclic":
        t = t % config.kl_cycle_steps
    if config.kl_warmup_steps == 0:
        return config.kl_weight
    return config.kl_weight * min(1.0, (t + 1) / config.kl_warmup_steps)

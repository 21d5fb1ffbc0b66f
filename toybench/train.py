"""The training loop: Adam, KL schedules, NaN guard, atomic checkpoints, exact resume, TensorBoard.

KL schedules: a delay of ``kl_delay_steps`` with weight 0, then a linear warm-up (Bowman et al.
2016, https://arxiv.org/abs/1511.06349) or a cyclical schedule (Fu et al. 2019,
https://arxiv.org/abs/1903.10145). Optimizer: Adam (Kingma & Ba 2015,
https://arxiv.org/abs/1412.6980).
"""

from __future__ import annotations

import ctypes
import io
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toybench.errors import ToybenchError
from toybench.io import atomic_write_bytes

CHECKPOINT_FORMAT = 2  # 2: history rows stored as dicts
NONFINITE_EXIT_CODE = 3
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


class TrainingDiverged(ToybenchError):
    """Raised after ``nan_patience`` consecutive non-finite steps; the CLI exits with code 3."""

    exit_code = NONFINITE_EXIT_CODE

    def __init__(self, message: str, history: list[dict[str, float]] | None = None) -> None:
        super().__init__(message)
        self.history = list(history or [])


# --------------------------------------------------------------------------------------------
# Checkpoints: one dict of tensors / ints / floats / strings / lists, written atomically.
# --------------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    Parameters
    ----------
    path : str or Path
        Target file, e.g. ``<run>/ckpt/last.pt``; its folder is created.
    state : dict
        Only tensors, numbers, strings, lists/tuples and dicts, so that it loads with
        ``torch.load(weights_only=True)``.

    Returns
    -------
    Path
        The written path. A crash mid-write leaves the previous file untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises
    ------
    ToybenchError
        One line if the file is missing, unreadable, or not a toybench checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ToybenchError(f"no checkpoint at {path}; cannot resume (run without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        # torch's own message suggests weights_only=False, which we never do: name the type only.
        raise ToybenchError(f"checkpoint {path} is unreadable (corrupt, truncated or not a "
                            f"weights-only checkpoint: {type(err).__name__})") from None
    if not isinstance(state, dict) or "format" not in state:
        raise ToybenchError(f"checkpoint {path} is not a toybench checkpoint")
    if state["format"] != CHECKPOINT_FORMAT:
        raise ToybenchError(f"checkpoint {path} has format {state['format']!r}; this toybench "
                            f"reads format {CHECKPOINT_FORMAT} (start the run again without "
                            f"--resume)")
    return state


# --------------------------------------------------------------------------------------------
# The loop.
# --------------------------------------------------------------------------------------------

HISTORY_COLUMNS = ("step", "loss", "recon", "kl", "kl_weight", "grad_norm", "nan_skipped",
                   "seconds")


@dataclass
class TrainResult:
    """What a finished (or interrupted) training run hands back.

    Attributes
    ----------
    history : list of dict
        One row per logged step with the keys of ``HISTORY_COLUMNS`` plus the model's scalar
        ``extras``; ``seconds`` is wall time since the start of this process' training.
    steps_done : int
        Optimizer steps taken (including skipped non-finite steps).
    nan_skipped : int
        Steps whose update was skipped because the loss or gradient was not finite.
    train_seconds : float
        Wall time of the steps run in this call.
    images_per_second : float
        Training throughput of this call.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    steps_done: int = 0
    nan_skipped: int = 0
    train_seconds: float = 0.0
    images_per_second: float = 0.0


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the training batch at ``step``: epoch-wise permutations, drop-last.

    Stateless: the permutation of epoch ``e`` comes from a ``torch.Generator`` seeded with
    ``(seed, e)``, so resuming at any step needs no sampler state.

    Returns
    -------
    torch.Tensor
        ``(batch_size,)`` int64 indices into ``[0, n)``.
    """
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen)  # (n,)
    return perm[k * batch_size:(k + 1) * batch_size]


def _make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # Fused CPU Adam: one kernel for all parameters; same update as the for-loop Adam up to
    # floating-point summation order.
    fused = all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)
    return torch.optim.Adam(params, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                            weight_decay=config.weight_decay, fused=fused or None)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's upper limit on 64-bit systems
_allocator_tuned = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks for reuse instead of handing them back to the OS.

    Every training step allocates and frees the same activation tensors (up to tens of MB). With
    glibc's defaults, blocks over the dynamic mmap threshold are ``munmap``-ed on free and the top
    of the heap is trimmed, so the next step page-faults all of it back in: measured 2.6 million
    minor page faults per 100 steps of the 64×64 VAE, about a quarter of the step time on
    2 cores. Raising ``M_MMAP_THRESHOLD`` to its maximum (32 MiB) and ``M_TRIM_THRESHOLD`` to
    2 GiB keeps the blocks in the heap (0.1 million faults; 64×64 VAE 1200 -> 1600 images/s).
    It changes no result, only where memory comes from; the process keeps its peak heap.

    Process-wide, applied once; a no-op (returns False) where the C library has no ``mallopt``
    (macOS, Windows, musl's stub).

    Returns
    -------
    bool
        Whether both settings were accepted (now or by an earlier call).
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok
    _allocator_tuned = ok
    return ok


def _scalar(t: Any) -> float:
    return float(t.detach().float()) if isinstance(t, torch.Tensor) else float(t)


def train(
    model: torch.nn.Module,
    images: np.ndarray,
    config: TrainConfig,
    *,
    seed: int,
    factors: np.ndarray | None = None,
    ckpt_path: str | Path | None = None,
    resume: bool = False,
    tb_dir: str | Path | None = None,
    progress: bool | None = None,
    stop_after: int | None = None,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``images`` with Adam under ``config``; deterministic given ``seed``.

    Parameters
    ----------
    model : torch.nn.Module
        A toybench model: ``loss(x, step, *, factors, kl_weight, recon_weight) -> LossOutput``.
    images : np.ndarray
        ``(n, C, H, W)`` uint8 training images (converted to float in [0, 1] per batch).
    config : TrainConfig
        Steps, batch size, optimizer, schedule, guard, logging and precision.
    seed : int
        Seeds the batch order and the model's sampling noise (the global torch RNG is forked, so
        the caller's RNG state is untouched).
    factors : np.ndarray, optional
        ``(n, K)`` int64 factors; with ``config.supervised_fraction > 0`` a seed-fixed subset of
        rows is shown to the model (other rows are ``-1``).
    ckpt_path : str or Path, optional
        Checkpoint file written every ``checkpoint_every`` steps and at the end.
    resume : bool
        Continue from ``ckpt_path`` (must exist and match ``config`` and ``seed``).
    tb_dir : str or Path, optional
        TensorBoard log folder.
    progress : bool, optional
        tqdm progress bar; default: only when stderr is a terminal.
    stop_after : int, optional
        Stop (and checkpoint) after this step count, as if interrupted; for tests and time limits.
    on_log : callable, optional
        Called with each history row.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingDiverged
        After ``config.nan_patience`` consecutive non-finite losses or gradients.
    ToybenchError
        If resuming from a missing, corrupt or mismatched checkpoint.
    """
    n = images.shape[0]
    if n < 1:
        raise ToybenchError("cannot train on an empty training set")
    keep_freed_memory()
    data_u8 = torch.from_numpy(np.ascontiguousarray(images))  # (n, C, H, W) uint8
    labels = _supervision_labels(factors, config.supervised_fraction, seed)
    channels_last = data_u8.ndim == 4
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(model, config)
    # The reparameterization noise comes from this generator (saved in every checkpoint);
    # anything else drawing from torch's default RNG is covered by fork_rng.
    noise_gen = torch.Generator().manual_seed(int(seed))
    loss_kwargs: dict[str, Any] = {"generator": noise_gen}
    result = TrainResult()
    nan_streak = 0
    start = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if resume:
            if ckpt_path is None:
                raise ToybenchError("cannot resume: no checkpoint path given")
            state = load_checkpoint(ckpt_path)
            _check_resumable(state, config, seed, ckpt_path)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            noise_gen.set_state(state["noise_rng"])
            start = int(state["step"])
            result.nan_skipped = int(state["nan_skipped"])
            nan_streak = int(state["nan_streak"])
            result.history = [{str(k): float(v) for k, v in row.items()}
                              for row in state["history"]]
        end = config.steps if stop_after is None else min(config.steps, stop_after)
        writer = _open_writer(tb_dir, start)
        fixed_batch = _to_float(data_u8[: min(64, n)], channels_last)
        bar = _progress(progress, config.steps, start)
        params = [p for p in model.parameters() if p.requires_grad]
        t0 = time.perf_counter()
        model.train()
        for step in range(start, end):
            idx = batch_indices(n, config.batch_size, step, seed)  # (B,)
            x = _to_float(data_u8[idx], channels_last)  # (B, C, H, W) float32
            kl_w = kl_weight_at(config, step)
            done = step + 1
            logged = done % config.log_every == 0 or done == config.steps
            # Models with costly logging-only terms skip them on steps that are not logged.
            loss_kwargs["diagnostics"] = logged
            with torch.autocast("cpu", dtype=torch.bfloat16,
                                enabled=config.precision == "bf16"):
                out = model.loss(x, step, factors=None if labels is None else labels[idx],
                                 kl_weight=kl_w, recon_weight=config.recon_weight,
                                 **loss_kwargs)
            loss = out.total.float()
            optimizer.zero_grad(set_to_none=True)
            grad_norm = math.nan
            finite = bool(torch.isfinite(loss))
            if finite:
                loss.backward()
                max_norm = config.grad_clip if config.grad_clip > 0 else math.inf
                grad_norm = _scalar(torch.nn.utils.clip_grad_norm_(params, max_norm))
                finite = math.isfinite(grad_norm)
            if finite:
                optimizer.step()
                nan_streak = 0
            else:
                # Skip the update: a NaN/Inf loss or gradient would poison Adam's moments.
                optimizer.zero_grad(set_to_none=True)
                result.nan_skipped += 1
                nan_streak += 1
            if logged or not finite:
                row = {"step": done, "loss": _scalar(loss), "recon": _scalar(out.recon),
                       "kl": _scalar(out.kl), "kl_weight": kl_w, "grad_norm": grad_norm,
                       "nan_skipped": result.nan_skipped,
                       "seconds": time.perf_counter() - t0}
                row.update({k: _scalar(v) for k, v in sorted(out.extras.items())
                            if isinstance(v, torch.Tensor) and v.numel() == 1})
                result.history.append(row)
                _log_scalars(writer, model, out, row)
                if on_log is not None:
                    on_log(row)
            if writer is not None and (done % config.hist_every == 0 or done == config.steps):
                _log_distributions(writer, model, fixed_batch, done)
                model.train()
            if nan_streak >= config.nan_patience:
                if writer is not None:
                    writer.close()
                raise TrainingDiverged(
                    f"training stopped at step {done}: {nan_streak} consecutive non-finite "
                    f"losses/gradients (train.nan_patience={config.nan_patience}); try a lower "
                    f"train.lr, train.grad_clip > 0 or train.precision=fp32",
                    result.history,
                )
            if ckpt_path is not None and (done % config.checkpoint_every == 0 or done == end):
                _save_state(ckpt_path, model, optimizer, noise_gen, config, seed, done,
                            result, nan_streak)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{_scalar(loss):.4g}", refresh=False)
        result.steps_done = max(end, start)
        result.train_seconds = time.perf_counter() - t0
        ran = max(end - start, 0)
        result.images_per_second = (ran * min(config.batch_size, n) / result.train_seconds
                                    if result.train_seconds > 0 else 0.0)
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    model.eval()
    return result


def _to_float(x_u8: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = x_u8.to(torch.float32).div_(255.0)  # (B, C, H, W) in [0, 1]
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _supervision_labels(factors: np.ndarray | None, fraction: float,
                        seed: int) -> torch.Tensor | None:
    """Factors of a seed-fixed labelled subset; other rows ``-1``. ``None`` when unsupervised."""
    if factors is None or fraction <= 0.0:
        return None
    n = factors.shape[0]
    rng = np.random.default_rng([int(seed), 0x5EED])
    labelled = rng.permutation(n)[: int(round(fraction * n))]
    out = np.full(factors.shape, -1, dtype=np.int64)  # (n, K)
    out[labelled] = factors[labelled]
    return torch.from_numpy(out)


def _check_resumable(state: dict, config: TrainConfig, seed: int, path: str | Path) -> None:
    saved = state.get("config")
    if saved != _config_record(config) or state.get("seed") != seed:
        raise ToybenchError(f"checkpoint {path} was written with a different train config or "
                            f"seed; refusing to resume (use a fresh run directory)")
    if int(state["step"]) > config.steps:
        raise ToybenchError(f"checkpoint {path} is at step {state['step']} > train.steps")


def _config_record(config: TrainConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def _save_state(path, model, optimizer, noise_gen, config, seed, step, result,
                nan_streak) -> None:
    save_checkpoint(path, {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "seed": seed,
        "config": _config_record(config),
        "kl_weight": kl_weight_at(config, step),  # schedule state is a pure function of step
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "noise_rng": noise_gen.get_state(),
        "nan_skipped": result.nan_skipped,
        "nan_streak": nan_streak,
        # Rows as dicts: rows may differ in keys (diagnostics are not computed on every step).
        "history": [{k: float(v) for k, v in r.items()} for r in result.history],
    })


def _progress(progress: bool | None, total: int, initial: int):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", leave=False)


def _open_writer(tb_dir: str | Path | None, start: int):
    if tb_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events logged after the checkpoint by an interrupted run.
    return SummaryWriter(log_dir=str(tb_dir), purge_step=start if start > 0 else None)


def _log_scalars(writer, model, out, row: dict[str, float]) -> None:
    if writer is None:
        return
    step = int(row["step"])
    for key, value in row.items():
        if key not in ("step", "seconds") and math.isfinite(value):
            writer.add_scalar(f"train/{key}", value, step)
    kl_units = out.kl_per_unit.detach().float()  # (n_codes,)
    if not bool(torch.isfinite(kl_units).all()):
        return
    for i, value in enumerate(kl_units.tolist()):
        writer.add_scalar(f"kl_unit/{i:03d}", value, step)
    for group in model.units():
        cols = list(group.columns)
        writer.add_scalar(f"kl_{group.kind}/{group.name}", float(kl_units[cols].sum()), step)


@torch.no_grad()
def _log_distributions(writer, model, x: torch.Tensor, step: int) -> None:
    """Histograms of μ and σ of every latent layer (including the last) and image grids."""
    model.eval()
    for name, (mu, sigma) in model.posteriors(x).items():
        writer.add_histogram(f"posterior_mu/{name}", mu.float(), step)
        writer.add_histogram(f"posterior_sigma/{name}", sigma.float(), step)
    codes = model.encode(x).float()  # (B, n_codes)
    writer.add_histogram("codes/all", codes, step)
    from toybench.plots import reconstruction_tensor, traversal_tensor

    writer.add_image("reconstructions", reconstruction_tensor(model, x[:16]), step)
    writer.add_image("traversals", traversal_tensor(model, x[:1], codes), step)

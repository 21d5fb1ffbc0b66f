"""The training loop: Adam, KL schedules, NaN guard, atomic checkpoints, exact resume, TensorBoard.

KL schedules: a delay of ``kl_delay_steps`` with weight 0, then a linear warm-up (Bowman et al.
2016, https://arxiv.org/abs/1511.06349) or a cyclical schedule (Fu et al. 2019,
https://arxiv.org/abs/1903.10145). Optimizer: Adam (Kingma & Ba 2015,
https://arxiv.org/abs/1412.6980).

Pieces: :func:`train_step` is one guarded optimizer step; :class:`TrainState` is everything a run
changes (model, optimizer, noise generator, counters, history, elapsed time) with
``to_checkpoint`` / ``from_checkpoint``; :func:`check_resumable` validates a checkpoint against
a model, config and seed before anything is touched; a ``_Monitor`` does the reporting (history
rows, TensorBoard, tqdm bar or echo lines); :func:`train` is the short loop calling them.
"""

from __future__ import annotations

import ctypes
import io
import json
import math
import numbers
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toybench import seeds
from toybench.configs import KL_SCHEDULES as KL_SCHEDULES  # re-exported
from toybench.configs import PRECISIONS as PRECISIONS
from toybench.configs import TrainConfig as TrainConfig
from toybench.errors import ToybenchError, format_bytes, memory_limit_bytes
from toybench.io import atomic_write_bytes
from toybench.seeds import MAX_SEED as MAX_SEED  # re-exported: the accepted seeds
from toybench.seeds import check_seed

CHECKPOINT_FORMAT = 3  # 2: history rows stored as dicts; 3: typed rows, "seconds", "meta"
NONFINITE_EXIT_CODE = 3
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT: what a shell reports for a Ctrl-C'd command
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


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based) under ``config``'s schedule.

    A linear warm-up over ``lr_warmup_steps`` (step ``t`` gets ``lr · (t + 1) / warm-up``), then
    ``lr`` (constant) or a half cosine from ``lr`` at the end of the warm-up to
    ``lr · lr_min_ratio`` at the last step (``steps - 1``). Stateless, so a resumed run follows
    the same schedule, and independent of ``steps`` for the constant schedule: the first S steps
    of a longer constant-schedule run are the run of S steps.
    """
    if step < config.lr_warmup_steps:
        return config.lr * (step + 1) / config.lr_warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    span = config.steps - 1 - config.lr_warmup_steps
    progress = 1.0 if span <= 0 else min(1.0, (step - config.lr_warmup_steps) / span)
    low = config.lr * config.lr_min_ratio
    return low + (config.lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


class TrainingDiverged(ToybenchError):
    """Raised after ``nan_patience`` consecutive non-finite steps; the CLI exits with code 3."""

    exit_code = NONFINITE_EXIT_CODE

    def __init__(self, message: str, history: list[dict[str, float]] | None = None) -> None:
        super().__init__(message)
        self.history = list(history or [])


class TrainingInterrupted(ToybenchError):
    """Raised when training is interrupted (Ctrl-C); a checkpoint of the last step was saved.

    Attributes
    ----------
    step : int
        The last completed step (the checkpoint's step).
    checkpoint : Path or None
        The checkpoint written (``None`` when training had no ``ckpt_path``).
    history : list of dict
        The history rows up to ``step``.
    exit_code : int
        130, the shell's code for a command stopped by Ctrl-C.
    """

    exit_code = INTERRUPTED_EXIT_CODE

    def __init__(self, step: int, steps: int, checkpoint: Path | None,
                 history: list[dict[str, float]] | None = None) -> None:
        saved = (f"checkpoint saved to {checkpoint}" if checkpoint is not None
                 else "nothing saved (no checkpoint path)")
        super().__init__(f"training interrupted at step {step}/{steps}; {saved}")
        self.step = step
        self.checkpoint = checkpoint
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


# Entries of a checkpoint and the test each value must pass (what it holds is in TrainState).
_IS_INT = (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
_IS_REAL = (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number")
_CHECKPOINT_ENTRIES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "format": _IS_INT,
    "step": _IS_INT,
    "seed": _IS_INT,
    "config": (lambda v: isinstance(v, dict), "a dict"),
    "kl_weight": _IS_REAL,
    "model": (lambda v: isinstance(v, dict), "a dict of tensors"),
    "optimizer": (lambda v: isinstance(v, dict), "a dict"),
    "torch_rng": (lambda v: isinstance(v, torch.Tensor), "a tensor"),
    "noise_rng": (lambda v: isinstance(v, torch.Tensor), "a tensor"),
    "nan_skipped": _IS_INT,
    "nan_streak": _IS_INT,
    "seconds": _IS_REAL,
    "history": (lambda v: isinstance(v, list), "a list of rows"),
    "meta": (lambda v: isinstance(v, str), "a JSON string"),
}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`train` (``weights_only=True``) and check its structure.

    Checked here, without a model: every entry present with the right type, counters in range,
    RNG states loadable into a ``torch.Generator``, history rows dicts of numbers, ``meta``
    valid JSON. :func:`check_resumable` adds the checks against a model, config and seed.

    Returns
    -------
    dict
        The checkpoint; ``"meta"`` parsed from its JSON (a dict, or ``None``).

    Raises
    ------
    ToybenchError
        One line naming the file if it is missing, unreadable, not a toybench checkpoint, of
        another format, or damaged (naming the first bad entry).
    """
    path = Path(path)
    state = _read_checkpoint(path, "; cannot resume (run without --resume)")
    problem = _structure_problem(state)
    if problem is not None:
        raise _damaged(path, problem)
    state["meta"] = json.loads(state["meta"])
    return state


def check_resumable(path: str | Path, model: torch.nn.Module, config: TrainConfig,
                    seed: int) -> dict[str, Any]:
    """Everything that can be checked about resuming ``model`` from ``path`` before training.

    :func:`load_checkpoint`'s checks, then: written with the same ``config`` and ``seed``; step
    at most ``config.steps``; the model state's keys, shapes and dtypes equal ``model``'s; the
    optimizer state has one entry per trainable parameter with matching shapes, the config's
    Adam settings, and loads into an Adam over ``model``'s parameters. Nothing is changed:
    ``model`` is only read.

    Parameters
    ----------
    path : str or Path
        The checkpoint (``<run>/ckpt/last.pt``).
    model : torch.nn.Module
        The freshly built model to resume (a ``meta``-device model is not enough: the optimizer
        check builds an Adam over its parameters).
    config : TrainConfig
        The run's training config.
    seed : int
        The run seed.

    Returns
    -------
    dict
        The validated checkpoint (as :func:`load_checkpoint` returns it).

    Raises
    ------
    ToybenchError
        One line naming the file and the first problem found.
    """
    seed = check_seed(seed)
    state = load_checkpoint(path)
    if state["config"] != _config_record(config) or state["seed"] != seed:
        raise ToybenchError(f"checkpoint {path} was written with a different train config or "
                            f"seed; refusing to resume (use a fresh run directory)")
    if state["step"] > config.steps:
        raise ToybenchError(f"checkpoint {path} is at step {state['step']} > train.steps")
    problem = (_model_state_problem(state["model"], model)
               or _optimizer_state_problem(state["optimizer"], model, config))
    if problem is not None:
        raise _damaged(path, problem)
    return state


def _read_checkpoint(path: Path, missing_hint: str) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a toybench checkpoint of this format, or one line."""
    if not path.is_file():
        raise ToybenchError(f"no checkpoint at {path}{missing_hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        # torch's own message suggests weights_only=False, which we never do: name the type only.
        raise ToybenchError(f"checkpoint {path} is unreadable (corrupt, truncated or not a "
                            f"weights-only checkpoint: {type(err).__name__})") from None
    if not isinstance(state, dict) or not _IS_INT[0](state.get("format")):
        raise ToybenchError(f"checkpoint {path} is not a toybench checkpoint")
    if state["format"] != CHECKPOINT_FORMAT:
        raise ToybenchError(f"checkpoint {path} has format {state['format']!r}; this toybench "
                            f"reads format {CHECKPOINT_FORMAT} (start the run again without "
                            f"--resume)")
    return state


def save_fitted(path: str | Path, model: torch.nn.Module, *, seed: int,
                meta: Mapping[str, Any]) -> Path:
    """Checkpoint of a model fitted without gradient steps (PCA): its weights and ``meta`` only
    (nothing to resume), readable by :func:`load_weights`."""
    return save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "kind": "fitted", "step": 0,
                                  "seed": int(seed), "model": model.state_dict(),
                                  "meta": json.dumps(dict(meta), sort_keys=True)})


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model weights and ``meta`` of any toybench checkpoint (trained or fitted), for
    rebuilding a finished run's model; ``weights_only=True``.

    Raises
    ------
    ToybenchError
        One line if the file is missing, unreadable, of another format, or has no named weights
        and ``meta`` object.
    """
    path = Path(path)
    state = _read_checkpoint(path, "")
    weights = state.get("model")
    if not isinstance(weights, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise _damaged(path, "'model' is not a dict of named tensors")
    try:
        meta = json.loads(state.get("meta"))
    except (TypeError, ValueError):
        meta = None
    if not isinstance(meta, dict):
        raise _damaged(path, "no 'meta' object (it cannot rebuild its model)")
    return weights, meta


def _damaged(path: str | Path, problem: str) -> ToybenchError:
    return ToybenchError(f"checkpoint {path} is damaged or does not fit this run: {problem} "
                         f"(start the run over with --force)")


def _structure_problem(state: dict[str, Any]) -> str | None:
    """The first structural problem of a checkpoint dict, or ``None``."""
    for key, (ok, kind) in _CHECKPOINT_ENTRIES.items():
        if key not in state:
            return f"no {key!r} entry"
        if not ok(state[key]):
            return f"{key!r} is not {kind} ({type(state[key]).__name__})"
    if not all(isinstance(k, str) and _is_setting(v) for k, v in state["config"].items()):
        return "'config' is not a dict of plain settings"
    step, skipped, streak = state["step"], state["nan_skipped"], state["nan_streak"]
    if not 0 <= streak <= skipped <= step:
        return (f"counters out of range (step {step}, nan_skipped {skipped}, nan_streak "
                f"{streak})")
    if not (math.isfinite(state["seconds"]) and state["seconds"] >= 0):
        return f"'seconds' is {state['seconds']!r}, not a time"
    for key, value in state["model"].items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            return f"model entry {key!r} is not a named tensor"
    for key in ("torch_rng", "noise_rng"):
        problem = _rng_state_problem(state[key])
        if problem is not None:
            return f"{key!r} {problem}"
    for i, row in enumerate(state["history"]):
        if not isinstance(row, dict) or not isinstance(row.get("step"), int) or not all(
                isinstance(k, str) and _IS_REAL[0](v) for k, v in row.items()):
            return f"history row {i} is not a dict of numbers with a step"
    try:
        meta = json.loads(state["meta"])
    except ValueError:
        return "'meta' is not valid JSON"
    if meta is not None and not isinstance(meta, dict):
        return "'meta' is not a JSON object"
    return None


def _is_setting(value: Any) -> bool:
    """A JSON-like config value (what ``_config_record`` writes): no tensors."""
    if isinstance(value, list):
        return all(_is_setting(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` as a bool; ``False`` where the comparison fails (a tensor among the values)."""
    try:
        return bool(a == b)
    except (RuntimeError, TypeError, ValueError):
        return False


def _rng_state_problem(rng_state: torch.Tensor) -> str | None:
    reference = torch.get_rng_state()  # (5056,) uint8 for the CPU Mersenne Twister
    if rng_state.dtype != reference.dtype or rng_state.shape != reference.shape:
        return (f"is a {tuple(rng_state.shape)} {rng_state.dtype} tensor, not a CPU generator "
                f"state ({tuple(reference.shape)} {reference.dtype})")
    try:
        torch.Generator().set_state(rng_state)  # a throwaway generator: the real ones untouched
    except (RuntimeError, ValueError, TypeError):
        return "is not a valid generator state"
    return None


def _model_state_problem(saved: dict[str, torch.Tensor], model: torch.nn.Module) -> str | None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in saved]
    if missing:
        return f"model entry {missing[0]!r} is missing ({len(missing)} missing)"
    unexpected = [k for k in saved if k not in expected]
    if unexpected:
        return f"model entry {unexpected[0]!r} is not a parameter of this model"
    for key, want in expected.items():
        got = saved[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            return (f"model entry {key!r} is {tuple(got.shape)} {got.dtype}, the model has "
                    f"{tuple(want.shape)} {want.dtype}")
    return None


# The learning rate is not compared: each step sets it from the schedule (`lr_at`), and the
# train config it comes from is compared as a whole.
_ADAM_SETTINGS = ("betas", "eps", "weight_decay")


def _optimizer_state_problem(saved: dict[str, Any], model: torch.nn.Module,
                             config: TrainConfig) -> str | None:
    groups, per_param = saved.get("param_groups"), saved.get("state")
    if not isinstance(groups, list) or not isinstance(per_param, dict):
        return "optimizer state has no 'param_groups' list and 'state' dict"
    trial = _make_optimizer(model, config)  # over model's parameters; changes none of them
    fresh = trial.state_dict()
    if len(groups) != len(fresh["param_groups"]):
        return f"optimizer has {len(groups)} parameter groups, expected 1"
    shapes: dict[int, torch.Size] = {}
    for group, want, params in zip(groups, fresh["param_groups"], trial.param_groups,
                                   strict=True):
        if not isinstance(group, dict) or not _equal(group.get("params"), want["params"]):
            return "optimizer parameter list does not match the model's trainable parameters"
        for key in _ADAM_SETTINGS:
            got = group.get(key)
            if key in want and not _equal(got, want[key]):
                plain = _is_setting(list(got) if isinstance(got, tuple) else got)
                shown = repr(got) if plain else f"a {type(got).__name__}"
                return f"optimizer {key}={shown}, the train config gives {want[key]!r}"
        shapes.update({i: p.shape for i, p in zip(want["params"], params["params"],
                                                   strict=True)})
    for index, entry in per_param.items():
        if index not in shapes or not isinstance(entry, dict):
            return f"optimizer state entry {index!r} is not a parameter's"
        for name, value in entry.items():
            if not isinstance(value, torch.Tensor):
                return f"optimizer state {name!r} of parameter {index} is not a tensor"
            want = torch.Size([]) if name == "step" else shapes[index]
            if value.shape != want:
                return (f"optimizer state {name!r} of parameter {index} is "
                        f"{tuple(value.shape)}, expected {tuple(want)}")
    try:
        trial.load_state_dict(saved)
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as err:
        return f"optimizer state does not load ({type(err).__name__}: {str(err).splitlines()[0]})"
    return None


# --------------------------------------------------------------------------------------------
# Training state and the guarded step.
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
        ``extras``; ``step`` and ``nan_skipped`` are ints, the rest floats; ``seconds`` is the
        training wall time up to that step, continued across resumes.
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


@dataclass
class TrainState:
    """Everything a training run changes; one checkpoint holds all of it.

    The global torch RNG (forked and seeded by :func:`train`) is saved and restored with it.

    Attributes
    ----------
    model : torch.nn.Module
    optimizer : torch.optim.Optimizer
    noise : torch.Generator
        The reparameterization noise generator passed to ``model.loss``.
    step : int
        Completed steps.
    nan_skipped, nan_streak : int
        Skipped non-finite steps in total and in a row.
    seconds : float
        Training wall time up to ``step``, summed over the processes that ran it.
    history : list of dict
        The history rows so far.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    noise: torch.Generator
    step: int = 0
    nan_skipped: int = 0
    nan_streak: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    # RNG states at the start of the step in progress (None between steps): an interrupted step
    # is rolled back to them, so its checkpoint resumes exactly.
    _rng_before_step: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def to_checkpoint(self, config: TrainConfig, seed: int,
                      meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The checkpoint dict (loads with ``weights_only=True``; ``meta`` as a JSON string)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "seed": seed,
            "config": _config_record(config),
            "kl_weight": kl_weight_at(config, self.step),  # a pure function of step: for readers
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "noise_rng": self.noise.get_state(),
            "nan_skipped": self.nan_skipped,
            "nan_streak": self.nan_streak,
            "seconds": self.seconds,
            # Rows as dicts (rows may differ in keys: diagnostics are not computed on every
            # step), values as they are: ints stay ints, so a resumed history.csv is identical.
            "history": [dict(row) for row in self.history],
            "meta": json.dumps(None if meta is None else dict(meta), sort_keys=True),
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any], model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, noise: torch.Generator) -> TrainState:
        """Load a checkpoint (validated by :func:`check_resumable`) into the given objects."""
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["torch_rng"])
        noise.set_state(checkpoint["noise_rng"])
        return cls(model, optimizer, noise, step=checkpoint["step"],
                   nan_skipped=checkpoint["nan_skipped"], nan_streak=checkpoint["nan_streak"],
                   seconds=float(checkpoint["seconds"]),
                   history=[dict(row) for row in checkpoint["history"]])

    def begin_step(self) -> None:
        self._rng_before_step = (torch.get_rng_state(), self.noise.get_state())

    def end_step(self, finite: bool, seconds: float) -> None:
        """Count a completed step (its update applied, or skipped when not ``finite``)."""
        self.step += 1
        if finite:
            self.nan_streak = 0
        else:
            self.nan_skipped += 1
            self.nan_streak += 1
        self.seconds = seconds
        self._rng_before_step = None

    def roll_back_step(self) -> None:
        """Undo the RNG draws of a step interrupted before :meth:`end_step`.

        Its forward/backward pass left the parameters and Adam's moments as they were.
        """
        if self._rng_before_step is not None:
            torch.set_rng_state(self._rng_before_step[0])
            self.noise.set_state(self._rng_before_step[1])
            self._rng_before_step = None


@dataclass
class StepOutcome:
    """What :func:`train_step` observed: the loss record and whether the update was applied."""

    out: Any  # the model's LossOutput
    loss: torch.Tensor  # () float32 total
    kl_weight: float
    grad_norm: float  # NaN when the loss was not finite
    finite: bool


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               params: list[torch.nn.Parameter], x: torch.Tensor, labels: torch.Tensor | None,
               step: int, config: TrainConfig, loss_kwargs: Mapping[str, Any]) -> StepOutcome:
    """One guarded optimizer step on the batch ``x`` ``(B, C, H, W)`` in [0, 1].

    The loss is computed under the config's precision; a non-finite loss or gradient norm skips
    the update (a NaN/Inf would poison Adam's moments) and leaves no gradients behind.
    """
    kl_w = kl_weight_at(config, step)
    lr = lr_at(config, step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
        out = model.loss(x, step, factors=labels, kl_weight=kl_w,
                         recon_weight=config.recon_weight, **loss_kwargs)
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
    else:
        optimizer.zero_grad(set_to_none=True)
    return StepOutcome(out, loss, kl_w, grad_norm, finite)


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
    gen = seeds.torch_generator(seed, "batches", epoch)
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


# --------------------------------------------------------------------------------------------
# The loop.
# --------------------------------------------------------------------------------------------


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
    echo: Callable[[str], None] | None = None,
    meta: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> TrainResult:
    """Train ``model`` on ``images`` with Adam under ``config``; deterministic given ``seed``.

    Parameters
    ----------
    model : torch.nn.Module
        A toybench model: ``loss(x, step, *, factors, kl_weight, recon_weight) -> LossOutput``.
    images : np.ndarray
        ``(n, C, H, W)`` uint8 training images (converted to float in [0, 1] per batch), or
        ``(n, G, C, H, W)``: n training examples of G images each (pairs: G = 2, for a
        ``toybench.models.common.Paired`` model). Batches draw examples; a batch of B groups
        reaches ``model.loss`` as ``(G·B, C, H, W)``, member g of example i at row ``g·B + i``.
    config : TrainConfig
        Steps, batch size, optimizer, schedule, guard, logging and precision.
    seed : int
        In ``[0, MAX_SEED]``. Seeds the batch order and the model's sampling noise (the global
        torch RNG is forked, so the caller's RNG state is untouched).
    factors : np.ndarray, optional
        ``(n, K)`` int64 factors; with ``config.supervised_fraction > 0`` a seed-fixed subset of
        rows is shown to the model (other rows are ``-1``).
    ckpt_path : str or Path, optional
        Checkpoint file written every ``checkpoint_every`` steps, at the end, and on Ctrl-C.
    resume : bool
        Continue from ``ckpt_path`` (checked first by :func:`check_resumable`).
    tb_dir : str or Path, optional
        TensorBoard log folder.
    progress : bool, optional
        tqdm progress bar; default: only when stderr is a terminal.
    stop_after : int, optional
        Stop (and checkpoint) after this step count, as if interrupted; for tests and time limits.
    on_log : callable, optional
        Called with each history row.
    echo : callable, optional
        Where to print progress lines when there is no progress bar (a log file, nohup, SLURM):
        one line every ``log_every`` steps rounded to about a tenth of the run, and at the last
        step (``train  step 300/600  loss 123.4  ...  eta 30s``). ``None`` = silent.
    meta : Mapping, optional
        JSON-ready description stored in every checkpoint under ``"meta"`` (the run stores what
        rebuilds the model: family, model config, image shape, DAG, concept sizes).
    device : str
        ``"cpu"`` or ``"cuda"`` (`toybench.hardware.resolve_device`): the model is moved there
        and each batch is copied there; the data, the random generators and the checkpoints
        stay on the CPU, so a run's batches and noise do not depend on the device.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingDiverged
        After ``config.nan_patience`` consecutive non-finite losses or gradients.
    TrainingInterrupted
        On Ctrl-C (``KeyboardInterrupt``): the current step is finished (a real SIGINT in the
        main thread) or rolled back, and the last completed step is checkpointed first.
    ToybenchError
        Bad seed, or resuming from a missing, corrupt or mismatched checkpoint (nothing about
        the model is changed then).
    """
    n = images.shape[0]
    if n < 1:
        raise ToybenchError("cannot train on an empty training set")
    seed = check_seed(seed)
    try:
        json.dumps(None if meta is None else dict(meta))
    except (TypeError, ValueError) as err:
        raise TypeError(f"train(meta=...) must be JSON-ready: {err}") from None
    if resume and ckpt_path is None:
        raise ToybenchError("cannot resume: no checkpoint path given")
    checkpoint = check_resumable(ckpt_path, model, config, seed) if resume else None
    keep_freed_memory()
    data_u8 = torch.from_numpy(np.ascontiguousarray(images))  # (n, C, H, W) or (n, G, C, H, W)
    labels = _supervision_labels(factors, config.supervised_fraction, seed)
    channels_last = data_u8.ndim in (4, 5)
    group = data_u8.shape[1] if data_u8.ndim == 5 else 1  # images per training example
    first_images = data_u8[:, 0] if data_u8.ndim == 5 else data_u8  # (n, C, H, W)
    model = model.to(device=device, memory_format=torch.channels_last) if channels_last \
        else model.to(device=device)
    optimizer = _make_optimizer(model, config)
    # The reparameterization noise comes from this generator (saved in every checkpoint);
    # anything else drawing from torch's default RNG is covered by fork_rng.
    noise_gen = seeds.torch_generator(seed, "noise")
    loss_kwargs: dict[str, Any] = {"generator": noise_gen}
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.torch_seed(seed, "torch"))
        state = (TrainState(model, optimizer, noise_gen) if checkpoint is None else
                 TrainState.from_checkpoint(checkpoint, model, optimizer, noise_gen))
        start = state.step
        end = config.steps if stop_after is None else min(config.steps, stop_after)
        monitor = _Monitor(config, n, start, tb_dir, progress, echo, on_log,
                           fixed_batch=_to_float(first_images[: min(64, n)].to(device),
                                                 channels_last),
                           group=group)
        if start > 0:
            monitor.say(f"train  resuming at step {start}/{config.steps} from {ckpt_path}")
        saved_at = start if checkpoint is not None else None
        t0, seconds_before = time.perf_counter(), state.seconds
        model.train()
        try:
            with _DeferredInterrupt() as interrupt:
                for step in range(start, end):
                    state.begin_step()
                    idx = batch_indices(n, config.batch_size, step, seed)  # (B,)
                    # (G·B, C, H, W): the B examples' first images, then their second ones
                    x = _to_float(_batch_u8(data_u8, idx).to(device), channels_last)
                    done = step + 1
                    logged = done % config.log_every == 0 or done == config.steps
                    # Models with costly logging-only terms skip them on steps not logged.
                    loss_kwargs["diagnostics"] = logged
                    outcome = train_step(model, optimizer, params, x,
                                         None if labels is None else labels[idx].to(device),
                                         step, config,
                                         loss_kwargs)
                    state.end_step(outcome.finite, seconds_before + time.perf_counter() - t0)
                    monitor.after_step(state, outcome, logged)
                    if state.nan_streak >= config.nan_patience:
                        raise _diverged(state, config)
                    if ckpt_path is not None and (done % config.checkpoint_every == 0
                                                  or done == end):
                        save_checkpoint(ckpt_path, state.to_checkpoint(config, seed, meta))
                        saved_at = done
                    if interrupt.requested:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            state.roll_back_step()
            if ckpt_path is not None and saved_at != state.step:
                save_checkpoint(ckpt_path, state.to_checkpoint(config, seed, meta))
            raise TrainingInterrupted(state.step, config.steps,
                                      None if ckpt_path is None else Path(ckpt_path),
                                      state.history) from None
        finally:
            monitor.close()
    model.eval()
    seconds = time.perf_counter() - t0
    ran = max(end - start, 0)
    return TrainResult(history=state.history, steps_done=max(end, start),
                       nan_skipped=state.nan_skipped, train_seconds=seconds,
                       images_per_second=(ran * min(config.batch_size, n) * group / seconds
                                          if seconds > 0 else 0.0))


def _diverged(state: TrainState, config: TrainConfig) -> TrainingDiverged:
    return TrainingDiverged(
        f"training stopped at step {state.step}: {state.nan_streak} consecutive non-finite "
        f"losses/gradients (train.nan_patience={config.nan_patience}); try a lower "
        f"train.lr, train.grad_clip > 0 or train.precision=fp32",
        state.history,
    )


class _DeferredInterrupt:
    """While active, a Ctrl-C (SIGINT) sets ``requested`` instead of raising mid-step.

    The loop then finishes the step, checkpoints it and stops: an exact resume point. A second
    Ctrl-C raises ``KeyboardInterrupt`` at once (the step in progress is rolled back). Only
    installed in the main thread over Python's default handler; elsewhere a
    ``KeyboardInterrupt`` arrives as usual.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _DeferredInterrupt:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ANN001 - signal handler signature
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _Monitor:
    """Reports training: history rows, TensorBoard, on_log, and a tqdm bar or echo lines."""

    def __init__(self, config: TrainConfig, n: int, start: int, tb_dir: str | Path | None,
                 progress: bool | None, echo: Callable[[str], None] | None,
                 on_log: Callable[[dict[str, float]], None] | None,
                 fixed_batch: torch.Tensor, group: int = 1) -> None:
        self.config = config
        self.batch_size = min(config.batch_size, n) * group  # images per step
        self.start = start
        self.on_log = on_log
        self.fixed_batch = fixed_batch
        self.writer = _open_writer(tb_dir, start)
        self.bar = _progress(progress, config.steps, start)
        self.echo = echo if self.bar is None else None  # the bar already shows the progress
        # Echo on logged steps only (their scalars are read anyway): about ten lines per run.
        self.echo_every = config.log_every * max(1, round(config.steps / 10 / config.log_every))
        self.t0 = time.perf_counter()

    def say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)

    def after_step(self, state: TrainState, outcome: StepOutcome, logged: bool) -> None:
        done = state.step
        if logged or not outcome.finite:
            row = self.log_row(state, outcome)
            if logged and (done % self.echo_every == 0 or done == self.config.steps):
                self.say(self.line(row))
        if self.writer is not None and (done % self.config.hist_every == 0
                                        or done == self.config.steps):
            _log_distributions(self.writer, state.model, self.fixed_batch, done)
            state.model.train()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{_scalar(outcome.loss):.4g}", refresh=False)

    def log_row(self, state: TrainState, outcome: StepOutcome) -> dict[str, float]:
        out = outcome.out
        row = {"step": state.step, "loss": _scalar(outcome.loss), "recon": _scalar(out.recon),
               "kl": _scalar(out.kl), "kl_weight": outcome.kl_weight,
               "grad_norm": outcome.grad_norm, "nan_skipped": state.nan_skipped,
               "seconds": state.seconds}
        row.update({k: _scalar(v) for k, v in sorted(out.extras.items())
                    if isinstance(v, torch.Tensor) and v.numel() == 1})
        state.history.append(row)
        _log_scalars(self.writer, state.model, out, row)
        if self.on_log is not None:
            self.on_log(row)
        return row

    def line(self, row: Mapping[str, float]) -> str:
        done, steps = int(row["step"]), self.config.steps
        wall = time.perf_counter() - self.t0
        rate = (done - self.start) / wall if wall > 0 else 0.0  # steps/s in this process
        eta = _duration((steps - done) / rate) if rate > 0 else "?"
        return (f"train  step {done}/{steps}  loss {row['loss']:.4g}  recon {row['recon']:.4g}  "
                f"kl {row['kl']:.4g}  {_count(rate * self.batch_size)} img/s  "
                f"elapsed {_duration(row['seconds'])}  eta {eta}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _count(value: float) -> str:
    """``1234.5 -> "1.2k"``, ``987 -> "987"``."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.0f}"


def _duration(seconds: float) -> str:
    """``31 -> "31s"``, ``125 -> "2m05s"``, ``3725 -> "1h02m"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _batch_u8(data_u8: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The images of the training examples ``idx``: ``(B, C, H, W)``; for data of groups of G
    images, ``(n, G, C, H, W)``, the groups stacked member by member: ``(G·B, C, H, W)`` with
    member g of example i at row ``g·B + i`` (pairs: the B first images, then the B second)."""
    batch = data_u8[idx]
    if batch.ndim == 5:
        batch = batch.transpose(0, 1).reshape(-1, *batch.shape[2:])  # (B, G, ...) -> (G·B, ...)
    return batch


def _to_float(x_u8: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = x_u8.to(torch.float32).div_(255.0)  # (B, C, H, W) in [0, 1]
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _supervision_labels(factors: np.ndarray | None, fraction: float,
                        seed: int) -> torch.Tensor | None:
    """Factors of a seed-fixed labelled subset; other rows ``-1``. ``None`` when unsupervised."""
    if factors is None or fraction <= 0.0:
        return None
    n = factors.shape[0]
    rng = seeds.numpy_rng(seed, "supervision")
    labelled = rng.permutation(n)[: int(round(fraction * n))]
    out = np.full(factors.shape, -1, dtype=np.int64)  # (n, K)
    out[labelled] = factors[labelled]
    return torch.from_numpy(out)


def _config_record(config: TrainConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def _progress(progress: bool | None, total: int, initial: int):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", leave=False)


# --------------------------------------------------------------------------------------------
# TensorBoard.
# --------------------------------------------------------------------------------------------


def _open_writer(tb_dir: str | Path | None, start: int):
    if tb_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    # Resuming at step `start`: drop what an interrupted process logged *after* its checkpoint
    # (steps > start, logged again now), keep step `start` itself (logged before the save).
    return SummaryWriter(log_dir=str(tb_dir), purge_step=start + 1 if start > 0 else None)


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
    units = model.units()
    for group in units:
        cols = list(group.columns)
        writer.add_scalar(f"kl_{group.kind}/{group.name}", float(kl_units[cols].sum()), step)


def _histogram(writer, tag: str, values: torch.Tensor, step: int) -> None:
    """``add_histogram`` of finite values only: TensorBoard raises on inf/NaN, and weights that
    blew up (the NaN guard then stops the run) must not crash the logging first."""
    if bool(torch.isfinite(values).all()):
        writer.add_histogram(tag, values, step)


def _image(writer, tag: str, grid: torch.Tensor, step: int) -> None:
    """``add_image`` of a finite grid only: a model whose weights blew up decodes NaN, which
    TensorBoard would cast to uint8 with a RuntimeWarning and show as a black picture."""
    if bool(torch.isfinite(grid).all()):
        writer.add_image(tag, grid, step)


@torch.no_grad()
def _log_distributions(writer, model, x: torch.Tensor, step: int) -> None:
    """Histograms of μ and σ of every latent layer (including the last) and image grids."""
    model.eval()
    posteriors = model.posteriors(x)
    for name, (mu, sigma) in posteriors.items():
        _histogram(writer, f"posterior_mu/{name}", mu.float(), step)
        _histogram(writer, f"posterior_sigma/{name}", sigma.float(), step)
    codes = model.encode(x).float()  # (B, n_codes)
    _histogram(writer, "codes/all", codes, step)
    from toybench.plots import reconstruction_tensor, traversal_tensor

    _image(writer, "reconstructions", reconstruction_tensor(model, x[:16]), step)
    _image(writer, "traversals", traversal_tensor(model, x[:1], codes), step)


def score_tag(key: str) -> str:
    """TensorBoard tag of a ``metrics.json`` key: ``test.dci.disentanglement`` ->
    ``score/test/dci.disentanglement`` (the split becomes a folder of the scalar dashboard)."""
    split, _, name = key.partition(".")
    return f"score/{split}/{name}" if name else f"score/{split}"


def log_final_scores(tb_dir: str | Path, step: int, metrics: Mapping[str, Any],
                     hparams: Mapping[str, str | float | int | bool]) -> None:
    """Write a run's final scores to its TensorBoard folder: scalars and an hparams entry.

    Every finite numeric metric becomes a scalar ``score/<split>/<name>`` (:func:`score_tag`) at
    ``step``; the same values and ``hparams`` form the hparams plugin's entry of this run, written
    into ``tb_dir`` itself (``SummaryWriter.add_hparams`` would make a new timestamped subfolder).

    Parameters
    ----------
    tb_dir : str or Path
        The run's TensorBoard folder (``<run>/tb``).
    step : int
        The final training step.
    metrics : Mapping[str, Any]
        Flat scores (``metrics.json``); non-numeric, boolean and non-finite values are skipped.
    hparams : Mapping[str, str | float | int | bool]
        The settings to compare runs by (model, corr, seed, ``train.lr``, ...).

    Raises
    ------
    TypeError
        An ``hparams`` value of another type.
    """
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    scores = {score_tag(str(k)): float(v) for k, v in metrics.items()
              if isinstance(v, numbers.Real) and not isinstance(v, bool)
              and math.isfinite(float(v))}
    settings: dict[str, str | float | int | bool] = {}
    for key, value in hparams.items():
        if not isinstance(value, str | int | float | bool):
            raise TypeError(f"hparams[{key!r}] must be str, int, float or bool, got "
                            f"{type(value).__name__}")
        settings[str(key)] = value
    with SummaryWriter(log_dir=str(tb_dir)) as writer:
        for tag, value in scores.items():
            writer.add_scalar(tag, value, step)
        for summary in hparams_summaries(settings, scores):  # experiment, session start, end
            writer.file_writer.add_summary(summary, step)


# --------------------------------------------------------------------------------------------
# Memory estimates: refuse what cannot fit before anything is allocated.
# --------------------------------------------------------------------------------------------

ADAM_COPIES = 4  # weights, gradients and Adam's two moments, each float32


def meta_model(family: str, model_config: Any, *, image_shape: tuple[int, int, int],
               dag: Any = None, concept_sizes: Mapping[str, int] | None = None) -> torch.nn.Module:
    """The model ``toybench.models.build_model`` would build, on the ``meta`` device.

    Its parameters have shapes but no memory, so :func:`model_training_bytes` can size a model
    of any config (``model.latent_dim=10**8``) without allocating it.
    """
    from toybench.models import build_model

    with torch.device("meta"):
        return build_model(family, model_config, image_shape=image_shape, dag=dag,
                           concept_sizes=concept_sizes)


def model_training_bytes(model: torch.nn.Module) -> int:
    """Bytes to train ``model``: ``ADAM_COPIES`` × 4 bytes per trainable parameter (weights,
    gradients, Adam moments) plus the other parameters and buffers. Activations not included."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    other = (sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
             + sum(b.numel() * b.element_size() for b in model.buffers()))
    return trainable * 4 * ADAM_COPIES + other


def data_bytes(config: TrainConfig, image_shape: tuple[int, int, int], n_factors: int, *,
               group: int = 1) -> int:
    """Bytes of a run's data: the train and two test splits, uint8 images and int64 factors
    (``group`` images per training example: 2 for pairs)."""
    c, h, w = image_shape
    return (group * config.n_train + 2 * config.n_test) * (c * h * w + 8 * n_factors)


def check_training_memory(config: TrainConfig, *, image_shape: tuple[int, int, int],
                          n_factors: int, model: torch.nn.Module | None = None,
                          memory: int | None = None, group: int = 1) -> None:
    """Refuse a run whose data or model cannot fit in this machine's memory, before allocating.

    Parameters
    ----------
    config : TrainConfig
        Supplies ``n_train`` and ``n_test``.
    image_shape : (int, int, int)
        ``(C, H, W)`` of the generator's images.
    n_factors : int
        Factor columns per image.
    model : torch.nn.Module, optional
        The model, typically from :func:`meta_model` (no memory used to count it).
    memory : int, optional
        Bytes available; default ``toybench.errors.memory_limit_bytes()`` (physical memory or
        the container's limit).
    group : int
        Images per training example (2 for a model trained on pairs).

    Raises
    ------
    ToybenchError
        One line with the estimated size and the memory, naming what to lower.
    """
    memory = memory_limit_bytes() if memory is None else memory
    data = data_bytes(config, image_shape, n_factors, group=group)
    shape = "x".join(str(s) for s in image_shape)
    if data > memory:
        raise ToybenchError(f"train.n_train={config.n_train} and train.n_test={config.n_test} "
                            f"need about {format_bytes(data)} for the images ({shape} uint8 "
                            f"each) and factors, more than this machine's "
                            f"{format_bytes(memory)} of memory; lower them")
    weights = 0 if model is None else model_training_bytes(model)
    if weights > memory:
        n_params = sum(p.numel() for p in model.parameters())
        raise ToybenchError(f"the model has {n_params:,} parameters: about "
                            f"{format_bytes(weights)} to train (weights, gradients, Adam "
                            f"moments), more than this machine's {format_bytes(memory)} of "
                            f"memory; lower its model.* sizes")
    if data + weights > memory:
        raise ToybenchError(f"data ({format_bytes(data)}) and model ({format_bytes(weights)}) "
                            f"together need more than this machine's {format_bytes(memory)} of "
                            f"memory; lower "
                            f"train.n_train / train.n_test or the model.* sizes")

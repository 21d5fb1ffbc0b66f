"""Execute a run: data → train (or fit) → evaluate → write the run folder; get a run back.

`execute(spec, out)` is what ``toybench run`` and the Python API (`run`) call: it claims the
spec's `toybench.rundir.RunDir`, writes ``config.json`` and ``status.json``, draws the data
splits, trains, scores on the test split and the decorrelated split (the decorrelation test of
Träuble et al. 2021, https://arxiv.org/abs/2006.07886), draws the plots and writes
``metrics.json`` last: its presence means done. ``metrics.json`` names its run (model, family,
generator, σ, seed, protocol, hashes, versions) next to the scores, so aggregating runs is a
glob and a ``pandas.DataFrame``.

Existing folders: a done run is reported and left alone (``force=True`` starts it over); a
started run (checkpoint, no ``metrics.json``) is an error unless ``resume=True`` (continue exactly
from ``ckpt/last.pt``) or ``force=True`` — never a silent fresh start. A run that fails leaves
``status.json`` with its one-line error and exit code.

`load_run(run_dir)` rebuilds a finished run's model from its checkpoint alone; `encode_run`
writes the codes of a split for ``toybench score``; `score_encoder` scores any encoder callable
with the whole suite and writes a run folder of the same form.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toybench import __version__, seeds
from toybench.encoders import encode_images
from toybench.errors import ToybenchError
from toybench.evaluate import evaluate_model, pca_reference_for, summary_table
from toybench.hardware import cpu_description, device_description, resolve_device, slow_cpu_bf16
from toybench.io import atomic_save_npz, atomic_write_bytes, atomic_write_json, atomic_write_text
from toybench.metrics.dci import prepare as prepare_dci
from toybench.models.common import Paired
from toybench.pairs import check_pairing, make_pairs
from toybench.plots import write_run_plots
from toybench.rundir import (
    EVAL_SPLITS,
    RunDir,
    RunSpec,
    _jsonable,
    json_number,
    load_baseline_for,
    load_generator_cached,
    split_at_corr,
)
from toybench.train import (
    INTERRUPTED_EXIT_CODE,
    TrainingDiverged,
    TrainingInterrupted,
    TrainResult,
    check_resumable,
    check_training_memory,
    load_weights,
    log_final_scores,
    meta_model,
    save_checkpoint,
    save_fitted,
    train,
)

PROTOCOLS = ("quick", "standard", "long")
SCHEMA_VERSION = 1  # of metrics.json's identity keys; bump when their meaning changes


@dataclass
class RunResult:
    """What `execute` hands back.

    Attributes
    ----------
    run_dir : Path
        The run folder.
    metrics : dict
        The contents of ``metrics.json``.
    status : str
        ``"done"`` (trained and scored now) or ``"existing"`` (already done, untouched).
    summary : str
        The summary table printed at the end.
    timings : dict
        Seconds per phase (also in ``env.json``).
    """

    run_dir: Path
    metrics: dict[str, Any]
    status: str
    summary: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def run(
    model: str,
    *,
    data: str = "toy-causal",
    corr: float | str = "inf",
    seed: int = 0,
    protocol: str | None = "standard",
    overrides: Iterable[str] = (),
    out: str | Path = "runs",
    resume: bool = False,
    force: bool = False,
    fp32: bool = False,
    plots: bool = True,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
    score_at: Iterable[int] = (),
    device: str = "cpu",
) -> RunResult:
    """Train and score one baseline on one generator at one σ and seed; write the run folder.

    Builds a `RunSpec` and calls `execute`.

    Parameters
    ----------
    model : str
        Baseline name (``vae``, ``csvae``, ...) or path to a baseline ``.toml``.
    data : str
        Generator name or spec path.
    corr : float or str
        Training correlation width σ (``inf`` = independent).
    seed : int
        Seeds every random stream of the run (`toybench.seeds`): data splits, initial weights,
        batch order, sampling noise, evaluation sampling.
    protocol : str, optional
        ``quick`` or ``standard`` (or another protocol); ``None`` = the file's own values.
    overrides : iterable of str
        ``--set`` overrides, ``"train.lr=3e-4"`` (see ``toybench.baselines``).
    out, resume, force, plots, progress, echo, score_at, device
        As in `execute`.
    fp32 : bool
        Train in plain fp32 (same as ``--set train.precision=fp32``).

    Returns
    -------
    RunResult
    """
    extra = ("train.precision=fp32",) if fp32 else ()
    spec = RunSpec(model, data, corr, seed, protocol, (*tuple(overrides), *extra))
    return execute(spec, out, resume=resume, force=force, plots=plots, progress=progress,
                   echo=echo, score_at=score_at, device=device)


def execute(
    spec: RunSpec,
    out: str | Path = "runs",
    *,
    resume: bool = False,
    force: bool = False,
    plots: bool = True,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
    score_at: Iterable[int] = (),
    device: str = "cpu",
    prefix_of: str | Path | None = None,
) -> RunResult:
    """Do the work of one `RunSpec`: claim its folder, train, score, write.

    Parameters
    ----------
    spec : RunSpec
        What to run.
    out : str or Path
        Parent folder of run folders.
    resume : bool
        Continue a started run from ``ckpt/last.pt`` (an error if it is missing or corrupt).
    force : bool
        Delete an existing run folder of the same name (only a real toybench run folder, never
        a symlink) and start over.
    plots : bool
        Write ``plots/`` (the figures take a few seconds; sweeps may skip them).
    progress : bool, optional
        tqdm bar (default: when stderr is a terminal); otherwise training prints a line every
        tenth of the run.
    echo : callable
        Where status lines and the summary go (one line per phase, with elapsed seconds).
    score_at : iterable of int
        Steps before the last at which training pauses and the model is scored with the full
        evaluation (the convergence study of docs/protocols.md); each point is appended to
        ``curve.json`` (``[{"step": S, <metrics.json's score keys>}, ...]``, the last step
        included), which a resumed run keeps, and the checkpoint of that step is kept as
        ``ckpt/step<S>.pt``. Pausing changes nothing: training
        resumes exactly from the checkpoint at S and evaluation draws no training randomness,
        so ``metrics.json`` is byte-identical to a run without ``score_at``; it is therefore not
        part of the run's identity.
    device : {"cpu", "cuda", "auto"}
        Where a trainable model trains and is scored (`toybench.hardware.resolve_device`;
        bf16 autocast on either). Not part of the run's configuration or hash; ``env.json``
        records it. A fitted model (PCA) stays on the CPU.
    prefix_of : str or Path, optional
        A done run folder of the same spec under a longer protocol whose first ``train.steps``
        steps are this run (`check_prefix`: equal configs but for the number of steps, equal
        learning-rate and KL schedules over those steps, its ``ckpt/step<S>.pt`` kept by
        ``score_at``). The run is then scored from that checkpoint instead of trained again:
        its ``metrics.json`` is byte-identical to a run trained from scratch (tested), and
        ``status.json`` names the source (``derived_from``).

    Returns
    -------
    RunResult

    Raises
    ------
    ToybenchError
        Bad names, values, or run-folder states (one line), and ``cuda`` without a GPU,
        before anything is written.
    toybench.rundir.RunClaimed
        Another process is running this spec (exit code 75).
    TrainingDiverged
        Training hit ``nan_patience`` consecutive non-finite steps (CLI exit code 3).
    """
    if resume and force:
        raise ToybenchError("--resume and --force exclude each other")
    spec.check()  # every value resolved and validated before anything is written
    score_at = check_score_at(score_at, load_baseline_for(spec))
    device = resolve_device(device)
    run_dir = RunDir.of(spec, out)
    if not force and run_dir.state() == "done":  # nothing to build or check for a done run
        return _existing(run_dir, echo)
    _git_sha()  # the commit of the code this process loaded, not of a later checkout
    baseline = load_baseline_for(spec)
    generator = load_generator_cached(spec.generator)
    meta = model_meta(baseline, generator)
    family, model_config, build_args = _model_args(meta)
    sized = meta_model(family, model_config, **build_args)
    if isinstance(sized, Paired):  # trained on pairs: the generator must be able to give them
        check_pairing(generator, sized.pairing)
    check_training_memory(baseline.train, image_shape=generator.image_shape,
                          n_factors=len(generator.concepts), model=sized,
                          group=2 if isinstance(sized, Paired) else 1)
    net = _build(meta, spec.seed)
    if not net.trainable:
        device = "cpu"  # a fitted model (PCA) is fitted and scored on the CPU
    if device == "cuda" and baseline.train.precision == "bf16" \
            and not torch.cuda.is_bf16_supported():
        raise ToybenchError(f"--device cuda: this GPU ({torch.cuda.get_device_name()}) has no "
                            f"bfloat16; train in fp32 (--fp32)")
    resumable = net.trainable and run_dir.ckpt.exists()
    if force:
        run_dir.clear_check()
    elif not resume and resumable:
        raise ToybenchError(f"{run_dir.path} has an unfinished run (ckpt/last.pt, no "
                            f"metrics.json); pass --resume to continue it or --force to start "
                            f"over")
    resumed_step = 0
    prefix = None
    if prefix_of is not None:
        if resume or force or score_at:
            raise ToybenchError("a run scored from a longer run's checkpoint takes no --resume, "
                                "--force or --score-at")
        prefix = check_prefix(spec, baseline, net, prefix_of)
        resumed_step = prefix.step
    if resume and net.trainable:
        if not run_dir.ckpt.exists():
            raise ToybenchError(f"cannot resume: no checkpoint at {run_dir.ckpt}")
        # everything about the checkpoint is checked before claiming or drawing data
        resumed_step = check_resumable(run_dir.ckpt, net, baseline.train, spec.seed)["step"]
    with run_dir.claim():
        if not force and run_dir.metrics.is_file():  # finished by another process meanwhile
            return _existing(run_dir, echo)
        if force:
            run_dir.clear()
        if prefix is not None:  # the longer run's state at this run's last step, as its own
            save_checkpoint(run_dir.ckpt, prefix.state)
        with _status_on_exit(run_dir, resume_command(spec, out), echo):
            return _execute_claimed(spec, run_dir, baseline, generator, net, meta,
                                    resume=(resume and net.trainable) or prefix is not None,
                                    plots=plots, progress=progress, echo=echo,
                                    score_at=score_at, device=device, resumed_step=resumed_step,
                                    derived_from=None if prefix is None else prefix.source)


@dataclass(frozen=True)
class Prefix:
    """A longer run's checkpoint at this run's last step (`check_prefix`)."""

    source: str  #: "<run folder>/ckpt/step<S>.pt", as recorded in status.json
    step: int
    state: dict[str, Any]  #: the checkpoint, its train config replaced by this run's


def check_prefix(spec: RunSpec, baseline, net: torch.nn.Module,
                 source: str | Path) -> Prefix:
    """Check that the done run folder ``source`` trained ``spec`` as its first steps.

    ``source`` must hold a done run whose ``config.json`` equals ``spec.config`` in everything
    but the protocol's name and ``train.steps`` (larger), with ``ckpt/step<S>.pt`` for
    ``S = train.steps`` of ``spec``; the learning rate (`toybench.train.lr_at`) and KL weight
    (`toybench.train.kl_weight_at`) of both configs must agree at every step before ``S`` (a
    constant rate and a KL schedule in fixed steps do; a cosine decay over the run does not).
    Training is then the same computation up to ``S``: batch order, noise and the optimizer
    state depend only on the seed and the step, and the checkpoint holds them all.

    Raises
    ------
    ToybenchError
        One line naming the first difference.
    """
    from toybench.train import TrainConfig, _config_record, kl_weight_at, lr_at

    if not net.trainable:
        raise ToybenchError(f"{spec.baseline} is fitted, not trained in steps: it has no "
                            f"shorter run to take from a longer one")
    src = RunDir(source)
    if src.state() != "done":
        raise ToybenchError(f"{src.path} is not a done run (state {src.state()}); only a "
                            f"finished run's checkpoints are taken")
    theirs = _read_json(src.config)
    mine = spec.config
    steps = baseline.train.steps
    if not isinstance(theirs.get("train"), dict) or theirs["train"].get("steps", 0) <= steps:
        raise ToybenchError(f"{src.path} did not train longer than {steps} steps")

    def comparable(config: Mapping[str, Any]) -> dict[str, Any]:
        """The config without what only sets the number of steps (protocol, train.steps)."""
        out = json.loads(json.dumps(config))
        out["train"].pop("steps", None)
        out.pop("protocol", None)
        if isinstance(out.get("overrides"), dict):
            out["overrides"].pop("train.steps", None)
        if isinstance(out.get("spec"), dict):
            out["spec"].pop("protocol", None)
            out["spec"]["overrides"] = [o for o in out["spec"].get("overrides", [])
                                        if o.replace(" ", "").split("=")[0] != "train.steps"]
        return out

    a, b = comparable(theirs), comparable(mine)
    if a != b:
        key = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
        raise ToybenchError(f"{src.path} is another run: its config.json differs in {key!r}, "
                            f"not only in train.steps")
    long_cfg = TrainConfig(**{**asdict(baseline.train), "steps": theirs["train"]["steps"]})
    for step in range(steps):
        if (lr_at(long_cfg, step) != lr_at(baseline.train, step)
                or kl_weight_at(long_cfg, step) != kl_weight_at(baseline.train, step)):
            raise ToybenchError(f"{src.path}: its learning-rate or KL schedule differs from "
                                f"this run's at step {step} (a schedule over the whole run, "
                                f"such as cosine, makes a longer run's prefix another run)")
    path = src.path / "ckpt" / f"step{steps}.pt"
    if not path.is_file():
        raise ToybenchError(f"{src.path} kept no checkpoint at step {steps} ({path.name}; "
                            f"score the longer run at that step with score_at)")
    state = check_resumable(path, net, long_cfg, spec.seed)
    if state["step"] != steps:
        raise ToybenchError(f"{path} is at step {state['step']}, not {steps}")
    state["config"] = _config_record(baseline.train)  # as train() records its config
    state["meta"] = json.dumps(state["meta"])  # as save_checkpoint writes it
    return Prefix(f"{src.path}/ckpt/{path.name}", steps, state)


def check_score_at(score_at: Iterable[int], baseline) -> tuple[int, ...]:
    """``score_at`` as sorted distinct steps, each in ``[1, train.steps)`` (one-line errors)."""
    steps = []
    for step in score_at:
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise ToybenchError(f"score-at steps must be integers, got {step!r}")
        steps.append(int(step))
    from toybench.models import MODELS

    if steps and not MODELS[baseline.family].trainable:
        raise ToybenchError(f"score-at: {baseline.name} is fitted, not trained in steps")
    total = baseline.train.steps
    bad = [s for s in steps if not 1 <= s < total]
    if bad:
        raise ToybenchError(f"score-at steps must lie in [1, {total - 1}] (train.steps = "
                            f"{total} is always scored); got {bad[0]}")
    return tuple(sorted(set(steps)))


def resume_command(spec: RunSpec, out: str | Path) -> str:
    """The ``toybench run`` command line that resumes ``spec`` under ``out``."""
    import shlex

    from toybench.scm import corr_label

    parts = ["toybench", "run", "--model", spec.baseline, "--data", spec.generator,
             "--corr", corr_label(spec.corr), "--seed", str(spec.seed)]
    if spec.protocol is not None:
        parts += ["--protocol", spec.protocol]
    for item in spec.overrides:
        parts += ["--set", item]
    parts += ["--out", str(out), "--resume"]
    return " ".join(shlex.quote(p) for p in parts)


@contextlib.contextmanager
def _status_on_exit(run_dir: RunDir, resume: str | None, echo: Callable[[str], None]):
    """Record a failure or an interruption in ``status.json`` (then re-raise it)."""
    try:
        yield
    except (KeyboardInterrupt, TrainingInterrupted) as err:
        line = _one_line(err) if isinstance(err, TrainingInterrupted) else "interrupted (Ctrl-C)"
        if resume is not None and run_dir.ckpt.exists():
            run_dir.write_status("interrupted", exit_code=INTERRUPTED_EXIT_CODE, error=line,
                                 resume=resume)
            echo(f"{line}; resume with: {resume}")
        else:
            run_dir.write_status("failed", exit_code=INTERRUPTED_EXIT_CODE, error=line)
        raise
    except ToybenchError as err:
        run_dir.write_status("failed", exit_code=int(getattr(err, "exit_code", 1)),
                             error=_one_line(err))
        raise
    except Exception as err:
        run_dir.write_status("failed", exit_code=1,
                             error=_one_line(f"{type(err).__name__}: {err}"))
        raise


def _existing(run_dir: RunDir, echo: Callable[[str], None]) -> RunResult:
    metrics = _read_json(run_dir.metrics)
    summary = summary_table(metrics)
    echo(f"run already done: {run_dir.path} (metrics.json exists); pass --force to run it "
         f"again")
    echo(summary)
    return RunResult(run_dir.path, metrics, "existing", summary)


def reference_cache(out: str | Path) -> Path:
    """Where runs under ``out`` keep their PCA references (``<out>/.cache``): the reference does
    not depend on the model, so every run on the same data reuses one fit."""
    return Path(out) / ".cache"


def _one_line(err: Any) -> str:
    return " ".join(str(err).split())


class _Clock:
    """Elapsed seconds since the run started, for the phase lines."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __str__(self) -> str:
        return f"[{time.perf_counter() - self.start:6.1f} s]"


def _execute_claimed(spec: RunSpec, run_dir: RunDir, baseline, generator, net, meta, *,
                     resume: bool, plots: bool, progress: bool | None,
                     echo: Callable[[str], None], score_at: tuple[int, ...] = (),
                     device: str = "cpu", resumed_step: int = 0,
                     derived_from: str | None = None) -> RunResult:
    from toybench.data import make_split

    clock = _Clock()
    config = spec.config
    atomic_write_json(run_dir.config, config)
    run_dir.write_status("running", spec=spec.as_dict())
    echo(f"{clock} run    {run_dir.path}")
    # Start-up, like the imports: the scoring's compiled DCI code (numba, about 0.3 s in a fresh
    # process) is loaded before any phase is timed, so that "score done in" is the scoring.
    prepare_dci(baseline.eval.dci_backend)

    timings: dict[str, float] = {}
    t = time.perf_counter()
    cfg = baseline.train
    sizes = {"train": cfg.n_train, "test": cfg.n_test, "test_decorrelated": cfg.n_test}
    sizes.update({split_at_corr(sigma): cfg.n_test for sigma in baseline.eval.test_corr})
    splits = {name: make_split(generator, name, corr=spec.corr, n=n, seed=spec.seed)
              for name, n in sizes.items()}
    # A model trained on pairs gets x2 drawn for each training image (toybench.pairs).
    pairs = (make_pairs(generator, splits["train"], net.pairing, seed=spec.seed)
             if isinstance(net, Paired) else None)
    cards = {n: ds.card for n, ds in splits.items()}
    if pairs is not None:
        cards["train"] = pairs.card
    atomic_write_json(run_dir.data_card, _jsonable(cards))
    timings["data_seconds"] = time.perf_counter() - t
    shape = "x".join(map(str, generator.image_shape))
    counts = {name: f"{name} {n}" for name, n in sizes.items()}
    if pairs is not None:
        counts["train"] = (f"train {cfg.n_train} pairs ({pairs.spec.mode}, "
                           f"k {pairs.spec.k_label})")
    echo(f"{clock} data   {generator.name}, σ = {config['data']['corr']}: "
         + ", ".join(counts.values())
         + f" images of {shape} in {timings['data_seconds']:.1f} s")

    t = time.perf_counter()
    result = TrainResult()
    reference = pca_reference_for(splits, net.n_codes, seed=seeds.torch_seed(spec.seed, "pca"),
                                  cache_dir=reference_cache(run_dir.path.parent))
    curve = _read_curve(run_dir) if resume else []
    if not resume and run_dir.curve.exists():
        run_dir.curve.unlink()  # a fresh start (not --resume) keeps no points of an older run
    if net.trainable:
        on = "" if device == "cpu" else f" on {device}"
        echo(f"{clock} train  {baseline.name}: {cfg.steps} steps × {cfg.batch_size}"
             + (" pairs" if pairs is not None else "") + on
             + (f", scored at steps {', '.join(map(str, score_at))}" if score_at else ""))
        trains_bf16_on_cpu = device == "cpu" and cfg.precision == "bf16" and derived_from is None
        if trains_bf16_on_cpu and (slow := slow_cpu_bf16()) is not None:
            echo(f"{clock} warn   this CPU ({slow}, no AVX-512) runs bf16 autocast about 10× "
                 f"slower than fp32; --fp32 trains in fp32 (a different run)")
        if derived_from is not None:
            echo(f"{clock} train  taken from the first {cfg.steps} steps of a longer run: "
                 f"{derived_from}")
        trained_seconds, trained_images = 0.0, 0.0
        try:  # (steps before the checkpoint a run resumes from cannot be scored any more)
            for stop in (*(s for s in score_at if s >= resumed_step), cfg.steps):
                result = train(net, splits["train"].images if pairs is None else pairs.images,
                               cfg, seed=spec.seed,
                               factors=splits["train"].factors, ckpt_path=run_dir.ckpt,
                               resume=resume, tb_dir=run_dir.tb, progress=progress, meta=meta,
                               echo=lambda line: echo(f"{clock} {line}"), stop_after=stop,
                               device=device)
                resume = True  # the next segment continues from the checkpoint at `stop`
                trained_seconds += result.train_seconds
                trained_images += result.images_per_second * result.train_seconds
                # (a run resumed past `stop` from a later checkpoint cannot score it any more)
                if (stop < cfg.steps and result.steps_done == stop
                        and not any(row["step"] == stop for row in curve)):
                    t_point = time.perf_counter()
                    point = evaluate_model(net, generator, splits, seed=spec.seed,
                                           config=baseline.eval, reference=reference,
                                           perturbation_images=0)
                    curve.append(_curve_row(stop, point.metrics))
                    atomic_write_json(run_dir.curve, curve)
                    # the model at this step, as a checkpoint load_weights can read
                    atomic_write_bytes(run_dir.ckpt.with_name(f"step{stop}.pt"),
                                       run_dir.ckpt.read_bytes())
                    echo(f"{clock} score  step {stop}: {_curve_line(curve[-1])} "
                         f"({time.perf_counter() - t_point:.1f} s)")
        except (TrainingDiverged, TrainingInterrupted) as err:
            write_history(run_dir.history, err.history)
            raise
    else:
        net.fit(torch.from_numpy(splits["train"].images).float().div_(255.0))
        net.eval()
        save_fitted(run_dir.ckpt, net, seed=spec.seed, meta=meta)
    timings["train_seconds"] = time.perf_counter() - t
    timings["images_per_second"] = result.images_per_second
    if score_at:  # training only, without the scored points
        timings["train_seconds"] = trained_seconds
        timings["images_per_second"] = trained_images / trained_seconds if trained_seconds else 0.0
    write_history(run_dir.history, result.history)
    if derived_from is not None:
        echo(f"{clock} train  done: {result.steps_done} steps, taken from the longer run")
    else:
        echo(f"{clock} train  done: {result.steps_done} steps in {timings['train_seconds']:.1f} s"
             + (f" ({timings['images_per_second']:,.0f} images/s)" if net.trainable
                else " (fitted)"))

    t = time.perf_counter()
    echo(f"{clock} score  {', '.join(s for s in splits if s != 'train')}: reconstruction, "
         f"disentanglement, graph-aware and interventional scores ...")
    evaluation = evaluate_model(net, generator, splits, seed=spec.seed, config=baseline.eval,
                                reference=reference, perturbation_images=500 if plots else 0)
    metrics = dict(evaluation.metrics)
    metrics["train.steps"] = result.steps_done
    metrics["train.nan_skipped_steps"] = result.nan_skipped
    if result.history:
        metrics["train.final_loss"] = result.history[-1]["loss"]
    timings["eval_seconds"] = time.perf_counter() - t
    echo(f"{clock} score  done in {timings['eval_seconds']:.1f} s")

    if plots:
        t = time.perf_counter()
        net.to("cpu")  # the figures draw on the CPU (a no-op for a CPU run)
        write_run_plots(run_dir.plots, net, generator, splits["test"], evaluation.artefacts)
        timings["plots_seconds"] = time.perf_counter() - t
        echo(f"{clock} plots  {len(list(run_dir.plots.glob('*.png')))} figures in "
             f"{timings['plots_seconds']:.1f} s")

    metrics = {k: json_number(v) for k, v in sorted(metrics.items())}
    if score_at:
        curve = [row for row in curve if row["step"] < result.steps_done]
        curve.append(_curve_row(result.steps_done, metrics))
        atomic_write_json(run_dir.curve, curve)
    metrics = {**run_identity(config), **metrics}
    log_final_scores(run_dir.tb, result.steps_done, metrics, _hparams(spec, config))
    atomic_write_json(run_dir.env, environment(timings, device))
    atomic_write_json(run_dir.metrics, metrics)
    run_dir.write_status("done", exit_code=0,
                         seconds=round(time.perf_counter() - clock.start, 3),
                         **({} if derived_from is None else {"derived_from": derived_from}))
    summary = summary_table(metrics)
    echo(summary)
    echo(f"{clock} done   {run_dir.path}")
    if plots:
        echo(f"         plots:       {run_dir.plots}/")
    echo(f"         TensorBoard: tensorboard --logdir {run_dir.tb}")
    return RunResult(run_dir.path, metrics, "done", summary, timings)


#: The curve's one-line summary: (metrics key, label).
_CURVE_LINE = (("test.recon.bce", "bce"), ("test.active_units", "active"),
               ("test_decorrelated.dci.disentanglement", "dci.d (decorr)"),
               ("test_decorrelated.mig", "mig (decorr)"))


def _curve_row(step: int, scores: Mapping[str, Any]) -> dict[str, Any]:
    """One ``curve.json`` point: the step and every numeric score."""
    row: dict[str, Any] = {"step": int(step)}
    for key, value in sorted(scores.items()):
        if isinstance(value, bool | int | float | np.floating | np.integer):
            row[key] = json_number(value)
    return row


def _curve_line(row: Mapping[str, Any]) -> str:
    return "  ".join(f"{label} {row[key]:.4g}" for key, label in _CURVE_LINE
                     if isinstance(row.get(key), int | float))


def _read_curve(run_dir: RunDir) -> list[dict[str, Any]]:
    """The points of an interrupted run's ``curve.json`` (none if there is no file)."""
    if not run_dir.curve.is_file():
        return []
    try:
        rows = json.loads(run_dir.curve.read_text())
    except (OSError, ValueError) as err:
        raise ToybenchError(f"cannot resume: {run_dir.curve} is unreadable ({err})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("step"), int)
                                             for r in rows):
        raise ToybenchError(f"cannot resume: {run_dir.curve} is not a list of scored steps")
    return rows


def run_identity(config: Mapping[str, Any], *,
                 supervision_text: str | None = None) -> dict[str, Any]:
    """The identity keys at the top of ``metrics.json`` (no dots, unlike score keys), all read
    from the run's ``config.json``; ``supervision_text`` overrides `supervision` (external
    encoders say what they were trained with)."""
    from toybench.rundir import config_hash

    model = config["model"]
    return {
        "schema_version": SCHEMA_VERSION,
        "model": model["baseline"],
        "family": model["family"],
        "supervision": supervision_text if supervision_text is not None else supervision(config),
        "generator": config["data"]["generator"],
        "spec_hash": config["data"]["spec_hash"],
        "corr": config["spec"]["corr"],  # a number, or "inf"
        "seed": config["seed"],
        "protocol": config["protocol"],
        "config_hash": config_hash(config),
        "toybench_version": __version__,
        "git_sha": _git_sha(),
    }


def supervision(config: Mapping[str, Any]) -> str:
    """``"none"``, ``"weak (pairs)"`` for a model trained on pairs of images (its model config
    has a ``pair_mode``: ``toybench.pairs``), or ``"weak (labels N%)"`` when a fraction of
    training labels is used."""
    if "pair_mode" in config.get("model", {}).get("config", {}):
        return "weak (pairs)"
    fraction = float(config.get("train", {}).get("supervised_fraction", 0.0) or 0.0)
    weight = float(config.get("model", {}).get("config", {}).get("supervision_weight", 0.0)
                   or 0.0)
    if fraction > 0 and weight > 0:
        return f"weak (labels {100 * fraction:g}%)"
    return "none"


def model_meta(baseline, generator) -> dict[str, Any]:
    """What a checkpoint needs to rebuild its model without any other file."""
    return {
        "family": baseline.family,
        "baseline": baseline.name,
        "model_config": _jsonable(asdict(baseline.model)),
        "image_shape": list(generator.image_shape),
        "generator": generator.name,
        "concepts": list(generator.concept_names),
        "dag_edges": [list(edge) for edge in generator.dag.edges],
        "concept_sizes": {c.name: int(c.n_levels) for c in generator.concepts},
    }


def _model_args(meta: Mapping[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    """``(family, model config, build_model keywords)`` from a checkpoint's ``meta``."""
    from toybench.baselines import build_config
    from toybench.models import MODELS
    from toybench.scm import DAG

    family = meta["family"]
    model_config = build_config(MODELS[family].config, meta["model_config"], "model")
    dag = DAG(tuple(meta["concepts"]), tuple(tuple(e) for e in meta["dag_edges"]))
    return family, model_config, {"image_shape": tuple(meta["image_shape"]), "dag": dag,
                                  "concept_sizes": dict(meta["concept_sizes"])}


def _build(meta: Mapping[str, Any], seed: int) -> torch.nn.Module:
    """The model of ``meta`` with the seed's initial weights."""
    from toybench.models import build_model

    family, model_config, kwargs = _model_args(meta)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.torch_seed(seed, "init"))  # initial weights follow the seed
        return build_model(family, model_config, **kwargs)


def _hparams(spec: RunSpec, config: Mapping[str, Any]) -> dict[str, str | float | int | bool]:
    """What TensorBoard's hparams tab compares runs by: identity and the train/model settings."""
    out: dict[str, str | float | int | bool] = {
        "model": config["model"]["baseline"], "generator": config["data"]["generator"],
        "corr": config["data"]["corr"], "seed": spec.seed, "protocol": str(config["protocol"])}
    for section, values in (("train", config["train"]), ("model", config["model"]["config"])):
        for key, value in values.items():
            if isinstance(value, str | int | float | bool):
                out[f"{section}.{key}"] = value
            elif isinstance(value, list):
                out[f"{section}.{key}"] = str(value)
    return out


# --------------------------------------------------------------------------------------------
# A run you can get back.
# --------------------------------------------------------------------------------------------


@dataclass
class LoadedRun:
    """A finished run: its config, its scores and its model, rebuilt from the checkpoint.

    Attributes
    ----------
    run_dir : Path
    config : dict
        ``config.json``.
    metrics : dict
        ``metrics.json``.
    model : torch.nn.Module
        The trained model in eval mode (weights loaded with ``weights_only=True``).
    """

    run_dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    model: torch.nn.Module

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Codes (posterior means) of uint8 images ``(n, C, H, W)`` → ``(n, n_codes)`` float64."""
        images = np.asarray(images)
        expected = tuple(self.config["data"]["image_shape"])
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ToybenchError(f"images of shape {images.shape} do not fit this model, which "
                                f"takes (n, {', '.join(map(str, expected))})")
        if images.dtype != np.uint8:
            raise ToybenchError(f"images must be uint8 0..255, got {images.dtype}")
        # the run's own scoring passes: eval mode, batches of 500, its eval precision (runs
        # from before eval.precision existed were scored in fp32)
        precision = self.config.get("eval", {}).get("precision", "fp32")
        return encode_images(self.model, images, precision=precision)


def load_run(run_dir: str | Path) -> LoadedRun:
    """Rebuild a finished run's model from ``ckpt/last.pt`` alone and read its results.

    Parameters
    ----------
    run_dir : str or Path
        A run folder written by `execute`.

    Returns
    -------
    LoadedRun

    Raises
    ------
    ToybenchError
        Not a finished run folder, or a checkpoint that does not rebuild (one line).
    """
    folder = RunDir(run_dir)
    if not folder.path.is_dir():
        raise ToybenchError(f"{folder.path} is not a run folder")
    if not folder.metrics.is_file():
        raise ToybenchError(f"{folder.path} is not a finished run (no metrics.json; its state "
                            f"is {folder.state()!r})")
    weights, meta = load_weights(folder.ckpt)
    try:
        model = _build(meta, 0)
        model.load_state_dict(weights)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ToybenchError(f"checkpoint {folder.ckpt} does not rebuild its model "
                            f"({type(err).__name__}: {_one_line(err)[:200]})") from None
    model.eval()
    return LoadedRun(folder.path, _read_json(folder.config), _read_json(folder.metrics), model)


def encode_run(run_dir: str | Path, out: str | Path, *, data: str | None = None,
               corr: float | str | None = None, n: int | None = None,
               split: str = "test", seed: int | None = None) -> Path:
    """Write ``codes`` and ``factors`` of a data split, encoded by a finished run, to an ``.npz``.

    Defaults reproduce the run's own split (its generator, σ, seed and ``n_test``), so
    ``toybench score`` on the file gives the run's own ``test.*`` disentanglement scores.

    Raises
    ------
    ToybenchError
        Bad run folder, generator of another image shape, bad split or size (one line).
    """
    from toybench.data import make_split
    from toybench.scm import parse_corr

    if split not in EVAL_SPLITS:
        raise ToybenchError(f"--split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    loaded = load_run(run_dir)
    data_config = loaded.config["data"]
    generator = load_generator_cached(data if data is not None else data_config["generator"])
    if list(generator.image_shape) != list(data_config["image_shape"]):
        raise ToybenchError(f"generator {generator.name} draws {list(generator.image_shape)} "
                            f"images; this run's model takes {data_config['image_shape']}")
    sigma = parse_corr(corr if corr is not None else data_config["corr"])
    n = int(n if n is not None else loaded.config["train"]["n_test"])
    seed = seeds.check_seed(seed if seed is not None else loaded.config["seed"])
    dataset = make_split(generator, split, corr=sigma, n=n, seed=seed)
    codes = loaded.encode(dataset.images)
    return atomic_save_npz(out, codes=codes, factors=dataset.factors,
                           concepts=np.array(dataset.concepts))


# --------------------------------------------------------------------------------------------
# Your own model on the benchmark.
# --------------------------------------------------------------------------------------------


def score_encoder(
    encode: Callable[[np.ndarray], Any],
    *,
    name: str,
    data: str = "toy-causal",
    corr: float | str = "inf",
    seed: int = 0,
    protocol: str = "standard",
    decode: Callable[[np.ndarray], Any] | None = None,
    supervision: str = "none",
    out: str | Path = "runs",
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> RunResult:
    """Score any encoder with the whole suite and write a run folder like a baseline's.

    The encoder sees the same test and decorrelated splits (and the same generator-based
    scores) as a baseline run with this generator, σ, seed and protocol; the folder is
    ``<out>/external_<name>-<generator>-corr<σ>-s<seed>-<hash8>/`` and its ``metrics.json``
    has ``model = "external:<name>"``, so leaderboards aggregate it like any other run.

    Parameters
    ----------
    encode : callable
        uint8 images ``(n, C, H, W)`` → codes ``(n, L)`` (numpy or anything ``np.asarray``
        takes); deterministic (posterior means, not samples).
    name : str
        Your model's name.
    data, corr, seed, protocol
        As for a baseline run; the protocol sets the split sizes and the evaluation sizes.
    decode : callable, optional
        codes ``(n, L)`` → images in [0, 1] (or uint8): adds reconstruction errors and the
        perturbation scores.
    supervision : str
        What the model was trained with, for the leaderboard (``"none"``, ``"weak (pairs)"``).
    out, force, echo
        As in `execute`.

    Returns
    -------
    RunResult
    """
    from toybench.data import make_split
    from toybench.evaluate import EvalConfig, evaluate_functions
    from toybench.rundir import external_config, run_name

    config = external_config(name, data, corr, seed, protocol)
    spec = config["spec"]
    run_dir = RunDir(Path(out) / run_name(config))
    if not force and run_dir.state() == "done":
        return _existing(run_dir, echo)
    if force:
        run_dir.clear_check()
    with run_dir.claim():
        if force:
            run_dir.clear()
        clock = _Clock()
        atomic_write_json(run_dir.config, config)
        run_dir.write_status("running", spec=spec)
        with _status_on_exit(run_dir, None, echo):
            generator = load_generator_cached(spec["generator"])
            corr_value = math.inf if spec["corr"] == "inf" else float(spec["corr"])
            splits = {s: make_split(generator, s, corr=corr_value, n=entry["n"],
                                    seed=spec["seed"])
                      for s, entry in config["data"]["splits"].items()}
            atomic_write_json(run_dir.data_card,
                              _jsonable({n: ds.card for n, ds in splits.items()}))
            echo(f"{clock} data   {generator.name}, σ = {config['data']['corr']}: "
                 + ", ".join(f"{s} {len(ds.images)}" for s, ds in splits.items()) + " images")
            evaluation = evaluate_functions(encode, generator, splits, seed=spec["seed"],
                                            config=EvalConfig(**_eval_fields(config["eval"])),
                                            decode=decode)
            echo(f"{clock} score  {', '.join(EVAL_SPLITS)}")
            identity = run_identity(config, supervision_text=supervision)
            scores = {k: json_number(v) for k, v in sorted(evaluation.metrics.items())}
            metrics = {**identity, **scores}
            atomic_write_json(run_dir.env, environment({}))
            atomic_write_json(run_dir.metrics, metrics)
            run_dir.write_status("done", exit_code=0)
    summary = summary_table(metrics)
    echo(summary)
    echo(f"{clock} done   {run_dir.path}")
    return RunResult(run_dir.path, metrics, "done", summary)


def _eval_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


# --------------------------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------------------------


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    """``history.csv``: one row per logged step (columns: union of the rows' keys, in order)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns or ["step"])
    for row in history:
        writer.writerow([_csv_value(row.get(c, "")) for c in columns])
    atomic_write_text(path, buffer.getvalue())


def environment(timings: Mapping[str, float], device: str = "cpu") -> dict[str, Any]:
    """``env.json``: versions, git SHA, platform, device, threads and timings (not hashed)."""
    import sklearn

    return {
        "toybench": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        **device_description(device),
        **cpu_description(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "git_sha": _git_sha(),
        "timings": {k: round(float(v), 3) for k, v in timings.items()},
    }


@functools.lru_cache(maxsize=1)
def _git_sha() -> str | None:
    """The checkout's commit (``-dirty`` with uncommitted changes to tracked files), read once per
    process: `execute` reads it before it trains, so a sweep whose repository moves on while it
    runs records the code it imported, not the commit of the moment a run ended."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ToybenchError(f"cannot read {path}: {err}") from None


def _csv_value(value: Any) -> Any:
    return repr(value) if isinstance(value, float) else value

"""One benchmark run: load a baseline, draw the data, train (or fit), score, write the run folder.

``run()`` is what ``toybench run`` calls. The run folder
``<out>/<model>-<generator>-corr<σ>-s<seed>-<hash8>/`` holds ``config.json`` (fully resolved),
``env.json`` (versions, git SHA, device, timings), ``history.csv``, ``metrics.json`` (flat keys per
split: ``test.dci.disentanglement``, ``test_decorrelated.mig``, ...), ``data_card.json``,
``ckpt/last.pt``, ``tb/`` and ``plots/``. ``metrics.json`` is written last: its presence means the
run is done. The protocol follows the decorrelation test of Träuble et al. 2021
(https://arxiv.org/abs/2006.07886): train at correlation width σ, score on a test split at the
same σ and on a decorrelated split (σ = ∞).

Existing folders: a done run is reported and left alone (``force=True`` starts it over); a
started run (checkpoint, no ``metrics.json``) is an error unless ``resume=True`` (continue exactly
from ``ckpt/last.pt``) or ``force=True`` — never a silent fresh start.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toybench import __version__
from toybench.baselines import Baseline, load_baseline
from toybench.encoders import float_batch
from toybench.errors import ToybenchError
from toybench.evaluate import evaluate_model, pca_reference_for, summary_table
from toybench.io import atomic_write_json, atomic_write_text
from toybench.train import TrainingDiverged, TrainResult, load_checkpoint, train

PROTOCOLS = ("quick", "standard")
EVAL_SPLITS = ("test", "test_decorrelated")
CORR_MEANING = (
    "corr is the correlation width sigma of Traeuble et al. 2021 (arXiv:2006.07886): a child "
    "concept's level j given its parents has probability proportional to "
    "exp(-(u_j - g(parents))^2 / (2 sigma^2)), u_j its normalized value in [0, 1] and g a weighted "
    "sum (or table/function) of the parents' normalized values; smaller sigma = stronger "
    "correlation, inf = independent concepts. The train and test splits use this sigma; "
    "test_decorrelated uses sigma = inf. The realized Pearson rho and mutual information of every "
    "edge are in data_card.json."
)


@dataclass
class RunResult:
    """What ``run()`` hands back.

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
    """

    run_dir: Path
    metrics: dict[str, Any]
    status: str
    summary: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def resolved_config(baseline: Baseline, generator, corr: float, seed: int) -> dict[str, Any]:
    """The fully resolved, JSON-ready configuration of a run (what ``config.json`` holds).

    Everything that changes results is here, so its hash names the run folder.
    """
    from toybench.scm import corr_label

    return {
        "toybench_version": __version__,
        "model": {"baseline": baseline.name, "family": baseline.family,
                  "description": baseline.description, "source": _display_path(baseline.path),
                  "config": _jsonable(asdict(baseline.model))},
        "train": _jsonable(asdict(baseline.train)),
        "protocol": baseline.protocol,
        "eval": _jsonable(asdict(baseline.eval)),
        "overrides": {k: _jsonable(v) for k, v in baseline.overrides},
        "seed": seed,
        "data": {"generator": generator.name, "spec_hash": generator.spec_hash,
                 "image_shape": list(generator.image_shape),
                 "concepts": list(generator.concept_names),
                 "corr": corr_label(corr), "corr_meaning": CORR_MEANING,
                 "splits": {"train": {"n": baseline.train.n_train, "corr": corr_label(corr)},
                            "test": {"n": baseline.train.n_test, "corr": corr_label(corr)},
                            "test_decorrelated": {"n": baseline.train.n_test, "corr": "inf"}}},
    }


def config_hash(config: Mapping[str, Any]) -> str:
    """First 8 hex digits of the SHA-256 of the canonical JSON of ``config`` (minus the version)."""
    hashed = {k: v for k, v in config.items() if k not in ("toybench_version", "overrides")}
    text = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def run_name(config: Mapping[str, Any]) -> str:
    """``<model>-<generator>-corr<σ>-s<seed>-<hash8>``."""
    data = config["data"]
    return (f"{config['model']['baseline']}-{data['generator']}-corr{data['corr']}-"
            f"s{config['seed']}-{config_hash(config)}")


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
) -> RunResult:
    """Train and score one baseline on one generator at one σ and seed; write the run folder.

    Parameters
    ----------
    model : str
        Baseline name (``vae``, ``csvae``, ...) or path to a baseline ``.toml``.
    data : str
        Generator name or spec path.
    corr : float or str
        Training correlation width σ (``inf`` = independent).
    seed : int
        Seeds the data splits, the initial weights, the batch order and the sampling noise.
    protocol : str, optional
        ``quick`` or ``standard`` (or another protocol of the baseline file); ``None`` = the
        file's own ``[train]`` values.
    overrides : iterable of str
        ``--set`` overrides, ``"train.lr=3e-4"`` (see ``toybench.baselines``).
    out : str or Path
        Parent folder of run folders.
    resume : bool
        Continue a started run from ``ckpt/last.pt`` (an error if it is missing or corrupt).
    force : bool
        Delete an existing run folder of the same name and start over.
    fp32 : bool
        Train in plain fp32 (same as ``--set train.precision=fp32``).
    plots : bool
        Write ``plots/`` (the figures take a few seconds; sweeps may skip them).
    progress : bool, optional
        tqdm bar (default: when stderr is a terminal).
    echo : callable
        Where status lines and the summary go.

    Returns
    -------
    RunResult

    Raises
    ------
    ToybenchError
        Bad names, values, or run-folder states (one line).
    TrainingDiverged
        Training hit ``nan_patience`` consecutive non-finite steps (CLI exit code 3).
    """
    from toybench.data import make_split
    from toybench.models import build_model
    from toybench.scm import parse_corr
    from toybench.specs import load_generator

    if resume and force:
        raise ToybenchError("--resume and --force exclude each other")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ToybenchError(f"seed must be an integer >= 0, got {seed!r}")
    sigma = parse_corr(corr)
    extra = ["train.precision=fp32"] if fp32 else []
    baseline = load_baseline(model, protocol=protocol, overrides=[*overrides, *extra])
    generator = load_generator(data)
    config = resolved_config(baseline, generator, sigma, seed)
    run_dir = Path(out) / run_name(config)
    metrics_path = run_dir / "metrics.json"
    ckpt_path = run_dir / "ckpt" / "last.pt"
    if metrics_path.is_file() and not force:
        metrics = _read_json(metrics_path)
        summary = summary_table(metrics)
        echo(f"run already done: {run_dir} (metrics.json exists; --force starts it over)")
        echo(summary)
        return RunResult(run_dir, metrics, "existing", summary)
    if force and run_dir.exists():
        _remove_run_dir(run_dir)
    if not resume and ckpt_path.exists():
        raise ToybenchError(f"{run_dir} has an unfinished run (ckpt/last.pt, no metrics.json); "
                            f"pass --resume to continue it or --force to start over")
    if resume and not ckpt_path.exists():
        raise ToybenchError(f"cannot resume: no checkpoint at {ckpt_path}")
    if resume:
        load_checkpoint(ckpt_path)  # fail before drawing data if it is unreadable
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", config)
    echo(f"run {run_dir}")

    timings: dict[str, float] = {}
    t = time.perf_counter()
    cfg = baseline.train
    splits = {
        "train": make_split(generator, "train", corr=sigma, n=cfg.n_train, seed=seed),
        "test": make_split(generator, "test", corr=sigma, n=cfg.n_test, seed=seed),
        "test_decorrelated": make_split(generator, "test_decorrelated", corr=sigma,
                                        n=cfg.n_test, seed=seed),
    }
    atomic_write_json(run_dir / "data_card.json",
                      _jsonable({name: ds.card for name, ds in splits.items()}))
    timings["data_seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # initial weights are a function of the seed
        net = build_model(baseline.family, baseline.model, image_shape=generator.image_shape,
                          dag=generator.dag,
                          concept_sizes={c.name: c.n_levels for c in generator.concepts})
    train_images = splits["train"].images
    result = TrainResult()
    if getattr(net, "trainable", True):
        try:
            result = train(net, train_images, cfg, seed=seed, factors=splits["train"].factors,
                           ckpt_path=ckpt_path, resume=resume, tb_dir=run_dir / "tb",
                           progress=progress)
        except TrainingDiverged as err:
            write_history(run_dir / "history.csv", err.history)
            raise
    else:
        net.fit(torch.from_numpy(train_images).float().div_(255.0))
        net.eval()
    timings["train_seconds"] = time.perf_counter() - t
    timings["images_per_second"] = result.images_per_second
    write_history(run_dir / "history.csv", result.history)

    t = time.perf_counter()
    reference = pca_reference_for(splits, net.n_codes, seed=seed, cache_dir=Path(out) / ".cache")
    evaluation = evaluate_model(net, generator, splits, seed=seed, config=baseline.eval,
                                reference=reference, perturbation_images=500 if plots else 0)
    metrics = dict(evaluation.metrics)
    metrics["train.steps"] = result.steps_done
    metrics["train.nan_skipped_steps"] = result.nan_skipped
    if result.history:
        metrics["train.final_loss"] = result.history[-1]["loss"]
    timings["eval_seconds"] = time.perf_counter() - t

    if plots:
        t = time.perf_counter()
        write_plots(run_dir / "plots", net, generator, splits, evaluation.artefacts)
        timings["plots_seconds"] = time.perf_counter() - t

    atomic_write_json(run_dir / "env.json", environment(timings))
    metrics = {k: _json_number(v) for k, v in sorted(metrics.items())}
    atomic_write_json(metrics_path, metrics)
    summary = summary_table(metrics)
    echo(summary)
    return RunResult(run_dir, metrics, "done", summary, timings)


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


def write_plots(folder: Path, model, generator, splits: Mapping[str, Any],
                artefacts: Mapping[str, Any]) -> None:
    """The run's figures (PNG): reconstructions, traversals, KL per unit, code histograms,
    latent scatter by factor, DCI importance, perturbation matrix; codes, KL, importance and
    perturbation come from ``artefacts`` (`toybench.evaluate.Evaluation.artefacts`: no second
    DCI fit)."""
    from toybench import plots

    test = splits["test"]
    codes = artefacts["codes"]["test"]
    x = float_batch(test.images[:16])
    with torch.no_grad():
        model.eval()
        plots.save_image_tensor(plots.reconstruction_tensor(model, x),
                                folder / "reconstructions.png",
                                "test images (top) and reconstructions (bottom)")
        plots.save_image_tensor(
            plots.traversal_tensor(model, x[:1], torch.from_numpy(codes).float()),
            folder / "traversals.png", "latent traversals (one row per code, 2-98th percentile)")
    units = model.units() if hasattr(model, "units") else []
    kl = artefacts["kl_per_unit"]
    if kl is not None:
        plots.bar_per_unit(kl, units, folder / "kl_per_unit.png",
                           "KL per unit on the test split", "KL (nats)")
    else:  # PCA: no KL; show the variance of each code instead
        plots.bar_per_unit(codes.var(axis=0), units, folder / "kl_per_unit.png",
                           "variance per code (no KL: non-variational model)", "Var")
    plots.code_histograms(codes, folder / "activation_histograms.png")
    names = list(generator.concept_names)
    plots.latent_scatter(codes, test.factors, names, folder / "latent_scatter.png")
    plots.heatmap(artefacts["importance"], [f"z{j}" for j in range(codes.shape[1])], names,
                  folder / "dci_importance.png", "DCI importance (codes x factors), test split")
    code_names = [f"z{j}" for j in range(codes.shape[1])]
    plots.heatmap(artefacts["perturbation"], code_names, code_names,
                  folder / "perturbation_matrix.png",
                  "perturbation: mean squared change of code j after z_i + 1, decode, re-encode",
                  cmap="magma")


def environment(timings: Mapping[str, float]) -> dict[str, Any]:
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
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "git_sha": _git_sha(),
        "timings": {k: round(float(v), 3) for k, v in timings.items()},
    }


def _git_sha() -> str | None:
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


def _remove_run_dir(run_dir: Path) -> None:
    if not (run_dir / "config.json").is_file():
        raise ToybenchError(f"refusing to delete {run_dir}: it is not a toybench run folder")
    shutil.rmtree(run_dir)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ToybenchError(f"cannot read {path}: {err}") from None


def _display_path(path: str) -> str:
    from toybench.resources import shipped_dir

    try:
        return str(Path(path).resolve().relative_to(shipped_dir("baselines").resolve().parent))
    except (ValueError, FileNotFoundError):
        return str(path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return _json_number(obj)
    return obj


def _json_number(value: Any) -> Any:
    """JSON has no NaN/inf: non-finite floats become ``null`` / ``"inf"`` / ``"-inf"``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _csv_value(value: Any) -> Any:
    return repr(value) if isinstance(value, float) else value

"""What a run *is* (`RunSpec`) and where it lives (`RunDir`).

A `RunSpec` is a frozen, picklable value — baseline, generator, σ, seed, protocol, overrides —
from which everything else is derived: the fully resolved configuration (``.config``, what
``config.json`` holds), its hash and the run folder's name. Building one imports no torch and
draws no data, so a sweep can enumerate and check thousands of them, ship them to other
processes or machines, and join their scores back by value (disentanglement_lib's flattened
per-run results, Locatello et al. 2019, https://arxiv.org/abs/1811.12359).

A `RunDir` owns a run folder's layout and its states:

- ``new``: nothing there yet (or only a ``config.json``);
- ``running``: another process holds the folder's claim (an ``flock`` on ``.lock``);
- ``started``: a checkpoint and no result (interrupted; ``--resume`` continues it exactly);
- ``failed``: ``status.json`` says ``failed``, with the one-line error and the exit code;
- ``done``: ``metrics.json`` exists (it is written last).

Claiming is atomic: the claim is an exclusive, non-blocking ``flock`` on ``<run>/.lock``, which
the kernel releases when the holder exits, however it exits (SIGKILL included), so a claim can
never go stale. Of two processes claiming one run, exactly one gets it; the other is told who
holds it. ``flock`` works on local file systems and on NFSv4; a sweep on a cluster needs ``--out``
on a shared file system with working locks.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toybench import __version__
from toybench.errors import ToybenchError
from toybench.io import atomic_write_json
from toybench.seeds import check_seed

STATES = ("new", "running", "started", "failed", "done")
CORR_MEANING = (
    "corr is the correlation width sigma of Traeuble et al. 2021 (arXiv:2006.07886): a child "
    "concept's level j given its parents has probability proportional to "
    "exp(-(u_j - g(parents))^2 / (2 sigma^2)), u_j its normalized value in [0, 1] and g a weighted "
    "sum (or table/function) of the parents' normalized values; smaller sigma = stronger "
    "correlation, inf = independent concepts. The train and test splits use this sigma; "
    "test_decorrelated uses sigma = inf. The realized Pearson rho and mutual information of every "
    "edge are in data_card.json."
)
#: The evaluation splits of every run and their σ rule (the data splits are in `SPLITS`).
EVAL_SPLITS = ("test", "test_decorrelated")
#: split -> (σ rule, size field of TrainConfig, random stream in `toybench.seeds`).
SPLITS = {
    "train": ("the run's σ", "n_train", "data.train"),
    "test": ("the run's σ", "n_test", "data.test"),
    "test_decorrelated": ("σ = inf", "n_test", "data.test_decorrelated"),
}
#: Extra evaluation splits of a run with ``eval.test_corr`` (``--test-corr``): one per σ in it,
#: named by `split_at_corr` (``test_corr0_4``), drawn at that σ with ``train.n_test`` images
#: from the stream ``data.test_corr<σ>``.
TEST_CORR_PREFIX = "test_corr"
_NAME_PART_MAX = 64  # characters of the baseline / generator name kept in a folder name
MAX_NAME = 255  # bytes in a file name on every common file system
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


@dataclass(frozen=True)
class RunSpec:
    """One benchmark run as a value.

    Parameters
    ----------
    baseline : str
        A shipped baseline name (``vae``, ``csvae``, ...) or a path to a baseline ``.toml``.
    generator : str
        A shipped generator name or a path to a spec ``.toml``.
    corr : float
        Training correlation width σ (``math.inf`` = independent); strings such as ``"0.2"`` and
        ``"inf"`` are accepted and stored as floats.
    seed : int
        The run seed, in ``[0, 2**32 - 1]``; every random stream derives from it
        (`toybench.seeds`).
    protocol : str or None
        ``quick``, ``standard`` (see ``baselines/protocols.toml``) or ``None`` for the file's
        own values.
    overrides : tuple of str
        ``--set`` overrides, ``"train.lr=3e-4"``, applied last.

    Attributes
    ----------
    config : dict
        The fully resolved, JSON-ready configuration (``config.json``); validated when first
        read (`check` reads it).
    hash : str
        8 hex digits naming the resolved configuration (not the toybench version).
    name : str
        ``<baseline>-<generator>-corr<σ>-s<seed>-<hash>``, safe as a file name.
    """

    baseline: str
    generator: str = "toy-causal"
    corr: float = math.inf
    seed: int = 0
    protocol: str | None = "standard"
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from toybench.scm import parse_corr

        if not isinstance(self.baseline, str | os.PathLike) or not str(self.baseline):
            raise ToybenchError(f"baseline must be a name or a path, got {self.baseline!r}")
        if not isinstance(self.generator, str | os.PathLike) or not str(self.generator):
            raise ToybenchError(f"generator must be a name or a path, got {self.generator!r}")
        if self.protocol is not None and not isinstance(self.protocol, str):
            raise ToybenchError(f"protocol must be a name or None, got {self.protocol!r}")
        if isinstance(self.overrides, str):
            raise ToybenchError("overrides must be a sequence of KEY=VALUE strings")
        overrides = tuple(self.overrides)
        for item in overrides:
            if not isinstance(item, str):
                raise ToybenchError(f"an override must be a KEY=VALUE string, got {item!r}")
        object.__setattr__(self, "baseline", str(self.baseline))
        object.__setattr__(self, "generator", str(self.generator))
        object.__setattr__(self, "corr", parse_corr(self.corr))
        object.__setattr__(self, "seed", check_seed(self.seed))
        object.__setattr__(self, "overrides", overrides)

    @functools.cached_property
    def config(self) -> dict[str, Any]:
        return resolved_config(self)

    @functools.cached_property
    def hash(self) -> str:
        return config_hash(self.config)

    @functools.cached_property
    def name(self) -> str:
        return run_name(self.config)

    def check(self) -> RunSpec:
        """Resolve and validate the configuration now (one-line ``ToybenchError``); returns self."""
        _ = self.name
        return self

    def __getstate__(self) -> dict[str, Any]:
        # Pickle the fields only: the derived values are recomputed where the spec lands.
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RunSpec:
        """The spec that produced a ``config.json`` (its ``spec`` entry)."""
        try:
            raw = dict(config["spec"])
            raw["overrides"] = tuple(raw.get("overrides", ()))
            return cls(**raw)
        except (KeyError, TypeError) as err:
            raise ToybenchError(f"config has no valid 'spec' entry ({err})") from None

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (σ as a number or ``"inf"``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["corr"] = "inf" if math.isinf(self.corr) else self.corr
        out["overrides"] = list(self.overrides)
        return out


def resolved_config(spec: RunSpec) -> dict[str, Any]:
    """The fully resolved, JSON-ready configuration of a run (what ``config.json`` holds).

    Everything that changes results is in it, so its hash names the run folder. The ``spec``
    entry is the `RunSpec` itself, so a ``config.json`` can be turned back into its spec.
    """
    model, train, eval_config, protocol, overrides = _baseline_entries(
        spec.baseline, spec.protocol, spec.overrides, _mtime(spec.baseline))
    return _assemble(model, train, eval_config, protocol, overrides, spec.seed, spec.as_dict(),
                     load_generator_cached(spec.generator), spec.corr)


@functools.lru_cache(maxsize=256)
def _baseline_entries(name: str, protocol: str | None, overrides: tuple[str, ...],
                      mtime: float | None) -> tuple[str, str, str, str | None, str]:
    """The baseline's parts of ``config.json`` as JSON text (cached: a grid shares them)."""
    baseline = _baseline_by_key(name, protocol, overrides, mtime)
    model = {"baseline": baseline.name, "family": baseline.family,
             "description": baseline.description, "source": _display_path(baseline.path),
             "config": _jsonable(dataclasses.asdict(baseline.model))}
    return (json.dumps(model), json.dumps(_jsonable(dataclasses.asdict(baseline.train))),
            json.dumps(eval_entry(baseline.eval)), baseline.protocol,
            json.dumps({k: _jsonable(v) for k, v in baseline.overrides}))


def eval_entry(eval_config: Any) -> dict[str, Any]:
    """The ``eval`` entry of ``config.json``: the `toybench.evaluate.EvalConfig` fields, with
    ``test_corr`` only when it lists a σ. A run without extra test splits therefore has the
    ``config.json``, hash and folder name it had before the field existed."""
    entry = _jsonable(dataclasses.asdict(eval_config))
    if not entry.get("test_corr"):
        entry.pop("test_corr", None)
    return entry


def split_at_corr(sigma: float | str) -> str:
    """The name of the extra test split drawn at σ: ``test_corr`` + σ's label with ``_`` for
    the decimal point (``0.4`` → ``test_corr0_4``, ``inf`` → ``test_corrinf``), since metric
    keys split at the first dot (``test_corr0_4.mig``)."""
    from toybench.scm import corr_label, parse_corr

    return TEST_CORR_PREFIX + corr_label(parse_corr(sigma)).replace(".", "_")


def corr_of_split(split: str) -> float | None:
    """σ of a split named by `split_at_corr` (``test_corr0_4`` → 0.4), else None (other
    names, and spellings `split_at_corr` would not write, such as ``test_corr0_40``)."""
    from toybench.scm import parse_corr

    if not isinstance(split, str) or not split.startswith(TEST_CORR_PREFIX):
        return None
    try:
        sigma = parse_corr(split[len(TEST_CORR_PREFIX):].replace("_", "."))
    except ToybenchError:
        return None
    return sigma if split_at_corr(sigma) == split else None


def external_config(name: str, generator: str, corr: float, seed: int,
                    protocol: str) -> dict[str, Any]:
    """``config.json`` of an external encoder scored under ``protocol`` (its split and
    evaluation sizes); ``model.baseline`` is ``external:<name>``."""
    from toybench.scm import parse_corr

    if not isinstance(name, str) or not name.strip():
        raise ToybenchError(f"an external model needs a name, got {name!r}")
    sigma, seed = parse_corr(corr), check_seed(seed)
    from toybench.baselines import protocol_configs

    train, eval_config = protocol_configs(protocol)
    model = {"baseline": f"external:{name}", "family": "external", "description": "",
             "source": "python", "config": {}}
    sizes = {"n_train": train.n_train, "n_test": train.n_test}
    eval_json = json.dumps(eval_entry(eval_config))
    spec = {"baseline": f"external:{name}", "generator": str(generator),
            "corr": "inf" if math.isinf(sigma) else sigma, "seed": seed, "protocol": protocol,
            "overrides": []}
    return _assemble(json.dumps(model), json.dumps(sizes), eval_json, protocol, "{}", seed,
                     spec, load_generator_cached(str(generator)), sigma)


def _assemble(model: str, train: str, eval_config: str, protocol: str | None, overrides: str,
              seed: int, spec: Mapping[str, Any], generator: Any,
              corr: float) -> dict[str, Any]:
    """One ``config.json`` from its parts (the baseline's as JSON text, so that each config
    is a fresh object however often the parts are reused)."""
    from toybench.scm import corr_label, parse_corr

    label = corr_label(corr)
    sizes = json.loads(train)
    evaluation = json.loads(eval_config)
    splits = {split: {"n": sizes[size], "corr": label if rule == "the run's σ" else "inf"}
              for split, (rule, size, _stream) in SPLITS.items()}
    for sigma in evaluation.get("test_corr", ()):  # "inf" as JSON spells it
        splits[split_at_corr(sigma)] = {"n": sizes["n_test"],
                                          "corr": corr_label(parse_corr(sigma))}
    return {
        "toybench_version": __version__,
        "model": json.loads(model),
        "train": sizes,
        "protocol": protocol,
        "eval": evaluation,
        "overrides": json.loads(overrides),
        "seed": seed,
        "spec": dict(spec),
        "data": {**_generator_entry(generator), "corr": label, "corr_meaning": CORR_MEANING,
                 "splits": splits},
    }


def _generator_entry(generator: Any) -> dict[str, Any]:
    return {"generator": generator.name, "spec_hash": generator.spec_hash,
            "image_shape": list(generator.image_shape),
            "concepts": list(generator.concept_names)}


def load_baseline_for(spec: RunSpec):
    """The `toybench.baselines.Baseline` of a spec (protocol and overrides applied); cached
    per file, protocol and overrides (and the file's modification time), since a grid shares
    a few baselines among many seeds and σ."""
    return _baseline_by_key(spec.baseline, spec.protocol, spec.overrides,
                            _mtime(spec.baseline))


@functools.lru_cache(maxsize=256)
def _baseline_by_key(name: str, protocol: str | None, overrides: tuple[str, ...],
                     mtime: float | None):
    from toybench.baselines import load_baseline

    return load_baseline(name, protocol=protocol, overrides=overrides)


def _mtime(name: str) -> float | None:
    try:
        return os.stat(name).st_mtime if os.path.isfile(name) else None
    except (OSError, ValueError):
        return None


@functools.lru_cache(maxsize=64)
def _generator_by_key(name: str, mtime: float | None):
    from toybench.specs import load_generator

    return load_generator(name)


def load_generator_cached(name: str):
    """`toybench.specs.load_generator`, cached per name (and file modification time)."""
    return _generator_by_key(str(name), _mtime(str(name)))


def config_hash(config: Mapping[str, Any]) -> str:
    """First 8 hex digits of the SHA-256 of the canonical JSON of ``config``, without the
    toybench version, the override list and the spec entry (they do not change results beyond
    what the resolved values already say)."""
    hashed = {k: v for k, v in config.items()
              if k not in ("toybench_version", "overrides", "spec")}
    text = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def run_name(config: Mapping[str, Any]) -> str:
    """``<model>-<generator>-corr<σ>-s<seed>-<hash8>``, with unsafe characters replaced and the
    two names cut to 64 characters each, so every name is a valid file name."""
    data = config["data"]
    model = _safe(config["model"]["baseline"])
    generator = _safe(data["generator"])
    name = f"{model}-{generator}-corr{data['corr']}-s{config['seed']}-{config_hash(config)}"
    assert len(name.encode()) <= MAX_NAME, name  # ASCII parts of bounded length
    return name


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", str(name))[:_NAME_PART_MAX] or "_"


# --------------------------------------------------------------------------------------------
# The folder.
# --------------------------------------------------------------------------------------------


class RunClaimed(ToybenchError):
    """Another process holds the run folder's claim (the run is in progress elsewhere)."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class RunDir:
    """A run folder: its files, its state and its claim.

    Parameters
    ----------
    path : str or Path
        The run folder (``<out>/<spec.name>``); it need not exist.
    """

    LOCK = ".lock"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # the layout --------------------------------------------------------------------------------
    config = property(lambda self: self.path / "config.json")
    metrics = property(lambda self: self.path / "metrics.json")
    status = property(lambda self: self.path / "status.json")
    env = property(lambda self: self.path / "env.json")
    history = property(lambda self: self.path / "history.csv")
    curve = property(lambda self: self.path / "curve.json")  # scores along training (score_at)
    data_card = property(lambda self: self.path / "data_card.json")
    ckpt = property(lambda self: self.path / "ckpt" / "last.pt")
    tb = property(lambda self: self.path / "tb")
    plots = property(lambda self: self.path / "plots")

    @classmethod
    def of(cls, spec: RunSpec, out: str | os.PathLike) -> RunDir:
        return cls(Path(out) / spec.name)

    # state -------------------------------------------------------------------------------------
    def state(self) -> str:
        """One of `STATES` (see the module docstring)."""
        if self.metrics.is_file():
            return "done"
        if self._held_elsewhere():
            return "running"
        status = self.read_status()
        if status is not None and status.get("state") == "failed":
            return "failed"
        if self.ckpt.exists():
            return "started"
        return "new"

    def read_status(self) -> dict[str, Any] | None:
        """``status.json`` as a dict, or None if it is missing or unreadable."""
        try:
            value = json.loads(self.status.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def write_status(self, state: str, **fields: Any) -> Path:
        """Write ``status.json``: ``{"state": ..., "host", "pid", "time", **fields}``."""
        record = {"state": state, "host": socket.gethostname(), "pid": os.getpid(),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}
        return atomic_write_json(self.status, _jsonable(record))

    # the claim ---------------------------------------------------------------------------------
    def claim(self) -> Claim:
        """Create the folder if needed and take its exclusive claim.

        Raises
        ------
        RunClaimed
            Another process holds it (the message names the holder).
        ToybenchError
            The folder cannot be created or locked (a file in the way, no permission, ...).
        """
        _make_folder(self.path)
        try:
            fd = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ToybenchError(f"cannot claim {self.path}: {err.strerror or err}") from None
        if not _try_lock(fd):
            os.close(fd)
            holder = self.read_status() or {}
            who = (f" (pid {holder['pid']} on {holder['host']}, since {holder['time']})"
                   if {"pid", "host", "time"} <= holder.keys() else "")
            raise RunClaimed(f"{self.path} is already running in another process{who}")
        return Claim(self, fd)

    def _held_elsewhere(self) -> bool:
        lock = self.path / self.LOCK
        if not lock.is_file():
            return False
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            return False
        try:
            if _try_lock(fd):
                _unlock(fd)
                return False
            return True
        finally:
            os.close(fd)

    def clear_check(self) -> None:
        """Raise the one-line error `clear` would raise, deleting nothing."""
        if self.path.is_symlink():
            raise ToybenchError(f"refusing to delete {self.path}: it is a symlink (remove or "
                                f"replace it yourself, then run again)")
        if not self.path.exists():
            return
        # a folder with nothing but the claim's lock is one this process (or a claim that
        # failed before writing) just made: nothing to delete, nothing to protect
        empty = self.path.is_dir() and all(c.name == self.LOCK for c in self.path.iterdir())
        if not empty and (not self.path.is_dir() or not self.config.is_file()):
            raise ToybenchError(f"refusing to delete {self.path}: it is not a toybench run "
                                f"folder (no config.json)")

    def clear(self) -> None:
        """Delete the run's files (for ``--force``), keeping the folder and its lock.

        Raises
        ------
        ToybenchError
            If the path is a symlink or not a toybench run folder (nothing is deleted).
        """
        self.clear_check()
        if not self.path.exists():
            return
        for child in self.path.iterdir():
            if child.name == self.LOCK:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


class Claim:
    """The held claim of a `RunDir`; release it (or leave the ``with`` block) when done."""

    def __init__(self, run_dir: RunDir, fd: int) -> None:
        self.run_dir = run_dir
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _make_folder(path: Path) -> None:
    """``mkdir -p`` with one-line errors (a file in the way, no permission, a name too long)."""
    for parent in [*reversed(path.parents), path]:
        if parent.exists() and not parent.is_dir():
            raise ToybenchError(f"cannot create run folder {path}: {parent} is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ToybenchError(f"cannot create run folder {path}: {err.strerror or err}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ToybenchError(f"cannot write to run folder {path}: permission denied")


def list_runs(out: str | os.PathLike, specs: Iterable[RunSpec]) -> list[tuple[RunSpec, str]]:
    """``(spec, state)`` of each spec's folder under ``out``."""
    return [(spec, RunDir.of(spec, out).state()) for spec in specs]


def _display_path(path: str) -> str:
    from toybench.resources import shipped_dir

    try:
        return str(Path(path).resolve().relative_to(shipped_dir("baselines").resolve().parent))
    except (ValueError, FileNotFoundError):
        return str(path)


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: tuples → lists, numpy scalars → Python, non-finite floats as in
    `json_number`."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return json_number(obj)
    return obj


def json_number(value: Any) -> Any:
    """JSON has no NaN/inf: non-finite floats become ``null`` / ``"inf"`` / ``"-inf"``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value

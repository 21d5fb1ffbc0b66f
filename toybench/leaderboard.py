"""Leaderboards: run folders → a per-run CSV and an aggregated CSV, and a rendered README.

`build_leaderboard(patterns, out)` reads only run folders (``metrics.json``, ``config.json``,
``status.json``; see `toybench.rundir.RunDir`) and writes two files:

- ``NAME.runs.csv``: one row per run — the folder name, the identity keys of ``metrics.json``
  (`IDENTITY_COLUMNS`, ``schema_version`` among them), ``setting_hash`` and every numeric key as
  a number (disentanglement_lib's flattened per-run results, Locatello et al. 2019,
  https://arxiv.org/abs/1811.12359);
- ``NAME.csv``: one row per generator × model × supervision × setting × protocol × train σ ×
  split × metric, with the number of seeds, mean, sample standard deviation, the 95%
  t-interval of the mean (Student 1908; ``scipy.stats.t``), median, min and max.

A *setting* is what a run trained and scored with, apart from its seed and σ: ``setting_hash``
hashes the ``model``, ``train``, ``eval`` and ``protocol`` entries of ``config.json`` with σ and
the seed left out, so seeds of one setting pool and a ``--set`` variant (or CSVAE without its
labels) is its own row, never averaged with the default. The ``supervision`` column says what a
model was trained with (``none``, ``weak (labels 10%)``, an external encoder's own words), so a
supervised row never sits unmarked beside unsupervised ones.

Folders that are partial (no ``metrics.json``), failed, corrupt (unreadable JSON, a value outside
its registered bounds, an unregistered key, identity keys that disagree with ``config.json``) or a
duplicate of another folder (the same ``config_hash``) are named in one warning line each and
never aggregated. External encoders' folders (``external_<name>-...``, from
`toybench.runs.score_encoder`) are run folders like any other.

Metric keys are ``<split>.<key>`` (``test.mig``, ``test_decorrelated.entanglement.size-hue``);
the aggregated table splits them with the metric registry (`toybench.metrics.registry`) into
``split`` and ``metric``; run-level keys (``train.steps``, ``n_codes``) have split ``run``.

`render_readme(folder)` writes ``<folder>/README.md`` and ``<folder>/plots/*.png`` from every
leaderboard pair (``NAME.csv`` + ``NAME.runs.csv``) in the folder: per generator, the headline
scores (mean ± the 95% interval's half-width, ↑/↓ from the registry) per model and σ on the
correlated test split and on the decorrelated split, the calibrated pairwise entanglement of
each correlated pair (the DAG's edges) on the decorrelated split, and plots of each against σ
with the per-seed points and the interval as a band (σ = ∞, independent concepts, is drawn at
the right behind a gap).

Both CSVs are deterministic: rows sorted, floats written in a fixed format, so rebuilding from
the same folders gives byte-identical files. Every file is written atomically (temporary file,
then rename; `toybench.io`). No torch.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import math
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toybench.errors import ToybenchError
from toybench.io import atomic_write, atomic_write_text, check_output, short_path

#: The identity keys of ``metrics.json`` (`toybench.runs.run_identity`), columns of the run table.
IDENTITY_COLUMNS = ("schema_version", "model", "family", "supervision", "generator",
                    "spec_hash", "corr", "seed", "protocol", "config_hash", "toybench_version",
                    "git_sha")
#: Identity keys that may be ``null`` (``git_sha`` outside a git checkout).
NULLABLE_IDENTITY = ("git_sha",)
#: ``schema_version`` values whose identity keys this module understands.
READABLE_SCHEMA_VERSIONS = (1,)
#: Columns of ``NAME.runs.csv`` before the score keys (sorted after them).
RUN_COLUMNS = ("run", *IDENTITY_COLUMNS, "setting_hash")
#: Columns of ``NAME.csv``.
AGGREGATE_COLUMNS = ("generator", "model", "supervision", "protocol", "corr", "split", "metric",
                     "direction", "n_seeds", "mean", "std", "ci95_low", "ci95_high", "median",
                     "min", "max", "seeds", "setting_hash", "spec_hash")
#: The pseudo-split of run-level keys (``train.steps``) in the aggregated table.
RUN_LEVEL = "run"
CONFIDENCE = 0.95
#: Significant digits of the aggregated statistics (fixed, so rebuilt files are identical).
DIGITS = 10
#: Files of a run folder; a folder holding one of them is a run folder.
RUN_FILES = ("metrics.json", "config.json", "status.json")
#: Headline scores of the README, in column order (registered base keys).
HEADLINE = ("dci.disentanglement", "dci.completeness", "dci.informativeness_test", "mig",
            "factor_vae.eval_accuracy", "entanglement", "recon.bce_vs_pca", "active_units")
#: The correlated test split (the run's σ) and the decorrelated one (σ = ∞).
README_SPLITS = (("test", "correlated test split (the training σ)"),
                 ("test_decorrelated", "decorrelated split (σ = ∞)"))
PAIR_PREFIX = "entanglement."
README_NAME = "README.md"
#: The second line of every rendered README: a README.md without it is never replaced.
README_MARKER = ("<!-- Written by `toybench leaderboard ... --readme` from the CSV files in this "
                 "folder; do not edit by hand. -->")
PLOTS_FOLDER = "plots"
#: Plots draw a cell's 95% interval from this many seeds on: with 2, t(0.975, 1) = 12.7 makes it
#: span most of the axis and hide the other models (the tables still give it).
MIN_SEEDS_FOR_BAND = 3


class RunFolderError(ToybenchError):
    """A folder that cannot be aggregated (the message says why, in a few words)."""


@dataclass(frozen=True)
class RunRecord:
    """One finished run, as the leaderboard reads it.

    Attributes
    ----------
    path : Path
        The run folder.
    identity : dict
        The identity keys of ``metrics.json`` (`IDENTITY_COLUMNS`).
    setting_hash : str
        8 hex digits naming the run's settings apart from seed and σ (module docstring).
    scores : dict
        Every numeric non-identity key: a float or int, ``math.inf``, or None where
        ``metrics.json`` holds ``null`` (a non-finite value).
    spec : dict
        The ``spec`` entry of ``config.json`` (`toybench.rundir.RunSpec.as_dict`): what reruns
        the run (baseline name or path, generator, corr, seed, protocol, overrides).
    """

    path: Path
    identity: dict[str, Any]
    setting_hash: str
    scores: dict[str, float | int | None]
    spec: dict[str, Any]

    @property
    def corr(self) -> float:
        return _corr_value(self.identity["corr"])

    @property
    def group(self) -> tuple:
        """What the seeds of one aggregated row share."""
        i = self.identity
        return (i["generator"], i["model"], i["supervision"], i["protocol"], self.setting_hash,
                i["spec_hash"], self.corr)


@dataclass(frozen=True)
class Leaderboard:
    """What `build_leaderboard` wrote and read."""

    table: Path
    runs_table: Path
    runs: tuple[RunRecord, ...]
    skipped: tuple[tuple[Path, str], ...]
    readme: Path | None = None


# --------------------------------------------------------------------------------------------
# Reading run folders.
# --------------------------------------------------------------------------------------------


def find_run_folders(patterns: Iterable[str | os.PathLike],
                     warn: Callable[[str], None] = print) -> list[Path]:
    """The run folders named by ``patterns``: run folders, folders holding run folders (searched
    recursively; hidden folders and links to folders inside them are skipped) and globs of
    either (``runs/vae-*``); a ``metrics.json`` stands for its folder. Sorted, each once.

    Raises
    ------
    ToybenchError
        A path that does not exist, or nothing matched at all (one line).
    """
    patterns = [str(p) for p in patterns]
    if not patterns:
        raise ToybenchError("no run folders given")
    found: dict[Path, Path] = {}
    unmatched = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                unmatched.append(pattern)
        elif os.path.lexists(pattern):
            matches = [pattern]
        else:
            raise ToybenchError(f"no such run folder or file: {short_path(pattern)}")
        for match in matches:
            for folder in _run_folders_in(Path(match), warn):
                found.setdefault(folder.resolve(), folder)
    if not found:
        raise ToybenchError(f"no run folders matched {' '.join(patterns)}"[:300])
    for pattern in unmatched:
        warn(f"warning: {pattern} matched nothing")
    return sorted(found.values())


def _run_folders_in(path: Path, warn: Callable[[str], None]) -> list[Path]:
    if path.name in RUN_FILES and path.is_file():
        return [path.parent]
    if not path.is_dir():
        warn(f"warning: skipped {short_path(path)}: not a folder")
        return []
    if is_run_folder(path):
        return [path]
    out = []
    try:
        children = sorted(path.iterdir())
    except OSError as err:
        warn(f"warning: skipped {short_path(path)}: {err.strerror or err}")
        return []
    for child in children:
        if child.name.startswith(".") or child.is_symlink() or not child.is_dir():
            continue
        out += _run_folders_in(child, warn)
    return out


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds one of a run folder's files (`RUN_FILES`)."""
    return any(os.path.lexists(path / name) for name in RUN_FILES)


def read_run(path: str | os.PathLike) -> RunRecord:
    """Read and check one finished run folder.

    Raises
    ------
    RunFolderError
        Partial, failed or corrupt, with the reason (see the module docstring).
    """
    from toybench.metrics.registry import metric_info
    from toybench.rundir import config_hash

    path = Path(path)
    status = _read_object(path / "status.json", required=False)
    if not (path / "metrics.json").is_file():
        if status is not None and status.get("state") == "failed":
            error = " ".join(str(status.get("error", "")).split())[:160]
            raise RunFolderError(f"failed (exit {status.get('exit_code')}: {error})")
        state = status.get("state") if status is not None else None
        raise RunFolderError(f"unfinished: no metrics.json (state {state or 'unknown'})")
    if status is not None and status.get("state") == "failed":
        raise RunFolderError("status.json says failed")
    metrics = _read_object(path / "metrics.json", required=True)
    config = _read_object(path / "config.json", required=True)
    missing = [k for k in IDENTITY_COLUMNS if k not in metrics]
    if len(missing) == len(IDENTITY_COLUMNS):
        raise RunFolderError("metrics.json has no identity keys (written by a toybench older "
                             "than run identities)")
    if missing:
        raise RunFolderError(f"metrics.json lacks identity keys {', '.join(missing)}")
    identity = {k: metrics[k] for k in IDENTITY_COLUMNS}
    version = identity["schema_version"]
    if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
        raise RunFolderError(f"schema_version {version!r}; this toybench reads "
                             f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}")
    for key in IDENTITY_COLUMNS:
        value = identity[key]
        if value is None and key in NULLABLE_IDENTITY:
            continue
        if not metric_info(key).contains(value) or value is None:
            raise RunFolderError(f"bad identity value {key} = {_shown(value)}")
    _corr_value(identity["corr"])
    try:
        expected = {"model": config["model"]["baseline"], "family": config["model"]["family"],
                    "generator": config["data"]["generator"],
                    "spec_hash": config["data"]["spec_hash"], "seed": config["seed"],
                    "protocol": config["protocol"], "config_hash": config_hash(config)}
        setting = setting_hash(config)
    except (KeyError, TypeError, ValueError) as err:
        raise RunFolderError(f"config.json lacks {err}") from None
    for key, value in expected.items():
        if identity[key] != value:
            raise RunFolderError(f"metrics.json says {key} = {_shown(identity[key])}, "
                                 f"config.json {_shown(value)}")
    spec = config.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("overrides", []), list):
        raise RunFolderError("config.json has no valid spec entry")
    if _corr_value(identity["corr"]) != _corr_value(spec.get("corr")):
        raise RunFolderError("metrics.json and config.json disagree on corr")
    scores: dict[str, float | int | None] = {}
    for key, value in metrics.items():
        if key in IDENTITY_COLUMNS:
            continue
        try:
            info = metric_info(key)
        except KeyError:
            raise RunFolderError(f"unregistered key {_shown(key)}") from None
        if not info.numeric:
            continue  # the warnings list: text, not a score
        if value is not None and not info.contains(value):
            raise RunFolderError(f"{key} = {_shown(value)} is outside its bounds "
                                 f"{list(info.bounds)}")
        scores[key] = None if value is None else (float(value) if isinstance(value, str)
                                                  else value)
    return RunRecord(path, identity, setting, scores, spec)


def read_runs(patterns: Iterable[str | os.PathLike], *,
              warn: Callable[[str], None] = print) -> tuple[list[RunRecord],
                                                             list[tuple[Path, str]]]:
    """Every finished run named by ``patterns`` (`find_run_folders`), and the folders skipped.

    Each skipped folder gets one ``warn`` line (``warning: skipped <folder>: <why>``). Of two
    folders with the same ``config_hash`` (one run copied twice) the first in path order is
    kept.

    Returns
    -------
    runs : list of RunRecord
        Sorted by group, then seed.
    skipped : list of (Path, str)
    """
    runs: list[RunRecord] = []
    skipped: list[tuple[Path, str]] = []
    seen: dict[str, Path] = {}
    for folder in find_run_folders(patterns, warn):
        try:
            record = read_run(folder)
        except RunFolderError as err:
            skipped.append((folder, str(err)))
            continue
        first = seen.setdefault(record.identity["config_hash"], folder)
        if first != folder:
            skipped.append((folder, f"duplicate of {short_path(first, 80)} (same config_hash)"))
            continue
        runs.append(record)
    for folder, reason in skipped:
        warn(f"warning: skipped {short_path(folder)}: {reason}")
    runs.sort(key=lambda r: (r.group, r.identity["seed"], r.identity["config_hash"]))
    return runs, skipped


def setting_hash(config: Mapping[str, Any]) -> str:
    """8 hex digits of the SHA-256 of a run config's ``model``, ``train``, ``eval`` and
    ``protocol`` entries (the settings a run shares with its other seeds and σ)."""
    setting = {key: config[key] for key in ("model", "train", "eval", "protocol")}
    text = json.dumps(setting, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def _read_object(path: Path, *, required: bool) -> dict[str, Any] | None:
    if not path.exists() and not path.is_symlink():
        if required:
            raise RunFolderError(f"no {path.name}")
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise RunFolderError(f"corrupt {path.name} ({' '.join(reason.split())[:80]})") from None
    if not isinstance(value, dict):
        raise RunFolderError(f"corrupt {path.name} (not a JSON object)")
    return value


def _corr_value(value: Any) -> float:
    if value == "inf":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise RunFolderError(f"bad corr {_shown(value)}")
    return float(value)


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------------------------
# Aggregation.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Statistics of one metric over seeds (`summarize`); None where undefined."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    median: float | None
    minimum: float | None
    maximum: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.ci_high is None else (self.ci_high - self.ci_low) / 2


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, sample standard deviation (n − 1), the two-sided ``confidence`` t-interval of the
    mean ``mean ± t((1 + confidence)/2, n − 1) · std / √n``, median, min and max.

    Sums are exact (`statistics.fmean`, `statistics.stdev`), so the result does not depend on
    the order of ``values``. One value has no spread: std and the interval are None.

    >>> s = summarize([0.1, 0.2, 0.3])
    >>> round(s.mean, 12), round(s.std, 12), round(s.ci_high - s.mean, 6)
    (0.2, 0.1, 0.248414)
    """
    from scipy.stats import t

    values = sorted(float(v) for v in values)
    n = len(values)
    if n == 0:
        return Summary(0, None, None, None, None, None, None, None)
    mean = statistics.fmean(values)
    std = low = high = None
    if n >= 2:
        std = statistics.stdev(values)
        half = float(t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    return Summary(n, mean, std, low, high, statistics.median(values), values[0], values[-1])


def split_key(key: str) -> tuple[str, str]:
    """``(split, metric)`` of a numeric ``metrics.json`` key: ``("test", "mig")`` of
    ``test.mig``; run-level keys (``train.steps``) are ``("run", key)``."""
    from toybench.metrics.registry import metric_info, split_of

    if not metric_info(key).per_split:
        return RUN_LEVEL, key
    split = split_of(key)
    if split is None:  # a per-split key without its split (as `toybench score` writes them)
        return "", key
    return split, key[len(split) + 1:]


def aggregate_rows(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """The rows of ``NAME.csv`` (column order `AGGREGATE_COLUMNS`), sorted."""
    from toybench.metrics.registry import metric_info
    from toybench.scm import corr_label

    groups: dict[tuple, list[RunRecord]] = {}
    for record in runs:
        groups.setdefault(record.group, []).append(record)
    rows = []
    for group, members in groups.items():
        generator, model, supervision, protocol, setting, spec_hash, corr = group
        keys = sorted({k for r in members for k in r.scores})
        for key in keys:
            split, metric = split_key(key)
            pairs = sorted((r.identity["seed"], r.scores[key]) for r in members
                           if r.scores.get(key) is not None and math.isfinite(r.scores[key]))
            stats = summarize([value for _, value in pairs])
            rows.append({
                "generator": generator, "model": model, "supervision": supervision,
                "protocol": protocol, "corr": corr_label(corr), "split": split,
                "metric": metric, "direction": metric_info(key).direction, "n_seeds": stats.n,
                "mean": stats.mean, "std": stats.std, "ci95_low": stats.ci_low,
                "ci95_high": stats.ci_high, "median": stats.median, "min": stats.minimum,
                "max": stats.maximum, "seeds": " ".join(str(seed) for seed, _ in pairs),
                "setting_hash": setting, "spec_hash": spec_hash,
                "_order": (generator, model, supervision, protocol, setting, spec_hash, corr,
                           split == RUN_LEVEL, split, metric),
            })
    rows.sort(key=lambda row: row["_order"])
    for row in rows:
        del row["_order"]
    return rows


def run_rows(runs: Sequence[RunRecord]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of ``NAME.runs.csv`` (runs in `read_runs` order)."""
    score_keys = sorted({k for r in runs for k in r.scores})
    rows = [{"run": r.path.name, **r.identity, "setting_hash": r.setting_hash, **r.scores}
            for r in runs]
    return [*RUN_COLUMNS, *score_keys], rows


def _cell(value: Any, *, exact: bool) -> str:
    """A CSV cell: integers as integers, floats exactly (``repr``) or to `DIGITS` significant
    digits, ``inf`` for infinity, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value) if exact else format(value, f".{DIGITS}g")
    return str(value)


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]], *, exact: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c), exact=exact) for c in columns])
    return buffer.getvalue()


def output_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """``(NAME.csv, NAME.runs.csv)`` for ``-o NAME.csv``, both checked writable (nothing is
    written).

    Raises
    ------
    ToybenchError
        ``out`` does not end in ``.csv``, ends in ``.runs.csv``, or cannot be written.
    """
    out = Path(out)
    if out.suffix != ".csv" or out.name == ".csv":
        raise ToybenchError(f"-o must name a .csv file (NAME.csv), got {short_path(out)}")
    if out.name.endswith(".runs.csv"):
        raise ToybenchError(f"-o names the aggregated table NAME.csv; NAME.runs.csv is written "
                            f"beside it (got {short_path(out)})")
    runs_path = out.with_name(out.name[:-len(".csv")] + ".runs.csv")
    check_output(out)
    check_output(runs_path)
    return out, runs_path


def build_leaderboard(patterns: Iterable[str | os.PathLike], out: str | os.PathLike, *,
                      readme: bool = False,
                      warn: Callable[[str], None] = print) -> Leaderboard:
    """Read the run folders of ``patterns`` and write ``NAME.csv`` and ``NAME.runs.csv``.

    Parameters
    ----------
    patterns : iterable of str
        Run folders, folders of run folders, or globs (`find_run_folders`).
    out : str or Path
        ``NAME.csv``; ``NAME.runs.csv`` goes beside it.
    readme : bool
        Then render ``README.md`` and ``plots/`` in ``out``'s folder from every leaderboard
        there (`render_readme`).
    warn : callable
        Gets one line per skipped folder.

    Returns
    -------
    Leaderboard

    Raises
    ------
    ToybenchError
        Bad ``out``, nothing matched, or no finished run among the folders (one line; nothing
        is written).
    """
    table, runs_table = output_paths(out)
    if readme:
        readme_path(table.parent)
    runs, skipped = read_runs(patterns, warn=warn)
    if not runs:
        raise ToybenchError(f"none of the {len(skipped)} run folders is a finished run; "
                            f"nothing written")
    columns, rows = run_rows(runs)
    atomic_write_text(runs_table, csv_text(columns, rows, exact=True))
    atomic_write_text(table, csv_text(AGGREGATE_COLUMNS, aggregate_rows(runs), exact=False))
    rendered = render_readme(table.parent) if readme else None
    return Leaderboard(table, runs_table, tuple(runs), tuple(skipped), rendered)


# --------------------------------------------------------------------------------------------
# The README and its plots.
# --------------------------------------------------------------------------------------------


def read_csv(path: Path, columns: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Rows of a CSV as dicts of text; with ``columns``, its header must start with them."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ToybenchError(f"cannot read {short_path(path)}: {err}") from None
    if header is None or (columns is not None and tuple(header[:len(columns)]) != tuple(columns)):
        raise ToybenchError(f"{short_path(path)} is not a toybench table (its header is not "
                            f"{','.join(columns or ())[:80]}...)")
    if any(len(row) != len(header) for row in rows):
        raise ToybenchError(f"{short_path(path)} has rows of the wrong length")
    return [dict(zip(header, row, strict=True)) for row in rows]


def leaderboards_in(folder: Path) -> list[tuple[str, Path, Path]]:
    """``(NAME, NAME.csv, NAME.runs.csv)`` of every leaderboard pair in ``folder``, by name.
    Other CSV files (the gate's ``ci-reference.csv``) are not leaderboards."""
    pairs = []
    for runs_table in sorted(folder.glob("*.runs.csv")):
        name = runs_table.name[:-len(".runs.csv")]
        table = folder / f"{name}.csv"
        if table.is_file():
            pairs.append((name, table, runs_table))
    return pairs


def _float(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def _fmt(mean: float | None, half: float | None, n: int) -> str:
    if mean is None:
        return "–"
    digits = 3 if abs(mean) < 10 else (1 if abs(mean) < 1000 else 0)
    if half is None:
        return f"{mean:.{digits}f} (n = {n})"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _corr_sort(label: str) -> float:
    return math.inf if label == "inf" else float(label)


def _corr_text(label: str) -> str:
    return "∞" if label == "inf" else label


def render_readme(folder: str | os.PathLike, *, preface: str | None = None) -> Path:
    """Write ``<folder>/README.md`` and ``<folder>/plots/*.png`` from the leaderboards there;
    ``preface`` (markdown) goes under the title, e.g. how far the sweeps behind them are.

    Raises
    ------
    ToybenchError
        No leaderboard pair in ``folder``, or a table that is not one (one line).
    """
    from toybench.metrics.registry import metric_info

    folder = Path(folder)
    pairs = leaderboards_in(folder)
    if not pairs:
        raise ToybenchError(f"no leaderboard (NAME.csv with NAME.runs.csv) in "
                            f"{short_path(folder)}")
    readme = readme_path(folder)
    lines = ["# Leaderboards", "", README_MARKER, "",
             "Each table below is rendered from a leaderboard CSV beside this file. Cells are "
             "the mean over seeds ± the half-width of its 95% t-interval (scipy.stats.t; "
             "`(n = 1)` where one seed gives no interval); ↑ higher is better, ↓ lower is "
             "better, · neither. The plots show the mean (line), each seed (dots) and the 95% "
             f"interval (band or bar) of cells with at least {MIN_SEEDS_FOR_BAND} seeds. σ is "
             "the training correlation width (smaller = stronger; ∞ = independent concepts). "
             "`supervision` says what a model was trained with. "
             "Per-run numbers are in `NAME.runs.csv`, every metric's statistics in `NAME.csv`.",
             ""]
    if preface:
        lines += [preface.strip(), ""]
    for name, table, runs_table in pairs:
        rows = read_csv(table, AGGREGATE_COLUMNS)
        run_table = read_csv(runs_table, RUN_COLUMNS)
        by_section: dict[tuple[str, str], list[dict[str, str]]] = {}
        for row in rows:
            by_section.setdefault((row["generator"], row["protocol"]), []).append(row)
        for (generator, protocol), section in sorted(by_section.items()):
            lines += _section(folder, name, generator, protocol, section, run_table,
                              metric_info)
    atomic_write_text(readme, "\n".join(lines).rstrip("\n") + "\n")
    return readme


def readme_path(folder: Path) -> Path:
    """``<folder>/README.md`` if it may be written: absent, or rendered before (its marker
    line); a README of anything else (the project's own) is never replaced.

    Raises
    ------
    ToybenchError
        The README is someone else's, or the path is not a regular file.
    """
    readme = check_output(Path(folder) / README_NAME)
    if readme.exists() and README_MARKER not in _head(readme):
        raise ToybenchError(f"refusing to replace {short_path(readme)}: it was not written by "
                            f"`toybench leaderboard --readme` (no marker line); keep "
                            f"leaderboards in a folder of their own")
    plots = Path(folder) / PLOTS_FOLDER
    if plots.exists() and not plots.is_dir():
        raise ToybenchError(f"cannot write plots: {short_path(plots)} is not a folder")
    return readme


def _head(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(1000)
    except OSError:
        return ""


def _model_labels(section: Sequence[Mapping[str, str]]) -> dict[tuple[str, str, str], str]:
    """A display name per (model, supervision, setting): the model, plus the setting hash where
    one model and supervision has several settings."""
    keys = sorted({(r["model"], r["supervision"], r["setting_hash"]) for r in section})
    counts: dict[tuple[str, str], int] = {}
    for model, supervision, _ in keys:
        counts[(model, supervision)] = counts.get((model, supervision), 0) + 1
    return {key: key[0] + (f" [{key[2]}]" if counts[key[:2]] > 1 else "") for key in keys}


def _section(folder: Path, name: str, generator: str, protocol: str,
             section: Sequence[Mapping[str, str]], run_table: Sequence[Mapping[str, str]],
             metric_info) -> list[str]:
    labels = _model_labels(section)
    cells: dict[tuple, dict[str, str]] = {}
    for row in section:
        model_key = (row["model"], row["supervision"], row["setting_hash"])
        cells[(model_key, row["corr"], row["split"], row["metric"])] = row
    corrs = sorted({row["corr"] for row in section}, key=_corr_sort)
    models = sorted(labels, key=lambda k: (labels[k], k))
    # grid-toy-causal-quick-test.png; a leaderboard named after its generator (toy-causal.csv)
    # does not say it twice
    stem = _safe_stem(f"{name}-{protocol}" if name == generator
                      else f"{name}-{generator}-{protocol}")
    lines = [f"## {generator} — protocol `{protocol}` (`{name}.csv`)", ""]
    for split, title in README_SPLITS:
        present = [m for m in HEADLINE
                   if any((mk, c, split, m) in cells for mk in models for c in corrs)]
        if not present:
            continue
        lines += [f"### Headline scores, {title}", ""]
        header = ["model", "supervision", "train σ", "seeds",
                  *(f"{m} {metric_info(f'{split}.{m}').arrow}" for m in present)]
        lines += _table(header, [
            [labels[mk], mk[1], _corr_text(c), _seeds_of(cells, mk, c, split, present),
             *(_cell_text(cells.get((mk, c, split, m))) for m in present)]
            for mk in models for c in corrs
            if any((mk, c, split, m) in cells for m in present)])
        plot = _plot(folder, f"{stem}-{split}.png", f"{generator}, {title}", split, present,
                     models, labels, corrs, cells, run_table, generator, protocol)
        lines += ["", f"![{generator} {split} against σ]({PLOTS_FOLDER}/{plot.name})", ""]
    # On the decorrelated split: on the correlated one a unit that knows one concept of a
    # correlated pair knows the other through the data, whatever the encoder does.
    split = "test_decorrelated"
    pairs = sorted({row["metric"] for row in section if row["split"] == split
                    and row["metric"].startswith(PAIR_PREFIX)
                    and metric_info(f"{split}.{row['metric']}").key == "entanglement.<a>-<b>"})
    if pairs:
        lines += ["### Pairwise entanglement of each correlated pair (DAG edge), decorrelated "
                  "split (σ = ∞)", "",
                  "The calibrated pairwise entanglement (0 = the two concepts sit in separate "
                  "units, 1 = shared or rotated codes; active units only) of each edge "
                  "parent-child of the generator's DAG, on images whose concepts are "
                  "independent: on the correlated split a unit that knows one concept of a pair "
                  "knows the other through the data, whatever the encoder does (Träuble et al. "
                  "2021 read entanglement the same way). A concept the code barely encodes, and "
                  "only in units that carry its partner more, scores 1.", ""]
        header = ["model", "supervision", "train σ",
                  *(f"{p[len(PAIR_PREFIX):]} ↓" for p in pairs)]
        lines += _table(header, [
            [labels[mk], mk[1], _corr_text(c),
             *(_cell_text(cells.get((mk, c, split, p))) for p in pairs)]
            for mk in models for c in corrs
            if any((mk, c, split, p) in cells for p in pairs)])
        plot = _plot(folder, f"{stem}-pairs.png",
                     f"{generator}, pairwise entanglement, decorrelated split", split,
                     pairs, models, labels, corrs, cells, run_table, generator, protocol)
        lines += ["", f"![{generator} pairwise entanglement against σ]"
                      f"({PLOTS_FOLDER}/{plot.name})", ""]
    return lines


def _seeds_of(cells, model_key, corr, split, metrics) -> str:
    counts = {int(cells[(model_key, corr, split, m)]["n_seeds"]) for m in metrics
              if (model_key, corr, split, m) in cells}
    return "/".join(str(c) for c in sorted(counts))


def _cell_text(row: Mapping[str, str] | None) -> str:
    if row is None:
        return "–"
    mean, low, high = _float(row["mean"]), _float(row["ci95_low"]), _float(row["ci95_high"])
    half = None if low is None or high is None else (high - low) / 2
    return _fmt(mean, half, int(row["n_seeds"]))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
              for row in rows]
    return lines


def _safe_stem(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", text)[:200]


def sigma_positions(labels: Sequence[str]) -> dict[str, float]:
    """x positions of σ labels on the plots: finite σ evenly spaced in increasing order
    (strongest correlation at the left), ``inf`` one and a half steps further right, behind
    a gap, since ∞ is no point on any scale.

    >>> sigma_positions(["inf", "0.2", "0.7", "0.4"])
    {'0.2': 0.0, '0.4': 1.0, '0.7': 2.0, 'inf': 3.5}
    """
    finite = sorted((label for label in set(labels) if label != "inf"), key=float)
    positions = {label: float(i) for i, label in enumerate(finite)}
    if "inf" in labels:
        positions["inf"] = len(finite) + 0.5 if finite else 0.0
    return positions


def _clip_to_bounds(ax, bounds: tuple[float | None, float | None]) -> None:
    """Keep the y axis inside a metric's registered bounds (plus a 3% margin): an interval
    reaching below 0 for a score in [0, 1] is drawn to the axis' edge."""
    lo, hi = bounds
    if lo is not None and hi is not None and hi - lo <= 1:  # scores in [0, 1]: all of it
        ax.set_ylim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
        return
    bottom, top = ax.get_ylim()
    span = (top - bottom) or 1.0
    if lo is not None:
        bottom = max(bottom, lo - 0.03 * span)
    if hi is not None:
        top = min(top, hi + 0.03 * span)
    ax.set_ylim(bottom, top)


def _plot(folder: Path, file_name: str, title: str, split: str, metrics: Sequence[str],
          models: Sequence[tuple], labels: Mapping[tuple, str], corrs: Sequence[str],
          cells: Mapping[tuple, Mapping[str, str]], run_table: Sequence[Mapping[str, str]],
          generator: str, protocol: str) -> Path:
    """One PNG: a panel per metric, a line per model (mean, 95% band, per-seed points)."""
    fig = plot_figure(title, split, metrics, models, labels, corrs, cells, run_table,
                      generator, protocol)
    out = folder / PLOTS_FOLDER
    out.mkdir(exist_ok=True)
    path = out / file_name
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100,
                                                  metadata={"Software": None}))
    return path


def plot_figure(title: str, split: str, metrics: Sequence[str], models: Sequence[tuple],
                labels: Mapping[tuple, str], corrs: Sequence[str],
                cells: Mapping[tuple, Mapping[str, str]],
                run_table: Sequence[Mapping[str, str]], generator: str, protocol: str):
    """The matplotlib ``Figure`` of `_plot` (cells keyed by (model key, σ label, split,
    metric), rows of ``NAME.csv``; run_table: rows of ``NAME.runs.csv``)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from toybench.metrics.registry import metric_info
    from toybench.scm import corr_label

    positions = sigma_positions(corrs)
    cols = len(metrics) if len(metrics) <= 4 else (3 if len(metrics) <= 6 else 4)
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(3.6 * cols + 1.8, 2.9 * rows + 0.9), layout="constrained")
    fig.suptitle(title, fontsize=11)
    cmap = colormaps["tab10" if len(models) <= 10 else "tab20"]
    colour = {mk: cmap(i % cmap.N) for i, mk in enumerate(models)}
    offsets = {mk: (i - (len(models) - 1) / 2) * min(0.05, 0.4 / max(1, len(models)))
               for i, mk in enumerate(models)}
    seed_points: dict[tuple, list[tuple[float, float]]] = {}
    for run in run_table:
        if run["generator"] != generator or run["protocol"] != protocol:
            continue
        try:
            label = corr_label(float(run["corr"]))  # runs.csv: 0.2, 1 or inf
        except ValueError:
            continue
        mk = (run["model"], run["supervision"], run["setting_hash"])
        for metric in metrics:
            value = _float(run.get(f"{split}.{metric}", ""))
            if value is not None and math.isfinite(value):
                seed_points.setdefault((mk, label, metric), []).append(
                    (positions.get(label, 0.0), value))
    handles = {}
    axes = fig.subplots(rows, cols, squeeze=False)
    for index, metric in enumerate(metrics):
        ax = axes[index // cols][index % cols]
        info = metric_info(f"{split}.{metric}")
        for mk in models:
            points = []  # (σ label, x, mean, low, high, whether the interval is drawn)
            for corr in corrs:
                row = cells.get((mk, corr, split, metric))
                mean = None if row is None else _float(row["mean"])
                if mean is None:
                    continue
                low, high = _float(row["ci95_low"]), _float(row["ci95_high"])
                drawn = int(row["n_seeds"]) >= MIN_SEEDS_FOR_BAND and None not in (low, high)
                points.append((corr, positions[corr] + offsets[mk], mean,
                               mean if low is None else low, mean if high is None else high,
                               drawn))
            if not points:
                continue
            finite = [p for p in points if p[0] != "inf"]
            # a band only where every finite point has its interval; otherwise error bars on
            # the points that have one, and the seed points alone show the others' spread
            banded = finite if len(finite) >= 2 and all(p[5] for p in finite) else []
            (line,) = ax.plot([p[1] for p in finite], [p[2] for p in finite], "-o",
                              color=colour[mk], lw=1.5, ms=4)
            ax.fill_between([p[1] for p in banded], [p[3] for p in banded],
                            [p[4] for p in banded], color=colour[mk], alpha=0.15, lw=0)
            for corr, x, mean, low, high, drawn in points:
                if drawn and (corr == "inf" or not banded):  # on its own: an error bar
                    ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], fmt="o",
                                color=colour[mk], ms=4, capsize=3, lw=1.2)
                elif corr == "inf":
                    ax.plot([x], [mean], "o", color=colour[mk], ms=4)
                seeds = seed_points.get((mk, corr, metric), [])
                ax.scatter([sx + offsets[mk] for sx, _ in seeds], [y for _, y in seeds],
                           s=10, color=colour[mk], alpha=0.55, edgecolors="none")
            handles[labels[mk] + ("" if mk[1] == "none" else f" ({mk[1]})")] = line
        ax.set_title(f"{metric} {info.arrow}", fontsize=9)
        ax.set_xticks([positions[c] for c in corrs], [_corr_text(c) for c in corrs])
        if "inf" in positions and len(positions) > 1:
            ax.axvline(positions["inf"] - 0.75, color="0.6", lw=0.8, ls=":")
        _clip_to_bounds(ax, info.bounds)
        ax.set_xlim(min(positions.values()) - 0.4, max(positions.values()) + 0.4)
        ax.grid(alpha=0.25)
        ax.tick_params(labelsize=8)
        if index + cols >= len(metrics):  # the lowest panel of its column
            ax.set_xlabel("training σ (smaller = stronger correlation)", fontsize=8)
    for index in range(len(metrics), rows * cols):
        axes[index // cols][index % cols].set_visible(False)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right center",
                   fontsize=8, title="model", title_fontsize=8)
    return fig

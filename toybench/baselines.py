"""Load standardized baseline configurations (``baselines/*.toml``) with protocols and overrides.

A baseline file names a model family (a key of ``toybench.models.MODELS``), its model config, its
training config (:class:`toybench.train.TrainConfig`) and named protocols (``quick``,
``standard``) of dotted overrides. Values are checked against the config dataclasses' field types;
nothing is evaluated. The standardized settings follow disentanglement_lib's study (Locatello et
al. 2019, https://arxiv.org/abs/1811.12359): one fixed architecture and optimizer per family, so
that scores compare models rather than tuning effort.

Override syntax (``toybench run --set KEY=VALUE``, repeatable): ``KEY`` is ``model.<field>``,
``train.<field>`` or ``eval.<field>`` (``toybench.evaluate.EvalConfig``; nested dataclass fields
continue with dots); ``VALUE`` is a TOML value
(``3e-4``, ``8``, ``true``, ``[32, 64]``, ``"cyclic"``); a bare word that is not valid TOML is taken
as a string (``--set train.kl_schedule=cyclic``).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toybench.errors import ToybenchError
from toybench.resources import shipped_specs
from toybench.train import TrainConfig

TOP_LEVEL_KEYS = ("name", "description", "family", "model", "train", "eval", "protocols")
SECTIONS = ("model", "train", "eval")


@dataclass(frozen=True)
class Baseline:
    """A fully resolved baseline: file → protocol overrides → ``--set`` overrides.

    Attributes
    ----------
    name, description, family : str
        From the file; ``family`` is a key of ``toybench.models.MODELS``.
    model : dataclass
        The family's frozen config.
    train : TrainConfig
        The training config.
    eval : EvalConfig
        Sizes of the generator-based scores (``toybench.evaluate.EvalConfig``); default
        ``evaluate.QUICK``, since disentanglement_lib's full sizes (~10^6 rendered images per split)
        do not fit the run-time budget of the protocols on 2 cores.
    protocols : dict
        ``{protocol name: {dotted key: value}}`` as written in the file.
    protocol : str or None
        The protocol applied, if any.
    overrides : tuple of (str, Any)
        The ``--set`` overrides applied last, parsed.
    path : str
        The file it came from.
    """

    name: str
    description: str
    family: str
    model: Any
    train: TrainConfig
    eval: Any
    protocols: dict[str, dict[str, Any]]
    protocol: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    path: str = ""


def baseline_names() -> tuple[str, ...]:
    """Names of the shipped baselines (``baselines/*.toml`` stems), sorted."""
    try:
        return tuple(shipped_specs("baselines"))
    except FileNotFoundError:
        return ()


def baseline_summaries() -> list[tuple[str, str]]:
    """``(name, first line of the description)`` of each shipped baseline, for ``toybench list``."""
    out = []
    for name, path in (shipped_specs("baselines") if baseline_names() else {}).items():
        try:
            description = str(tomllib.loads(path.read_text(encoding="utf-8"))
                              .get("description", ""))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise ToybenchError(f"cannot read baseline {path}: {err}") from None
        out.append((name, description.strip().splitlines()[0] if description.strip() else ""))
    return out


def resolve_baseline_path(name_or_path: str | Path) -> Path:
    """A shipped baseline's file by name, or an existing ``.toml`` path.

    Raises
    ------
    ToybenchError
        Unknown name (listing the valid ones) or unreadable path.
    """
    shipped = shipped_specs("baselines") if baseline_names() else {}
    key = str(name_or_path)
    if key in shipped:
        return shipped[key]
    path = Path(key)
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise ToybenchError(f"baseline file {path} does not exist")
        return path
    valid = ", ".join(shipped) or "(none shipped)"
    raise ToybenchError(f"unknown model {key!r}; valid: {valid} (or a path to a .toml file)")


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"section.field=value"`` and parse the value as TOML (bare words → strings).

    Examples
    --------
    >>> parse_override("train.lr=3e-4")
    ('train.lr', 0.0003)
    >>> parse_override("train.kl_schedule=cyclic")
    ('train.kl_schedule', 'cyclic')
    """
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ToybenchError(f"--set expects KEY=VALUE (e.g. train.lr=3e-4), got {text!r}")
    if raw == "":
        raise ToybenchError(f"--set {key}= has no value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def load_baseline(
    name_or_path: str | Path,
    *,
    protocol: str | None = None,
    overrides: Iterable[str | tuple[str, Any]] = (),
) -> Baseline:
    """Load a baseline, apply a protocol and ``--set`` overrides, validate every value.

    Parameters
    ----------
    name_or_path : str or Path
        A shipped baseline name (``vae``, ``csvae``, ...) or a path to a ``.toml`` file.
    protocol : str, optional
        A protocol of the file (``quick``, ``standard``).
    overrides : iterable of str or (key, value)
        ``"train.lr=3e-4"`` strings (see :func:`parse_override`) or parsed pairs, applied last.

    Returns
    -------
    Baseline

    Raises
    ------
    ToybenchError
        Unknown baseline, protocol, section or field (naming the allowed ones), or a value of
        the wrong type.
    """
    from toybench.evaluate import QUICK, EvalConfig
    from toybench.models import MODELS

    path = resolve_baseline_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ToybenchError(f"cannot read baseline {path}: {err}") from None
    _check_keys(raw, TOP_LEVEL_KEYS, f"baseline {path.name}", required=("family",))
    family = raw["family"]
    if family not in MODELS:
        raise ToybenchError(f"baseline {path.name}: unknown family {family!r}; valid: "
                            f"{', '.join(MODELS)}")
    model_cls = MODELS[family][0]
    protocols = {str(k): _flatten(_table(v, f"protocols.{k}"), "")
                 for k, v in _table(raw.get("protocols", {}), "protocols").items()}
    parsed = tuple(parse_override(o) if isinstance(o, str) else tuple(o) for o in overrides)
    if protocol is not None and protocol not in protocols:
        raise ToybenchError(f"baseline {path.stem} has no protocol {protocol!r}; valid: "
                            f"{', '.join(protocols) or '(none)'}")
    values = {
        "model": _flatten(_table(raw.get("model", {}), "model"), ""),
        "train": _flatten(_table(raw.get("train", {}), "train"), ""),
        "eval": {**dataclasses.asdict(QUICK), **_flatten(_table(raw.get("eval", {}), "eval"), "")},
    }
    layers = [protocols[protocol].items()] if protocol is not None else []
    for key, value in [item for layer in layers for item in layer] + list(parsed):
        section, _, field_path = key.partition(".")
        if section not in SECTIONS or not field_path:
            raise ToybenchError(f"unknown override key {key!r}; keys are model.<field>, "
                                f"train.<field> or eval.<field>")
        values[section][field_path] = value
    classes = {"model": model_cls, "train": TrainConfig, "eval": EvalConfig}
    built = {s: build_config(classes[s], values[s], s) for s in SECTIONS}
    return Baseline(
        name=str(raw.get("name", path.stem)), description=str(raw.get("description", "")),
        family=family, model=built["model"], train=built["train"], eval=built["eval"],
        protocols=protocols,
        protocol=protocol, overrides=parsed, path=str(path),
    )


def build_config(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    """Build frozen dataclass ``cls`` from flat dotted ``values``, type-checking every field.

    Parameters
    ----------
    cls : type
        A dataclass; fields that are dataclasses themselves take ``field.sub`` keys.
    values : mapping
        ``{"field": value, "nested.field": value}``.
    prefix : str
        Name used in messages (``"model"``, ``"train"``).

    Raises
    ------
    ToybenchError
        Unknown field (naming the allowed ones), wrong type, or a value the dataclass rejects.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if head not in fields:
            raise ToybenchError(f"unknown key {prefix}.{key}; allowed {prefix} keys: "
                                f"{', '.join(fields)}")
        hint = hints[head]
        if rest:
            if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
                raise ToybenchError(f"unknown key {prefix}.{key}: {prefix}.{head} has no "
                                    f"sub-keys")
            nested.setdefault(head, {})[rest] = value
        else:
            kwargs[head] = _coerce(value, hint, f"{prefix}.{head}")
    for head, sub in nested.items():
        hint = hints[head]
        base = kwargs.get(head)
        merged = ({k: v for k, v in dataclasses.asdict(base).items()} if base is not None
                  else {})
        merged.update(sub)
        kwargs[head] = build_config(hint, merged, f"{prefix}.{head}")
    try:
        return cls(**kwargs)
    except ToybenchError:
        raise
    except (TypeError, ValueError) as err:
        raise ToybenchError(f"invalid {prefix} config: {err}") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against type ``hint`` (int → float allowed, lists → tuples)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option, key)
            except ToybenchError:
                continue
        raise _type_error(key, value, hint)
    if origin is typing.Literal:
        if value in args:
            return value
        raise ToybenchError(f"{key}={value!r}; valid: {', '.join(map(str, args))}")
    if hint is type(None):
        if value is None:
            return None
        raise _type_error(key, value, hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _type_error(key, value, hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ToybenchError(f"{key} needs {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in
                     enumerate(zip(args or [Any] * len(value), value, strict=True)))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, value, hint)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _type_error(key, value, hint)
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _type_error(key, value, hint)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, value, hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, Mapping):
            return build_config(hint, _flatten(value, ""), key)
        raise _type_error(key, value, hint)
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _type_error(key, value, hint)
    return value


def _type_error(key: str, value: Any, hint: Any) -> ToybenchError:
    name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    return ToybenchError(f"{key} expects {name}, got {value!r} ({type(value).__name__})")


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ToybenchError(f"[{where}] must be a table")
    return value


def _flatten(table: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (TOML dotted keys and sub-tables are the same)."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, full))
        else:
            out[full] = value
    return out


def _check_keys(raw: Mapping[str, Any], allowed: Iterable[str], where: str,
                required: Iterable[str] = ()) -> None:
    allowed = tuple(allowed)
    for key in raw:
        if key not in allowed:
            raise ToybenchError(f"{where}: unknown key {key!r}; allowed: {', '.join(allowed)}")
    for key in required:
        if key not in raw:
            raise ToybenchError(f"{where}: missing required key {key!r}")

"""Load the standardized baseline configurations (``baselines/*.toml``): protocols, ``extends``,
derived values and ``--set`` overrides.

A baseline file names a model family (a key of ``toybench.models.MODELS``) and holds only what is
its own: its ``[model]`` table, any ``[train]`` keys that differ from the shared ones, and
optionally ``extends`` (start from another baseline: a shipped name or a file next to this one),
``[derived]`` values and extra ``[protocols.<name>]``. What every baseline shares lives once in
``baselines/protocols.toml``: the ``[train]`` defaults and the protocols ``quick`` and ``standard``
(tables of dotted overrides). That file is not a baseline: ``protocols`` is a reserved name, left
out of ``baseline_names()`` and ``toybench list``. Values are checked against the config
dataclasses' field types; nothing is evaluated. The standardized settings follow
disentanglement_lib's study (Locatello et al. 2019, https://arxiv.org/abs/1811.12359): one fixed
architecture and optimizer per family, so that scores compare models rather than tuning effort.

Resolution, later layers winning:

1. the config dataclasses' defaults (``[eval]``: ``toybench.evaluate.QUICK``);
2. ``[train]`` of ``baselines/protocols.toml``;
3. the baseline's own tables, after its ``extends`` chain (a child's keys replace its base's, table
   by table; ``name`` and ``description`` are a file's own and never inherited);
4. the protocol: the shared table merged with the chain's own ``[protocols.<name>]``;
5. ``[derived]``: ``"model.dataset_size" = "train.n_train"`` copies the resolved source value
   (β-TCVAE's N follows the training-set size under every protocol and ``--set``); a file or
   protocol that sets a derived key is an error;
6. ``--set`` overrides (an explicit ``--set`` of a derived key wins over its derivation).

A family without gradient training (``Model.trainable`` False: PCA) takes only the data sizes
(``train.n_train``, ``train.n_test``) from ``baselines/protocols.toml`` (layers 2 and 4); the
optimisation keys there are meaningless for it and stay at ``TrainConfig``'s defaults.

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

from toybench.configs import TrainConfig
from toybench.errors import ToybenchError
from toybench.resources import shipped_specs
from toybench.specs import check_keys, read_toml, resolve_extends, take

TOP_LEVEL_KEYS = ("name", "description", "family", "extends", "model", "train", "eval",
                  "protocols", "derived")
SECTIONS = ("model", "train", "eval")
OWN_KEYS = ("name", "description")  # a file's own: never inherited through ``extends``
PROTOCOLS_NAME = "protocols"  # baselines/protocols.toml: shared [train] and protocols
PROTOCOLS_KEYS = ("train", "protocols")
DATA_KEYS = ("n_train", "n_test")  # what a non-trainable family takes from protocols.toml


@dataclass(frozen=True)
class Baseline:
    """A fully resolved baseline: shared defaults → file chain → protocol → derived → ``--set``.

    Attributes
    ----------
    name, description, family : str
        ``name`` and ``description`` from the file itself (``name`` defaults to the file's stem);
        ``family`` (possibly inherited through ``extends``) is a key of ``toybench.models.MODELS``.
    model : dataclass
        The family's frozen config.
    train : TrainConfig
        The training config.
    eval : EvalConfig
        Sizes of the generator-based scores (``toybench.evaluate.EvalConfig``); default
        ``evaluate.QUICK``, since disentanglement_lib's full sizes (~10^6 rendered images per split)
        do not fit the run-time budget of the protocols on 2 cores.
    protocols : dict
        ``{protocol name: {dotted key: value}}`` available to this baseline: the shared ones of
        ``baselines/protocols.toml`` merged with the file chain's own.
    protocol : str or None
        The protocol applied, if any.
    overrides : tuple of (str, Any)
        The ``--set`` overrides applied last, parsed.
    path : str
        The file it came from (the leaf of its ``extends`` chain).
    derived : dict
        ``{dotted target: dotted source}`` of its ``[derived]`` table.
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
    derived: dict[str, str] = dataclasses.field(default_factory=dict)


def shipped_baselines() -> dict[str, Path]:
    """``{name: path}`` of the shipped baselines, sorted (``baselines/protocols.toml`` excluded)."""
    try:
        shipped = shipped_specs("baselines")
    except FileNotFoundError:
        return {}
    return {name: path for name, path in sorted(shipped.items()) if name != PROTOCOLS_NAME}


def baseline_names() -> tuple[str, ...]:
    """Names of the shipped baselines (``baselines/*.toml`` stems but ``protocols``), sorted."""
    return tuple(shipped_baselines())


def baseline_summaries() -> list[tuple[str, str]]:
    """``(name, first line of the description)`` of each shipped baseline, for ``toybench list``."""
    out = []
    for name, path in shipped_baselines().items():
        description = str(read_toml(path).get("description", "")).strip()
        out.append((name, description.splitlines()[0] if description else ""))
    return out


def resolve_baseline_path(name_or_path: str | Path) -> Path:
    """A shipped baseline's file by name, or an existing ``.toml`` path.

    Raises
    ------
    ToybenchError
        Unknown name (listing the valid ones), a missing file, or a name the OS cannot look up
        (e.g. longer than its file-name limit).
    """
    shipped = shipped_baselines()
    key = str(name_or_path)
    if key in shipped:
        return shipped[key]
    valid = f"valid: {', '.join(shipped) or '(none shipped)'} (or a path to a .toml file)"
    path = Path(key)
    try:
        is_file = path.is_file()
    except OSError as err:  # ENAMETOOLONG and the like: not a name, not a usable path
        shown = repr(key) if len(key) <= 60 else f"{key[:40]!r}... ({len(key)} characters)"
        raise ToybenchError(f"unknown model {shown}: not a shipped baseline and not a usable "
                            f"path ({err.strerror or type(err).__name__}); {valid}") from None
    if path.suffix == ".toml" or is_file:
        if not is_file:
            raise ToybenchError(f"baseline file {path} does not exist")
        return path
    raise ToybenchError(f"unknown model {key!r}; {valid}")


def read_baseline_spec(path: Path) -> dict[str, Any]:
    """The baseline file at ``path`` merged over its ``extends`` chain (tables flattened to dotted
    keys, ``[protocols]`` as ``{name: {dotted key: value}}``), validated for shape and keys."""
    where = _where(path)
    spec = _normalised(read_toml(path), where)
    # check: each base is validated by normalising it (the result is dropped; _merge redoes it).
    spec = resolve_extends(spec, path, where, kind="baselines", shipped=shipped_baselines(),
                           merge=_merge, check=_normalised)
    check_keys(spec, where, required=("family",), optional=TOP_LEVEL_KEYS)
    return spec


def shared_settings() -> dict[str, Any]:
    """``baselines/protocols.toml``: ``{"train": {field: value}, "protocols": {name: {...}}}``.

    Raises
    ------
    ToybenchError
        If the file is missing or malformed.
    """
    try:
        path = shipped_specs("baselines").get(PROTOCOLS_NAME)
    except FileNotFoundError:
        path = None
    if path is None:
        raise ToybenchError("toybench is installed without baselines/protocols.toml (the shared "
                            "training defaults and protocols)")
    where = _where(path)
    raw = read_toml(path)
    check_keys(raw, where, optional=PROTOCOLS_KEYS)
    shared = _normalised(raw, where)
    return {"train": shared.get("train", {}), "protocols": shared.get("protocols", {})}


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
    """Load a baseline, apply a protocol, derived values and ``--set`` overrides; validate all.

    Parameters
    ----------
    name_or_path : str or Path
        A shipped baseline name (``vae``, ``csvae``, ...) or a path to a ``.toml`` file.
    protocol : str, optional
        A protocol (``quick``, ``standard`` or one the file chain defines).
    overrides : iterable of str or (key, value)
        ``"train.lr=3e-4"`` strings (see :func:`parse_override`) or parsed pairs, applied last.

    Returns
    -------
    Baseline

    Raises
    ------
    ToybenchError
        Unknown baseline, protocol, section or field (naming the allowed ones), a value of the
        wrong type, or a bad ``extends`` / ``[derived]`` entry.
    """
    from toybench.evaluate import QUICK, EvalConfig
    from toybench.models import MODELS

    path = resolve_baseline_path(name_or_path)
    where = _where(path)
    spec = read_baseline_spec(path)
    family = take(spec, "family", str, where)
    if family not in MODELS:
        raise ToybenchError(f"baseline {path.name}: unknown family {family!r}; valid: "
                            f"{', '.join(MODELS)}")
    entry = MODELS[family]
    shared = shared_settings()
    if entry.trainable:
        shared_train, shared_protocols = shared["train"], shared["protocols"]
    else:  # no gradient training: only the data sizes are meaningful
        shared_train = {k: v for k, v in shared["train"].items() if k in DATA_KEYS}
        data_keys = {f"train.{key}" for key in DATA_KEYS}
        shared_protocols = {name: {k: v for k, v in table.items() if k in data_keys}
                            for name, table in shared["protocols"].items()}
    own_protocols = spec.get("protocols", {})
    protocols = {name: {**shared_protocols.get(name, {}), **own_protocols.get(name, {})}
                 for name in {**shared_protocols, **own_protocols}}
    parsed = tuple(parse_override(o) if isinstance(o, str) else tuple(o) for o in overrides)
    if protocol is not None and protocol not in protocols:
        raise ToybenchError(f"baseline {path.stem} has no protocol {protocol!r}; valid: "
                            f"{', '.join(protocols) or '(none)'}")
    values = {
        "model": dict(spec.get("model", {})),
        "train": {**shared_train, **spec.get("train", {})},
        "eval": {**dataclasses.asdict(QUICK), **spec.get("eval", {})},
    }
    chosen = protocols[protocol] if protocol is not None else {}
    _apply(values, chosen.items())
    set_in_files = {f"{s}.{k}" for s in SECTIONS for k in spec.get(s, {})} | set(chosen)
    derived = _derived(spec.get("derived", {}), set_in_files, where)
    _apply(values, parsed)
    classes = {"model": entry.config, "train": TrainConfig, "eval": EvalConfig}
    built = {s: build_config(classes[s], values[s], s) for s in SECTIONS}
    explicit = {key for key, _ in parsed}
    pending = {t: src for t, src in derived.items() if t not in explicit}
    if pending:
        for target, source in pending.items():
            section, _, field_path = target.partition(".")
            values[section][field_path] = _field_value(built, source, where)
        built = {s: build_config(classes[s], values[s], s) for s in SECTIONS}
    return Baseline(
        name=take(spec, "name", str, where, path.stem),
        description=take(spec, "description", str, where, ""),
        family=family, model=built["model"], train=built["train"], eval=built["eval"],
        protocols=protocols, protocol=protocol, overrides=parsed, path=str(path),
        derived=derived,
    )


def protocol_configs(protocol: str) -> tuple[TrainConfig, Any]:
    """``(TrainConfig, EvalConfig)`` of a shared protocol alone, without any baseline's values:
    what an external encoder scored under ``protocol`` gets (its split and evaluation sizes).

    Raises
    ------
    ToybenchError
        Unknown protocol (naming the valid ones).
    """
    from toybench.evaluate import QUICK, EvalConfig

    shared = shared_settings()
    if protocol not in shared["protocols"]:
        raise ToybenchError(f"unknown protocol {protocol!r}; valid: "
                            f"{', '.join(shared['protocols'])}")
    values = {"model": {}, "train": dict(shared["train"]), "eval": dataclasses.asdict(QUICK)}
    _apply(values, shared["protocols"][protocol].items())
    return (build_config(TrainConfig, values["train"], "train"),
            build_config(EvalConfig, values["eval"], "eval"))


def setting_summaries() -> list[tuple[str, str]]:
    """``(key, "type: default")`` of every ``--set`` key, for ``toybench list``: the ``train.*``
    and ``eval.*`` fields, then the ``model.*`` fields with each family's default. These are the
    config dataclasses' defaults; ``baselines/protocols.toml`` and the baseline files set their
    own values over them (``config.json`` of a run shows what it used)."""
    from toybench.evaluate import QUICK
    from toybench.models import MODELS

    def fields(cls: type) -> list[tuple[str, str]]:
        hints = typing.get_type_hints(cls)
        return [(f.name, getattr(hints[f.name], "__name__", str(hints[f.name])))
                for f in dataclasses.fields(cls) if f.init]

    lines = [(f"train.{name}", f"{kind}: {getattr(TrainConfig(), name)!r}")
             for name, kind in fields(TrainConfig)]
    lines += [(f"eval.{name}", f"{kind}: {getattr(QUICK, name)!r}")
              for name, kind in fields(type(QUICK))]
    model: dict[str, tuple[str, list[str]]] = {}
    for family, entry in MODELS.items():
        defaults = entry.config()
        for name, kind in fields(entry.config):
            model.setdefault(name, (kind, []))[1].append(
                f"{family} {getattr(defaults, name)!r}")
    lines += [(f"model.{name}", f"{kind}: {', '.join(parts)}")
              for name, (kind, parts) in model.items()]
    return lines


def _apply(values: dict[str, dict[str, Any]], items: Iterable[tuple[str, Any]]) -> None:
    """Set dotted ``section.field`` keys in ``values`` (protocol and ``--set`` layers)."""
    for key, value in items:
        section, _, field_path = key.partition(".")
        if section not in SECTIONS or not field_path:
            raise ToybenchError(f"unknown override key {key!r}; keys are model.<field>, "
                                f"train.<field> or eval.<field>")
        values[section][field_path] = value


def _derived(table: Mapping[str, Any], set_in_files: set[str], where: str) -> dict[str, str]:
    """Check a ``[derived]`` table: dotted targets and source names; a target that the file chain
    or the protocol also sets (``set_in_files``) is a contradiction."""
    derived: dict[str, str] = {}
    for target, source in table.items():
        t_section, _, t_field = target.partition(".")
        if not isinstance(source, str):
            raise ToybenchError(f"{where} [derived]: {target} must name a key such as "
                                f'"train.n_train", got {source!r}')
        s_section, _, s_field = source.partition(".")
        for section, field_path, key in ((t_section, t_field, target),
                                         (s_section, s_field, source)):
            if section not in SECTIONS or not field_path:
                raise ToybenchError(f"{where} [derived]: {key!r} is not a model.<field>, "
                                    f"train.<field> or eval.<field> key")
        if target in set_in_files:
            raise ToybenchError(f"{where}: {target} is derived from {source} ([derived]) and "
                                f"also set; set {source} instead (or --set {target}=...)")
        derived[target] = source
    return derived


def _field_value(built: Mapping[str, Any], key: str, where: str) -> Any:
    """The resolved value of dotted ``key`` (``"train.n_train"``) in the built configs."""
    section, _, field_path = key.partition(".")
    value: Any = dataclasses.asdict(built[section])
    for part in field_path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ToybenchError(f"{where} [derived]: unknown source key {key}; allowed "
                                f"{section} keys: {', '.join(dataclasses.asdict(built[section]))}")
        value = value[part]
    return value


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


def _where(path: Path) -> str:
    """How messages name a baseline file: ``baselines/<name>.toml`` when shipped, else the path."""
    try:
        shipped = shipped_specs("baselines")
    except FileNotFoundError:
        shipped = {}
    return f"baselines/{path.name}" if shipped.get(path.stem) == path else str(path)


def _normalised(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One file's tables checked and flattened: sections and ``[derived]`` to dotted keys,
    ``[protocols]`` to ``{name: {dotted key: value}}``; unknown top-level keys refused."""
    check_keys(raw, where, optional=TOP_LEVEL_KEYS)
    spec = dict(raw)
    for key in (*SECTIONS, "derived"):
        if key in spec:
            spec[key] = _flatten(take(raw, key, dict, where), "")
    if "protocols" in spec:
        table = take(raw, "protocols", dict, where)
        spec["protocols"] = {str(name): _flatten(take(table, name, dict, f"{where} [protocols]"),
                                                 "")
                             for name in table}
    return spec


def _merge(base: dict[str, Any], child: dict[str, Any], where: str) -> dict[str, Any]:
    """``child`` (normalised) over ``base`` (checked when read): tables merge key by key, protocols
    per protocol; ``name`` and ``description`` are not inherited."""
    base = _normalised(base, where)
    merged = {k: v for k, v in base.items() if k not in OWN_KEYS}
    for key, value in child.items():
        if key in (*SECTIONS, "derived"):
            merged[key] = {**base.get(key, {}), **value}
        elif key == "protocols":
            protocols = dict(base.get("protocols", {}))
            for name, table in value.items():
                protocols[name] = {**protocols.get(name, {}), **table}
            merged[key] = protocols
        else:
            merged[key] = value
    return merged

"""Load and strictly validate the declarative generator specs (``generators/*.toml``).

A generator spec is a short TOML file: a description, a renderer, the concepts (levels and a doc
each) and, per non-root concept, a mechanism (``band`` of Träuble et al. 2021,
https://arxiv.org/abs/2006.07886; ``table``; ``function``; or ``root`` with given probabilities).
Files are parsed with ``tomllib`` and never evaluated. Every unknown key, wrong type, unknown
concept, cycle or empty level set is a ``ToybenchError`` naming the file, the key and what is
allowed. The shared helpers (``read_toml``, ``check_keys``, ``take``, ``resolve_extends``) serve
other spec kinds too (``toybench/baselines.py``).

Spec layout (see ``generators/*.toml`` for complete examples)::

    description = "one line, then detail"   # required
    renderer = "sprites"                    # a key of toybench.render.RENDERERS
    extends = "dsprites"                    # optional: start from a shipped spec (or a path)

    [render]
    size = 64                               # one of the renderer's sizes (default: the smallest)

    [concepts.shape]                        # in the order the renderer lists its inputs or any
    kind = "categorical"                    # "categorical" | "ordinal"
    levels = ["square", "ellipse", "heart"] # categorical: level names (renderer order)
    u = [0.0, 0.5, 1.0]                     # optional value table for the band (default i/(L-1))
    doc = "what the concept means"

    [concepts.scale]
    kind = "ordinal"
    linspace = [0.5, 1.0, 6]                # start, stop, number of levels (stop included)
    # values = [0.5, 0.6, ...]              # ... or the levels' physical values
    doc = "..."

    [mechanisms.pos_y]                      # the child; its incoming edges come from `parents`
    type = "band"                           # "band" | "table" | "function" | "root"
    parents = ["pos_x"]
    weights = [1.0]                         # α per parent (band; default 1 / number of parents)
    bias = 0.0                              # band only
    sigma = 0.3                             # optional: fixes σ of this child's edges (else --corr)
    parent_u = { shape = [0.0, 1.0, 0.5] }  # band only: value tables for categorical parents
    # table = [[...], ...]                  # table: one row per parent combination (row-major)
    # function = "pendulum_shadow_length"   # function: a key of toybench.scm.FUNCTIONS
    # probs = [...]                         # root: level probabilities (default uniform)

With ``extends``, the spec starts from another spec: ``description``/``renderer`` are replaced,
``[render]`` keys merged, and each ``[concepts.X]`` / ``[mechanisms.X]`` table replaces the base's
table of the same name (``type = "root"`` removes a base mechanism's edges).
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from toybench.errors import ToybenchError
from toybench.io import short_path
from toybench.resources import shipped_specs
from toybench.scm import (
    FUNCTIONS,
    KINDS,
    SCM,
    Band,
    Concept,
    Function,
    Generator,
    Root,
    Table,
    parse_corr,
)

_MISSING = object()

#: Limits checked before any heavy work, so an absurd spec fails fast with a short message.
MAX_SPEC_BYTES = 1 << 20  # a spec file (and each file it extends) is at most 1 MiB
MAX_CONCEPTS = 64  # concepts (and so mechanisms) per spec; renderers take at most 6
MAX_LEVELS = 10_000  # levels per concept
#: Characters of user-given text (names, values) and of name lists shown in one message.
SHOW_CHARS, LIST_CHARS = 60, 200


def shown(value: Any, limit: int = SHOW_CHARS, *, quote: bool = True) -> str:
    """``repr(value)`` (or ``str`` without ``quote``) for a message, cut to ``limit``
    characters: user text can be megabytes long."""
    text = repr(value) if quote else str(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def listing(names: Iterable[Any], limit: int = LIST_CHARS) -> str:
    """``a, b, c`` for a message; after ``limit`` characters the rest is ``… (N more)``."""
    names = list(names)
    parts: list[str] = []
    used = 0
    for k, raw in enumerate(names):
        name = shown(raw, quote=False)
        if used + len(name) > limit and parts:
            return f"{', '.join(parts)}, … ({len(names) - k} more)"
        parts.append(name)
        used += len(name) + 2
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------------
# Strict TOML helpers (shared by every spec kind)
# --------------------------------------------------------------------------------------------------
def read_toml(path: str | Path, *, max_bytes: int = MAX_SPEC_BYTES) -> dict[str, Any]:
    """Parse a TOML file with ``tomllib``; unreadable or malformed files raise ``ToybenchError``.

    Parameters
    ----------
    path : str or Path
    max_bytes : int
        Larger files are refused before parsing (parsing tens of megabytes takes a minute).

    Returns
    -------
    dict
        The parsed document.
    """
    path = Path(path)
    where = short_path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise ToybenchError(f"{where}: no such file") from None
    except OSError as err:
        raise ToybenchError(f"{where}: cannot read ({err.strerror or err})") from None
    if len(raw) > max_bytes:
        raise ToybenchError(
            f"{where}: too large for a spec file (over {max_bytes / 2**20:g} MiB; "
            "the shipped specs are a few kB)"
        )
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ToybenchError(f"{where}: invalid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ToybenchError(f"{where}: not a UTF-8 text file") from None


def check_keys(
    table: Mapping[str, Any],
    where: str,
    *,
    required: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> None:
    """Refuse unknown and missing keys, naming them and the allowed ones.

    Parameters
    ----------
    table : Mapping
        The TOML table to check.
    where : str
        Location for messages, e.g. ``"generators/x.toml [concepts.size]"``.
    required, optional : iterable of str
        The keys allowed.
    """
    required, optional = tuple(required), tuple(optional)
    allowed = required + optional
    if not isinstance(table, Mapping):
        raise ToybenchError(f"{where}: expected a table, got {_type_name(table)}")
    for key in table:
        if key not in allowed:
            raise ToybenchError(
                f"{where}: unknown key {shown(key)}; "
                f"allowed: {listing(sorted(set(allowed))) or 'none'}"
            )
    for key in required:
        if key not in table:
            raise ToybenchError(f"{where}: missing required key {key!r}")


def take(
    table: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: str,
    default: Any = _MISSING,
) -> Any:
    """``table[key]`` checked against ``kind`` (int accepted for float; bool never a number).

    Raises ``ToybenchError`` naming the key and the expected type when missing (without a
    default) or of the wrong type.
    """
    if key not in table:
        if default is _MISSING:
            raise ToybenchError(f"{where}: missing required key {key!r}")
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise ToybenchError(f"{where}: key {key!r} must be {expected}, got {_type_name(value)}")
    return value


_TYPE_NAMES = {
    str: "a string",
    float: "a number",
    int: "an integer",
    bool: "true/false",
    list: "an array",
    dict: "a table",
}


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _numbers(table: Mapping[str, Any], key: str, where: str, *, default: Any = _MISSING):
    """A list of finite numbers (ints accepted) as a float64 array, or ``default``."""
    values = take(table, key, list, where, default)
    if values is default:
        return default
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ToybenchError(f"{where}: key {key!r} must be an array of numbers")
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ToybenchError(f"{where}: key {key!r} must hold finite numbers")
    return arr


def canonical_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no whitespace): a stable content id."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------------
# Generator specs
# --------------------------------------------------------------------------------------------------
TOP_KEYS = {
    "required": ("description", "renderer", "concepts"),
    "optional": ("extends", "render", "mechanisms"),
}
RENDER_KEYS = ("size",)
CONCEPT_KEYS = {
    "categorical": ("kind", "levels", "u", "doc"),
    "ordinal": ("kind", "values", "linspace", "doc"),
}
MECHANISM_KEYS = {
    "root": ("type", "probs"),
    "band": ("type", "parents", "weights", "bias", "sigma", "parent_u"),
    "table": ("type", "parents", "table"),
    "function": ("type", "parents", "function", "sigma"),
}


def generator_names() -> tuple[str, ...]:
    """Names of the shipped generator specs, sorted."""
    return tuple(sorted(shipped_specs("generators")))


GENERATOR_NAMES: tuple[str, ...] = generator_names()


def resolve_spec_path(name_or_path: str | Path) -> tuple[str, Path]:
    """``(name, path)`` of a shipped generator name or of a user's ``.toml`` path.

    Raises
    ------
    ToybenchError
        For an unknown name (listing the valid ones) or a missing file.
    """
    text = str(name_or_path)
    shipped = shipped_specs("generators")
    if text in shipped:
        return text, shipped[text]
    path = Path(text)
    try:
        exists = path.exists()
    except OSError:  # e.g. a name longer than the file system allows: not a file
        exists = False
    if path.suffix == ".toml" or exists or "/" in text or "\\" in text:
        try:
            is_file = path.is_file()
        except OSError as err:
            raise ToybenchError(
                f"{short_path(path)}: not a readable spec file ({err.strerror or err})"
            ) from None
        if not is_file:
            raise ToybenchError(f"{short_path(path)}: no such spec file")
        return path.stem, path
    raise ToybenchError(
        f"unknown generator {shown(text)}; valid: {', '.join(sorted(shipped))} "
        "(or a path to a .toml spec)"
    )


def read_generator_spec(name_or_path: str | Path) -> tuple[str, str, dict[str, Any]]:
    """Read a spec and resolve its ``extends`` chain: ``(name, where, merged spec dict)``."""
    name, path = resolve_spec_path(name_or_path)
    where = _display(path)
    spec = read_toml(path)
    keys = TOP_KEYS["required"] + TOP_KEYS["optional"]
    check_keys(spec, where, optional=keys)
    spec = resolve_extends(spec, path, where, kind="generators", merge=_merge,
                           check=lambda base, base_where: check_keys(base, base_where,
                                                                     optional=keys))
    check_keys(spec, where, required=TOP_KEYS["required"], optional=TOP_KEYS["optional"])
    return name, where, spec


def resolve_extends(
    spec: dict[str, Any],
    path: Path,
    where: str,
    *,
    kind: str,
    merge: Callable[[dict[str, Any], dict[str, Any], str], dict[str, Any]],
    check: Callable[[dict[str, Any], str], None],
    shipped: Mapping[str, Path] | None = None,
) -> dict[str, Any]:
    """Follow the ``extends`` chain of ``spec`` (read from ``path``, named ``where`` in messages).

    Each ``extends`` names a shipped spec of ``kind`` (``"generators"``, ``"baselines"``; or a key
    of ``shipped``) or a file next to the spec that names it. Each base is read, ``check(base,
    base_where)`` validates it, and ``merge(base, child, where)`` lays the child over it. A loop is
    an error. Returns the merged spec, without ``extends``.
    """
    shipped = shipped_specs(kind) if shipped is None else shipped
    chain = [where]
    while "extends" in spec:
        base_ref = take(spec, "extends", str, where)
        if base_ref in shipped:
            base_path = shipped[base_ref]
        elif _is_file(path.parent / base_ref):
            base_path = path.parent / base_ref
        else:
            raise ToybenchError(
                f"{where}: extends = {shown(base_ref)} is neither a shipped "
                f"{kind.rstrip('s')} ({', '.join(sorted(shipped))}) nor a file next to the spec"
            )
        base_where = _display(base_path, kind)
        if base_where in chain:
            raise ToybenchError(f"{where}: 'extends' loops: {' -> '.join(chain + [base_where])}")
        chain.append(base_where)
        base = read_toml(base_path)
        check(base, base_where)
        spec = merge(base, {k: v for k, v in spec.items() if k != "extends"}, where)
        path, where = base_path, base_where  # a further 'extends' is relative to the base
    return spec


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for names the OS refuses (e.g. longer than its name limit)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _merge(base: dict[str, Any], child: dict[str, Any], where: str) -> dict[str, Any]:
    merged = dict(base)
    for key, value in child.items():
        if key in ("render", "concepts", "mechanisms"):
            take(child, key, dict, where)
            merged[key] = {**base.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def _display(path: Path, kind: str = "generators") -> str:
    shipped = shipped_specs(kind)
    if shipped.get(path.stem) == path:
        return f"{kind}/{path.name}"
    return short_path(path)


def load_generator(name_or_path: str | Path) -> Generator:
    """Build the ``Generator`` of a shipped spec name or of a path to a user's ``.toml`` spec.

    Parameters
    ----------
    name_or_path : str or Path
        A name in ``GENERATOR_NAMES`` or a path to a spec file.

    Returns
    -------
    Generator

    Raises
    ------
    ToybenchError
        For an unknown name (listing the valid ones) or any invalid spec content (naming the file,
        the key and what is allowed).
    """
    name, where, spec = read_generator_spec(name_or_path)
    return build_generator(name, spec, where)


def build_generator(name: str, spec: Mapping[str, Any], where: str) -> Generator:
    """Validate a (merged) spec dict and build its ``Generator``; ``where`` names the file."""
    from toybench.render import RENDERERS

    description = take(spec, "description", str, where).strip()
    if not description:
        raise ToybenchError(f"{where}: 'description' must not be empty")
    renderer_name = take(spec, "renderer", str, where)
    if renderer_name not in RENDERERS:
        raise ToybenchError(
            f"{where}: unknown renderer {shown(renderer_name)}; valid: {', '.join(RENDERERS)}"
        )
    renderer = RENDERERS[renderer_name]
    render = take(spec, "render", dict, where, {})
    check_keys(render, f"{where} [render]", optional=RENDER_KEYS)
    size = take(render, "size", int, f"{where} [render]", min(renderer.sizes))
    if size not in renderer.sizes:
        raise ToybenchError(
            f"{where} [render]: size {size} not supported by renderer {renderer_name!r}; "
            f"allowed: {', '.join(map(str, renderer.sizes))}"
        )

    concept_tables = take(spec, "concepts", dict, where)
    mechanism_tables = take(spec, "mechanisms", dict, where, {})
    for key, tables in (("concepts", concept_tables), ("mechanisms", mechanism_tables)):
        if len(tables) > MAX_CONCEPTS:  # before any per-concept work
            raise ToybenchError(
                f"{where}: {len(tables):,} [{key}.*] tables; a spec has at most {MAX_CONCEPTS} "
                f"(renderer {renderer_name!r} takes {len(renderer.inputs)}: "
                f"{', '.join(renderer.inputs)})"
            )
    _match_renderer_inputs(tuple(concept_tables), renderer, where)
    concepts = tuple(
        _concept(cname, table, f"{where} [concepts.{cname}]")
        for cname, table in concept_tables.items()
    )
    _match_renderer(concepts, renderer, where)
    names = tuple(c.name for c in concepts)

    mechanisms = {}
    for child, table in mechanism_tables.items():
        mwhere = f"{where} [mechanisms.{shown(child, quote=False)}]"
        if child not in names:
            raise ToybenchError(
                f"{mwhere}: unknown concept {shown(child)}; known: {listing(names)}"
            )
        mechanisms[child] = _mechanism(table, names, mwhere)
    try:
        scm = SCM(concepts, mechanisms)
    except ToybenchError as err:
        raise ToybenchError(f"{where}: {err}") from None
    return Generator(
        name=name,
        description=description,
        scm=scm,
        renderer=renderer_name,
        size=size,
        spec_hash=canonical_hash(spec),
        source=where,
    )


def _concept(name: str, table: Any, where: str) -> Concept:
    if not isinstance(table, Mapping):
        raise ToybenchError(f"{where}: expected a table, got {_type_name(table)}")
    kind = take(table, "kind", str, where)
    if kind not in KINDS:
        raise ToybenchError(f"{where}: kind {shown(kind)}; allowed: {', '.join(KINDS)}")
    check_keys(table, where, required=("kind", "doc"), optional=CONCEPT_KEYS[kind])
    doc = take(table, "doc", str, where).strip()
    if not doc:
        raise ToybenchError(f"{where}: 'doc' must not be empty")
    if kind == "categorical":
        levels = take(table, "levels", list, where)
        if not levels:
            raise ToybenchError(f"{where}: 'levels' is empty; give at least 2 level names")
        _check_level_count(len(levels), "levels", where)
        if not all(isinstance(v, str) for v in levels):
            raise ToybenchError(f"{where}: 'levels' must be an array of strings")
        u = _numbers(table, "u", where, default=None)
        if u is not None and len(u) != len(levels):
            raise ToybenchError(f"{where}: 'u' needs one number per level ({len(levels)})")
        return _wrap(where, Concept.categorical, name, levels, u, doc)
    has_values, has_linspace = "values" in table, "linspace" in table
    if has_values == has_linspace:
        raise ToybenchError(f"{where}: give exactly one of 'values' or 'linspace'")
    if has_values:
        values = _numbers(table, "values", where)
        if values.size == 0:
            raise ToybenchError(f"{where}: 'values' is empty; give at least 2 levels")
        _check_level_count(values.size, "values", where)
    else:
        spec = take(table, "linspace", list, where)
        if (
            len(spec) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec)
            or not all(math.isfinite(v) for v in spec)
            or not float(spec[2]).is_integer()
        ):
            raise ToybenchError(
                f"{where}: 'linspace' must be [start, stop, number of levels] (finite numbers, "
                "a whole number of levels)"
            )
        count = int(spec[2])
        if count < 2:
            raise ToybenchError(
                f"{where}: 'linspace' has {count} levels; give at least 2 levels"
            )
        _check_level_count(count, "linspace", where)
        values = np.linspace(float(spec[0]), float(spec[1]), count)
    return _wrap(where, Concept.ordinal, name, values, doc)


def _check_level_count(count: int, key: str, where: str) -> None:
    if count > MAX_LEVELS:
        raise ToybenchError(
            f"{where}: {key!r} gives {count:,} levels; a concept has at most {MAX_LEVELS:,}"
        )


def _wrap(where: str, build, *args):
    """Call a constructor, prefixing its ``ToybenchError`` with ``where``."""
    try:
        return build(*args)
    except ToybenchError as err:
        raise ToybenchError(f"{where}: {err}") from None


def _mechanism(table: Any, names: tuple[str, ...], where: str):
    kind = take(table, "type", str, where) if isinstance(table, Mapping) else None
    if kind not in MECHANISM_KEYS:
        raise ToybenchError(f"{where}: type {shown(kind)}; allowed: {', '.join(MECHANISM_KEYS)}")
    check_keys(
        table,
        where,
        required=("type",) + (("parents",) if kind != "root" else ()),
        optional=MECHANISM_KEYS[kind],
    )
    if kind == "root":
        probs = _numbers(table, "probs", where, default=None)
        return Root(probs=probs)
    parents = take(table, "parents", list, where)
    if not parents or not all(isinstance(p, str) for p in parents):
        raise ToybenchError(f"{where}: 'parents' must be a non-empty array of concept names")
    if len(set(parents)) != len(parents):
        raise ToybenchError(f"{where}: 'parents' names a concept twice")
    for parent in parents:
        if parent not in names:
            raise ToybenchError(
                f"{where}: unknown concept {shown(parent)} in 'parents'; known: {listing(names)}"
            )
    parents = tuple(parents)
    sigma = take(table, "sigma", (float, str), where, None)
    if sigma is not None:
        try:
            sigma = parse_corr(sigma)
        except ToybenchError:
            raise ToybenchError(f"{where}: 'sigma' must be a number > 0 or \"inf\"") from None
    if kind == "band":
        weights = _numbers(table, "weights", where, default=None)
        weights = np.full(len(parents), 1.0 / len(parents)) if weights is None else weights
        if len(weights) != len(parents):
            raise ToybenchError(f"{where}: 'weights' needs one α per parent ({len(parents)})")
        parent_u = take(table, "parent_u", dict, where, {})
        check_keys(parent_u, f"{where} parent_u", optional=parents)
        tables = {p: _numbers(parent_u, p, f"{where} parent_u") for p in parent_u}
        bias = take(table, "bias", float, where, 0.0)
        if not math.isfinite(bias):
            raise ToybenchError(f"{where}: 'bias' must be finite")
        return Band(parents, tuple(float(w) for w in weights), bias, tables, sigma)
    if kind == "table":
        rows = take(table, "table", list, where)
        try:
            cpt = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            raise ToybenchError(
                f"{where}: 'table' must be an array of equal-length number rows"
            ) from None
        if cpt.ndim != 2 or not np.all(np.isfinite(cpt)):
            raise ToybenchError(f"{where}: 'table' must be an array of equal-length number rows")
        return Table(parents, cpt)
    function = take(table, "function", str, where)
    if function not in FUNCTIONS:
        raise ToybenchError(
            f"{where}: unknown function {shown(function)}; valid: {', '.join(FUNCTIONS)}"
        )
    return Function(parents, function, sigma)


def _match_renderer_inputs(names: tuple[str, ...], renderer, where: str) -> None:
    """Concept names must equal the renderer's inputs (checked before the concepts are built,
    so every later message names a known, short concept)."""
    missing = [i for i in renderer.inputs if i not in names]
    extra = [n for n in names if n not in renderer.inputs]
    if missing or extra:
        raise ToybenchError(
            f"{where}: concepts must be exactly the inputs of renderer {renderer.name!r} "
            f"({', '.join(renderer.inputs)})"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unknown: {listing(extra)}" if extra else "")
        )


def _match_renderer(concepts: tuple[Concept, ...], renderer, where: str) -> None:
    """Categorical levels must equal the renderer's categories, in order."""
    for concept in concepts:
        cats = renderer.categories.get(concept.name)
        cwhere = f"{where} [concepts.{concept.name}]"
        if cats is None and concept.kind == "categorical":
            raise ToybenchError(f"{cwhere}: renderer {renderer.name!r} takes it as 'ordinal'")
        if cats is not None and (concept.kind != "categorical" or concept.labels != tuple(cats)):
            raise ToybenchError(
                f'{cwhere}: renderer {renderer.name!r} needs kind = "categorical" with levels '
                f"{list(cats)} in this order"
            )


def generator_summaries() -> list[tuple[str, str]]:
    """``(name, first line of the description)`` of every shipped generator (for ``list``)."""
    return [
        (name, read_generator_spec(name)[2]["description"].strip().splitlines()[0])
        for name in generator_names()
    ]

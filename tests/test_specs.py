"""Strict spec validation: every bad spec is one ToybenchError naming the file, the key and what is
allowed; extends, user paths and the spec hash."""

import math
from pathlib import Path

import numpy as np
import pytest

from toybench.errors import ToybenchError
from toybench.resources import shipped_specs
from toybench.specs import (
    GENERATOR_NAMES,
    canonical_hash,
    check_keys,
    generator_summaries,
    load_generator,
    read_toml,
    take,
)

PAIR = """
description = "my pairs"
renderer = "sprites"
extends = "dsprites"

[mechanisms.orientation]
type = "band"
parents = ["scale"]
sigma = 0.1
"""

SCENE = """
description = "a scene"
renderer = "scene"

[concepts.shape]
kind = "categorical"
levels = ["square", "triangle", "cross"]
doc = "d"

[concepts.size]
kind = "ordinal"
linspace = [0.5, 1.0, 3]
doc = "d"

[concepts.hue]
kind = "ordinal"
values = [0.0, 0.3, 0.6]
doc = "d"

[concepts.pos_x]
kind = "ordinal"
linspace = [0.0, 1.0, 4]
doc = "d"

[concepts.pos_y]
kind = "ordinal"
linspace = [0.0, 1.0, 4]
doc = "d"

[concepts.rotation]
kind = "ordinal"
linspace = [0.0, 1.0, 3]
doc = "d"

[mechanisms.hue]
type = "band"
parents = ["size"]
"""


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_names_and_summaries():
    assert GENERATOR_NAMES == tuple(sorted(shipped_specs("generators")))
    summaries = dict(generator_summaries())
    assert set(summaries) == set(GENERATOR_NAMES)
    assert all(line and "\n" not in line for line in summaries.values())


def test_unknown_generator_lists_the_valid_ones():
    with pytest.raises(ToybenchError) as err:
        load_generator("dsprite")
    message = str(err.value)
    assert "unknown generator 'dsprite'" in message
    for name in GENERATOR_NAMES:
        assert name in message


def test_user_spec_with_extends(tmp_path):
    gen = load_generator(write(tmp_path, PAIR))
    assert gen.name == "spec" and gen.description == "my pairs"
    assert gen.dag.edges == (("scale", "orientation"),)
    assert gen.concept_names == load_generator("dsprites").concept_names
    card = gen.card(0.7)
    assert card["edges"][0]["sigma"] == 0.1  # the spec fixes this edge's σ
    assert load_generator(str(write(tmp_path, PAIR))).spec_hash == gen.spec_hash


def test_user_spec_without_extends(tmp_path):
    gen = load_generator(write(tmp_path, SCENE))
    assert gen.renderer == "scene" and gen.size == 32  # default: the renderer's smallest size
    assert gen.dag.edges == (("size", "hue"),)


def test_spec_hash_follows_content(tmp_path):
    a = load_generator(write(tmp_path, SCENE, "a.toml"))
    b = load_generator(
        write(tmp_path, SCENE.replace("[0.0, 0.3, 0.6]", "[0.0, 0.3, 0.7]"), "b.toml")
    )
    assert a.spec_hash != b.spec_hash
    assert canonical_hash({"x": 1, "y": [1.5]}) == canonical_hash({"y": [1.5], "x": 1})


def test_sigma_inf_string_in_spec(tmp_path):
    gen = load_generator(write(tmp_path, PAIR.replace("sigma = 0.1", 'sigma = "inf"')))
    assert math.isinf(gen.scm.mechanisms["orientation"].sigma)


BAD = [
    # (replace this, with this, expected message fragment)
    (
        'description = "a scene"',
        'description = "a scene"\ncolour = 1',
        "unknown key 'colour'; allowed: concepts, description, extends, mechanisms, render, "
        "renderer",
    ),
    (
        'doc = "d"\n\n[concepts.size]',
        'doc = "d"\nlabel = 2\n\n[concepts.size]',
        "[concepts.shape]: unknown key 'label'; allowed: doc, kind, levels, u",
    ),
    (
        'parents = ["size"]',
        'parents = ["sise"]',
        "[mechanisms.hue]: unknown concept 'sise' in 'parents'; known: shape, size",
    ),
    (
        "[mechanisms.hue]",
        '[mechanisms.size]\ntype = "band"\nparents = ["hue"]\n\n[mechanisms.hue]',
        "cycle: size -> hue -> size",
    ),
    ('levels = ["square", "triangle", "cross"]', "levels = []", "'levels' is empty"),
    ("values = [0.0, 0.3, 0.6]", "values = []", "'values' is empty"),
    ("linspace = [0.5, 1.0, 3]", "linspace = [0.5, 1.0, 1]", "at least 2 levels"),
    (
        'levels = ["square", "triangle", "cross"]',
        'levels = ["triangle", "square", "cross"]',
        "levels ['square', 'triangle', 'cross'] in this order",
    ),
    (
        "[concepts.rotation]",
        "[concepts.angle]",
        "concepts must be exactly the inputs of renderer 'scene'",
    ),
    ('renderer = "scene"', 'renderer = "scenes"', "unknown renderer 'scenes'; valid:"),
    ('type = "band"', 'type = "bend"', "type 'bend'; allowed: root, band, table, function"),
    ('parents = ["size"]', 'parents = ["size"]\nweights = [1.0, 2.0]', "one α per parent"),
    ('parents = ["size"]', 'parents = ["size"]\nsigma = 0', "'sigma' must be a number > 0"),
    ('parents = ["size"]', 'parents = ["size"]\nsigma = "wide"', "'sigma' must be a number > 0"),
    (
        'renderer = "scene"',
        'renderer = "scene"\n[render]\nsize = 48',
        "size 48 not supported by renderer 'scene'; allowed: 32, 64",
    ),
    (
        'kind = "ordinal"\nlinspace = [0.5',
        'kind = "ordnial"\nlinspace = [0.5',
        "kind 'ordnial'; allowed: categorical, ordinal",
    ),
    (
        "values = [0.0, 0.3, 0.6]",
        'values = [0.0, "x", 0.6]',
        "'values' must be an array of numbers",
    ),
    ('description = "a scene"', "description = 3", "key 'description' must be a string"),
    ('description = "a scene"', "", "missing required key 'description'"),
    ('parents = ["size"]', 'parents = ["size"]\nfunction = "cos"', "unknown key 'function'"),
    ("[mechanisms.hue]", "[mechanisms.tint]", "[mechanisms.tint]: unknown concept 'tint'"),
    (
        'description = "a scene"',
        'description = "a scene"\nextends = "nope"',
        "is neither a shipped generator (dsprites, ",
    ),
    ('description = "a scene"', 'description = "a scene', "invalid TOML"),
    # issue #11: level counts that used to give a traceback or a MemoryError
    ("linspace = [0.5, 1.0, 3]", "linspace = [0.5, 1.0, -3]", "'linspace' has -3 levels"),
    ("linspace = [0.5, 1.0, 3]", "linspace = [0.5, 1.0, 0]", "give at least 2 levels"),
    (
        "linspace = [0.5, 1.0, 3]",
        "linspace = [0, 1, 1e18]",
        "'linspace' gives 1,000,000,000,000,000,000 levels; a concept has at most 10,000",
    ),
    ("linspace = [0.5, 1.0, 3]", "linspace = [0.5, inf, 3]", "(finite numbers"),
    ("linspace = [0.5, 1.0, 3]", "linspace = [0.5, 1.0, 2.5]", "a whole number of levels"),
    (
        "values = [0.0, 0.3, 0.6]",
        f"values = {list(range(10_001))}",
        "'values' gives 10,001 levels; a concept has at most 10,000",
    ),
    ('parents = ["size"]', 'parents = ["size", "size"]', "'parents' names a concept twice"),
]


@pytest.mark.parametrize("old, new, fragment", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_spec_names_file_key_and_allowed(tmp_path, old, new, fragment):
    assert old in SCENE
    path = write(tmp_path, SCENE.replace(old, new, 1))
    with pytest.raises(ToybenchError) as err:
        load_generator(path)
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message
    assert str(path) in message


def test_table_and_function_specs(tmp_path):
    table = SCENE.replace(
        'type = "band"\nparents = ["size"]',
        'type = "table"\nparents = ["size"]\ntable = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]',
    )
    gen = load_generator(write(tmp_path, table))
    f = gen.sample_factors(50, __import__("numpy").random.default_rng(0), corr=0.3)
    assert (f[:, 1] == f[:, 2]).all()
    bad = table.replace("[0, 0, 1]]", "[0, 0, 2]]")
    with pytest.raises(ToybenchError, match="sum to 1"):
        load_generator(write(tmp_path, bad, "bad.toml"))
    func = SCENE.replace('type = "band"', 'type = "function"\nfunction = "nope"')
    with pytest.raises(ToybenchError, match="unknown function 'nope'; valid: pendulum_shadow"):
        load_generator(write(tmp_path, func, "f.toml"))


def test_extends_loop_is_refused(tmp_path):
    write(tmp_path, 'extends = "b.toml"\ndescription = "a"', "a.toml")
    write(tmp_path, 'extends = "a.toml"\ndescription = "b"', "b.toml")
    with pytest.raises(ToybenchError, match="'extends' loops"):
        load_generator(tmp_path / "a.toml")


def test_missing_file_and_helpers(tmp_path):
    with pytest.raises(ToybenchError, match="no such spec file"):
        load_generator(tmp_path / "absent.toml")
    with pytest.raises(ToybenchError, match="no such file"):
        read_toml(tmp_path / "absent.toml")
    with pytest.raises(ToybenchError, match="where: unknown key 'z'; allowed: a, b"):
        check_keys({"a": 1, "z": 2}, "where", required=("a",), optional=("b",))
    with pytest.raises(ToybenchError, match="where: missing required key 'a'"):
        check_keys({}, "where", required=("a",))
    assert take({"x": 3}, "x", float, "w") == 3.0
    with pytest.raises(ToybenchError, match="'x' must be a number, got true/false"):
        take({"x": True}, "x", float, "w")
    assert take({}, "x", int, "w", 7) == 7


# -- issue #11: absurd specs fail fast with a short message ---------------------------------------
def _timed_error(build) -> tuple[str, float]:
    import time

    start = time.process_time()
    with pytest.raises(ToybenchError) as err:
        build()
    return str(err.value), time.process_time() - start


def test_700k_concepts_are_refused_fast_with_a_short_message():
    from toybench.specs import build_generator

    table = {"kind": "ordinal", "values": [0, 1], "doc": "d"}
    concepts = {f"c{i}": table for i in range(700_000)}  # one shared table: quick to build
    spec = {"description": "big", "renderer": "sprites", "concepts": concepts}
    message, seconds = _timed_error(lambda: build_generator("big", spec, "big.toml"))
    assert "700,000 [concepts.*] tables; a spec has at most 64" in message
    assert len(message) < 300 and seconds < 0.5  # process time of one thread: a rough guide


def test_a_700k_concept_spec_file_is_refused_before_parsing(tmp_path):
    blocks = [f'[concepts.c{i}]\nkind = "ordinal"\nvalues = [0, 1]\ndoc = "d"' for i in
              range(700_000)]
    path = write(tmp_path, 'description = "big"\nrenderer = "sprites"\n' + "\n".join(blocks))
    message, seconds = _timed_error(lambda: load_generator(path))
    assert "too large for a spec file (over 1 MiB" in message
    assert len(message) < 300 and seconds < 0.5


def test_many_concepts_under_the_size_cap_are_refused_by_count(tmp_path):
    blocks = [f'[concepts.c{i}]\nkind = "ordinal"\nvalues = [0, 1]\ndoc = "d"' for i in
              range(2000)]
    path = write(tmp_path, 'description = "big"\nrenderer = "sprites"\n' + "\n".join(blocks))
    message, _ = _timed_error(lambda: load_generator(path))
    assert "2,000 [concepts.*] tables; a spec has at most 64" in message and len(message) < 300


def test_huge_names_are_cut_in_messages(tmp_path):
    long = "x" * 100_000
    cases = [
        ("[concepts.rotation]", f"[concepts.{long}]", "concepts must be exactly the inputs"),
        ('description = "a scene"', f'description = "a scene"\n{long} = 1', "unknown key 'xxx"),
        ('parents = ["size"]', f'parents = ["{long}"]', "unknown concept 'xxx"),
        ('renderer = "scene"', f'renderer = "{long}"', "unknown renderer 'xxx"),
        ('type = "band"', f'type = "{long}"', "type 'xxx"),
    ]
    for old, new, fragment in cases:
        path = write(tmp_path, SCENE.replace(old, new, 1))
        with pytest.raises(ToybenchError) as err:
            load_generator(path)
        message = str(err.value)
        assert fragment in message and "…" in message and len(message) < 400, message[:400]


def test_listing_cuts_after_200_characters():
    from toybench.specs import listing

    assert listing(["a", "b"]) == "a, b"
    cut = listing([f"c{i}" for i in range(700_000)])
    assert cut.endswith("more)") and len(cut) < 230 and "… (699958 more)" in cut


def test_over_long_generator_name_or_path_is_one_line(tmp_path):
    for text in ("d" * 300, "d" * 300 + ".toml", str(tmp_path / ("d" * 300) / "x.toml")):
        with pytest.raises(ToybenchError) as err:
            load_generator(text)
        assert len(str(err.value)) < 300 and "\n" not in str(err.value)


def test_dsprites_pairs_32_is_dsprites_pairs_at_32_pixels():
    small, full = load_generator("dsprites-pairs-32"), load_generator("dsprites-pairs")
    assert (small.size, full.size) == (32, 64)
    assert small.concept_names == full.concept_names
    assert sorted(small.dag.edges) == sorted(full.dag.edges)
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    np.testing.assert_array_equal(small.sample_factors(500, rng_a, corr=0.2),
                                  full.sample_factors(500, rng_b, corr=0.2))
    factors = small.sample_factors(4, np.random.default_rng(1), corr=0.2)
    assert small.render(factors).shape[-2:] == (32, 32)

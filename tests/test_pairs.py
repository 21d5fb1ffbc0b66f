"""Weakly supervised pairs (``toybench.pairs``) and the runs of the models trained on them.

Pairs: exactly k factors differ, the recorded ones; k fixed or uniform; x₁ is the training split;
the conditional draws match the exact conditional from the enumerated joint (and not the
intervention's uniform draws); determinism; one-line errors. Runs: a tiny ``toybench run
--model ada-gvae`` end to end (``supervision = weak (pairs)``, the pairs' data card,
``load_run``), and an interrupted run resumed to the same bytes.
"""

from __future__ import annotations

import json
import math
from itertools import combinations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FP32
from scipy import stats

from toybench import runs
from toybench.cli import main
from toybench.data import Dataset, make_split
from toybench.errors import ToybenchError
from toybench.pairs import PairSpec, _conditional, check_pairing, make_pairs
from toybench.scm import SCM, Band, Concept, Generator, Table
from toybench.specs import load_generator
from toybench.train import train

TOY = load_generator("toy-causal")
SIGMA = 0.3


@pytest.fixture(scope="module")
def first():
    return make_split(TOY, "train", corr=SIGMA, n=600, seed=3)


@pytest.fixture(scope="module", params=["conditional", "intervention"])
def pairs(request, first):
    return make_pairs(TOY, first, PairSpec(request.param, 0), seed=3)


# --- what a pair is -----------------------------------------------------------------------------


def test_exactly_k_factors_differ_and_they_are_the_recorded_ones(pairs, first):
    x1, x2 = pairs.factors[:, 0], pairs.factors[:, 1]
    np.testing.assert_array_equal(x1 != x2, pairs.changed)
    np.testing.assert_array_equal(pairs.changed.sum(axis=1), pairs.k)
    assert pairs.k.min() == 1 and pairs.k.max() == len(TOY.concepts) - 1
    # x1 is the training split itself, x2 the renderer's image of x2's factors
    np.testing.assert_array_equal(x1, first.factors)
    np.testing.assert_array_equal(pairs.images[:, 0], first.images)
    np.testing.assert_array_equal(pairs.images[:, 1], TOY.render(x2))
    assert pairs.images.shape == (600, 2, *TOY.image_shape) and pairs.images.dtype == np.uint8


def test_k_and_the_changed_factors_are_uniform(first):
    big = make_split(TOY, "train", corr=SIGMA, n=6000, seed=4)
    pairs = make_pairs(TOY, big, PairSpec("intervention", 0), seed=4)
    n_factors = len(TOY.concepts)
    k_counts = np.bincount(pairs.k, minlength=n_factors)[1:]  # k in 1..K-1
    assert stats.chisquare(k_counts).pvalue > 1e-3
    # given k, every factor is equally likely to be among the changed
    for k in (1, 3):
        per_factor = pairs.changed[pairs.k == k].sum(axis=0)
        assert stats.chisquare(per_factor).pvalue > 1e-3
    fixed = make_pairs(TOY, first, PairSpec("conditional", 2), seed=3)
    assert (fixed.k == 2).all() and (fixed.changed.sum(axis=1) == 2).all()


def test_pairs_are_deterministic_and_the_modes_change_the_same_factors(first):
    a = make_pairs(TOY, first, PairSpec("conditional", 0), seed=3)
    b = make_pairs(TOY, first, PairSpec("conditional", 0), seed=3)
    np.testing.assert_array_equal(a.factors, b.factors)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.card == b.card
    other_seed = make_pairs(TOY, first, PairSpec("conditional", 0), seed=4)
    assert not np.array_equal(a.changed, other_seed.changed)
    # separate streams for which factors change and for their levels: the two modes of one seed
    # change the same factors of the same images, with other new levels
    c = make_pairs(TOY, first, PairSpec("intervention", 0), seed=3)
    np.testing.assert_array_equal(a.changed, c.changed)
    assert not np.array_equal(a.factors[:, 1], c.factors[:, 1])


def test_the_card_says_mode_and_k(pairs, first):
    card = pairs.card["pairing"]
    assert card["mode"] == pairs.spec.mode and card["k"] == "uniform 1..K-1"
    assert card["n_pairs"] == 600 and sum(card["k_counts"].values()) == 600
    assert card["changed_counts"] == dict(zip(TOY.concept_names,
                                              pairs.changed.sum(axis=0).tolist(), strict=True))
    assert card["second"]["source"] == "empirical"
    assert {k: v for k, v in pairs.card.items() if k != "pairing"} == first.card
    json.dumps(pairs.card)  # JSON-ready


def test_conditional_pairs_stay_correlated_intervened_pairs_do_not(first):
    """Träuble et al.'s setting: the conditional x2 keeps the training dependence; do() cuts it."""
    shape_size = {}
    for mode in ("conditional", "intervention"):
        card = make_pairs(TOY, first, PairSpec(mode, 0), seed=3).card["pairing"]["second"]
        shape_size[mode] = next(e["pearson"] for e in card["edges"]
                                if (e["parent"], e["child"]) == ("shape", "size"))
    trained = next(e["pearson"] for e in first.card["edges"] if e["child"] == "size")
    assert trained > 0.7  # exact (enumerated joint): 0.76 at σ = 0.3
    assert shape_size["conditional"] > 0.5 and abs(shape_size["intervention"]) < 0.25


# --- the conditional draws are exact ------------------------------------------------------------


def _exact_conditional(generator, corr, row, cols):
    """p(f_S = a | f_-S = row_-S, a_s ≠ row_s for all s) from the enumerated joint, over the
    joint levels of ``cols`` in row-major order."""
    joint = generator.joint(corr)
    index = [slice(None) if c in cols else int(row[c]) for c in range(len(row))]
    table = joint[tuple(index)].copy()  # axes: cols in column order
    grid = np.indices(table.shape)
    for axis, c in enumerate(cols):
        table[grid[axis] == row[c]] = 0.0
    return (table / table.sum()).ravel()


@pytest.mark.parametrize(("row", "cols"), [
    ((2, 5, 0, 3, 0, 4), (1,)),        # size: a parent (shape) and two children kept
    ((2, 5, 0, 3, 0, 4), (1, 5)),      # size and the collider rotation
    ((0, 1, 6, 7, 5, 0), (0, 2, 4)),   # shape, hue, pos_y: k = 3 over the chain and the fork
    ((1, 3, 3, 2, 4, 2), (3,)),        # pos_x: independent, uniform over the other levels
])
def test_conditional_draws_match_the_exact_conditional(row, cols):
    n = 20_000
    x1 = np.tile(np.array(row, dtype=np.int64), (n, 1))
    changed = np.zeros_like(x1, dtype=bool)
    changed[:, list(cols)] = True
    x2 = _conditional(TOY, SIGMA, x1, changed, np.random.default_rng(0))
    kept = [c for c in range(len(row)) if c not in cols]
    np.testing.assert_array_equal(x2[:, kept], x1[:, kept])
    sizes = [TOY.concepts[c].n_levels for c in cols]
    flat = np.ravel_multi_index(tuple(x2[:, c] for c in cols), sizes)
    counts = np.bincount(flat, minlength=math.prod(sizes))
    exact = _exact_conditional(TOY, SIGMA, row, cols)
    live = exact > 0
    assert counts[~live].sum() == 0  # never a changed factor left at x1's level
    assert stats.chisquare(counts[live], n * exact[live]).pvalue > 1e-3
    # the test can fail: the intervention's uniform draws are far from this conditional
    if len(cols) == 1 and cols != (3,):
        uniform = live / live.sum()
        assert stats.chisquare(counts[live], n * uniform[live]).pvalue < 1e-6


def test_intervention_draws_are_uniform_over_the_other_levels():
    n = 12_000
    row = np.array([2, 5, 0, 3, 0, 4], dtype=np.int64)
    first = Dataset(np.zeros((n, *TOY.image_shape), np.uint8), np.tile(row, (n, 1)),
                    TOY.concept_names, TOY.name, SIGMA, 0, "train", {}, TOY.dag)
    pairs = make_pairs(TOY, first, PairSpec("intervention", 1), seed=0)
    for c, concept in enumerate(TOY.concepts):
        chosen = pairs.changed[:, c]
        levels = np.bincount(pairs.factors[chosen, 1, c], minlength=concept.n_levels)
        assert levels[row[c]] == 0
        assert stats.chisquare(np.delete(levels, row[c])).pvalue > 1e-3


def test_the_subset_tables_are_exact_on_a_deterministic_table_and_refused_when_impossible():
    a = Concept.ordinal("a", [0, 1, 2])
    b = Concept.ordinal("b", [0, 1, 2])
    c = Concept.ordinal("c", [0, 1])
    copy = np.eye(3)  # b = a exactly
    scm = SCM((a, b, c), {"b": Table(("a",), copy), "c": Band(("b",), (1.0,))})
    gen = Generator("tiny", "", scm, "sprites", 32, "0" * 64)
    x1 = np.array([[1, 1, 0]] * 50, dtype=np.int64)
    both = np.array([[True, True, False]] * 50)
    x2 = _conditional(gen, 0.5, x1, both, np.random.default_rng(1))
    assert ((x2[:, 0] == x2[:, 1]) & (x2[:, 0] != 1)).all()  # a and b change together
    only_b = np.array([[False, True, False]] * 50)
    with pytest.raises(ToybenchError, match=r"given a=1, c=0, b cannot change \(the kept") as info:
        _conditional(gen, 0.5, x1, only_b, np.random.default_rng(1))
    assert "pair_mode=intervention" in str(info.value) and "\n" not in str(info.value)


def test_every_subset_draws_only_levels_the_exact_conditional_allows():
    """Every subset S of toy-causal, sizes 1, 2 and 4, for one kept row: the tables built from
    S's Markov blanket put mass only where the joint's slice does, with every factor changed."""
    rng = np.random.default_rng(5)
    row = TOY.sample_factors(1, rng, corr=SIGMA)[0]
    for k in (1, 2, 4):
        for cols in combinations(range(len(row)), k):
            x1 = np.tile(row, (400, 1))
            changed = np.zeros_like(x1, dtype=bool)
            changed[:, list(cols)] = True
            x2 = _conditional(TOY, SIGMA, x1, changed, np.random.default_rng(0))
            exact = _exact_conditional(TOY, SIGMA, row, cols)
            sizes = [TOY.concepts[c].n_levels for c in cols]
            flat = np.ravel_multi_index(tuple(x2[:, c] for c in cols), sizes)
            assert (exact[flat] > 0).all(), cols  # only levels the exact conditional allows


def test_check_pairing_refuses_what_the_generator_cannot_give():
    with pytest.raises(ToybenchError, match=r"pair_k=6: toy-causal has 6 factors, so a pair "
                                            r"changes 1..5 of them"):
        check_pairing(TOY, PairSpec("conditional", 6))
    check_pairing(TOY, PairSpec("conditional", 5))
    with pytest.raises(ToybenchError, match="pair mode 'sideways'"):
        PairSpec("sideways", 1)
    with pytest.raises(ToybenchError, match="integer ≥ 0"):
        PairSpec("conditional", -1)


# --- runs ---------------------------------------------------------------------------------------

TINY = (
    "train.steps=4", "train.batch_size=16", "train.n_train=128", "train.n_test=200",
    "train.checkpoint_every=2", "train.log_every=1", "train.hist_every=4",
    "eval.factor_vae_train=20", "eval.factor_vae_eval=10", "eval.factor_vae_variance=100",
    "eval.beta_vae_train=20", "eval.beta_vae_eval=10", "eval.consistency_pairs=20",
    "eval.batch_size=8",
    *FP32,
)


def _run(out, **kw):
    kw.setdefault("echo", lambda _line: None)
    return runs.run("ada-gvae", corr=0.2, seed=1, protocol="quick", overrides=TINY, out=out,
                    plots=False, **kw)


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    sets = [item for o in TINY for item in ("--set", o)]
    result = CliRunner().invoke(main, ["run", "--model", "ada-gvae", "--protocol", "quick",
                                       "--corr", "0.2", "--seed", "1", *sets, "--out", str(out),
                                       "--no-plots"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (p for p in out.iterdir() if not p.name.startswith("."))  # not .cache
    return run_dir, result.output


def test_a_tiny_ada_run_end_to_end(done_run):
    run_dir, output = done_run
    assert "train 128 pairs (conditional, k uniform 1..K-1)" in output
    assert "train  ada-gvae: 4 steps × 16 pairs" in output and "dci.disentanglement" in output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["supervision"] == "weak (pairs)" and metrics["family"] == "ada"
    assert metrics["model"] == "ada-gvae" and metrics["train.steps"] == 4
    card = json.loads((run_dir / "data_card.json").read_text())
    assert card["train"]["pairing"]["mode"] == "conditional"
    assert card["train"]["pairing"]["n_pairs"] == 128
    history = (run_dir / "history.csv").read_text().splitlines()
    assert history[0].endswith(",shared") and len(history) == 5
    loaded = runs.load_run(run_dir)
    test = make_split(TOY, "test", corr=0.2, n=200, seed=1)
    codes = loaded.encode(test.images)
    assert codes.shape == (200, 10) and np.isfinite(codes).all()


def test_an_interrupted_ada_run_resumes_to_the_same_bytes(done_run, tmp_path, monkeypatch):
    run_dir, _ = done_run

    def interrupted(*args, **kwargs):
        train(*args, **{**kwargs, "stop_after": 2})
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path)
    monkeypatch.undo()
    resumed = _run(tmp_path, resume=True)
    assert resumed.run_dir.name == run_dir.name
    assert (resumed.run_dir / "metrics.json").read_bytes() == \
        (run_dir / "metrics.json").read_bytes()
    assert (resumed.run_dir / "data_card.json").read_bytes() == \
        (run_dir / "data_card.json").read_bytes()


def test_a_pair_k_the_generator_cannot_give_is_one_line_before_anything_is_written(tmp_path):
    result = CliRunner().invoke(main, ["run", "--model", "ada-ml-vae", "--protocol", "quick",
                                       "--set", "model.pair_k=6", "--out", str(tmp_path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pair_k=6: toy-causal has 6 factors" in lines[0], result.output
    assert list(tmp_path.iterdir()) == []

"""The causal engine: known answers for the band, inverse CDF, DAG queries, card statistics, and
property tests (sampler agrees with the enumerated joint, do() and counterfactual semantics)."""

import math

import numpy as np
import pytest

from toybench.errors import ToybenchError
from toybench.scm import (
    DAG,
    SCM,
    Band,
    Concept,
    Function,
    Root,
    Table,
    band_probs,
    data_card,
    inverse_cdf,
    parse_corr,
)


def chain_scm() -> SCM:
    """a (categorical, 3) -> b (8) -> c (6) <- d (5); e (4) independent."""
    concepts = (
        Concept.categorical("a", ["x", "y", "z"]),
        Concept.ordinal("b", np.linspace(0, 1, 8)),
        Concept.ordinal("c", np.linspace(0, 2, 6)),
        Concept.ordinal("d", np.linspace(-1, 1, 5)),
        Concept.ordinal("e", np.arange(4.0)),
    )
    return SCM(concepts, {"b": Band(("a",), (1.0,)), "c": Band(("b", "d"), (0.5, 0.5))})


# -- σ and concepts -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.2", 0.2),
        ("inf", math.inf),
        (" INF ", math.inf),
        (3, 3.0),
        ("1e-3", 1e-3),
        (math.inf, math.inf),
    ],
)
def test_parse_corr_accepts(text, expected):
    assert parse_corr(text) == expected


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "nan", "", None, True, -0.5, 0, "-inf"])
def test_parse_corr_refuses(bad):
    with pytest.raises(ToybenchError, match="corr must be a number > 0"):
        parse_corr(bad)


def test_ordinal_u_rescales_values_to_unit_interval():
    c = Concept.ordinal("s", [0.5, 0.6, 1.0])
    np.testing.assert_allclose(c.u, [0.0, 0.2, 1.0])
    np.testing.assert_allclose(c.physical_to_u(np.array([0.75])), [0.5])
    assert c.labels == ("0.5", "0.6", "1")


@pytest.mark.parametrize(
    "values, match",
    [([1.0], "at least 2 levels"), ([], "at least 2"), ([0.0, 0.0, 1.0], "strictly increasing")],
)
def test_bad_ordinal_levels(values, match):
    with pytest.raises(ToybenchError, match=match):
        Concept.ordinal("s", values)


def test_categorical_value_table_and_bad_inputs():
    assert list(Concept.categorical("k", ["a", "b", "c"]).u) == [0.0, 0.5, 1.0]
    with pytest.raises(ToybenchError, match="distinct"):
        Concept.categorical("k", ["a", "a"])
    with pytest.raises(ToybenchError, match=r"\[0, 1\]"):
        Concept.categorical("k", ["a", "b"], u=[0.0, 2.0])


# -- DAG ----------------------------------------------------------------------------------------
def test_dag_queries():
    dag = DAG(
        ("s", "z", "h", "x", "y", "r"), (("s", "z"), ("z", "h"), ("z", "y"), ("h", "r"), ("y", "r"))
    )
    assert dag.parents("r") == ("h", "y")
    assert dag.children("z") == ("h", "y")
    assert dag.descendants("z") == {"h", "y", "r"}
    assert dag.ancestors("r") == {"s", "z", "h", "y"}
    assert dag.descendants("x") == frozenset()
    assert dag.layers() == [("s", "x"), ("z",), ("h", "y"), ("r",)]
    order = dag.topological_order()
    assert order == ("s", "x", "z", "h", "y", "r")
    for a, b in dag.edges:
        assert order.index(a) < order.index(b)


@pytest.mark.parametrize(
    "edges, cycle",
    [
        ((("a", "b"), ("b", "c"), ("c", "a")), "a -> b -> c -> a"),
        ((("a", "b"), ("b", "a")), "a -> b -> a"),
        ((("c", "c"),), "c -> c"),
        ((("a", "b"), ("b", "c"), ("c", "b")), "b -> c -> b"),
    ],
)
def test_cycle_error_names_the_cycle(edges, cycle):
    with pytest.raises(ToybenchError, match=f"cycle: {cycle}$"):
        DAG(("a", "b", "c"), edges)


def test_dag_unknown_node_and_duplicate_edge():
    with pytest.raises(ToybenchError, match="unknown concept 'q'"):
        DAG(("a", "b"), (("a", "q"),))
    with pytest.raises(ToybenchError, match="duplicate edge"):
        DAG(("a", "b"), (("a", "b"), ("a", "b")))


# -- mechanisms: known answers ------------------------------------------------------------------
def test_band_closed_form_two_levels():
    sigma, g = 0.3, 0.2
    p = band_probs(np.array([g]), np.array([0.0, 1.0]), sigma)[0]
    ratio = math.exp(-((1 - g) ** 2 - g**2) / (2 * sigma**2))
    assert p[1] / p[0] == pytest.approx(ratio)
    assert p.sum() == pytest.approx(1.0)


def test_band_limits():
    u = np.linspace(0, 1, 5)
    np.testing.assert_allclose(band_probs(np.array([0.5]), u, math.inf), np.full((1, 5), 0.2))
    tiny = band_probs(np.array([0.5, 0.26, 3.0]), u, 1e-4)  # stays finite when exp underflows
    np.testing.assert_allclose(tiny, np.eye(5)[[2, 1, 4]])


# -- extreme σ (issue #11, fault 4): every σ > 0 is exact, normal σ unchanged --------------------
EXTREME_SIGMAS = [5e-324, 1e-300, 1e-160, 1e-20, 1e150, 1e300, 1.7e308]


@pytest.mark.parametrize("sigma", EXTREME_SIGMAS)
def test_band_extreme_sigma_gives_the_exact_limits(sigma):
    u = np.linspace(0, 1, 5)
    g = np.array([0.5, 0.26, 3.0, 0.125, -7.0])  # 0.125: exactly between levels 0 and 1
    p = band_probs(g, u, sigma)
    assert np.isfinite(p).all()
    np.testing.assert_array_equal(p.sum(axis=1), 1.0)
    if sigma < 1:  # the argmax limit, exact ties split equally
        expected = np.eye(5)[[2, 1, 4, 0, 0]]
        expected[3] = [0.5, 0.5, 0, 0, 0]
        np.testing.assert_array_equal(p, expected)
    else:  # the uniform limit
        np.testing.assert_array_equal(p, np.full((5, 5), 0.2))


def test_band_is_continuous_across_the_switch_to_the_scaled_form():
    from toybench.scm import _band_probs_scaled

    u, g = np.linspace(0, 1, 7), np.linspace(-0.2, 1.3, 31)
    for sigma in (1e-3, 0.05, 0.3, 2.0, 1e3):  # the plain form's range: both forms agree
        scaled = _band_probs_scaled(np.abs(u[None, :] - g[:, None]), sigma)
        np.testing.assert_allclose(scaled, band_probs(g, u, sigma), rtol=1e-12, atol=1e-300)
    d = 1e-154  # level gaps of order σ around the threshold 1.49e-154: no jump
    near = np.array([0.0, d, 2 * d])
    below, above = (band_probs(np.array([0.0]), near, s)[0] for s in (1.49e-154, 1.5e-154))
    np.testing.assert_allclose(below, above, rtol=0.02)
    assert 0.05 < below[1] < 0.9


@pytest.mark.parametrize("sigma", [0.05, 0.2, 0.7, 3.0])
def test_band_at_normal_sigma_is_the_textbook_formula_bit_for_bit(sigma):
    u, g = np.linspace(0, 1, 9), np.random.default_rng(0).uniform(-0.3, 1.3, 50)
    logits = -((u[None, :] - g[:, None]) ** 2) / (2.0 * sigma**2)
    logits -= logits.max(axis=1, keepdims=True)
    expected = np.exp(logits)
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(band_probs(g, u, sigma), expected)


#: sha256 of ``sample_factors(20000, default_rng(123), corr=σ)`` of every shipped generator,
#: recorded before the extreme-σ fix: normal σ must keep every sampled level.
FACTOR_HASHES = {
    "dsprites": {s: "d540b8f999d120b377c8bcf575d22242a0b1dc56837b068b503d3100b021d572"
                 for s in ("0.05", "0.2", "0.7", "inf")},
    "dsprites-pairs": {
        "0.05": "99364be7075aaffad5a6d25469c3e677571ae566f769ef00232b9c4253947a6c",
        "0.2": "185625fc357a4f1d800e450bac316c99269fffc80af8c87651d7b053291c64b9",
        "0.7": "ecb9b9fc105922a29dd31851b8b9809d225e54abd5291903af557bbd65264ad7",
        "inf": "d540b8f999d120b377c8bcf575d22242a0b1dc56837b068b503d3100b021d572",
    },
    "pendulum": {
        "0.05": "daff6a467ffbaed0ebf2601e1575f061355ce7df798256f78d6fc09ce16925e1",
        "0.2": "e959fb485d1fd5c0edf2e923ac68de5873428e43cdc34ce88cb8f202718ff465",
        "0.7": "3575c16b5e21abd2c8023374b719911c14e4c7e9503194ebc9516cc54700a089",
        "inf": "869ac5b48bd423fb1097f142ed047965e231898a5acdeba69dfb028ec7fc369b",
    },
    "toy-causal": {
        "0.05": "2e25a9b36c78b02abf4e0faf655445bae61e00298c707962a879b86637f14a7a",
        "0.2": "10ba0b67508e5e4367da9b93231e2ee684d0b142e8e6fab9b27aab5dbcd6591a",
        "0.7": "8305413e0e563e08b761f3ccb680a966284cbb6ea09336ea214ae2f30c9b273a",
        "inf": "86aa51014d5021db38b462c5f9810d0e4ba57348a67e1ead8b633db382ca9b69",
    },
}


@pytest.mark.parametrize("name", sorted(FACTOR_HASHES))
def test_normal_sigma_samples_are_unchanged(name):
    import hashlib

    from toybench.specs import load_generator

    gen = load_generator(name)
    for corr, digest in FACTOR_HASHES[name].items():
        factors = gen.sample_factors(20000, np.random.default_rng(123), corr=float(corr))
        assert hashlib.sha256(factors.tobytes()).hexdigest() == digest, corr


@pytest.mark.parametrize("sigma", [1e-300, 1e-160, 1e-20, 1e150, 1e300])
def test_every_shipped_generator_gives_valid_levels_at_extreme_sigma(sigma):
    from toybench.specs import GENERATOR_NAMES, load_generator

    for name in GENERATOR_NAMES:
        gen = load_generator(name)
        factors = gen.sample_factors(500, np.random.default_rng(0), corr=sigma)
        assert ((factors >= 0) & (factors < np.array(gen.scm.sizes))).all(), name
        card = gen.card(sigma, factors)
        assert card["corr"] == sigma
        assert all(math.isfinite(e["pearson"]) for e in card["edges"]), name


@pytest.mark.parametrize(
    "text, fragment",
    [("1e-400", "rounds to 0 as a float"), ("1e400", "too large for a float"),
     ("-1e400", "corr must be a number > 0"), (10**400, "too large for a float")],
)
def test_parse_corr_refuses_what_a_float_cannot_hold(text, fragment):
    with pytest.raises(ToybenchError, match=fragment):
        parse_corr(text)


def test_band_centre_that_overflows_is_refused():
    concepts = (Concept.ordinal("a", [0.0, 1.0]), Concept.ordinal("b", [0.0, 1.0]))
    with pytest.raises(ToybenchError, match="band centre bias"):
        SCM(concepts, {"b": Band(("a",), (1e308,), bias=1e308)})


def test_mechanism_table_size_is_capped():
    big = Concept.ordinal("a", np.arange(3000.0))
    concepts = (big, Concept.ordinal("b", np.arange(3000.0)))
    with pytest.raises(ToybenchError, match="probability table would have 3,000 parent"):
        SCM(concepts, {"b": Band(("a",), (1.0,))})


def test_inverse_cdf_known_answers():
    cpt = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    row = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2])
    noise = np.array([0.0, 0.1999, 0.2, 0.4999, 0.9999, 0.0, 0.9999, 0.0, 0.5])
    np.testing.assert_array_equal(inverse_cdf(cpt, row, noise), [0, 0, 1, 1, 2, 0, 0, 2, 2])


def test_table_mechanism_and_its_validation():
    concepts = (Concept.categorical("a", ["0", "1"]), Concept.categorical("b", ["0", "1", "2"]))
    table = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    scm = SCM(concepts, {"b": Table(("a",), table)})
    f = scm.sample_factors(500, np.random.default_rng(0), corr=0.5)
    np.testing.assert_array_equal(f[:, 1], 2 * f[:, 0])
    np.testing.assert_allclose(scm.cpt("b", math.inf), np.full((2, 3), 1 / 3))  # σ=∞: uniform
    with pytest.raises(ToybenchError, match=r"shape \(2, 3\)"):
        SCM(concepts, {"b": Table(("a",), table[:1])})
    with pytest.raises(ToybenchError, match="sum to 1"):
        SCM(concepts, {"b": Table(("a",), table * 0.5)})


def test_function_mechanism_follows_the_function_at_small_sigma():
    concepts = (
        Concept.ordinal("x", np.linspace(0, 1, 6)),
        Concept.ordinal("y", np.linspace(0, 1, 11)),
    )
    scm = SCM(concepts, {"y": Function(("x",), "identity")})  # y = x on a grid twice as fine
    f = scm.sample_factors(400, np.random.default_rng(1), corr=1e-3)
    np.testing.assert_array_equal(f[:, 1], 2 * f[:, 0])
    loose = scm.sample_factors(4000, np.random.default_rng(1), corr=0.2)
    assert 0 < np.mean(loose[:, 1] != 2 * loose[:, 0]) < 1  # the band adds noise around it


def test_root_probabilities():
    concepts = (Concept.categorical("a", ["0", "1", "2"]), Concept.ordinal("b", [0.0, 1.0]))
    scm = SCM(concepts, {"a": Root(np.array([0.7, 0.1, 0.2]))})
    np.testing.assert_allclose(scm.joint(0.3).sum(axis=1), [0.7, 0.1, 0.2])
    f = scm.sample_factors(20000, np.random.default_rng(2), corr=0.3)
    np.testing.assert_allclose(np.bincount(f[:, 0]) / 20000, [0.7, 0.1, 0.2], atol=0.015)


def test_fixed_edge_sigma_ignores_global_corr_but_not_inf():
    concepts = (
        Concept.ordinal("x", np.linspace(0, 1, 5)),
        Concept.ordinal("y", np.linspace(0, 1, 5)),
    )
    fixed = SCM(concepts, {"y": Band(("x",), (1.0,), sigma=0.05)})
    free = SCM(concepts, {"y": Band(("x",), (1.0,))})
    np.testing.assert_allclose(fixed.cpt("y", 10.0), free.cpt("y", 0.05))
    np.testing.assert_allclose(fixed.cpt("y", math.inf), np.full((5, 5), 0.2))
    assert data_card(fixed, 10.0)["edges"][0]["sigma"] == 0.05


# -- sampling, joint, interventions -------------------------------------------------------------
def test_same_seed_same_factors():
    scm = chain_scm()
    a = scm.sample_factors(100, np.random.default_rng(7), corr=0.3)
    b = scm.sample_factors(100, np.random.default_rng(7), corr=0.3)
    c = scm.sample_factors(100, np.random.default_rng(8), corr=0.3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.int64 and a.shape == (100, 5)


@pytest.mark.parametrize("corr", [0.15, 0.5, math.inf])
def test_sampler_agrees_with_exact_joint(corr):
    scm = chain_scm()
    joint = scm.joint(corr)
    assert joint.shape == scm.sizes and joint.sum() == pytest.approx(1.0)
    n = 60000
    f = scm.sample_factors(n, np.random.default_rng(3), corr=corr)
    for i, j in [(0, 1), (1, 2), (2, 3), (0, 4)]:
        exact = joint.sum(axis=tuple(k for k in range(5) if k not in (i, j)))
        counts = np.zeros_like(exact)
        np.add.at(counts, (f[:, i], f[:, j]), 1)
        # each cell within 5 binomial standard errors
        se = np.sqrt(exact * (1 - exact) / n)
        assert np.all(np.abs(counts / n - exact) <= 5 * se + 1e-4)


def test_joint_none_when_too_large():
    assert chain_scm().joint(0.3, max_states=100) is None


def test_do_sets_the_column_and_keeps_non_descendants():
    scm = chain_scm()
    noise = scm.sample_noise(2000, np.random.default_rng(4))
    obs = scm.factors_from_noise(noise, corr=0.2)
    inter = scm.factors_from_noise(noise, corr=0.2, do={"b": 6})
    assert np.all(inter[:, 1] == 6)
    for k in (0, 3, 4):  # a, d, e are not descendants of b
        np.testing.assert_array_equal(inter[:, k], obs[:, k])
    assert inter[:, 2].mean() > obs[:, 2].mean()  # c follows the raised b (positive control)


def test_do_with_per_sample_levels_and_bad_do():
    scm = chain_scm()
    levels = np.arange(10) % 8
    f = scm.sample_factors(10, np.random.default_rng(0), corr=0.3, do={"b": levels})
    np.testing.assert_array_equal(f[:, 1], levels)
    with pytest.raises(ToybenchError, match="unknown concept 'zz'"):
        scm.sample_factors(5, np.random.default_rng(0), corr=0.3, do={"zz": 0})
    with pytest.raises(ToybenchError, match="level must be in 0..7"):
        scm.sample_factors(5, np.random.default_rng(0), corr=0.3, do={"b": 8})
    with pytest.raises(ToybenchError, match="int level"):
        scm.sample_factors(5, np.random.default_rng(0), corr=0.3, do={"b": 1.5})


def test_counterfactual_changes_only_descendants():
    scm = chain_scm()
    noise = scm.sample_noise(3000, np.random.default_rng(5))
    f = scm.factors_from_noise(noise, corr=0.2)
    cf = scm.counterfactual(f, noise, {"a": 2}, corr=0.2)
    changed = np.any(cf != f, axis=0)
    assert list(changed) == [True, True, True, False, False]  # a, b, c change; d, e never
    # intervening on the factual value changes nothing (consistency)
    same = scm.counterfactual(f, noise, {"d": f[:, 3]}, corr=0.2)
    np.testing.assert_array_equal(same, f)
    # counterfactual = the intervened model run on the same noise
    np.testing.assert_array_equal(cf, scm.factors_from_noise(noise, corr=0.2, do={"a": 2}))


def test_n_must_be_positive():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ToybenchError, match="n must be a positive integer"):
            chain_scm().sample_noise(bad, np.random.default_rng(0))


# -- data card ----------------------------------------------------------------------------------
def test_card_known_answers():
    concepts = (Concept.categorical("a", ["0", "1"]), Concept.categorical("b", ["0", "1"]))
    copy = SCM(concepts, {"b": Table(("a",), np.eye(2))})
    edge = data_card(copy, 0.5)["edges"][0]
    assert edge["pearson"] == pytest.approx(1.0)
    assert edge["spearman"] == pytest.approx(1.0)
    assert edge["mi"] == pytest.approx(math.log(2), abs=1e-6)
    assert edge["sigma"] is None and edge["mechanism"] == "table"
    flip = SCM(concepts, {"b": Table(("a",), np.eye(2)[::-1])})
    assert data_card(flip, 0.5)["edges"][0]["pearson"] == pytest.approx(-1.0)
    coin = SCM(concepts, {"b": Table(("a",), np.full((2, 2), 0.5))})
    assert data_card(coin, 0.5)["edges"][0]["mi"] == pytest.approx(0.0, abs=1e-12)


def test_card_spearman_with_ties_matches_scipy_on_a_sample():
    from scipy.stats import spearmanr

    scm = chain_scm()
    f = scm.sample_factors(5000, np.random.default_rng(6), corr=0.3)
    card = data_card(scm, 0.3, factors=f, max_states=1)
    assert card["source"] == "empirical" and card["n"] == 5000
    pair = next(p for p in card["pairs"] if (p["a"], p["b"]) == ("b", "c"))
    assert pair["spearman"] == pytest.approx(spearmanr(f[:, 1], f[:, 2]).statistic, abs=1e-5)
    assert pair["pearson"] == pytest.approx(np.corrcoef(f[:, 1], f[:, 2])[0, 1], abs=1e-5)


def test_card_exact_and_empirical_agree_and_list_every_pair():
    scm = chain_scm()
    exact = data_card(scm, 0.3)
    f = scm.sample_factors(50000, np.random.default_rng(9), corr=0.3)
    emp = data_card(scm, 0.3, factors=f, max_states=1)
    assert exact["source"] == "exact" and exact["n"] is None
    assert len(exact["pairs"]) == 10 and len(exact["edges"]) == 3
    for e, m in zip(exact["edges"], emp["edges"], strict=True):
        assert m["pearson"] == pytest.approx(e["pearson"], abs=0.02)
        assert m["mi"] == pytest.approx(e["mi"], abs=0.01)
    with pytest.raises(ToybenchError, match="pass factors"):
        data_card(scm, 0.3, max_states=1)

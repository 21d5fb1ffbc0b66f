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

"""Contract tests run over every shipped generator (torchvision's DatasetTestCase idea): seeding,
shapes, dtypes and ranges; do() cuts the dependence on parents; counterfactuals change only
descendants; on every edge |ρ| rises as σ falls; at σ = ∞ every edge's MI vanishes."""

import dataclasses
import json
import math

import numpy as np
import pytest

from toybench.scm import data_card
from toybench.specs import GENERATOR_NAMES, load_generator

SIGMAS = (math.inf, 0.7, 0.4, 0.2)


@pytest.fixture(scope="module", params=GENERATOR_NAMES)
def gen(request):
    generator = load_generator(request.param)
    return dataclasses.replace(generator, size=32)  # CPU-friendly; every renderer supports 32


def test_the_four_generators_ship():
    assert {"dsprites", "dsprites-pairs", "toy-causal", "pendulum"} <= set(GENERATOR_NAMES)


def test_spec_documents_itself(gen):
    assert gen.description.strip()
    assert all(c.doc.strip() for c in gen.concepts)
    assert gen.concept_names == tuple(c.name for c in gen.concepts)
    assert len(gen.spec_hash) == 64


def test_seeding(gen):
    draw = lambda seed: gen.sample_factors(64, np.random.default_rng(seed), corr=0.3)  # noqa: E731
    np.testing.assert_array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))
    np.testing.assert_array_equal(gen.render(draw(1)), gen.render(draw(1)))


@pytest.mark.parametrize("corr", [0.2, math.inf])
def test_shapes_dtypes_ranges(gen, corr):
    factors = gen.sample_factors(48, np.random.default_rng(0), corr=corr)
    assert factors.shape == (48, len(gen.concepts)) and factors.dtype == np.int64
    assert np.all(factors >= 0) and np.all(factors < np.array([c.n_levels for c in gen.concepts]))
    images = gen.render(factors)
    assert images.shape == (48, *gen.image_shape) and images.dtype == np.uint8
    assert gen.image_shape[1:] == (32, 32) and gen.image_shape[0] in (1, 3)
    assert images.max() > images.min()  # something is drawn
    for c in gen.concepts:
        assert c.u.min() >= 0 and c.u.max() <= 1 and c.n_levels >= 2


def test_every_level_of_every_concept_is_drawn_at_infinite_sigma(gen):
    factors = gen.sample_factors(4000, np.random.default_rng(0), corr=math.inf)
    for k, c in enumerate(gen.concepts):
        assert np.unique(factors[:, k]).size == c.n_levels, c.name


def _edges_or_skip(gen):
    if not gen.dag.edges:
        pytest.skip(f"{gen.name} has no edges (independent factors)")
    return gen.dag.edges


def test_do_cuts_the_dependence_on_parents(gen):
    """Observationally |ρ(parent, child)| is large at σ = 0.2; under do(child = random levels) the
    child no longer listens to its parents, while the parents' columns are untouched."""
    n = 20000
    rng = np.random.default_rng(0)
    noise = gen.sample_noise(n, rng)
    obs = gen.factors_from_noise(noise, corr=0.2)
    card = gen.card(0.2)
    for parent, child in _edges_or_skip(gen):
        p, c = gen.scm.index(parent), gen.scm.index(child)
        edge = next(e for e in card["edges"] if (e["parent"], e["child"]) == (parent, child))
        assert abs(edge["pearson"]) > 0.25  # a real dependence to cut
        levels = rng.integers(0, gen.concepts[c].n_levels, n)
        inter = gen.factors_from_noise(noise, corr=0.2, do={child: levels})
        np.testing.assert_array_equal(inter[:, c], levels)
        np.testing.assert_array_equal(inter[:, p], obs[:, p])
        assert abs(np.corrcoef(inter[:, p], inter[:, c])[0, 1]) < 0.05
        # and a constant intervention leaves the child constant whatever its parents
        const = gen.factors_from_noise(noise, corr=0.2, do={child: 1})
        assert np.all(const[:, c] == 1)


def test_do_cuts_incoming_edges_in_the_exact_card(gen):
    for parent, child in _edges_or_skip(gen):
        from toybench.data import _card

        factors = gen.sample_factors(10, np.random.default_rng(0), corr=0.2, do={child: 0})
        card = _card(gen, 0.2, factors, {child: 0})
        assert (parent, child) not in {(e["parent"], e["child"]) for e in card["edges"]}
        pair = next(p for p in card["pairs"] if {p["a"], p["b"]} == {parent, child})
        assert pair["mi"] == pytest.approx(0.0, abs=1e-12)


def test_counterfactual_changes_only_descendants(gen):
    n = 3000
    noise = gen.sample_noise(n, np.random.default_rng(1))
    factual = gen.factors_from_noise(noise, corr=0.2)
    some_descendant_moved = False
    for k, concept in enumerate(gen.concepts):
        shifted = (factual[:, k] + 1) % concept.n_levels
        cf = gen.counterfactual(factual, noise, {concept.name: shifted}, corr=0.2)
        np.testing.assert_array_equal(cf[:, k], shifted)
        allowed = {concept.name} | gen.dag.descendants(concept.name)
        for j, other in enumerate(gen.concept_names):
            if other not in allowed:
                np.testing.assert_array_equal(cf[:, j], factual[:, j], err_msg=other)
            elif other != concept.name and np.any(cf[:, j] != factual[:, j]):
                some_descendant_moved = True
    if gen.dag.edges:
        assert some_descendant_moved  # positive control: interventions propagate


def test_abs_rho_rises_as_sigma_falls_on_every_edge(gen):
    cards = [gen.card(sigma) for sigma in SIGMAS]
    assert all(card["source"] == "exact" for card in cards)
    for k, (parent, child) in enumerate(_edges_or_skip(gen)):
        rho = [abs(card["edges"][k]["pearson"]) for card in cards]
        mi = [card["edges"][k]["mi"] for card in cards]
        assert all(a < b for a, b in zip(rho, rho[1:], strict=False)), (parent, child, rho)
        assert all(a < b for a, b in zip(mi, mi[1:], strict=False)), (parent, child, mi)


def test_realized_rho_from_samples_matches_the_exact_card(gen):
    factors = gen.sample_factors(20000, np.random.default_rng(2), corr=0.4)
    exact = gen.card(0.4)
    emp = data_card(gen.scm, 0.4, factors=factors, max_states=1)
    for e, m in zip(exact["pairs"], emp["pairs"], strict=True):
        assert m["pearson"] == pytest.approx(e["pearson"], abs=0.03), (e["a"], e["b"])


def test_mi_vanishes_at_infinite_sigma(gen):
    exact = gen.card(math.inf)
    assert all(abs(p["mi"]) < 1e-12 and abs(p["pearson"]) < 1e-12 for p in exact["pairs"])
    n = 20000
    factors = gen.sample_factors(n, np.random.default_rng(3), corr=math.inf)
    emp = data_card(gen.scm, math.inf, factors=factors, max_states=1)
    sizes = {c.name: c.n_levels for c in gen.concepts}
    for p in emp["pairs"]:
        bias = (sizes[p["a"]] - 1) * (sizes[p["b"]] - 1) / (2 * n)  # plug-in MI bias under H0
        assert p["mi"] < 2 * bias + 1e-3, p
        assert abs(p["pearson"]) < 0.04, p


def test_card_is_json_and_complete(gen):
    card = json.loads(json.dumps(gen.card(0.3)))
    k = len(gen.concepts)
    assert len(card["pairs"]) == k * (k - 1) // 2
    assert [(e["parent"], e["child"]) for e in card["edges"]] == list(gen.dag.edges)
    assert card["corr"] == 0.3 and card["generator"] == gen.name
    assert json.loads(json.dumps(gen.card(math.inf)))["corr"] == "inf"


def test_joint_is_a_distribution(gen):
    joint = gen.joint(0.3)
    assert joint is not None and joint.shape == gen.scm.sizes
    assert joint.min() >= 0 and joint.sum() == pytest.approx(1.0)

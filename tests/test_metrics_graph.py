"""Known answers for the graph-aware scores, reconstruction errors and diagnostic matrices."""

from __future__ import annotations

import numpy as np
import pytest

from toybench.metrics import (
    bce_per_image,
    bce_with_logits_per_image,
    concept_assignment,
    dag_leakage,
    intervention_consistency,
    mse_per_image,
    pairwise_entanglement,
    pairwise_entanglement_threshold,
    pca_reference,
    perturbation_matrix,
    reconstruction_errors,
    responsibilities,
)


def _factors(sizes, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


# --- assignment --------------------------------------------------------------------------------


def test_assignment_recovers_a_permutation():
    factors = _factors([3, 4, 5])
    codes = np.c_[np.random.default_rng(1).normal(size=4000), factors[:, [2, 0, 1]]]
    result = concept_assignment(codes, factors)
    assert result.latent_of_concept.tolist() == [2, 3, 1]
    assert result.score == pytest.approx(1.0, abs=0.01)


def test_assignment_is_one_to_one_even_when_one_latent_wins_twice():
    importance = np.array([[0.9, 0.8], [0.5, 0.1]])  # greedy argmax would give latent 0 twice
    factors = _factors([2, 2], n=20)
    result = concept_assignment(
        np.zeros((20, 2)) + np.arange(20)[:, None], factors, matrix=importance
    )
    assert result.latent_of_concept.tolist() == [1, 0]
    assert result.score == pytest.approx((0.5 + 0.8) / 2)


def test_assignment_with_fewer_latents_than_concepts():
    factors = _factors([3, 4, 5])
    result = concept_assignment(factors[:, [1]].astype(float), factors)
    assert result.latent_of_concept.tolist() == [-1, 0, -1]


# --- pairwise entanglement ---------------------------------------------------------------------


def test_threshold_entanglement_zero_for_separate_latents():
    factors = _factors([4, 4])
    assert pairwise_entanglement_threshold(factors.astype(float), factors, [(0, 1)])[0] < 0.01


def test_threshold_entanglement_one_for_a_shared_latent():
    factors = _factors([4, 4])
    shared = (factors[:, 0] * 4 + factors[:, 1]).astype(float)  # 16 values, one per bin
    codes = np.c_[shared, np.random.default_rng(2).normal(size=4000)]
    assert pairwise_entanglement_threshold(codes, factors, [(0, 1)])[0] == pytest.approx(1.0)


def test_threshold_entanglement_half_when_the_shared_latent_holds_half_of_b():
    factors = _factors([4, 4], n=20000)
    # z0 = (a, high bit of b): Ĩ(z0; a) = 1, Ĩ(z0; b) = 1 bit / 2 bits; z1 = b alone
    codes = np.c_[factors[:, 0] * 2 + factors[:, 1] // 2, factors[:, 1]].astype(float)
    value = pairwise_entanglement_threshold(codes, factors, [(0, 1)])[0]
    assert value == pytest.approx(0.5, abs=0.01)


def test_threshold_entanglement_known_matrix_and_chains():
    # a shares latent 1 weakly with b (0.3), b shares latent 2 with c (0.4), a and c share none
    matrix = np.array([[0.9, 0.2, 0.0], [0.3, 0.8, 0.0], [0.0, 0.4, 0.7]])
    factors = _factors([2, 2, 2], n=20)
    codes = np.arange(60.0).reshape(20, 3)
    pairs = [(0, 1), (1, 2), (0, 2), (2, 0)]
    values = pairwise_entanglement_threshold(codes, factors, pairs, matrix=matrix)
    # (0, 2) is joined only through b: min(0.3, 0.4); the score is symmetric
    np.testing.assert_allclose(values, [0.3, 0.4, 0.3, 0.3])
    blocks = np.array([[0.9, 0.0], [0.0, 0.9]])  # disjoint latents: never connected
    value = pairwise_entanglement_threshold(codes[:, :2], factors[:, :2], [(0, 1)], matrix=blocks)
    assert value[0] == 0.0


def _merge_threshold_by_sweep(matrix, a, b):
    """The authors' procedure, brute force: lower a threshold through the matrix's distinct
    entries and return the first at which a and b share a connected component of the
    bipartite graph {(latent j, factor k): matrix[j, k] >= threshold} (0 if never)."""
    from scipy.sparse.csgraph import connected_components

    n_latents, n_factors = matrix.shape
    for threshold in np.unique(matrix)[::-1]:
        edges = (matrix >= threshold).astype(int)  # (L, K)
        adjacency = np.block(
            [
                [np.zeros((n_latents, n_latents), int), edges],
                [edges.T, np.zeros((n_factors, n_factors), int)],
            ]
        )  # nodes: latents, then factors
        labels = connected_components(adjacency, directed=False)[1]
        if labels[n_latents + a] == labels[n_latents + b]:
            return threshold
    return 0.0


def test_threshold_entanglement_equals_the_threshold_sweep():
    rng = np.random.default_rng(4)
    factors = _factors([2, 2, 2, 2, 2], n=20)
    for trial in range(20):
        n_latents = 3 + trial % 5
        matrix = rng.random((n_latents, 5)) * (rng.random((n_latents, 5)) < 0.5)
        codes = rng.normal(size=(20, n_latents))
        pairs = [(a, b) for a in range(5) for b in range(5) if a != b]
        values = pairwise_entanglement_threshold(codes, factors, pairs, matrix=matrix)
        expected = [_merge_threshold_by_sweep(matrix, a, b) for a, b in pairs]
        np.testing.assert_array_equal(values, expected)


def test_threshold_entanglement_rises_with_correlation_of_the_data():
    # an oracle encoder (z = factors) reads as entangled only where the data are correlated
    rng = np.random.default_rng(5)
    a = rng.integers(0, 8, 8000)
    copy = rng.random(8000) < 0.8
    b = np.where(copy, a, rng.integers(0, 8, 8000))
    correlated = np.c_[a, b]
    independent = _factors([8, 8], n=8000)
    high = pairwise_entanglement_threshold(correlated.astype(float), correlated, [(0, 1)])[0]
    low = pairwise_entanglement_threshold(independent.astype(float), independent, [(0, 1)])[0]
    assert low < 0.01 < 0.4 < high < 1.0


def test_threshold_entanglement_rejects_bad_pairs_and_matrices():
    factors = _factors([4, 4])
    codes = factors.astype(float)
    with pytest.raises(ValueError, match="distinct"):
        pairwise_entanglement_threshold(codes, factors, [(0, 0)])
    with pytest.raises(ValueError, match="distinct"):
        pairwise_entanglement_threshold(codes, factors, [(0, 2)])
    with pytest.raises(ValueError, match="expected"):
        pairwise_entanglement_threshold(codes, factors, [(0, 1)], matrix=np.ones((3, 2)))
    with pytest.raises(ValueError, match="negative"):
        pairwise_entanglement_threshold(codes, factors, [(0, 1)], matrix=-np.ones((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        pairwise_entanglement_threshold(codes, factors, [(0, 1)], matrix=np.full((2, 2), np.nan))


# --- calibrated pairwise entanglement (the headline) ------------------------------------------


def _xyc(n=10000):
    """Three independent uniform 32-level factors x, y, c, as in the docstring's known answers."""
    f = np.random.default_rng(0).integers(0, 32, size=(n, 3))
    return f, f[:, 0], f[:, 1], f[:, 2]


@pytest.mark.parametrize(
    ("case", "expected", "threshold"),
    [
        ("separate", 0.0, 0.008),
        ("rotated", 1.0, 0.137),
        ("bijective", 1.0, 0.022),
        ("third_shares_y", 0.003, 0.010),
        ("chain_through_c", 0.006, 0.022),
        ("rotated_plus_c", 0.999, 0.137),
        ("dead_unit_holds_both", 0.0, 0.137),
    ],
)
def test_entanglement_known_answers(case, expected, threshold):
    f, x, y, c = _xyc()
    codes = {
        "separate": np.c_[x, y],
        "rotated": np.c_[x + y, x - y],
        "bijective": (32 * x + y)[:, None],
        "third_shares_y": np.c_[x, 32 * c + y],
        "chain_through_c": np.c_[32 * x + c, 32 * y + c],
        "rotated_plus_c": np.c_[x + y, x - y, c],
        "dead_unit_holds_both": np.c_[x, y, 0.001 * (x + y)],
    }[case].astype(float)
    score = pairwise_entanglement(codes, f, [(0, 1)])[0]
    assert score == pytest.approx(expected, abs=0.005)
    assert pairwise_entanglement_threshold(codes, f, [(0, 1)])[0] == pytest.approx(
        threshold, abs=0.0005
    )


def test_entanglement_third_factor_never_raises_a_pair():
    f, x, y, c = _xyc()
    for base in (np.c_[x, y], np.c_[x + y, x - y]):
        alone = pairwise_entanglement(base.astype(float), f, [(0, 1)])[0]
        for extra in (c, 32 * c + x, x + c):
            with_c = pairwise_entanglement(np.c_[base, extra].astype(float), f, [(0, 1)])[0]
            assert with_c <= alone + 0.01


def test_entanglement_dead_units_counted_only_when_asked():
    f, x, y, _ = _xyc()
    codes = np.c_[x, y, 1e-4 * (32 * x + y)].astype(float)  # unit 2: Var ≈ 0.0009 < 0.01
    assert pairwise_entanglement(codes, f, [(0, 1)])[0] < 0.01
    everything = np.ones(3, dtype=bool)
    assert pairwise_entanglement(codes, f, [(0, 1)], active=everything)[0] > 0.3
    with pytest.raises(ValueError, match="bool mask"):
        pairwise_entanglement(codes, f, [(0, 1)], active=[1, 1, 1])


def test_entanglement_no_active_units_and_unencoded_concepts_score_zero():
    f, x, y, _ = _xyc(4000)
    assert pairwise_entanglement(np.zeros((4000, 2)), f, [(0, 1)])[0] == 0.0
    noise = np.random.default_rng(1).normal(size=(4000, 2))  # active, encodes nothing
    assert pairwise_entanglement(noise, f, [(0, 1), (1, 2)]).max() < 0.2


def test_entanglement_rises_with_correlation_of_the_data():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 8, 8000)
    b = np.where(rng.random(8000) < 0.8, a, rng.integers(0, 8, 8000))
    correlated = np.c_[a, b]
    independent = _factors([8, 8], n=8000)
    high = pairwise_entanglement(correlated.astype(float), correlated, [(0, 1)])[0]
    low = pairwise_entanglement(independent.astype(float), independent, [(0, 1)])[0]
    assert low < 0.01 < 0.5 < high <= 1.0


def test_assignment_and_leakage_give_dead_units_no_credit():
    f, x, y, _ = _xyc(4000)
    # unit 0 dead copy of x (Var ≈ 8e-5); unit 1 a noisy, active copy of x; unit 2 y
    noisy = x + np.random.default_rng(3).normal(0, 3, 4000)
    codes = np.c_[1e-4 * x, noisy, y].astype(float)
    factors = f[:, :2]
    active = np.array([False, True, True])
    everyone = concept_assignment(codes, factors)
    alive = concept_assignment(codes, factors, active=active)
    assert everyone.latent_of_concept[0] == 0 and alive.latent_of_concept[0] == 1
    assert alive.score < everyone.score
    # y's latent is unit 2 either way and leaks nothing; with no active unit, leakage is 0
    assert dag_leakage(codes, factors, [[], [0]], active=active)[1] < 0.05
    assert dag_leakage(codes, factors, [[], [0]], active=np.zeros(3, bool)) == {1: 0.0}
    # the dead unit holds child and parent and beats the noisy active copy of the child
    mixed = np.c_[1e-4 * (32 * y + x), y + np.random.default_rng(4).normal(0, 3, 4000)]
    assert dag_leakage(mixed, factors, [[], [0]])[1] > 0.5
    alive_only = dag_leakage(mixed, factors, [[], [0]], active=np.array([False, True]))[1]
    assert alive_only == dag_leakage(mixed[:, 1:], factors, [[], [0]])[1] < 0.5


# --- DAG leakage -------------------------------------------------------------------------------


def test_leakage_zero_when_latent_is_a_function_of_the_concept():
    factors = _factors([4, 4])
    assert dag_leakage(factors.astype(float), factors, [[], [0]]) == {1: 0.0}


def test_leakage_one_when_the_rest_of_the_latent_is_the_parent():
    factors = _factors([4, 4])  # column 0 is the parent of column 1
    child_latent = factors[:, 1] * 4 + factors[:, 0]
    codes = np.c_[factors[:, 0], child_latent].astype(float)
    assert dag_leakage(codes, factors, [[], [0]])[1] == pytest.approx(1.0)


def test_leakage_half_when_half_the_residual_is_the_parent():
    factors = _factors([4, 2], n=20000)  # column 1 is the parent of column 0
    noise = np.random.default_rng(3).integers(0, 2, 20000)
    child_latent = factors[:, 0] * 4 + factors[:, 1] * 2 + noise  # H(z|c) = 2 bits, 1 from parent
    codes = np.c_[child_latent, factors[:, 1]].astype(float)
    assert dag_leakage(codes, factors, [[1], []])[0] == pytest.approx(0.5, abs=0.01)


def test_leakage_validates_parents():
    factors = _factors([4, 4])
    with pytest.raises(ValueError, match="parents"):
        dag_leakage(factors.astype(float), factors, [[]])
    with pytest.raises(ValueError, match="other columns"):
        dag_leakage(factors.astype(float), factors, [[], [1]])


# --- intervention consistency, responsibilities, perturbation matrix ---------------------------


def test_intervention_consistency_known_shares():
    before = np.zeros((10, 3))
    assert intervention_consistency(before, before + [2.0, 0.0, 0.0], [0]) == 1.0
    assert intervention_consistency(before, before + [1.0, 1.0, 0.0], [0]) == 0.5
    assert (
        intervention_consistency(before, before + [1.0, 3.0, 0.0], [0], scale=[1.0, 3.0, 1.0])
        == 0.5
    )
    assert intervention_consistency(before, before, [0]) == 0.0
    with pytest.raises(ValueError, match="shape"):
        intervention_consistency(before, before[:, :2], [0])


def test_responsibilities_are_z_scored_changes():
    rng = np.random.default_rng(0)
    before = rng.normal(size=(1000, 2)) * [1.0, 4.0]
    changed = np.arange(1000) % 2
    after = before + np.where(changed[:, None] == 0, [1.0, 0.0], [0.0, 4.0])
    matrix = responsibilities(before, after, changed, 2, scale=np.array([1.0, 4.0]))
    np.testing.assert_allclose(matrix, [[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="factor 2"):
        responsibilities(before, after, changed, 3)


def test_perturbation_matrix_known_values():
    base = np.random.default_rng(0).normal(size=(5, 3))
    perturbed = np.stack([base + [1.0, 0, 0], base + [0, 2.0, 0.5], base])
    np.testing.assert_allclose(
        perturbation_matrix(base, perturbed), [[1, 0, 0], [0, 4, 0.25], [0, 0, 0]]
    )
    with pytest.raises(ValueError, match="expected"):
        perturbation_matrix(base, perturbed[:, :4])


# --- reconstruction ----------------------------------------------------------------------------


def test_bce_and_mse_closed_forms():
    target = np.array([[[[0, 255], [255, 0]]]], dtype=np.uint8)  # (1, 1, 2, 2)
    half = np.full((1, 1, 2, 2), 0.5)
    assert bce_per_image(target, half)[0] == pytest.approx(4 * np.log(2))
    assert bce_with_logits_per_image(target, np.zeros((1, 1, 2, 2)))[0] == pytest.approx(
        4 * np.log(2)
    )
    assert mse_per_image(target, half)[0] == pytest.approx(1.0)
    exact = target / 255.0
    assert bce_per_image(target, exact)[0] == pytest.approx(0.0, abs=1e-5)
    result = reconstruction_errors(target, half, elbo=-3.0)
    assert result == pytest.approx((4 * np.log(2), 1.0, -3.0))


def test_bce_logits_agrees_with_probabilities():
    rng = np.random.default_rng(0)
    target = rng.random((3, 1, 4, 4))
    logits = rng.normal(size=(3, 1, 4, 4))
    np.testing.assert_allclose(
        bce_with_logits_per_image(target, logits), bce_per_image(target, 1 / (1 + np.exp(-logits)))
    )


def test_recon_validation():
    with pytest.raises(ValueError, match="shape"):
        mse_per_image(np.zeros((2, 1, 2, 2)), np.zeros((2, 1, 2, 3)))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        bce_per_image(np.full((1, 1, 2, 2), 2.0), np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        mse_per_image(np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 2), np.nan))


def test_pca_reference_exact_on_a_low_rank_image_set():
    rng = np.random.default_rng(0)
    basis = rng.random((2, 1, 6, 6)) * 0.25  # images = 0.25 + a·b1 + b·b2 stay in [0, 1]
    coefficients = rng.random((300, 2))
    images = 0.25 + np.einsum("nk,kchw->nchw", coefficients, basis)
    result = pca_reference(images[:200], images[200:], 2, seed=0)
    assert result.mse == pytest.approx(0.0, abs=1e-12)
    assert result.explained_variance_ratio == pytest.approx(1.0)
    worse = pca_reference(images[:200], images[200:], 1, seed=0)
    assert worse.mse > 1e-4
    with pytest.raises(ValueError, match="n_components"):
        pca_reference(images[:200], images[200:], 0)


def test_pca_references_share_one_fit_and_match_separate_calls():
    from toybench.metrics.recon import pca_references

    rng = np.random.default_rng(1)
    images = (rng.random((260, 1, 6, 6)) < 0.3).astype(np.uint8) * 255
    train, a, b = images[:200], images[200:230], images[230:]
    both = pca_references(train, {"a": a, "b": b}, 3, seed=0)
    assert set(both) == {"a", "b"}
    assert both["a"] == pca_reference(train, a, 3, seed=0)
    assert both["b"] == pca_reference(train, b, 3, seed=0)
    with pytest.raises(ValueError, match="differ in shape"):
        pca_references(train, {"a": images[:5, :, :5, :5]}, 3)

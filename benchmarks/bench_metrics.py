"""Speed of every toybench metric except DCI (see ``bench_dci.py``) at the issue's size:
n = 10,000 rows, L = 10 codes, K = 5 factors with dSprites' sizes (3, 6, 40, 32, 32)
(Matthey et al. 2017, https://github.com/deepmind/dsprites-dataset), plus the generator-based
scores of `toybench.evaluate` on the shipped dSprites generator with the QUICK protocol.

Run: ``pytest benchmarks/bench_metrics.py --benchmark-only``. Timings on a shared 2-core
machine are noisy; compare runs on a quiet machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from toybench import evaluate, metrics

SIZES = (3, 6, 40, 32, 32)
N, L = 10_000, 10


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    factors = np.stack([rng.integers(0, s, N) for s in SIZES], axis=1)  # (N, K)
    signal = factors / np.array(SIZES)  # (N, K) in [0, 1)
    mixing = np.eye(5, L) + 0.2 * rng.normal(size=(5, L))  # (K, L)
    codes = signal @ mixing + 0.05 * rng.normal(size=(N, L))  # (N, L)
    return codes, factors


def _run(benchmark, fn, *args, rounds=3, **kwargs):
    result = benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=rounds, iterations=1)
    benchmark.extra_info.update(n=N, n_codes=L, factor_sizes=list(SIZES))
    return result


@pytest.mark.parametrize("name", ["mig", "sap", "modularity", "explicitness", "active_units"])
def test_registered_metric(benchmark, data, name):
    result = _run(benchmark, metrics.get_metric(name), *data, rounds=1 if name == "sap" else 3)
    assert result is not None


def test_concept_assignment(benchmark, data):
    assert _run(benchmark, metrics.concept_assignment, *data).latent_of_concept.shape == (5,)


def test_pairwise_entanglement(benchmark, data):
    pairs = [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert _run(benchmark, metrics.pairwise_entanglement, *data, pairs).shape == (4,)


def test_dag_leakage(benchmark, data):
    parents = [[], [0], [0, 1], [2], [2, 3]]
    assert len(_run(benchmark, metrics.dag_leakage, *data, parents)) == 4


def test_intervention_consistency(benchmark, data):
    codes = data[0]
    shifted = codes + np.eye(L)[0]
    assert _run(benchmark, metrics.intervention_consistency, codes, shifted, [0]) == 1.0


def test_responsibilities(benchmark, data):
    codes, factors = data
    changed = np.arange(N) % 5
    after = codes + np.random.default_rng(1).normal(size=codes.shape)
    assert _run(benchmark, metrics.responsibilities, codes, after, changed, 5).shape == (5, L)


def test_perturbation_matrix(benchmark, data):
    codes = data[0]
    perturbed = codes[None] + np.eye(L)[:, None, :]  # (L, N, L)
    assert _run(benchmark, metrics.perturbation_matrix, codes, perturbed).shape == (L, L)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    target = (rng.random((N, 1, 64, 64)) < 0.1).astype(np.uint8) * 255
    recon = rng.random((N, 1, 64, 64))
    return target, recon


def test_bce_and_mse_per_image(benchmark, images):
    result = _run(benchmark, metrics.reconstruction_errors, *images)
    assert result.bce > 0


def test_pca_reference(benchmark, images):
    target = images[0]
    result = _run(benchmark, metrics.pca_reference, target[:8000], target[8000:], L, rounds=1)
    assert 0 <= result.explained_variance_ratio <= 1


@pytest.fixture(scope="module")
def dsprites():
    from toybench.specs import load_generator

    generator = load_generator("dsprites")
    projection = np.random.default_rng(0).normal(size=(64 * 64, L)) / 64.0  # (D, L)

    def encode(batch):  # (B, 1, 64, 64) uint8 -> (B, L): a fixed linear encoder
        return (batch.reshape(len(batch), -1) / 255.0) @ projection

    return generator, encode


@pytest.mark.parametrize("score", ["factor_vae_score", "beta_vae_score"])
def test_generator_scores_quick_protocol(benchmark, dsprites, score):
    generator, encode = dsprites
    fn = getattr(evaluate, score)
    result = benchmark.pedantic(
        lambda: fn(
            encode, generator, corr=0.2, rng=np.random.default_rng(0), config=evaluate.QUICK
        ),
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info.update(protocol="QUICK", corr=0.2)
    assert 0.0 <= result.eval_accuracy <= 1.0

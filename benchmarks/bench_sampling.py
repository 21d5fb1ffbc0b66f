"""Sampling throughput of the causal engine (pytest-benchmark): factors by inverse CDF, the exact
joint and the exact data card.

Sampling draws one exogenous uniform per node and inverts each conditional CDF with one
``searchsorted`` per node (Träuble et al. 2021 band, https://arxiv.org/abs/2006.07886), so it costs
O(n · K · log(M · L)). Rates land in ``extra_info``.

Run: ``pytest benchmarks/bench_sampling.py --benchmark-only``.
"""

from __future__ import annotations

import numpy as np
import pytest

from toybench.specs import load_generator

N = 1_000_000


@pytest.mark.parametrize("name", ["toy-causal", "pendulum", "dsprites-pairs"])
def test_sample_factors(benchmark, name):
    gen = load_generator(name)
    factors = benchmark(lambda: gen.sample_factors(N, np.random.default_rng(0), corr=0.2))
    assert factors.shape == (N, len(gen.concepts))
    benchmark.extra_info["factors_per_s"] = round(N / benchmark.stats.stats.mean)


def test_exact_joint_full_dsprites_grid(benchmark):
    gen = load_generator("dsprites-pairs")  # 737,280 states
    joint = benchmark(lambda: gen.joint(0.2))
    assert joint.size == 737_280


def test_exact_card_full_dsprites_grid(benchmark):
    gen = load_generator("dsprites-pairs")
    card = benchmark(lambda: gen.card(0.2))
    assert card["source"] == "exact"

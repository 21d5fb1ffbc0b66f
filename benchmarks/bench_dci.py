"""DCI speed: the fast boosting backend against scikit-learn's reference, on the same data.

n = 10,000 rows (first 8,000 train, 2,000 test), L = 10 codes, K = 5 factors of sizes
(3, 6, 40, 32, 32) — dSprites-sized. The reference takes minutes, so it runs one round
(``benchmark.pedantic(rounds=1)``); the fast backend runs several after a warm-up call (numba
compilation is cached on disk; the first call in a fresh environment compiles for a while).
After both ran, the reference benchmark records the largest score differences between the two
backends in ``extra_info``. ``extra_info["cpu_seconds"]`` is the process CPU time per round (all
threads), to tell parallel speed-up from single-core speed on a shared machine;
``test_dci_fast_one_thread`` times the same five models on one thread.

Run: ``pytest benchmarks/bench_dci.py --benchmark-only -s`` (``-k fast`` skips the reference).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from toybench.metrics._common import train_test_split
from toybench.metrics._gbm import fit_gbm_factors
from toybench.metrics.dci import dci

FACTOR_SIZES = (3, 6, 40, 32, 32)
N_ROWS = 10_000
N_CODES = 10
_RESULTS: dict[str, object] = {}


def make_codes(n=N_ROWS, sizes=FACTOR_SIZES, n_codes=N_CODES, seed=0):
    """Independent factors, codes = a noisy linear mixture of them plus pure-noise codes."""
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)  # (n, K)
    u = (factors + 0.5) / np.asarray(sizes)  # (n, K) in (0, 1)
    k = len(sizes)
    mixing = np.eye(k) + 0.2 * rng.normal(size=(k, k))
    informative = (u + 0.05 * rng.normal(size=(n, k))) @ mixing  # (n, K)
    codes = np.concatenate([informative, rng.normal(size=(n, n_codes - k))], axis=1)  # (n, L)
    return codes, factors


@pytest.fixture(scope="module")
def data():
    return make_codes()


def _record(benchmark, name, result):
    _RESULTS[name] = result
    benchmark.extra_info.update(
        disentanglement=result.disentanglement,
        completeness=result.completeness,
        informativeness_train=result.informativeness_train,
        informativeness_test=result.informativeness_test,
    )


def _timed(benchmark, function, *args, rounds, **kwargs):
    """``benchmark.pedantic`` of ``function``, recording the CPU seconds per round too."""
    cpu = []

    def run():
        start = time.process_time()
        result = function(*args, **kwargs)
        cpu.append(time.process_time() - start)
        return result

    result = benchmark.pedantic(run, rounds=rounds, iterations=1)
    benchmark.extra_info["cpu_seconds"] = min(cpu)
    return result


def test_dci_fast(benchmark, data):
    codes, factors = data
    dci(codes[:200], factors[:200], backend="fast")  # compile / load the numba cache
    result = _timed(benchmark, dci, codes, factors, backend="fast", rounds=3)
    _record(benchmark, "fast", result)


def test_dci_fast_one_thread(benchmark, data):
    """The fast backend's five models (all of DCI's work) on a single thread."""
    split = train_test_split(*data)
    args = (split.codes_train, split.factors_train, split.codes_test, split.factors_test)
    fit_gbm_factors(*(arr[:200] for arr in args), n_estimators=2)  # compile / load the cache
    fits = _timed(benchmark, fit_gbm_factors, *args, n_threads=1, rounds=2)
    fast = _RESULTS.get("fast")
    if fast is not None:  # the same models as dci(..., backend="fast")
        np.testing.assert_array_equal(
            np.column_stack([fit.importance for fit in fits]), fast.importance
        )


def test_dci_reference(benchmark, data):
    codes, factors = data
    result = _timed(benchmark, dci, codes, factors, backend="reference", rounds=1)
    _record(benchmark, "reference", result)
    fast = _RESULTS.get("fast")
    if fast is not None:
        deltas = {
            f"abs_delta_{name}": abs(getattr(fast, name) - getattr(result, name))
            for name in (
                "disentanglement",
                "completeness",
                "informativeness_train",
                "informativeness_test",
            )
        }
        deltas["max_abs_delta_importance"] = float(
            np.abs(fast.importance - result.importance).max()
        )
        benchmark.extra_info.update(deltas)
        print("\nfast vs reference:", deltas)

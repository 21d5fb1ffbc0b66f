"""DCI through the fast backend: known answers, and agreement with the scikit-learn reference
within 0.01 on several synthetic code sets (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from toybench.metrics import dci, score


def _factors(sizes, n, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


def test_fast_identity_codes():
    factors = _factors([3, 4, 10], 600)
    result = dci(factors.astype(float), factors)
    assert result.disentanglement >= 0.9 and result.completeness >= 0.9
    assert result.informativeness_test >= 0.95


def test_fast_random_and_constant_codes():
    factors = _factors([3, 4], 500)
    random = dci(np.random.default_rng(1).normal(size=(500, 3)), factors)
    assert random.disentanglement <= 0.2 and random.completeness <= 0.2
    constant = dci(np.ones((500, 3)), factors)
    assert constant.disentanglement == pytest.approx(0.0, abs=1e-6)


def test_fast_is_the_default_in_score():
    factors = _factors([3, 4], 300)
    codes = factors + np.random.default_rng(0).normal(0, 0.3, factors.shape)
    assert score(codes, factors)["dci.disentanglement"] == pytest.approx(
        dci(codes, factors, backend="fast").disentanglement
    )


def _code_sets():
    rng = np.random.default_rng(7)
    factors = _factors([3, 6, 10], 1500, seed=7)
    noisy = factors + rng.normal(0, 0.5, factors.shape)
    mixed = noisy @ (np.eye(3) + 0.4 * rng.normal(size=(3, 3)))
    with_nuisance = np.c_[mixed, rng.normal(size=(1500, 2))]
    return factors, {"noisy": noisy, "mixed": mixed, "with_nuisance": with_nuisance}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["noisy", "mixed", "with_nuisance"])
def test_fast_matches_reference(name):
    factors, sets = _code_sets()
    fast = dci(sets[name], factors, backend="fast")
    reference = dci(sets[name], factors, backend="reference")
    for field in (
        "disentanglement",
        "completeness",
        "informativeness_train",
        "informativeness_test",
    ):
        assert getattr(fast, field) == pytest.approx(getattr(reference, field), abs=0.01), field


def test_score_is_the_same_with_dci_beside_the_other_scores_or_after_them(monkeypatch):
    # With two threads available the fast DCI runs in a worker thread beside explicitness,
    # MIG, SAP and modularity; with one it runs after them. Every value is the same.
    from toybench.metrics import score_with_importance

    rng = np.random.default_rng(3)
    factors = rng.integers(0, 4, size=(600, 3))
    codes = factors @ rng.normal(size=(3, 5)) + 0.3 * rng.normal(size=(600, 5))
    monkeypatch.setattr("toybench.hardware.cpu_count", lambda: 2)
    monkeypatch.delenv("TOYBENCH_THREADS", raising=False)
    beside, importance_beside = score_with_importance(codes, factors)
    monkeypatch.setenv("TOYBENCH_THREADS", "1")
    after, importance_after = score_with_importance(codes, factors)
    assert beside == after
    assert np.array_equal(importance_beside, importance_after)


def test_score_is_its_two_halves():
    # evaluate._score_splits computes the DCI keys and the rest in different threads
    from toybench.metrics import dci, dci_scores, score, scores_but_dci

    rng = np.random.default_rng(5)
    factors = rng.integers(0, 3, size=(400, 2))
    codes = factors @ rng.normal(size=(2, 4)) + 0.4 * rng.normal(size=(400, 4))
    halves = {**scores_but_dci(codes, factors), **dci_scores(dci(codes, factors, n_threads=1))}
    assert halves == score(codes, factors)
    assert not set(scores_but_dci(codes, factors)) & set(dci_scores(dci(codes, factors)))


def test_scores_are_the_same_without_scikit_learns_input_checks():
    # evaluate._small_blas skips scikit-learn's parameter validation and finiteness checks
    # (and uses one BLAS thread) around the evaluation's fits: the values must not move.
    from toybench.evaluate import _small_blas
    from toybench.metrics import score_with_importance

    rng = np.random.default_rng(4)
    factors = rng.integers(0, 5, size=(500, 2))
    codes = factors @ rng.normal(size=(2, 4)) + 0.5 * rng.normal(size=(500, 4))
    checked = score_with_importance(codes, factors)[0]
    with _small_blas():
        unchecked = score_with_importance(codes, factors)[0]
    assert checked == unchecked


def test_prepare_loads_the_boosting_core_that_the_fits_then_use():
    # A fresh interpreter: `toybench run` calls prepare() at start-up so that its scoring phase
    # does not load numba's code. The warm-up must compile/load the very signature real fits
    # use (else the first fit would still load or compile another one).
    import subprocess
    import sys

    program = """
import sys
import numpy as np
from toybench.metrics.dci import dci, prepare
prepare("reference")
assert "toybench.metrics._gbm" not in sys.modules, "the reference backend needs no numba"
prepare("fast")
from toybench.metrics import _gbm
before = list(_gbm._boost.signatures)
rng = np.random.default_rng(0)
codes = rng.normal(size=(400, 3))
factors = np.column_stack([rng.integers(0, k, 400) for k in (2, 5)])
dci(codes, factors, n_threads=1)
print(len(before), len(_gbm._boost.signatures))
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["1", "1"]

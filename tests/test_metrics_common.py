"""Property tests driven by the METRICS registry (after scikit-learn's ``test_common.py``):
every registered metric returns floats in bounds, validates its input, and is invariant to
permuting the codes — and to rescaling them where its definition implies it."""

from __future__ import annotations

import numpy as np
import pytest

from toybench.metrics import METRICS, get_metric

# What each definition implies. A newly registered metric fails `test_every_metric_declared`
# until it states its properties here.
PROPERTIES = {
    # Trees split on order statistics, importances are scale-free. Exactly tied candidate
    # splits on different codes are broken by feature order, so permuting codes may move DCI a
    # little (the 0.01 the fast backend is held to).
    "dci": {"scale_invariant": True, "kwargs": {"backend": "reference"}, "tol": 0.01},
    # equal-width histograms over each code's own range
    "mig": {"scale_invariant": True, "kwargs": {}, "tol": 1e-9},
    "modularity": {"scale_invariant": True, "kwargs": {}, "tol": 1e-9},
    # codes are standardized before the logistic regression (lbfgs stops at a tolerance)
    "explicitness": {"scale_invariant": True, "kwargs": {}, "tol": 1e-4},
    # LinearSVC(C=0.01) on the raw code: the regularization sees the scale
    "sap": {"scale_invariant": False, "kwargs": {}, "tol": 1e-9},
    # a fixed threshold on the variance
    "active_units": {"scale_invariant": False, "kwargs": {}, "tol": 1e-9},
}
NAMES = sorted(METRICS)


def _data(seed: int = 0, n: int = 200):
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, 3, n), rng.integers(0, 4, n)], axis=1)
    codes = np.c_[
        factors[:, 0] + 0.3 * rng.normal(size=n),
        rng.normal(size=n),
        factors[:, 1] * 0.5 + 0.2 * rng.normal(size=n),
        0.05 * rng.normal(size=n),
    ]
    return codes, factors


def _call(name, codes, factors):
    return get_metric(name)(codes, factors, **PROPERTIES[name]["kwargs"])


def _scalars(result) -> dict[str, float]:
    """The scalar fields of a metric result (a float, or a NamedTuple of floats and arrays)."""
    if isinstance(result, float):
        return {"value": result}
    assert hasattr(result, "_fields"), f"expected float or NamedTuple, got {type(result)}"
    out = {}
    for field in result._fields:
        value = getattr(result, field)
        if isinstance(value, np.ndarray):
            continue
        assert type(value) in (float, int), f"{field} is {type(value)}, not a Python scalar"
        out[field] = value
    assert out, "a NamedTuple result needs at least one scalar field"
    return out


def test_every_metric_declared():
    assert set(METRICS) == set(PROPERTIES)


def test_unknown_metric_lists_valid_names():
    with pytest.raises(KeyError, match="valid"):
        get_metric("nope")


@pytest.fixture(scope="module")
def results():
    codes, factors = _data()
    return {name: _call(name, codes, factors) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_returns_python_scalars_in_bounds(name, results):
    for field, value in _scalars(results[name]).items():
        if name == "active_units" and field == "n_active":
            assert 0 <= value <= 4
        else:
            assert 0.0 <= value <= 1.0, (field, value)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name, results):
    codes, factors = _data()
    again = _call(name, codes, factors)
    assert _scalars(again) == _scalars(results[name])


@pytest.mark.parametrize("name", NAMES)
def test_invariant_to_permuting_codes(name, results):
    codes, factors = _data()
    order = np.array([2, 0, 3, 1])
    permuted = _call(name, codes[:, order], factors)
    for field, value in _scalars(results[name]).items():
        assert _scalars(permuted)[field] == pytest.approx(value, abs=PROPERTIES[name]["tol"]), field


@pytest.mark.parametrize("name", [n for n in NAMES if PROPERTIES[n]["scale_invariant"]])
@pytest.mark.parametrize("scale", [4.0, 0.37])
def test_invariant_to_positive_rescaling(name, scale, results):
    codes, factors = _data()
    scaled = _call(name, codes * np.array([scale, 1.0, 2.5 * scale, 10.0]), factors)
    for field, value in _scalars(results[name]).items():
        assert _scalars(scaled)[field] == pytest.approx(value, abs=PROPERTIES[name]["tol"]), field


def test_scale_dependence_is_real_for_active_units():
    codes, factors = _data()
    assert get_metric("active_units")(codes * 0.01, factors).n_active == 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_codes_raise(name, bad):
    codes, factors = _data()
    codes[5, 1] = bad
    with pytest.raises(ValueError, match=r"\(200, 4\)"):
        _call(name, codes, factors)


@pytest.mark.parametrize("name", NAMES)
def test_length_mismatch_names_shapes(name):
    codes, factors = _data()
    with pytest.raises(ValueError, match=r"\(199, 2\)"):
        _call(name, codes, factors[:-1])


@pytest.mark.parametrize("name", NAMES)
def test_wrong_ndim_raises(name):
    codes, factors = _data()
    with pytest.raises(ValueError, match="2-D"):
        _call(name, codes[:, 0], factors)
    with pytest.raises(ValueError, match="2-D"):
        _call(name, codes, factors[:, 0])


@pytest.mark.parametrize("name", NAMES)
def test_constant_factor_raises(name):
    codes, factors = _data()
    factors[:, 1] = 2
    with pytest.raises(ValueError, match="constant"):
        _call(name, codes, factors)


@pytest.mark.parametrize("name", NAMES)
def test_nan_factor_raises(name):
    codes, factors = _data()
    factors = factors.astype(float)
    factors[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _call(name, codes, factors)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "active_units"])
def test_too_few_rows_raise(name):
    codes, factors = _data()
    with pytest.raises(ValueError, match="rows"):
        _call(name, codes[:5], factors[:5])

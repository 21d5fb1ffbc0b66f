"""`toybench score codes.npz`: a table on stdout, flat JSON written atomically, and one clear
line with a non-zero exit for every kind of bad file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from toybench.cli import main

KEYS = {
    "mig",
    "sap",
    "modularity",
    "explicitness_train",
    "explicitness_test",
    "dci.disentanglement",
    "dci.completeness",
    "dci.informativeness_train",
    "dci.informativeness_test",
    "active_units",
}


def _arrays(n=200, seed=0):
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, 3, n), rng.integers(0, 4, n)], axis=1)
    return factors + rng.normal(0, 0.2, factors.shape), factors


def _invoke(*args):
    return CliRunner().invoke(main, ["score", *map(str, args)])


def test_score_prints_table_and_writes_flat_json(tmp_path):
    codes, factors = _arrays()
    np.savez(tmp_path / "codes.npz", codes=codes, factors=factors)
    out = tmp_path / "scores.json"
    result = _invoke(tmp_path / "codes.npz", "--json", out, "--dci-backend", "reference")
    assert result.exit_code == 0, result.output
    assert "dci.disentanglement" in result.output and "mig" in result.output
    scores = json.loads(out.read_text())
    assert KEYS <= set(scores)
    assert all(isinstance(v, float) for v in scores.values())
    assert scores["mig"] > 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "codes.npz",
        "scores.json",
    ]  # no temp left


def test_score_without_json_writes_nothing(tmp_path):
    codes, factors = _arrays()
    np.savez(tmp_path / "codes.npz", codes=codes, factors=factors)
    result = _invoke(tmp_path / "codes.npz", "--dci-backend", "reference")
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["codes.npz"]


def _bad_files(tmp_path):
    codes, factors = _arrays()
    np.savez(tmp_path / "missing.npz", codes=codes)
    np.savez(tmp_path / "shapes.npz", codes=codes[:-3], factors=factors)
    nan_codes = codes.copy()
    nan_codes[4, 0] = np.nan
    np.savez(tmp_path / "nan.npz", codes=nan_codes, factors=factors)
    np.savez(tmp_path / "ndim.npz", codes=codes[:, 0], factors=factors)
    np.savez(tmp_path / "constant.npz", codes=codes, factors=np.zeros_like(factors))
    np.savez(
        tmp_path / "objects.npz", codes=np.array([{"a": 1}] * 3, dtype=object), factors=factors
    )
    (tmp_path / "text.npz").write_text("not an archive\n")
    np.save(tmp_path / "single.npy", codes)
    return {
        "missing.npz": "missing",
        "shapes.npz": "row counts differ",
        "nan.npz": "NaN",
        "ndim.npz": "2-D",
        "constant.npz": "constant",
        "objects.npz": "pickle",
        "text.npz": "not an .npz",
        "single.npy": "not an .npz",
        "absent.npz": "no such file",
    }


@pytest.mark.parametrize(
    "name",
    [
        "missing.npz",
        "shapes.npz",
        "nan.npz",
        "ndim.npz",
        "constant.npz",
        "objects.npz",
        "text.npz",
        "single.npy",
        "absent.npz",
    ],
)
def test_bad_files_give_one_line_and_nonzero_exit(tmp_path, name):
    expected = _bad_files(tmp_path)[name]
    out = tmp_path / "scores.json"
    result = _invoke(tmp_path / name, "--json", out, "--dci-backend", "reference")
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert expected in lines[0]
    assert not out.exists()


def test_unknown_backend_is_a_usage_error(tmp_path):
    codes, factors = _arrays()
    np.savez(tmp_path / "codes.npz", codes=codes, factors=factors)
    result = _invoke(tmp_path / "codes.npz", "--dci-backend", "xgboost")
    assert result.exit_code == 2 and "fast" in result.output


def test_list_shows_metrics():
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0
    assert "metrics:" in result.output and "dci" in result.output

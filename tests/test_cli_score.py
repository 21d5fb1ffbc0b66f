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


# -- issue #11, fault 2: damaged and forged .npz files --------------------------------------------
def _small_npz(compressed=False) -> bytes:
    import io

    codes, factors = _arrays(n=30)
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, codes=codes, factors=factors)
    return buffer.getvalue()


@pytest.mark.parametrize("compressed", [False, True])
def test_every_truncation_and_bit_flip_is_one_line_or_the_same_arrays(tmp_path, compressed):
    from toybench.errors import ToybenchError
    from toybench.evaluate import load_codes_npz

    data = _small_npz(compressed)
    codes, factors = _arrays(n=30)
    path = tmp_path / "b.npz"
    damaged = [data[:n] for n in range(0, len(data), 7)]  # every 7th length, all fields hit
    for i in range(0, len(data), 3):  # every 3rd byte, each bit position in turn
        flipped = bytearray(data)
        flipped[i] ^= 1 << (i % 8)
        damaged.append(bytes(flipped))
    refused = 0
    for blob in damaged:
        path.write_bytes(blob)
        try:
            got = load_codes_npz(path)
        except ToybenchError as err:
            assert "\n" not in str(err) and len(str(err)) < 400
            refused += 1
        else:  # a flip in a field nothing checks (a time stamp, ...): the data is intact
            np.testing.assert_array_equal(got[0], codes)
            np.testing.assert_array_equal(got[1], factors)
    assert refused > len(damaged) * 0.8


def _forged_npz(path, shape):
    """An .npz whose 'codes' header claims ``shape`` but holds 16 bytes of data."""
    import zipfile

    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    member = io_bytes(lambda f: np.lib.format.write_array_header_1_0(f, header)) + bytes(16)
    factors = io_bytes(lambda f: np.lib.format.write_array(f, np.zeros((2, 1), np.int64)))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("codes.npy", member)
        archive.writestr("factors.npy", factors)


def io_bytes(write) -> bytes:
    import io

    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


def test_header_claiming_1e13_elements_is_refused_without_allocating(tmp_path):
    _forged_npz(tmp_path / "forged.npz", (10**13,))
    result = _invoke(tmp_path / "forged.npz")
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "claims shape (10000000000000,) of float64" in lines[0]
    assert "holds 16 bytes of data; the file is damaged" in lines[0]


def test_array_larger_than_memory_is_refused(tmp_path, monkeypatch):
    import toybench.errors
    from toybench.errors import ToybenchError
    from toybench.evaluate import load_codes_npz

    codes, factors = _arrays()
    np.savez(tmp_path / "codes.npz", codes=codes, factors=factors)
    monkeypatch.setattr(toybench.errors, "memory_limit_bytes", lambda: 1000)
    with pytest.raises(ToybenchError, match=r"array 'codes' of shape \(200, 2\) would need 3.2 kB"):
        load_codes_npz(tmp_path / "codes.npz")


def test_truncated_file_through_the_cli(tmp_path):
    codes, factors = _arrays()
    np.savez(tmp_path / "codes.npz", codes=codes, factors=factors)
    data = (tmp_path / "codes.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    result = _invoke(tmp_path / "cut.npz")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "truncated or corrupted (BadZipFile" in lines[0]


# -- issue #11: an ordered file gives a biased split: warn, and offer a seeded shuffle ------------
def _blocked(n=300, seed=0):
    """Factors whose first column comes in blocks of 10 rows (as data written level by level):
    ordered, yet every level is in the train and in the test rows."""
    rng = np.random.default_rng(seed)
    factors = np.stack([(np.arange(n) // 10) % 3, rng.integers(0, 4, n)], axis=1)
    return factors + rng.normal(0, 0.2, factors.shape), factors


def test_ordered_rows_warn_on_stderr_in_one_line(tmp_path):
    codes, factors = _blocked()
    np.savez(tmp_path / "codes.npz", codes=codes, factors=factors)
    result = _invoke(tmp_path / "codes.npz", "--dci-backend", "reference")
    assert result.exit_code == 0, result.output
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("Warning: ")
    assert "rows look ordered (factor column 0 changes level 29 times" in warning[0]
    assert "--shuffle-seed 0" in warning[0] and "mig" in result.stdout


def test_random_rows_do_not_warn(tmp_path):
    codes, factors = _arrays(n=300)
    np.savez(tmp_path / "codes.npz", codes=codes, factors=factors)
    result = _invoke(tmp_path / "codes.npz", "--dci-backend", "reference")
    assert result.exit_code == 0 and result.stderr == ""


def test_shuffle_seed_is_deterministic_and_removes_the_warning(tmp_path):
    codes, factors = _blocked()
    np.savez(tmp_path / "codes.npz", codes=codes, factors=factors)
    outs = []
    for k, seed in enumerate((0, 0, 1)):
        outs.append(tmp_path / f"s{k}.json")
        result = _invoke(tmp_path / "codes.npz", "--shuffle-seed", seed, "--json", outs[-1],
                         "--dci-backend", "reference")
        assert result.exit_code == 0 and result.stderr == "", result.output
    first, again, other = (json.loads(p.read_text()) for p in outs)
    assert first == again and first != other
    # the same permutation of codes and factors, as the docstring says
    order = np.random.default_rng(0).permutation(len(codes))
    np.savez(tmp_path / "by_hand.npz", codes=codes[order], factors=factors[order])
    from toybench.evaluate import score_codes_file

    assert score_codes_file(tmp_path / "by_hand.npz", dci_backend="reference") == first


def test_ordered_grid_is_detected_and_random_orders_are_not():
    import itertools

    from toybench.evaluate import row_order_problem

    grid = np.array(list(itertools.product(range(3), range(6), range(8), range(8))))  # in order
    assert row_order_problem(grid).startswith("factor column 0 changes level 2 times")
    rng = np.random.default_rng(0)
    assert row_order_problem(grid[rng.permutation(len(grid))]) is None
    for n in (10, 100, 1000, 5000):  # random rows, balanced and skewed levels: no false alarm
        for p in ([0.5, 0.5], [0.98, 0.01, 0.01], [0.1] * 10):
            for _ in range(20):
                assert row_order_problem(rng.choice(len(p), size=(n, 3), p=p)) is None


def test_score_codes_file_warns_and_checks_the_seed(tmp_path):
    from toybench.errors import ToybenchError
    from toybench.evaluate import RowOrderWarning, score_codes_file

    codes, factors = _blocked()
    np.savez(tmp_path / "codes.npz", codes=codes, factors=factors)
    with pytest.warns(RowOrderWarning, match="rows look ordered"):
        score_codes_file(tmp_path / "codes.npz", dci_backend="reference")
    for bad in (-1, 1.5, True):
        with pytest.raises(ToybenchError, match="shuffle seed must be an integer ≥ 0"):
            score_codes_file(tmp_path / "codes.npz", shuffle_seed=bad)


def test_json_target_that_is_not_a_file_is_refused_before_scoring(tmp_path, monkeypatch):
    import os

    import toybench.evaluate

    codes, factors = _arrays()
    np.savez(tmp_path / "codes.npz", codes=codes, factors=factors)
    os.mkfifo(tmp_path / "fifo.json")
    monkeypatch.setattr(toybench.evaluate, "score_codes_file", lambda *a, **k: 1 / 0)
    result = _invoke(tmp_path / "codes.npz", "--json", tmp_path / "fifo.json")
    assert result.exit_code == 1 and "is a FIFO (named pipe)" in result.output

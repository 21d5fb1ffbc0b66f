"""The data CLI: `toybench generate`, `show`, `list`, and bad input → one line, exit ≠ 0, no
traceback, nothing left on disk."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from toybench.cli import main
from toybench.specs import GENERATOR_NAMES

CYCLIC = """
description = "cyclic"
extends = "dsprites"

[mechanisms.scale]
type = "band"
parents = ["pos_x"]

[mechanisms.pos_x]
type = "band"
parents = ["scale"]
"""

UNKNOWN_KEY = """
description = "typo"
extends = "dsprites"
colour = "red"
"""


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_generate_exports_a_plain_npz(tmp_path):
    out = tmp_path / "out.npz"
    result = run(
        "generate",
        "--data",
        "toy-causal",
        "--corr",
        "0.2",
        "-n",
        "12",
        "--seed",
        "3",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    with np.load(out, allow_pickle=False) as z:
        assert set(z.files) == {"images", "factors", "concepts", "card"}
        assert z["images"].shape == (12, 3, 32, 32) and z["images"].dtype == np.uint8
        assert z["factors"].shape == (12, 6) and z["factors"].dtype == np.int64
        assert z["concepts"].dtype.kind == "U"
        assert z["concepts"].tolist() == ["shape", "size", "hue", "pos_x", "pos_y", "rotation"]
        card = json.loads(str(z["card"]))
    assert card["corr"] == 0.2 and card["generator"] == "toy-causal" and card["seed"] == 3
    assert len(card["edges"]) == 5


def test_generate_is_deterministic_and_accepts_inf(tmp_path):
    outs = [tmp_path / f"{k}.npz" for k in range(2)]
    for out in outs:
        assert (
            run(
                "generate", "--data", "dsprites", "--corr", "inf", "-n", "5", "-o", str(out)
            ).exit_code
            == 0
        )
    a, b = (np.load(p, allow_pickle=False) for p in outs)
    np.testing.assert_array_equal(a["images"], b["images"])
    assert json.loads(str(a["card"]))["corr"] == "inf"


def test_generate_accepts_a_user_spec(tmp_path):
    spec = tmp_path / "mine.toml"
    spec.write_text('description = "mine"\nextends = "dsprites-pairs"\n', encoding="utf-8")
    out = tmp_path / "m.npz"
    result = run("generate", "--data", str(spec), "--corr", "0.5", "-n", "4", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(str(np.load(out)["card"]))["generator"] == "mine"


def test_show_writes_a_png(tmp_path):
    out = tmp_path / "sheet.png"
    result = run("show", "--data", "toy-causal", "--corr", "0.3", "-n", "8", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_list_names_every_generator_on_one_line():
    result = run("list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "generators:"
    for name in GENERATOR_NAMES:
        assert sum(line.split()[0] == name for line in lines[1:]) == 1


def _spec(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


BAD_INPUT = [
    (["--data", "dsprite"], "unknown generator 'dsprite'; valid: " + ", ".join(GENERATOR_NAMES)),
    (["--corr", "0"], "corr must be a number > 0 or 'inf', got '0'"),
    (["--corr", "-0.5"], "corr must be a number > 0"),
    (["--corr", "abc"], "corr must be a number > 0"),
    (["--corr", "nan"], "corr must be a number > 0"),
    (["--data", CYCLIC], "the DAG has a cycle: scale -> pos_x -> scale"),
    (["--data", UNKNOWN_KEY], "unknown key 'colour'; allowed: concepts, description"),
    (["-n", "0"], "n must be an integer ≥ 1, got 0"),
    (["-n", "-4"], "n must be an integer ≥ 1"),
    (["--seed", "-1"], "seed must be an integer ≥ 0"),
    (["--split", "val"], "unknown split 'val'"),
    (["-o", "{tmp}/missing/dir/out.{ext}"], "cannot write"),
    (["-o", "{tmp}/isdir.{ext}"], "cannot write"),  # a folder in the way
]


@pytest.mark.parametrize("command", ["generate", "show"])
@pytest.mark.parametrize("override, message", BAD_INPUT, ids=[m[:30] for _, m in BAD_INPUT])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, command, override, message):
    if command == "show" and override[0] == "--split":
        pytest.skip("show has no --split")
    opts = {
        "--data": "dsprites-pairs",
        "--corr": "0.3",
        "-n": "4",
        "--seed": "0",
        "-o": str(tmp_path / ("out.npz" if command == "generate" else "out.png")),
    }
    if override[1] in (CYCLIC, UNKNOWN_KEY):
        override = [override[0], _spec(tmp_path, override[1])]
    opts[override[0]] = override[1].format(tmp=tmp_path, ext=opts["-o"].rsplit(".", 1)[1])
    (tmp_path / f"isdir.{opts['-o'].rsplit('.', 1)[1]}").mkdir()
    before = set(tmp_path.rglob("*"))
    result = run(command, *[item for pair in opts.items() for item in pair])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and message in lines[0]
    assert set(tmp_path.rglob("*")) == before
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_show_refuses_an_unknown_figure_format(tmp_path):
    result = run("show", "--data", "dsprites", "-o", str(tmp_path / "sheet.bmp"))
    assert result.exit_code != 0 and "unknown figure format 'bmp'" in result.output
    assert not (tmp_path / "sheet.bmp").exists()


# -- issue #11: outputs that are not regular files, sizes, extreme σ, long names -----------------
def _one_error_line(result) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def _no_sampling(monkeypatch):
    import toybench.data

    def fail(*args, **kwargs):
        raise AssertionError("data was drawn before the output path was checked")

    monkeypatch.setattr(toybench.data, "make_split", fail)


def test_generate_refuses_a_fifo_before_drawing_anything(tmp_path, monkeypatch):
    import os
    import stat

    fifo = tmp_path / "out.npz"
    os.mkfifo(fifo)
    _no_sampling(monkeypatch)
    line = _one_error_line(run("generate", "--data", "toy-causal", "-n", "4", "-o", str(fifo)))
    assert "is a FIFO (named pipe), not a regular file" in line
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]


@pytest.mark.parametrize(
    "target, fragment",
    [("/dev/null", "a symlink to /dev/null, a character device"),
     ("nowhere.npz", "a dangling symlink")],
)
def test_generate_refuses_symlinks_to_non_files(tmp_path, monkeypatch, target, fragment):
    import os

    link = tmp_path / "out.npz"
    link.symlink_to(target)
    _no_sampling(monkeypatch)
    line = _one_error_line(run("generate", "--data", "toy-causal", "-n", "4", "-o", str(link)))
    assert fragment in line
    assert os.readlink(link) == target and sorted(os.listdir(tmp_path)) == ["out.npz"]


def test_generate_writes_through_a_symlink_to_a_file(tmp_path):
    real = tmp_path / "real.npz"
    real.write_bytes(b"old")
    link = tmp_path / "out.npz"
    link.symlink_to(real)
    result = run("generate", "--data", "toy-causal", "-n", "4", "-o", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and np.load(real)["images"].shape == (4, 3, 32, 32)


def test_generate_over_long_output_name_is_one_line(tmp_path, monkeypatch):
    _no_sampling(monkeypatch)
    out = tmp_path / ("x" * 300 + ".npz")
    line = _one_error_line(run("generate", "--data", "toy-causal", "-n", "4", "-o", str(out)))
    assert "file name too long" in line and len(line) < 300


def test_generate_over_long_data_name_is_one_line(tmp_path):
    for data in ("d" * 300, "d" * 300 + ".toml", str(tmp_path / ("d" * 300)) + "/x.toml"):
        line = _one_error_line(
            run("generate", "--data", data, "-n", "4", "-o", str(tmp_path / "o.npz"))
        )
        assert len(line) < 300
        assert any(f in line for f in ("unknown generator", "no such spec file", "too long"))
    assert not (tmp_path / "o.npz").exists()


def test_generate_refuses_a_size_nobody_can_allocate(tmp_path):
    line = _one_error_line(
        run("generate", "--data", "toy-causal", "-n", str(10**12), "-o", str(tmp_path / "o.npz"))
    )
    assert "n = 1,000,000,000,000 samples of toy-causal (3×32×32 uint8 images) would need" in line
    assert "PB of memory; this machine has" in line and "fit)" in line
    assert not list(tmp_path.glob("*.npz"))


@pytest.mark.parametrize("corr", ["1e-300", "1e-160", "1e150", "1e300"])
@pytest.mark.parametrize("data", ["dsprites-pairs", "toy-causal", "pendulum"])
def test_generate_extreme_sigma_gives_valid_levels(tmp_path, data, corr):
    out = tmp_path / "o.npz"
    result = run("generate", "--data", data, "--corr", corr, "-n", "6", "-o", str(out))
    assert result.exit_code == 0, result.output
    with np.load(out) as z:
        card = json.loads(str(z["card"]))
        sizes = [len(c["labels"]) for c in card["concepts"]]
        assert (z["factors"] >= 0).all() and (z["factors"] < np.array(sizes)).all()
    assert card["corr"] == float(corr)


@pytest.mark.parametrize(
    "corr, fragment",
    [("1e-400", "rounds to 0 as a float"), ("1e400", "too large for a float")],
)
def test_generate_refuses_sigma_a_float_cannot_hold(tmp_path, corr, fragment):
    line = _one_error_line(
        run("generate", "--data", "toy-causal", "--corr", corr, "-o", str(tmp_path / "o.npz"))
    )
    assert fragment in line

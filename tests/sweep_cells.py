"""Tiny sweep cells shared by tests/test_sweep.py and tests/test_sweep_ray.py."""

from __future__ import annotations

from pathlib import Path

from conftest import FP32

from toybench.sweep import Grid, sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = (
    "train.steps=4", "train.batch_size=32", "train.n_train=128", "train.n_test=100",
    "train.checkpoint_every=2", "eval.factor_vae_train=20", "eval.factor_vae_eval=10",
    "eval.factor_vae_variance=100", "eval.beta_vae_train=20", "eval.beta_vae_eval=10",
    "eval.consistency_pairs=20", "eval.batch_size=8",
    *FP32,
)
#: The grid that trains: two VAE cells.
GRID = Grid(models=("vae",), corrs=(0.2,), seeds=(0, 1), protocol="quick", overrides=TINY)
CLI_GRID = ["--models", "vae", "--corr", "0.2", "--seeds", "0-1", "--protocol", "quick",
            "--no-plots", *[item for o in TINY for item in ("--set", o)]]


def run_sweep(grid: Grid, out: Path, **kw):
    lines: list[str] = []
    kw.setdefault("plots", False)
    report = sweep(grid, out, echo=lines.append, **kw)
    report.lines = lines
    return report


def metrics_bytes(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(out.glob("*/metrics.json"))}


def huge_baseline(folder: Path) -> Path:
    """A baseline whose model cannot fit in any machine's memory: its run fails at once, after
    its configuration checked out (a real failure, not a stub)."""
    path = folder / "huge.toml"
    path.write_text('extends = "vae"\n[model]\nlatent_dim = 1000000000\n')
    return path


def one_line_error(result, *fragments: str) -> None:
    """A CLI result that failed with one line "Error: ..." holding every fragment."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]

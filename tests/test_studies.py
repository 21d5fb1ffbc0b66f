"""The study drivers' grids: what the committed leaderboards and the convergence study cover."""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studies import convergence, leaderboards  # noqa: E402


def test_leaderboard_grids_are_the_issues_grids():
    cells = list(leaderboards.cells())
    toy = [c for c in cells if c[2] == "toy-causal"]
    sprites = [c for c in cells if c[2] == "dsprites-pairs-32"]
    assert len(toy) == 9 * 4 * 3 and len(sprites) == 5 * 3 * 3
    assert len(set(cells)) == len(cells)
    assert ("csvae", leaderboards.UNSUPERVISED) in leaderboards.GRIDS["toy-causal"][0]
    assert {c[3] for c in sprites} == {math.inf, 0.4, 0.2}
    assert [c[4] for c in cells[:len(cells) // 3]] == [0] * (len(cells) // 3)  # seed 0 first


def test_every_study_cell_at_a_leaderboard_sigma_is_a_leaderboard_cell():
    """The study's long runs at σ ∈ {inf, 0.2} give the leaderboards their standard runs."""
    for model, generator, corr, _seed, _protocol in convergence.cells():
        assert leaderboards.in_grid(model, (), generator, corr) == \
            (generator == "toy-causal" or model != "csvae"), (model, generator, corr)

"""How fast a grid of runs can be enumerated and checked (pytest-benchmark).

A sweep builds one `toybench.rundir.RunSpec` per cell and resolves its configuration (hash and
folder name) before anything runs, so this must stay far below a second for thousands of cells.
The cold case (a fresh process: imports, first read of each baseline and generator file) is
measured in a subprocess; the warm case reuses the per-file caches.

Run: ``pytest benchmarks/bench_rundir.py --benchmark-only``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from toybench.rundir import RunSpec

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("vae", "beta-vae", "beta-tcvae", "csvae", "hvae", "pca")
GRID = ("[RunSpec(m, g, c, s, 'standard') for m in MODELS"
        " for g in ('toy-causal', 'dsprites-pairs')"
        " for c in (0.2, 0.4, 0.7, float('inf')) for s in range(21)]")  # 1,008 cells


def _names(seed_offset: int) -> int:
    grid = [RunSpec(m, g, c, s + seed_offset, "standard") for m in MODELS
            for g in ("toy-causal", "dsprites-pairs") for c in (0.2, 0.4, 0.7, float("inf"))
            for s in range(21)]
    return len({spec.name for spec in grid})


def test_enumerate_and_name_1008_specs_warm(benchmark):
    _names(0)  # fill the per-file caches
    offsets = iter(range(1, 10_000))
    count = benchmark(lambda: _names(next(offsets) * 100))
    assert count == 1008
    benchmark.extra_info["specs_per_s"] = round(count / benchmark.stats.stats.mean)


def test_enumerate_and_name_1008_specs_cold_process(benchmark):
    code = (f"from toybench.rundir import RunSpec; MODELS = {MODELS!r}; "
            f"assert len({{s.name for s in {GRID}}}) == 1008")

    def cold() -> None:
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)

    benchmark.pedantic(cold, rounds=3, iterations=1)

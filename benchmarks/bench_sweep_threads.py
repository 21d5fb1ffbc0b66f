"""Cells per hour of ``toybench sweep --executor local``: 1 job × 2 threads vs 2 jobs × 1 thread.

Oversubscribed cores cost far more than idle ones on a loaded machine (issue 12: a 2-thread bf16
training process ran 6.9× slower than a 1-thread one, 680 vs 99 img/s, with other work on the
2-core VM), while on a quiet machine 2 threads won by 1.8×. Which is the better default for
``--jobs`` is a measurement: this script runs the same small but realistic grid (4 cells of the
``quick`` protocol on toy-causal: vae and beta-vae × σ 0.2 × seeds 0-1, no plots) under both
settings, interleaved (A B, B A, A B, ...) so that a change in the machine's load hits both, each
in a fresh ``--out`` folder, and prints ``uptime`` around every sweep, the wall time of each, and
per setting the min and median cells per hour.

Run on a quiet machine (nothing else using the cores), from the repository root:

    python benchmarks/bench_sweep_threads.py            # 3 rounds, about 25 minutes on 2 cores
    python benchmarks/bench_sweep_threads.py --rounds 5 --cores 4

``--cores C`` compares ``--jobs 1 --threads C`` with ``--jobs C --threads 1`` (default: the CPUs
this process may use). It is a script, not a pytest benchmark: ``pytest benchmarks/`` collects
it and finds no tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--models", "vae,beta-vae", "--data", "toy-causal", "--corr", "0.2", "--seeds", "0-1",
        "--protocol", "quick", "--no-plots", "--executor", "local"]
N_CELLS = 4


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
        return f"load average: {', '.join(f'{x:.2f}' for x in load)}"


def _sweep(jobs: int, threads: int, out: Path, overrides: list[str]) -> float:
    """Wall seconds of one sweep of the grid into the empty folder ``out``."""
    command = [sys.executable, "-m", "toybench.cli", "sweep", *GRID, "--jobs", str(jobs),
               "--threads", str(threads), "--out", str(out),
               *[item for o in overrides for item in ("--set", o)]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"sweep --jobs {jobs} --threads {threads} failed "
                         f"(exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="sweeps per setting (default 3)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parser.add_argument("--cores", type=int, default=cores,
                        help=f"C of --jobs 1 --threads C vs --jobs C --threads 1 (default {cores})")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="passed to the sweep (a smoke test of this "
                        "script: --set train.steps=4 --set train.n_train=256)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.cores < 2:
        parser.error("--rounds must be ≥ 1 and --cores ≥ 2")
    settings = {f"--jobs 1 --threads {args.cores}": (1, args.cores),
                f"--jobs {args.cores} --threads 1": (args.cores, 1)}
    names = list(settings)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    sets = "".join(f" --set {o}" for o in args.overrides)
    print(f"grid: {' '.join(GRID)}{sets} ({N_CELLS} cells), {args.rounds} rounds, interleaved")
    print(f"python {sys.version.split()[0]}, {cores} CPUs for this process")
    scratch = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                jobs, threads = settings[name]
                print(f"  before: {_uptime()}")
                wall = _sweep(jobs, threads, scratch / f"{r}-{jobs}x{threads}", args.overrides)
                seconds[name].append(wall)
                print(f"round {r + 1} {name}: {wall:6.1f} s = "
                      f"{N_CELLS * 3600 / wall:6.1f} cells/h")
        print(f"  after:  {_uptime()}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("\nsetting                    best cells/h  median cells/h  (wall s: min / median)")
    rates = {}
    for name in names:
        best, median = min(seconds[name]), statistics.median(seconds[name])
        rates[name] = N_CELLS * 3600 / median
        print(f"{name:<26} {N_CELLS * 3600 / best:12.1f}  {rates[name]:14.1f}  "
              f"({best:.1f} / {median:.1f})")
    winner = max(rates, key=rates.get)
    other = next(name for name in names if name != winner)
    print(f"\nby the median, {winner} runs {rates[winner] / rates[other]:.2f}x the cells per "
          f"hour of {other}")


if __name__ == "__main__":
    main()

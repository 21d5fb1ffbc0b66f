"""Where a sweep's cells run: in this process, in a local process pool, or on a Ray cluster.

Each executor takes `Cell` values (a `toybench.rundir.RunSpec` and where to write it) and yields
a `CellResult` per cell as cells finish; `run_cell` is the one function that does a cell, in
whichever process the executor chose:

- ``serial``: in this process, one cell after another.
- ``local``: a ``concurrent.futures.ProcessPoolExecutor`` with the *spawn* start method (fresh
  interpreters: no forked torch or OpenMP state), ``jobs`` workers. Each worker's initializer
  (`init_worker`, in this module, which imports no torch) caps its threads at ``threads``
  (default cores ÷ jobs) before the worker imports torch (`toybench.hardware.cap_threads`).
  Oversubscribed cores cost far more than idle ones (a 2-thread training process ran 6.9× slower
  than a 1-thread one on the loaded 2-core VM), so the cap matters. The default is one worker
  per core, one thread each: on the quiet 2-core VM two 1-thread training processes ran at
  2.8-3.0k images/s each (5.6-6.0k together) where one 2-thread process ran at 3.6-3.8k, about
  1.5x the cells per hour (`benchmarks/bench_sweep_threads.py` repeats the comparison on whole
  sweeps).
  At most ``jobs`` cells are in flight, so a worker that dies (killed, out of memory) takes
  only the cells in progress with it: they are recorded as failed and a fresh pool continues.
- ``ray``: Ray core remote tasks (Moritz et al. 2018, https://arxiv.org/abs/1712.05889; not
  Tune, whose restore cannot add cells to a grid), ``num_cpus=threads`` each (default 1) and
  ``num_gpus=1`` with a CUDA device. Ray reuses worker processes and torch keeps its first
  thread count, so each task calls `cap_threads` with the CPUs Ray assigned it. ``address``
  joins a running cluster (``ray start --head`` on one node, ``ray start --address=...`` on the
  others); otherwise a local one starts with ``jobs × threads`` CPUs (default: all cores), and
  no dashboard. Ray is an optional extra (``pip install -e ".[ray]"``) imported only here.

On a cluster every node writes the cells' run folders itself: ``--out`` must be a folder on a
file system all nodes share (NFS, Lustre, ...), with working ``flock`` locks (NFSv4, Lustre
with ``-o flock``), since the run folder's claim (`toybench.rundir.RunDir.claim`) is what makes
each cell run exactly once. toybench must be installed on every node, in the same version.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from toybench import hardware
from toybench.errors import ToybenchError
from toybench.io import atomic_write_json
from toybench.rundir import RunClaimed, RunDir, RunSpec

#: The headline scores of a finished cell's line (test split), with the registry's arrows.
CELL_SCORES = ("test.dci.disentanglement", "test.mig", "test.entanglement",
               "test.recon.bce_vs_pca")
#: Outcomes of a cell run here.
OUTCOMES = ("done", "existing", "failed", "running", "interrupted")
_WORKER_DIED = ("the worker process died while this cell ran (killed, or out of memory?); "
                "--retry-failed runs it again")


@dataclass(frozen=True)
class Cell:
    """One cell of a sweep, as shipped to a worker (picklable, no torch).

    Attributes
    ----------
    index : int
        Its index in the sorted grid.
    spec : RunSpec
    out : str
        Parent folder of run folders.
    device : str
        ``cpu``, ``cuda`` or ``auto`` (resolved where the cell runs).
    plots : bool
    retry : bool
        The cell had failed: start it over.
    """

    index: int
    spec: RunSpec
    out: str
    device: str = "cpu"
    plots: bool = True
    retry: bool = False


@dataclass(frozen=True)
class CellResult:
    """What happened to a cell.

    Attributes
    ----------
    index : int
    name : str
        The run folder's name.
    outcome : str
        ``done`` (run here), ``existing`` (finished by another process meanwhile), ``failed``,
        ``running`` (claimed by another process), ``interrupted`` (Ctrl-C; its checkpoint is
        saved).
    seconds : float
    scores : dict
        `CELL_SCORES` of a done cell (None where a run has no such score).
    error : str
        The one-line error of a failed (or claimed) cell.
    exit_code : int
    torch_threads : int or None
        ``torch.get_num_threads()`` in the process that ran the cell.
    device : str or None
        The device the cell ran on.
    """

    index: int
    name: str
    outcome: str
    seconds: float = 0.0
    scores: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    exit_code: int = 0
    torch_threads: int | None = None
    device: str | None = None

    @property
    def line(self) -> str:
        """``exit N: error`` of a failed cell, else the error (or "")."""
        return f"exit {self.exit_code}: {self.error}" if self.outcome == "failed" else self.error

    def summary(self) -> str:
        """One line: outcome, name, seconds and headline scores (or the error)."""
        from toybench.metrics import metric_info

        head = f"{_WORDS[self.outcome]:<8} {self.name}"
        if self.outcome == "done":
            scores = "  ".join(f"{key.split('.', 1)[1]} {metric_info(key).arrow} {_fmt(value)}"
                               for key, value in self.scores.items() if value is not None)
            return f"{head}  {self.seconds:.1f} s" + (f"  {scores}" if scores else "")
        if self.outcome == "failed":
            return f"{head}  {self.seconds:.1f} s  {self.line}"
        if self.outcome == "existing":
            return f"{head}  (finished by another process)"
        return f"{head}  {self.error}" if self.error else head


_WORDS = {"done": "done", "existing": "done", "failed": "FAILED", "running": "running elsewhere",
          "interrupted": "interrupted"}


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------
# One cell, in whichever process runs it.
# --------------------------------------------------------------------------------------------


def run_cell(cell: Cell) -> CellResult:
    """Do one cell: resume it from its checkpoint if it has one, start it over if it failed
    before (``cell.retry``), else run it; never raises for the cell's own failure.

    A failure is recorded in the run's ``status.json`` (`record_failure`: also when the run
    failed before it could claim its folder, e.g. a memory check or a damaged checkpoint);
    a claim held by another process is ``running``, not a failure.
    """
    from toybench.runs import execute
    from toybench.train import TrainingInterrupted

    spec, run_dir = cell.spec, RunDir.of(cell.spec, cell.out)
    start = time.perf_counter()

    def result(outcome: str, **kw: Any) -> CellResult:
        return CellResult(cell.index, spec.name, outcome, time.perf_counter() - start, **kw)

    try:
        if cell.retry and not _start_over(run_dir):
            return result("existing")
        ran = execute(spec, cell.out, resume=run_dir.ckpt.exists(), plots=cell.plots,
                      progress=False, echo=_quiet, device=cell.device)
    except RunClaimed as err:
        return result("running", error=_one_line(err))
    except TrainingInterrupted as err:
        return result("interrupted", error=_one_line(err), exit_code=err.exit_code)
    except KeyboardInterrupt:
        return result("interrupted", error="interrupted (Ctrl-C)", exit_code=130)
    except Exception as err:  # the cell's own failure: recorded, the sweep goes on
        if run_dir.state() == "running":  # another process took the cell meanwhile
            return result("running", error=f"claimed by another process ({_one_line(err)})")
        line = (_one_line(err) if isinstance(err, ToybenchError)
                else _one_line(f"{type(err).__name__}: {err}"))
        code = int(getattr(err, "exit_code", 1)) if isinstance(err, ToybenchError) else 1
        record_failure(spec, cell.out, line, code)
        return result("failed", error=line, exit_code=code)
    import torch

    return result("done" if ran.status == "done" else "existing",
                  scores={key: ran.metrics.get(key) for key in CELL_SCORES},
                  torch_threads=torch.get_num_threads(), device=_device_of(ran.run_dir))


def _quiet(_line: str) -> None:
    """A sweep prints one line per cell; the run's own lines go nowhere."""


def _device_of(run_dir) -> str | None:
    try:
        import json

        return json.loads((run_dir / "env.json").read_text(encoding="utf-8")).get("device")
    except (OSError, ValueError):
        return None


def _start_over(run_dir: RunDir) -> bool:
    """Clear a failed run folder under its claim, so that it runs afresh; False if it turned out
    done (another process retried it first). Raises `RunClaimed` if another process holds it."""
    with run_dir.claim():
        if run_dir.metrics.is_file():
            return False
        status = run_dir.read_status() or {}
        if status.get("state") == "failed":
            run_dir.clear()  # keeps the folder and its lock
    return True


def record_failure(spec: RunSpec, out: str | os.PathLike, error: str, exit_code: int) -> bool:
    """Write ``status.json`` = failed (and ``config.json`` if missing) for a cell that failed,
    under the folder's claim; nothing if another process holds it or it is done. Returns
    whether the failure is on disk."""
    run_dir = RunDir.of(spec, out)
    try:
        claim = run_dir.claim()
    except ToybenchError:  # claimed elsewhere, or the folder cannot be made: nothing to record
        return False
    with claim:
        if run_dir.metrics.is_file():
            return False
        status = run_dir.read_status() or {}
        if status.get("state") == "failed" and status.get("error") == error:
            return True  # the run recorded it itself
        if not run_dir.config.is_file():
            atomic_write_json(run_dir.config, spec.config)
        run_dir.write_status("failed", exit_code=exit_code, error=error, spec=spec.as_dict())
    return True


# --------------------------------------------------------------------------------------------
# The executors.
# --------------------------------------------------------------------------------------------


class SerialExecutor:
    """Every cell in this process, in order; ``threads`` caps this process while the cells run
    (default: no cap)."""

    name = "serial"

    def __init__(self, *, threads: int | None = None, device: str = "cpu") -> None:
        self.threads, self.device = threads, device

    def describe(self) -> str:
        threads = "" if self.threads is None else f", {self.threads} thread(s)"
        return f"the serial executor (this process{threads}, {self.device})"

    def run(self, cells: Sequence[Cell]) -> Iterator[CellResult]:
        with hardware.capped_threads(self.threads):
            for cell in cells:
                yield run_cell(cell)


def init_worker(threads: int) -> None:
    """Initializer of a ``local`` pool worker: cap its threads before it imports torch."""
    hardware.cap_threads(threads)


class LocalExecutor:
    """A spawn-context process pool of ``jobs`` workers, ``threads`` threads each."""

    name = "local"

    def __init__(self, *, jobs: int | None = None, threads: int | None = None,
                 device: str = "cpu") -> None:
        if threads is not None:
            hardware.check_threads(threads)
        # default: as many workers as the cores hold at `threads` each (1: one per core)
        self.jobs = hardware.check_threads(
            max(1, hardware.cpu_count() // (threads or 1)) if jobs is None else jobs, "--jobs")
        self.threads = (hardware.check_threads(threads) if threads is not None
                        else max(1, hardware.cpu_count() // self.jobs))
        self.device = device

    def describe(self) -> str:
        return (f"the local executor ({self.jobs} worker process(es) × {self.threads} "
                f"thread(s), {self.device})")

    def run(self, cells: Sequence[Cell]) -> Iterator[CellResult]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        pending = deque(cells)
        context = multiprocessing.get_context("spawn")
        while pending:
            broken: list[Cell] = []
            with ProcessPoolExecutor(max_workers=self.jobs, mp_context=context,
                                     initializer=init_worker,
                                     initargs=(self.threads,)) as pool:
                running: dict[Any, Cell] = {}
                while (pending or running) and not broken:
                    while pending and len(running) < self.jobs:
                        cell = pending.popleft()
                        running[pool.submit(run_cell, cell)] = cell
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        cell = running.pop(future)
                        try:
                            outcome = future.result()
                        except BrokenProcessPool:
                            broken.append(cell)
                            continue
                        except Exception as err:  # the worker could not even run the cell
                            outcome = _lost(cell, f"{type(err).__name__}: {err}")
                        yield outcome
                broken += [running[f] for f in running]  # in flight when the pool broke
            for cell in broken:
                yield _lost(cell, _WORKER_DIED)


def _lost(cell: Cell, error: str) -> CellResult:
    """The failed result of a cell whose worker died or could not run it (recorded on disk by
    this process, since the worker could not)."""
    line = _one_line(error)[:500]
    record_failure(cell.spec, cell.out, line, 1)
    return CellResult(cell.index, cell.spec.name, "failed", error=line, exit_code=1)


def _ray_task(cell: Cell) -> CellResult:
    """A Ray task: cap torch at the CPUs Ray assigned it (workers are reused), run the cell."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    hardware.cap_threads(max(1, int(cpus)))
    return run_cell(cell)


def import_ray():
    """``import ray``, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ToybenchError("--executor ray needs Ray, an optional extra: pip install -e "
                            "\".[ray]\" (or pip install \"ray>=2.9\")") from None
    return ray


class RayExecutor:
    """Ray core tasks on a local or remote cluster (started in `__init__`)."""

    name = "ray"

    def __init__(self, *, jobs: int | None = None, threads: int | None = None,
                 address: str | None = None, device: str = "cpu") -> None:
        self.ray = import_ray()
        self.jobs = None if jobs is None else hardware.check_threads(jobs, "--jobs")
        self.threads = 1 if threads is None else hardware.check_threads(threads)
        self.address = address
        if not self.ray.is_initialized():
            self._init()
        gpus = float(self.ray.cluster_resources().get("GPU", 0))
        if device == "cuda" and gpus < 1:
            raise ToybenchError("--device cuda: the Ray cluster has no GPU; use --device cpu "
                                "or --device auto")
        self.gpus = 1 if device == "cuda" or (device == "auto" and gpus >= 1) else 0
        self.device = device
        self._task = self.ray.remote(num_cpus=self.threads, num_gpus=self.gpus,
                                     max_retries=0)(_ray_task)

    def _init(self) -> None:
        import logging

        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING}  # the sweep's lines only
        if self.address is None:
            jobs = self.jobs if self.jobs is not None else max(
                1, hardware.cpu_count() // self.threads)
            kwargs["num_cpus"] = jobs * self.threads
        try:
            self.ray.init(address=self.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"at {self.address}" if self.address else "locally"
            raise ToybenchError(f"cannot start Ray {where}: {_one_line(err)[:300]}") from None

    def describe(self) -> str:
        cpus = int(self.ray.cluster_resources().get("CPU", 0))
        inflight = "all cells queued" if self.jobs is None else f"{self.jobs} in flight"
        gpu = f", {self.gpus} GPU each" if self.gpus else ""
        return (f"the ray executor ({cpus} CPUs in the cluster; tasks of {self.threads} "
                f"CPU(s){gpu}, {inflight}; {self.device})")

    def run(self, cells: Sequence[Cell]) -> Iterator[CellResult]:
        from ray.exceptions import RayError

        ray = self.ray
        pending = deque(cells)
        running: dict[Any, Cell] = {}
        limit = len(cells) if self.jobs is None else self.jobs
        try:
            while pending or running:
                while pending and len(running) < limit:
                    cell = pending.popleft()
                    running[self._task.remote(cell)] = cell
                (ref,), _ = ray.wait(list(running), num_returns=1)
                cell = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except RayError as err:  # the task's worker died, or Ray could not run it
                    outcome = _lost(cell, f"{type(err).__name__}: {err}")
                yield outcome
        finally:
            for ref in running:  # Ctrl-C or an early stop: interrupt the cells in progress
                ray.cancel(ref)


EXECUTORS = {"serial": SerialExecutor, "local": LocalExecutor, "ray": RayExecutor}


def make_executor(name: str, *, jobs: int | None = None, threads: int | None = None,
                  address: str | None = None, device: str = "cpu"):
    """The executor ``name`` with its options checked (and, for Ray, the cluster joined).

    Raises
    ------
    ToybenchError
        An unknown executor, options it does not take, ``cuda`` without a GPU, Ray missing.
    """
    if name not in EXECUTORS:
        raise ToybenchError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
    hardware.check_device(device)
    if threads is not None:
        hardware.check_threads(threads)
    if jobs is not None:
        hardware.check_threads(jobs, "--jobs")
    if address is not None and name != "ray":
        raise ToybenchError("--address joins a Ray cluster: it needs --executor ray")
    if name == "serial":
        if jobs not in (None, 1):
            raise ToybenchError(f"--jobs {jobs} needs --executor local or ray (serial runs "
                                f"one cell at a time)")
        return SerialExecutor(threads=threads, device=hardware.resolve_device(device))
    if name == "local":
        return LocalExecutor(jobs=jobs, threads=threads,
                             device=hardware.resolve_device(device))
    return RayExecutor(jobs=jobs, threads=threads, address=address, device=device)

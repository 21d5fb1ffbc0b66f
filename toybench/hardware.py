"""What a process runs on: its CPU thread budget and its torch device.

**Threads.** Two processes that each use every core of a machine make each other slow: on the
2-core development VM, with other work running, a 2-thread bf16 training process ran 6.9× slower
than a 1-thread one (680 vs 99 img/s), while on a quiet machine 2 threads won by 1.8×. A run or
a sweep worker therefore caps its threads (`cap_threads`): the OpenMP / MKL / OpenBLAS
environment variables, which only libraries loaded *afterwards* read, so a worker sets them
before it imports torch; ``torch.set_num_threads`` (torch keeps its first thread count, so a
reused worker must set it again); the BLAS pools already loaded (threadpoolctl); and
``TOYBENCH_THREADS``, which toybench's own thread pools (DCI's boosting, `available_threads`)
read. Results do not depend on the cap beyond what torch's CPU kernels round differently with
more threads (toybench.encoders).

**Devices.** ``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu`` or ``cuda``
(`resolve_device`). The device is where a run trains and evaluates, not what it is: it is not
part of a run's configuration or hash, and ``env.json`` records it. The CPU is the tested
default; on the CPU nothing changes from a toybench without devices (same ``metrics.json``).

**bf16 on the CPU.** bf16 autocast (the protocols' default) is fast only on a CPU with AVX-512
(oneDNN's bf16 kernels). On an AVX2-only CPU it is emulated: measured 2026-12-02 on a 2-core
AVX2 VM, a 32×32 VAE encoder's forward and backward ran 395–411 img/s in bf16 against
3,154–4,303 in fp32, 8–10× slower. `slow_cpu_bf16` tells a run to say so (one line); the
precision stays what the protocol says, because it is part of the run's configuration and hash.

Nothing here imports torch at module level: a sweep worker imports this module, caps its
threads, and only then loads torch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from toybench.errors import ToybenchError

#: Environment variables read by the threading runtimes when they load (before torch's import).
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
#: toybench's own cap, read by `available_threads` (DCI's boosting threads).
TOYBENCH_THREADS = "TOYBENCH_THREADS"
DEVICES = ("auto", "cpu", "cuda")


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def check_threads(threads: object, what: str = "--threads") -> int:
    """``threads`` as a positive ``int``, else a one-line `ToybenchError`."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ToybenchError(f"{what} must be a positive integer, got {threads!r}")
    return threads


def cap_threads(threads: int) -> int:
    """Cap this process at ``threads`` CPU threads; returns torch's thread count afterwards.

    Sets `THREAD_ENV_VARS` and ``TOYBENCH_THREADS`` (for libraries loaded later: call this
    before importing torch where possible), then imports torch and calls
    ``torch.set_num_threads``, and limits the BLAS / OpenMP pools already loaded (numpy's
    OpenBLAS, torch's OpenMP) with threadpoolctl. Process-wide and lasting; a later call
    sets a new cap.
    """
    threads = check_threads(threads)
    for name in (*THREAD_ENV_VARS, TOYBENCH_THREADS):
        os.environ[name] = str(threads)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # not restored: the cap lasts as long as the process
    return torch.get_num_threads()


@contextlib.contextmanager
def capped_threads(threads: int | None) -> Iterator[None]:
    """`cap_threads` for the duration of a ``with`` block, then everything as it was (torch's
    thread count, the environment variables, the BLAS pools); ``None`` changes nothing. For a
    caller's own process (the serial executor), where a lasting cap would surprise it."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    saved = {name: os.environ.get(name) for name in (*THREAD_ENV_VARS, TOYBENCH_THREADS)}
    import torch

    torch_threads = torch.get_num_threads()
    with threadpool_limits(limits=check_threads(threads)):
        try:
            cap_threads(threads)
            yield
        finally:
            torch.set_num_threads(torch_threads)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def available_threads() -> int:
    """Threads toybench's own pools may use: the CPUs of `cpu_count`, at most the
    ``TOYBENCH_THREADS`` cap `cap_threads` set (ignored unless a positive integer)."""
    cores = cpu_count()
    cap = os.environ.get(TOYBENCH_THREADS, "")
    return min(cores, int(cap)) if cap.isdigit() and int(cap) > 0 else cores


def check_device(device: object) -> str:
    """``device`` if it is one of `DEVICES` (case as given), else a one-line `ToybenchError`;
    imports nothing."""
    if device not in DEVICES:
        raise ToybenchError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    return str(device)


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"``: ``auto`` is CUDA when torch sees a GPU, else the CPU.

    Raises
    ------
    ToybenchError
        An unknown name, or ``cuda`` where torch sees no CUDA device (one line saying why).
    """
    check_device(device)
    if device == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if available else "cpu"
    if not available:
        why = ("this torch is a CPU-only build" if torch.version.cuda is None
               else "no CUDA device is visible")
        raise ToybenchError(f"--device cuda: {why} (torch {torch.__version__}); use --device "
                            f"cpu or --device auto")
    return "cuda"


def slow_cpu_bf16() -> str | None:
    """The CPU's vector capability (torch's name, e.g. ``"AVX2"``) where bf16 autocast has no
    fast kernels on it (no AVX-512), else ``None``."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    return None if capability.startswith("AVX512") else capability


#: CPU flags that decide which bf16 kernels oneDNN runs (``/proc/cpuinfo`` names).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_description() -> dict[str, object]:
    """What ``env.json`` records about the CPU: its model name, torch's vector capability and
    the bf16 flags of `BF16_CPU_FLAGS` it has. bf16 runs round differently on CPUs with other
    kernels (AMX tiles or AVX-512 bf16 instructions), so byte-identical ``metrics.json`` is a
    promise for one CPU type; these fields say which one a run had. ``/proc/cpuinfo`` is read
    where it exists (Linux); elsewhere the model is `platform.processor` and the flags ``None``.
    """
    import platform

    import torch

    model, flags = platform.processor() or None, None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            text = handle.read(200_000)
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model in (None, "", platform.machine()):
            model = value.strip()
        elif key.strip() == "flags" and flags is None:
            present = set(value.split())
            flags = [flag for flag in BF16_CPU_FLAGS if flag in present]
    return {"cpu_model": model, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_bf16_flags": flags}


def device_description(device: str) -> dict[str, object]:
    """What ``env.json`` records about a resolved device: its name, and for CUDA the GPU."""
    out: dict[str, object] = {"device": device}
    if device == "cuda":
        import torch

        out["device_name"] = torch.cuda.get_device_name()
        out["cuda"] = torch.version.cuda
    return out

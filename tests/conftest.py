"""Fixtures shared by test files: four tiny real VAE runs and a gate reference built from them
(made once per test session; about 10 s of CPU per run)."""

from __future__ import annotations

import os

import pytest

# Under pytest-xdist (`-n 2`), each worker process runs at one thread, before torch is imported:
# two workers at two threads each on two cores oversubscribe them (measured up to 50x slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    from toybench.hardware import cap_threads

    cap_threads(1)

#: Tiny runs train and score in fp32: bf16 is emulated, about 10x slower, on CPUs without AVX-512.
FP32 = ("train.precision=fp32", "eval.precision=fp32")

#: A VAE that trains in 200 small steps and is scored on small splits: stable over seeds
#: (every seed leaves all 10 units active), cheap enough for the test suite. Set explicitly, so
#: that a change of the quick protocol's defaults does not change these runs.
TINY = ("train.steps=200", "train.batch_size=64", "train.lr=1e-3", "train.lr_schedule=constant",
        "train.lr_warmup_steps=0", "train.kl_weight=0.1", "train.kl_schedule=constant",
        "train.kl_warmup_steps=0", "train.n_train=1024", "train.n_test=200",
        "train.checkpoint_every=200", "model.beta=1.0", "model.beta_normalized=false",
        "eval.factor_vae_train=100", "eval.factor_vae_eval=50", "eval.factor_vae_variance=200",
        "eval.beta_vae_train=100", "eval.beta_vae_eval=50", "eval.consistency_pairs=50",
        *FP32)
TINY_SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="session")
def tiny_gate(tmp_path_factory, request):
    """``(runs folder, reference CSV)``: `toybench.gate.update` of one tiny VAE cell × 4 seeds.

    Made once per test session, also under pytest-xdist: the workers share the session's
    base folder, and the first to take the lock makes the runs (about 60 s) for all."""
    import fcntl

    from toybench import gate

    worker = getattr(request.config, "workerinput", None)
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if worker is not None else base) / "tiny-gate"
    runs, reference = root / "runs", root / "reference.csv"
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not reference.is_file():
            runs.mkdir(parents=True, exist_ok=True)
            cell = gate.Cell("vae", "toy-causal", 0.2, "quick", TINY)
            gate.update(reference, out=runs, cells={cell: TINY_SEEDS}, echo=lambda line: None)
    return runs, reference

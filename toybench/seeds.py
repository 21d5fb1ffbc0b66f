"""Every random stream of a run, derived from the run seed by purpose.

A run has one integer seed. Each consumer of randomness asks this module for *its* stream by
purpose (flax's one-key-per-use idea, https://flax.readthedocs.io/en/latest/guides/flax_fundamentals/rng_guide.html),
so no module improvises ``seed + 7919`` and two purposes can never share a stream by accident.
Nothing here draws a number; the functions only build generators or integer seeds.

The derivations are the ones toybench has always used (so every stored result keeps its
value); the table in ``docs/architecture.md`` ("Random streams") lists them:

================  =====================================================  =========================
purpose           derivation                                             used by
================  =====================================================  =========================
``data.<split>``  numpy ``SeedSequence([seed, tag])``, tag train 0,       ``data.make_split``,
                  test 1, test_decorrelated 2, interventional 3;         ``make_interventional``
                  ``test_corr<σ>``: ``SeedSequence([seed, 6, bits])``,
                  bits = σ's 64-bit IEEE pattern (``--test-corr``)
``init``          ``torch.manual_seed(seed)`` (inside ``fork_rng``)      initial weights (runs)
``batches``       ``torch.Generator`` seeded ``seed * 1_000_003 + epoch``  batch order (train)
``noise``         ``torch.Generator`` seeded ``seed``                    reparameterization (train)
``torch``         ``torch.manual_seed(seed)`` (inside ``fork_rng``)      torch's default RNG (train)
``supervision``   numpy ``default_rng([seed, 0x5EED])``                  labelled subset (train)
``eval.<split>``  numpy ``default_rng([seed, crc32(split)])``            evaluation batches, pairs
``elbo``          ``torch.Generator`` seeded ``seed + 7919``             ELBO pass of the evaluation
``pca``           ``seed`` (scikit-learn ``random_state``)               PCA reference (evaluation)
``shuffle``       numpy ``default_rng(seed)``                            ``score --shuffle-seed``
``pairs.changed`` numpy ``SeedSequence([seed, 4])``                      which factors a training
                                                                         pair changes (and k)
``pairs.levels``  numpy ``SeedSequence([seed, 5])``                      the changed factors' new
                                                                         levels (``toybench.pairs``)
================  =====================================================  =========================

The PCA *baseline* uses a fixed SVD seed of its own (``toybench.models.pca``), so PCA codes do
not depend on the run seed except through the data.
"""

from __future__ import annotations

import numbers
import struct
import zlib
from typing import Any

import numpy as np

from toybench.errors import ToybenchError

#: Seeds accepted everywhere (see `check_seed`).
MAX_SEED = 2**32 - 1

DATA_TAGS = {"train": 0, "test": 1, "test_decorrelated": 2, "interventional": 3}
#: The weakly supervised pairs' streams continue the data tags (``toybench.pairs``): separate
#: streams for *which* factors change and for their new levels, so the two pair modes of one seed
#: change the same factors of the same images and differ only in the new levels.
PAIR_TAGS = {"changed": 4, "levels": 5}
_TEST_CORR_TAG = 6  # then σ's bits: one stream per test σ, unrelated to the tags above
_SUPERVISION_TAG = 0x5EED
_BATCH_STRIDE = 1_000_003
_ELBO_OFFSET = 7919

#: purpose -> one line of what it seeds (``docs/architecture.md`` renders this table).
PURPOSES = {
    "data.train": "the training split (factors, then images)",
    "data.test": "the test split, at the training σ",
    "data.test_decorrelated": "the decorrelated test split (σ = inf)",
    "data.interventional": "interventional sets do(c = v)",
    "data.test_corr<σ>": "an extra test split at σ (eval.test_corr, --test-corr)",
    "init": "the model's initial weights",
    "batches": "the order of training batches (one permutation per epoch)",
    "noise": "the reparameterization noise during training",
    "torch": "torch's default generator during training (anything not given its own)",
    "supervision": "which training images are labelled (CSVAE's weak supervision)",
    "eval": "FactorVAE / BetaVAE batches and counterfactual pairs, per evaluation split",
    "elbo": "the sampling noise of the evaluation's ELBO pass",
    "pca": "the randomized SVD of the PCA reference",
    "shuffle": "toybench score --shuffle-seed: the row permutation (seeded by that option)",
    "pairs.changed": "which factors each weakly supervised training pair changes, and k",
    "pairs.levels": "the new levels of the changed factors of each training pair",
}


def check_seed(seed: Any) -> int:
    """``seed`` as an ``int`` if every random stream of a run accepts it, else a one-line error.

    The binding limit is scikit-learn's ``random_state`` (0 ≤ seed < 2**32), which seeds the PCA
    reference of the scores; the batch-order seed alone would allow seeds up to ~1.8e13 and the
    data streams (``SeedSequence``) any size.

    Raises
    ------
    ToybenchError
        Not an integer, negative, or above ``MAX_SEED`` (2**32 - 1).
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not (
            0 <= int(seed) <= MAX_SEED):
        raise ToybenchError(f"seed must be an integer in 0..{MAX_SEED} (2**32 - 1), got "
                            f"{seed!r}")
    return int(seed)


def numpy_rng(seed: int, purpose: str) -> np.random.Generator:
    """The numpy stream of ``purpose``: ``data.<split>``, ``pairs.<part>``, ``supervision``,
    ``eval.<split>`` or ``shuffle``.

    ``data.<split>`` takes the splits of ``DATA_TAGS`` and the extra test splits
    ``data.test_corr<σ>`` (`toybench.rundir.split_at_corr` names them; their stream is
    ``SeedSequence([seed, 6, bits of σ])``).

    Raises
    ------
    KeyError
        For a purpose that has no numpy stream (the message lists the valid ones).
    """
    seed = int(seed)
    kind, _, split = purpose.partition(".")
    if kind == "data" and split in DATA_TAGS:
        return np.random.default_rng(np.random.SeedSequence([seed, DATA_TAGS[split]]))
    if kind == "pairs" and split in PAIR_TAGS:
        return np.random.default_rng(np.random.SeedSequence([seed, PAIR_TAGS[split]]))
    if kind == "data":
        from toybench.rundir import corr_of_split

        sigma = corr_of_split(split)
        if sigma is not None:
            bits = int.from_bytes(struct.pack(">d", sigma), "big")  # exact: one stream per σ
            return np.random.default_rng(np.random.SeedSequence([seed, _TEST_CORR_TAG, bits]))
    if purpose == "supervision":
        return np.random.default_rng([seed, _SUPERVISION_TAG])
    if kind == "eval" and split:
        return np.random.default_rng([seed, zlib.crc32(split.encode())])
    if purpose == "shuffle":
        return np.random.default_rng(seed)
    valid = ([f"data.{s}" for s in DATA_TAGS] + ["data.test_corr<σ>"]
             + [f"pairs.{s}" for s in PAIR_TAGS] + ["supervision", "eval.<split>", "shuffle"])
    raise KeyError(f"no numpy stream for purpose {purpose!r}; valid: {', '.join(valid)}")


def torch_seed(seed: int, purpose: str, index: int = 0) -> int:
    """The integer seed of a torch stream: ``init``, ``noise``, ``elbo`` or ``batches`` (epoch
    ``index``); for ``pca`` the scikit-learn ``random_state``.

    Raises
    ------
    KeyError
        For a purpose that has no integer seed (the message lists the valid ones).
    """
    seed = int(seed)
    if purpose in ("init", "noise", "torch", "pca"):
        return seed
    if purpose == "elbo":
        return seed + _ELBO_OFFSET
    if purpose == "batches":
        return seed * _BATCH_STRIDE + int(index)
    raise KeyError(f"no integer seed for purpose {purpose!r}; valid: init, noise, torch, elbo, "
                   "batches, pca")


def torch_generator(seed: int, purpose: str, index: int = 0):
    """A fresh ``torch.Generator`` seeded for ``purpose`` (imports torch)."""
    import torch

    return torch.Generator().manual_seed(torch_seed(seed, purpose, index))

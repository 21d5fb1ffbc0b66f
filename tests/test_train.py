"""Tests of the training loop: schedules, exact resume, NaN guard, atomic checkpoints, TensorBoard,
config and checkpoint validation, seeds, memory estimates, progress lines and Ctrl-C.

A tiny stand-in VAE (8×8 grey images, MLP, two latent layers) keeps each test well under a second.
"""

from __future__ import annotations

import json
import math
import platform
import re
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from toybench import io as tio
from toybench.errors import ToybenchError
from toybench.train import (
    CHECKPOINT_FORMAT,
    MAX_SEED,
    NONFINITE_EXIT_CODE,
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    batch_indices,
    check_resumable,
    check_seed,
    check_training_memory,
    data_bytes,
    keep_freed_memory,
    kl_weight_at,
    load_checkpoint,
    log_final_scores,
    lr_at,
    meta_model,
    model_training_bytes,
    save_checkpoint,
    score_tag,
    train,
)


@dataclass
class _Loss:
    total: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor
    kl_per_unit: torch.Tensor
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Group:
    name: str
    kind: str
    columns: tuple[int, ...]


class TinyVAE(nn.Module):
    """Two stochastic layers (z1: 3 units, z2: 2), to test 'every layer incl. the last'."""

    def __init__(self, nan_steps=()):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        self.dec = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 64))
        self.nan_steps = set(nan_steps)
        self.seen_factors = []
        self.n_codes = 5

    def _stats(self, x):
        mu, logvar = self.enc(x).float().chunk(2, dim=1)  # (B, 5) each
        return mu, logvar.clamp(-8, 8)

    def posteriors(self, x):
        mu, logvar = self._stats(x)
        sigma = torch.exp(0.5 * logvar)
        return {"z1": (mu[:, :3], sigma[:, :3]), "z2": (mu[:, 3:], sigma[:, 3:])}

    def units(self):
        return [_Group("z1", "layer", (0, 1, 2)), _Group("z2", "layer", (3, 4))]

    def encode(self, x):
        return self._stats(x)[0]

    def decode(self, z):
        return torch.sigmoid(self.dec(z).view(-1, 1, 8, 8).float())  # mean image in [0, 1]

    def loss(self, x, step, *, factors=None, kl_weight=1.0, recon_weight=1.0, generator=None,
             diagnostics=True):  # the keywords of toybench.models.common.Model.loss
        mu, logvar = self._stats(x)
        eps = torch.randn(mu.shape, generator=generator)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.dec(z).view(-1, 1, 8, 8).float()
        recon = nn.functional.binary_cross_entropy_with_logits(
            logits, x.float(), reduction="none").sum((1, 2, 3)).mean()
        kl_units = (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)).mean(0)  # (5,)
        kl = kl_units.sum()
        total = recon_weight * recon + kl_weight * kl
        if step in self.nan_steps:
            total = total * float("nan")
        if factors is not None:
            self.seen_factors.append(factors.clone())
        return _Loss(total, recon, kl, kl_units, {"mu_abs": mu.abs().mean()})


def _images(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 1, 8, 8)) < 0.3).astype(np.uint8) * 255


def _config(**kw):
    base = dict(steps=12, batch_size=16, lr=3e-3, log_every=1, checkpoint_every=5,
                kl_schedule="linear", kl_warmup_steps=4, n_train=96, n_test=32, nan_patience=3,
                hist_every=6, precision="fp32")
    base.update(kw)
    return TrainConfig(**base)


class DiagnosticVAE(TinyVAE):
    """TinyVAE whose loss takes ``diagnostics`` (like the VAE family's logging-only TC term)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.diagnostics_flags = []

    def loss(self, x, step, *, diagnostics=True, **kw):
        self.diagnostics_flags.append(diagnostics)
        out = super().loss(x, step, **kw)
        if diagnostics:
            out.extras["diag"] = out.kl.detach()
        return out


def _model(seed=0, **kw):
    torch.manual_seed(seed)  # test-only: the stand-in's initial weights
    return TinyVAE(**kw)


# --- schedules and batching ------------------------------------------------------------------


def test_kl_schedules_known_values():
    lin = _config(kl_schedule="linear", kl_delay_steps=2, kl_warmup_steps=4, kl_weight=2.0)
    assert [kl_weight_at(lin, s) for s in range(8)] == [0, 0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    const = replace(lin, kl_schedule="constant")
    assert [kl_weight_at(const, s) for s in range(4)] == [0, 0, 2.0, 2.0]
    cyc = replace(lin, kl_schedule="cyclic", kl_delay_steps=0, kl_cycle_steps=6,
                  kl_warmup_steps=2)
    assert [kl_weight_at(cyc, s) for s in range(8)] == [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 2.0]


def test_lr_schedules_known_values():
    const = _config(lr=1.0, lr_warmup_steps=4, steps=10)
    assert [lr_at(const, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = replace(const, lr_schedule="cosine", lr_warmup_steps=2, steps=7, lr_min_ratio=0.1)
    got = [lr_at(cos, s) for s in range(7)]
    # after the warm-up: steps 2..6 are a half cosine from 1 down to 0.1 (progress 0, 1/4, ..., 1)
    want = [0.5, 1.0] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[-1] == pytest.approx(0.1)
    with pytest.raises(ToybenchError, match="lr_schedule"):
        _config(lr_schedule="step")
    with pytest.raises(ToybenchError, match="lr_min_ratio"):
        _config(lr_min_ratio=1.5)


def test_constant_lr_run_is_the_prefix_of_a_longer_run():
    """The convergence study scores a long run at step S as the run of S steps: true when
    nothing but the step count differs and the schedule is constant after its warm-up."""
    short, long = _config(steps=6, lr_warmup_steps=3), _config(steps=12, lr_warmup_steps=3)
    a, b = _model(), _model()
    train(a, _images(), short, seed=4)
    train(b, _images(), long, seed=4, stop_after=6)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_train_config_rejects_bad_values():
    with pytest.raises(ToybenchError, match="kl_schedule"):
        _config(kl_schedule="cosine")
    with pytest.raises(ToybenchError, match="precision"):
        _config(precision="fp16")
    with pytest.raises(ToybenchError, match="steps"):
        _config(steps=0)


def test_batch_indices_are_epoch_permutations():
    n, b = 50, 16  # 3 full batches per epoch, 2 images dropped
    epoch0 = torch.cat([batch_indices(n, b, s, seed=1) for s in range(3)])
    assert len(set(epoch0.tolist())) == 48
    assert torch.equal(batch_indices(n, b, 4, seed=1), batch_indices(n, b, 4, seed=1))
    assert not torch.equal(batch_indices(n, b, 0, seed=1), batch_indices(n, b, 3, seed=1))
    assert not torch.equal(batch_indices(n, b, 0, seed=1), batch_indices(n, b, 0, seed=2))


class _BatchRecorder(TinyVAE):
    """TinyVAE that keeps every batch it is given."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def loss(self, x, step, **kw):
        self.batches.append(x.detach().clone())
        return super().loss(x, step, **kw)


def _pairs(n=48, seed=0):
    """``(n, 2, 1, 8, 8)`` uint8: n training examples of two images each."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, 2, 1, 8, 8)) < 0.3).astype(np.uint8) * 255


def test_pairs_reach_the_model_as_the_first_images_then_the_second():
    """Data of groups (n, G, C, H, W): batches draw examples; the model gets (G·B, C, H, W),
    member g of example i at row g·B + i."""
    pairs = _pairs()
    torch.manual_seed(0)
    model = _BatchRecorder()
    result = train(model, pairs, _config(steps=4, batch_size=16), seed=2)
    assert len(model.batches) == 4
    for step, x in enumerate(model.batches):
        chosen = torch.from_numpy(pairs[batch_indices(48, 16, step, seed=2).numpy()]).float()
        expected = torch.cat([chosen[:, 0], chosen[:, 1]]) / 255.0  # (32, 1, 8, 8)
        assert x.shape == (32, 1, 8, 8)
        torch.testing.assert_close(x, expected, rtol=0, atol=0)
    assert result.steps_done == 4 and result.images_per_second > 0


def test_pair_training_resumes_bit_identically(tmp_path: Path):
    pairs, cfg = _pairs(), _config(steps=10, batch_size=16)
    full = _model()
    train(full, pairs, cfg, seed=3)
    part = _model()
    train(part, pairs, cfg, seed=3, ckpt_path=tmp_path / "last.pt", stop_after=4)
    resumed = _model(seed=99)
    train(resumed, pairs, cfg, seed=3, ckpt_path=tmp_path / "last.pt", resume=True)
    for key, value in _state(full).items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_data_bytes_count_both_images_of_a_pair():
    cfg = TrainConfig(n_train=100, n_test=10)
    single = data_bytes(cfg, (3, 32, 32), 6)
    assert single == 120 * (3 * 32 * 32 + 48)
    assert data_bytes(cfg, (3, 32, 32), 6, group=2) == single + 100 * (3 * 32 * 32 + 48)


# --- determinism and exact resume ------------------------------------------------------------


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("precision,schedule", [("fp32", "constant"), ("bf16", "constant"),
                                                ("fp32", "cosine")])
def test_resume_is_bit_identical(tmp_path: Path, precision, schedule):
    cfg = _config(precision=precision, lr_schedule=schedule, lr_warmup_steps=3)
    images = _images()
    full = _model()
    ref = train(full, images, cfg, seed=3, ckpt_path=tmp_path / "a" / "last.pt")

    part = _model()
    first = train(part, images, cfg, seed=3, ckpt_path=tmp_path / "b" / "last.pt", stop_after=7)
    assert first.steps_done == 7
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 7
    resumed_model = _model(seed=99)  # different init: everything must come from the checkpoint
    resumed = train(resumed_model, images, cfg, seed=3, ckpt_path=tmp_path / "b" / "last.pt",
                    resume=True)
    assert resumed.steps_done == cfg.steps
    for key, value in _state(full).items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    columns = ("step", "loss", "recon", "kl", "kl_weight", "grad_norm", "nan_skipped", "mu_abs")
    curve = [[row[c] for c in columns] for row in ref.history]
    assert curve == [[row[c] for c in columns] for row in resumed.history]
    assert len(curve) == cfg.steps


def test_same_seed_same_parameters_other_seed_differs():
    cfg = _config(steps=6)
    a, b, c = _model(), _model(), _model()
    train(a, _images(), cfg, seed=5)
    train(b, _images(), cfg, seed=5)
    train(c, _images(), cfg, seed=6)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not all(torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.state_dict())


def test_training_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(_model(), _images(), _config(steps=3), seed=0)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), expected)


def test_loss_falls():
    result = train(_model(), _images(), _config(steps=60, kl_warmup_steps=1), seed=0)
    losses = [row["loss"] for row in result.history]
    assert np.mean(losses[-10:]) < 0.9 * np.mean(losses[:5])


def test_resume_refuses_other_config_or_seed(tmp_path: Path):
    ckpt = tmp_path / "last.pt"
    train(_model(), _images(), _config(), seed=0, ckpt_path=ckpt, stop_after=5)
    with pytest.raises(ToybenchError, match="different train config or seed"):
        train(_model(), _images(), _config(lr=1e-4), seed=0, ckpt_path=ckpt, resume=True)
    with pytest.raises(ToybenchError, match="different train config or seed"):
        train(_model(), _images(), _config(), seed=1, ckpt_path=ckpt, resume=True)


# --- NaN guard -------------------------------------------------------------------------------


def test_one_nan_batch_is_skipped_and_counted():
    model = _model(nan_steps={4})
    result = train(model, _images(), _config(), seed=0)
    assert result.nan_skipped == 1
    assert result.steps_done == 12
    assert [r["nan_skipped"] for r in result.history][3:5] == [0, 1]
    assert math.isnan(result.history[4]["loss"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_streak_below_patience_recovers():
    result = train(_model(nan_steps={2, 3}), _images(), _config(nan_patience=3), seed=0)
    assert result.nan_skipped == 2 and result.steps_done == 12


def test_nan_patience_consecutive_steps_stop_the_run():
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite") as info:
        train(_model(nan_steps={2, 3, 4}), _images(), _config(nan_patience=3), seed=0)
    assert info.value.exit_code == NONFINITE_EXIT_CODE == 3
    assert "\n" not in str(info.value)


def test_nan_skip_matches_zero_update():
    """A skipped step changes nothing: parameters equal those of a run without that batch."""
    cfg = _config(steps=3, log_every=1)
    skipped = _model(nan_steps={2})
    train(skipped, _images(), cfg, seed=0)
    short = _model()
    train(short, _images(), replace(cfg, steps=2), seed=0)
    assert all(torch.equal(skipped.state_dict()[k], short.state_dict()[k])
               for k in short.state_dict())


# --- checkpoints -----------------------------------------------------------------------------


def test_checkpoint_loads_weights_only(tmp_path: Path):
    ckpt = tmp_path / "ckpt" / "last.pt"
    train(_model(), _images(), _config(steps=5), seed=0, ckpt_path=ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 5 and "optimizer" in state and "noise_rng" in state
    assert isinstance(state["torch_rng"], torch.Tensor)


class _Killed(BaseException):
    """Stands in for the process dying (SIGKILL, power loss): nothing of toybench's runs after."""


def test_kill_during_checkpoint_write_keeps_previous(tmp_path: Path, monkeypatch):
    ckpt = tmp_path / "ckpt" / "last.pt"
    train(_model(), _images(), _config(steps=5), seed=0, ckpt_path=ckpt)
    state = torch.load(ckpt, weights_only=True)

    def killed(_fd):
        raise _Killed  # the process dies after the bytes, before the rename

    monkeypatch.setattr(tio.os, "fsync", killed)
    with pytest.raises(_Killed):
        save_checkpoint(ckpt, {**state, "step": 10})
    monkeypatch.undo()
    assert load_checkpoint(ckpt)["step"] == 5
    assert [p.name for p in ckpt.parent.iterdir()] == ["last.pt"]  # no temp file left


def test_kill_during_training_checkpoint_resumes_from_previous(tmp_path: Path, monkeypatch):
    ckpt = tmp_path / "last.pt"
    calls = {"n": 0}
    real_replace = tio.os.replace

    def replace_then_die(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # second checkpoint (step 10): die mid-write
            raise _Killed
        real_replace(src, dst)

    monkeypatch.setattr(tio.os, "replace", replace_then_die)
    with pytest.raises(_Killed):
        train(_model(), _images(), _config(), seed=0, ckpt_path=ckpt)
    monkeypatch.undo()
    assert load_checkpoint(ckpt)["step"] == 5
    resumed = _model()
    train(resumed, _images(), _config(), seed=0, ckpt_path=ckpt, resume=True)
    full = _model()
    train(full, _images(), _config(), seed=0)
    assert all(torch.equal(full.state_dict()[k], resumed.state_dict()[k])
               for k in full.state_dict())


def test_missing_or_corrupt_checkpoint_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ToybenchError, match="no checkpoint at"):
        train(_model(), _images(), _config(), seed=0, ckpt_path=tmp_path / "nope.pt",
              resume=True)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ToybenchError, match="unreadable") as info:
        load_checkpoint(bad)
    assert "\n" not in str(info.value)
    half = tmp_path / "half.pt"
    save_checkpoint(half, {"format": CHECKPOINT_FORMAT, "step": 1, "w": torch.ones(1000)})
    half.write_bytes(half.read_bytes()[:300])  # truncated
    with pytest.raises(ToybenchError, match="unreadable"):
        load_checkpoint(half)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(ToybenchError, match="not a toybench checkpoint"):
        load_checkpoint(foreign)
    for old_format in (1, 2):  # earlier layouts (2: no "seconds", no "meta", float-only rows)
        old = tmp_path / f"old{old_format}.pt"
        save_checkpoint(old, {"format": old_format, "step": 1})
        with pytest.raises(ToybenchError, match=f"has format {old_format}; this toybench reads "
                                                f"format {CHECKPOINT_FORMAT}"):
            load_checkpoint(old)
    assert CHECKPOINT_FORMAT == 3


# --- supervision and logging -----------------------------------------------------------------


def test_supervision_shows_a_fixed_labelled_fraction():
    images = _images()
    factors = np.arange(96 * 2).reshape(96, 2)
    model = _model()
    train(model, images, _config(steps=6, supervised_fraction=0.25), seed=0, factors=factors)
    seen = torch.cat(model.seen_factors)
    labelled = (seen[:, 0] >= 0).float().mean().item()
    assert 0.05 < labelled < 0.5
    rows = seen[seen[:, 0] >= 0]
    assert torch.equal(rows[:, 1] - rows[:, 0], torch.ones(len(rows), dtype=rows.dtype))
    unsup = _model()
    train(unsup, images, _config(steps=2), seed=0, factors=factors)
    assert unsup.seen_factors == []


def test_tensorboard_has_every_latent_layer(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(_model(), _images(), _config(steps=6, hist_every=3), seed=0, tb_dir=tmp_path / "tb")
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0, "images": 0})
    acc.Reload()
    hists = set(acc.Tags()["histograms"])
    assert {"posterior_mu/z1", "posterior_mu/z2", "posterior_sigma/z1",
            "posterior_sigma/z2"} <= hists
    assert [e.step for e in acc.Histograms("posterior_mu/z2")] == [3, 6]
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/kl", "kl_unit/004", "kl_layer/z1", "kl_layer/z2"} <= scalars
    assert {"reconstructions", "traversals"} <= set(acc.Tags()["images"])


@pytest.mark.parametrize("name", [pytest.param("vae", marks=pytest.mark.slow),
                                  pytest.param("beta-tcvae", marks=pytest.mark.slow),
                                  "csvae", "hvae"])
def test_every_baseline_logs_every_posterior_layer(tmp_path: Path, name):
    """Real baselines: one μ and one σ histogram per entry of ``posteriors`` (incl. the top)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from toybench.baselines import load_baseline
    from toybench.models import build_model
    from toybench.specs import load_generator

    gen = load_generator("toy-causal")
    baseline = load_baseline(name)
    model = build_model(baseline.family, baseline.model, image_shape=gen.image_shape, dag=gen.dag,
                        concept_sizes={c.name: c.n_levels for c in gen.concepts})
    rng = np.random.default_rng(0)
    images = (rng.random((64, *gen.image_shape)) < 0.2).astype(np.uint8) * 255
    factors = np.zeros((64, len(gen.concepts)), dtype=np.int64)
    cfg = replace(baseline.train, steps=2, batch_size=32, hist_every=2, log_every=1)
    train(model, images, cfg, seed=0, factors=factors, tb_dir=tmp_path)
    layers = list(model.posteriors(torch.zeros(2, *gen.image_shape)))
    assert layers
    acc = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})
    acc.Reload()
    hists = set(acc.Tags()["histograms"])
    for layer in layers:
        assert {f"posterior_mu/{layer}", f"posterior_sigma/{layer}"} <= hists, layer
    kinds = {g.kind for g in model.units()}
    scalars = set(acc.Tags()["scalars"])
    assert any(tag.startswith(tuple(f"kl_{k}/" for k in kinds)) for tag in scalars)


def test_diagnostics_are_requested_only_on_logged_steps(tmp_path: Path):
    torch.manual_seed(0)
    model = DiagnosticVAE(nan_steps=(6,))
    ckpt = tmp_path / "last.pt"
    config = _config(steps=12, log_every=5, nan_patience=5)
    result = train(model, _images(), config, seed=0, ckpt_path=ckpt)
    # Logged: steps 5, 10 and the last (12); step index 6 (the 7th) is non-finite and also logged.
    assert [i + 1 for i, f in enumerate(model.diagnostics_flags) if f] == [5, 10, 12]
    assert [row["step"] for row in result.history] == [5, 7, 10, 12]
    assert ["diag" in row for row in result.history] == [True, False, True, True]
    # Rows with different keys survive a checkpoint round trip unchanged.
    saved = load_checkpoint(ckpt)["history"]
    assert [list(row) for row in saved] == [list(row) for row in result.history]
    for a, b in zip(saved, result.history, strict=True):
        np.testing.assert_array_equal(list(a.values()), list(b.values()))  # NaN == NaN here


@pytest.mark.skipif(not sys.platform.startswith("linux") or not platform.libc_ver()[0] == "glibc",
                    reason="mallopt settings are glibc-only")
def test_keep_freed_memory_is_accepted_by_glibc_and_idempotent():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True


# --- config values (fault 6) -----------------------------------------------------------------


@pytest.mark.parametrize("key, value", [
    ("lr", math.nan), ("lr", 0.0), ("lr", -1e-3), ("lr", math.inf),
    ("adam_beta1", 1.5), ("adam_beta1", 1.0), ("adam_beta1", -0.1), ("adam_beta2", math.nan),
    ("weight_decay", -1.0), ("weight_decay", math.inf),
    ("grad_clip", math.nan), ("grad_clip", math.inf), ("grad_clip", -1.0),
    ("recon_weight", math.nan), ("kl_weight", -1.0), ("kl_weight", math.inf),
    ("supervised_fraction", 1.5), ("supervised_fraction", math.nan),
    ("steps", 0), ("steps", 2.5), ("steps", True), ("batch_size", 0), ("n_train", 0),
    ("n_test", 0), ("log_every", 0), ("hist_every", 0), ("checkpoint_every", 0),
    ("nan_patience", 0), ("kl_cycle_steps", 0), ("kl_delay_steps", -1), ("kl_warmup_steps", -1),
    ("lr", "fast"), ("kl_schedule", 3),
])
def test_train_config_refuses_every_bad_value(key, value):
    with pytest.raises(ToybenchError, match=f"train.{key}") as info:
        _config(**{key: value})
    assert "\n" not in str(info.value)


def test_train_config_refuses_a_cyclic_ramp_longer_than_its_period():
    with pytest.raises(ToybenchError, match="kl_warmup_steps=8 is longer than .*kl_cycle_steps=4"):
        _config(kl_schedule="cyclic", kl_warmup_steps=8, kl_cycle_steps=4)
    _config(kl_schedule="linear", kl_warmup_steps=8, kl_cycle_steps=4)  # unused by linear


def test_train_config_boundaries_and_int_floats():
    cfg = _config(adam_beta1=0.0, adam_beta2=0.0, weight_decay=0, grad_clip=0, kl_weight=1,
                  supervised_fraction=1, kl_delay_steps=0, kl_warmup_steps=0)
    assert isinstance(cfg.kl_weight, float) and isinstance(cfg.grad_clip, float)
    assert kl_weight_at(cfg, 0) == 1.0 and isinstance(kl_weight_at(cfg, 0), float)


@pytest.mark.parametrize("setting, key", [
    ("train.lr=nan", "train.lr"), ("train.adam_beta1=1.5", "train.adam_beta1"),
    ("train.grad_clip=nan", "train.grad_clip"), ("train.log_every=0", "train.log_every"),
    ("model.latent_dim=0", "vae.latent_dim"), ("model.beta=nan", "vae.beta"),
    ("model.sigma=inf", "vae.sigma"),
])
def test_cli_run_refuses_bad_values_before_writing_anything(tmp_path: Path, setting, key):
    from click.testing import CliRunner

    from toybench.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "--model", "vae", "--protocol", "quick",
                                       "--set", setting, "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], result.output
    assert not out.exists()


# --- checkpoint structure (fault 5) ----------------------------------------------------------


def _good_checkpoint(tmp_path: Path) -> Path:
    ckpt = tmp_path / "good.pt"
    train(_model(), _images(), _config(), seed=0, ckpt_path=ckpt, stop_after=5)
    return ckpt


def _drop(key):
    def edit(state):
        del state[key]
    return edit


def _set(key, value):
    def edit(state):
        state[key] = value
    return edit


def _edit_model(state):
    state["model"]["enc.1.weight"] = torch.zeros(3, 3)


def _edit_optimizer_shape(state):
    state["optimizer"]["state"][0]["exp_avg"] = torch.zeros(2)


def _edit_optimizer_betas(state):
    # (the learning rate is not compared: the schedule sets it every step, see train.lr_at)
    state["optimizer"]["param_groups"][0]["betas"] = (0.5, 0.9)


BROKEN = {
    "no optimizer": (_drop("optimizer"), "no 'optimizer' entry"),
    "no model": (_drop("model"), "no 'model' entry"),
    "no seconds": (_drop("seconds"), "no 'seconds' entry"),
    "step is a string": (_set("step", "5"), "'step' is not an integer"),
    "wrong weight shape": (_edit_model, r"model entry 'enc.1.weight' is \(3, 3\)"),
    "missing weight": (lambda s: s["model"].pop("dec.2.bias"), "'dec.2.bias' is missing"),
    "extra weight": (lambda s: s["model"].update(extra=torch.ones(1)),
                     "'extra' is not a parameter"),
    "short torch rng": (_set("torch_rng", torch.zeros(10, dtype=torch.uint8)), "'torch_rng' is"),
    "float noise rng": (_set("noise_rng", torch.zeros(5056)), "'noise_rng' is"),
    "rng not a tensor": (_set("noise_rng", [1, 2]), "'noise_rng' is not a tensor"),
    "history not a list": (_set("history", "rows"), "'history' is not a list"),
    "history row of strings": (_set("history", [{"step": 1, "loss": "x"}]), "history row 0"),
    "history row not a dict": (_set("history", [[1, 2]]), "history row 0"),
    "optimizer moment shape": (_edit_optimizer_shape, "optimizer state 'exp_avg' of parameter 0"),
    "optimizer without groups": (lambda s: s["optimizer"].pop("param_groups"), "param_groups"),
    "optimizer betas": (_edit_optimizer_betas, "optimizer betas="),
    "negative counter": (_set("nan_skipped", -1), "counters out of range"),
    "nan seconds": (_set("seconds", math.nan), "'seconds' is nan"),
    "meta not json": (_set("meta", "{oops"), "'meta' is not valid JSON"),
    "meta a list": (_set("meta", "[1]"), "'meta' is not a JSON object"),
    "config holds a tensor": (lambda s: s["config"].update(lr=torch.ones(2)),
                              "'config' is not a dict of plain settings"),
    "optimizer betas a tensor": (lambda s: s["optimizer"]["param_groups"][0].update(
        betas=torch.ones(2)), "optimizer betas=a Tensor, the train config gives"),
    "format a tensor": (_set("format", torch.ones(2)), "is not a toybench checkpoint"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_structurally_wrong_checkpoint_is_one_line_before_the_model_is_touched(tmp_path, case):
    edit, message = BROKEN[case]
    state = torch.load(_good_checkpoint(tmp_path), weights_only=True)
    edit(state)
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, state)
    model = _model(seed=7)
    before = _state(model)
    with pytest.raises(ToybenchError, match=message) as info:
        train(model, _images(), _config(), seed=0, ckpt_path=bad, resume=True)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ToybenchError, match=message):  # the same check, callable on its own
        check_resumable(bad, _model(), _config(), 0)


def test_check_resumable_accepts_a_good_checkpoint_and_checks_seed_and_config(tmp_path):
    ckpt = _good_checkpoint(tmp_path)
    state = check_resumable(ckpt, _model(seed=3), _config(), 0)
    assert state["step"] == 5 and state["meta"] is None
    with pytest.raises(ToybenchError, match="different train config or seed"):
        check_resumable(ckpt, _model(), _config(), 1)
    with pytest.raises(ToybenchError, match="seed must be"):
        check_resumable(ckpt, _model(), _config(), -1)
    state = torch.load(ckpt, weights_only=True)
    state["config"]["steps"] = 4  # as if written by a 4-step run, yet at step 5
    save_checkpoint(ckpt, state)
    with pytest.raises(ToybenchError, match=r"step 5 > train.steps"):
        check_resumable(ckpt, _model(), _config(steps=4), 0)


def test_checkpoint_meta_round_trips_and_weights_only_loads(tmp_path):
    ckpt = tmp_path / "last.pt"
    meta = {"family": "vae", "model": {"latent_dim": 5}, "image_shape": [1, 8, 8],
            "dag": [["a", "b"]], "concept_sizes": {"a": 3, "b": 2}}
    train(_model(), _images(), _config(steps=3), seed=0, ckpt_path=ckpt, meta=meta)
    assert load_checkpoint(ckpt)["meta"] == meta
    raw = torch.load(ckpt, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and json.loads(raw["meta"]) == meta
    with pytest.raises(TypeError, match="JSON"):
        train(_model(), _images(), _config(steps=3), seed=0, meta={"x": object()})


# --- seeds (fault 7) -------------------------------------------------------------------------


def test_check_seed_bounds():
    assert check_seed(0) == 0 and check_seed(MAX_SEED) == MAX_SEED == 2**32 - 1
    assert check_seed(np.int64(5)) == 5 and type(check_seed(np.int64(5))) is int
    for bad in (-1, MAX_SEED + 1, 35184372088832, 10**29, True, 1.5, "3"):
        with pytest.raises(ToybenchError, match=r"seed must be an integer in 0\.\.4294967295"):
            check_seed(bad)


def test_train_refuses_a_huge_seed_before_writing_anything(tmp_path):
    tb = tmp_path / "tb"
    with pytest.raises(ToybenchError, match="seed must be"):
        train(_model(), _images(), _config(steps=2), seed=35184372088832, tb_dir=tb,
              ckpt_path=tmp_path / "ckpt" / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_max_seed_is_where_the_pca_reference_stops():
    """Seeds above MAX_SEED break a stream of the scores (scikit-learn's random_state)."""
    from toybench.metrics.recon import pca_references

    images = _images(n=20)
    pca_references(images, {"test": images}, 2, seed=MAX_SEED)
    with pytest.raises(ValueError):
        pca_references(images, {"test": images}, 2, seed=MAX_SEED + 1)
    batch_indices(96, 16, 10**6, MAX_SEED)  # the batch-order seed stays below 2**64


# --- memory estimates (fault 8) --------------------------------------------------------------


@pytest.mark.parametrize("name", ["vae", "beta-tcvae", "csvae", "hvae", "pca", "ada-gvae"])
def test_meta_model_counts_the_real_parameters(name):
    from toybench.baselines import load_baseline
    from toybench.models import build_model
    from toybench.specs import load_generator

    gen = load_generator("toy-causal")
    baseline = load_baseline(name)
    kwargs = {"image_shape": gen.image_shape, "dag": gen.dag,
              "concept_sizes": {c.name: c.n_levels for c in gen.concepts}}
    meta = meta_model(baseline.family, baseline.model, **kwargs)
    real = build_model(baseline.family, baseline.model, **kwargs)
    assert all(p.is_meta for p in meta.parameters())
    assert model_training_bytes(meta) == model_training_bytes(real) > 0
    check_training_memory(baseline.train, image_shape=gen.image_shape,
                          n_factors=len(gen.concepts), model=meta)  # the shipped sizes fit


def test_memory_check_refuses_huge_data_and_models_with_the_size():
    from toybench.models.vae import VAEConfig

    cfg = TrainConfig(n_train=10**12)
    message = r"train.n_train=1000000000000 .* about 3\.1 PB for the images \(3x32x32 uint8"
    with pytest.raises(ToybenchError, match=message) as info:
        check_training_memory(cfg, image_shape=(3, 32, 32), n_factors=6, memory=16 * 2**30)
    assert "\n" not in str(info.value)
    big = meta_model("vae", VAEConfig(latent_dim=10**8), image_shape=(3, 32, 32))
    with pytest.raises(ToybenchError, match=r"the model has 77,000,\d{3},\d{3} parameters: "
                                            r"about 1\.2 TB"):
        check_training_memory(TrainConfig(), image_shape=(3, 32, 32), n_factors=6, model=big,
                              memory=16 * 2**30)
    small = meta_model("vae", VAEConfig(), image_shape=(3, 32, 32))
    check_training_memory(TrainConfig(), image_shape=(3, 32, 32), n_factors=6, model=small,
                          memory=16 * 2**30)
    with pytest.raises(ToybenchError, match="together"):
        check_training_memory(TrainConfig(), image_shape=(3, 32, 32), n_factors=6, model=small,
                              memory=model_training_bytes(small) + data_bytes(
                                  TrainConfig(), (3, 32, 32), 6) - 1)


# --- history.csv after a resume (fault 12) ---------------------------------------------------


def _csv_without_seconds(path: Path) -> tuple[list[str], list[float]]:
    import csv

    rows = list(csv.reader(path.open()))
    col = rows[0].index("seconds")
    return ([",".join(r[:col] + r[col + 1:]) for r in rows],
            [float(r[col]) for r in rows[1:]])


def test_resumed_history_csv_is_identical_but_for_seconds(tmp_path):
    from toybench.runs import write_history

    cfg = _config(log_every=2)
    full = train(_model(), _images(), cfg, seed=4)
    write_history(tmp_path / "full.csv", full.history)
    ckpt = tmp_path / "last.pt"
    train(_model(), _images(), cfg, seed=4, ckpt_path=ckpt, stop_after=7)
    saved_seconds = load_checkpoint(ckpt)["seconds"]
    assert saved_seconds > 0
    resumed = train(_model(), _images(), cfg, seed=4, ckpt_path=ckpt, resume=True)
    write_history(tmp_path / "resumed.csv", resumed.history)
    assert [type(r["step"]) for r in resumed.history] == [int] * len(full.history)
    assert [type(r["nan_skipped"]) for r in resumed.history] == [int] * len(full.history)
    lines, seconds = _csv_without_seconds(tmp_path / "resumed.csv")
    assert lines == _csv_without_seconds(tmp_path / "full.csv")[0]
    assert seconds == sorted(seconds)  # continues from the checkpoint's elapsed time
    after = [r["seconds"] for r in resumed.history if r["step"] > 7]
    assert after and min(after) >= saved_seconds


# --- TensorBoard -----------------------------------------------------------------------------


def _accumulator(tb: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb), size_guidance={"histograms": 0, "images": 0, "scalars": 0,
                                                   "tensors": 0})
    acc.Reload()
    return acc


def test_histograms_at_every_hist_every_and_the_last_step(tmp_path):
    train(_model(), _images(), _config(steps=7, hist_every=3), seed=0, tb_dir=tmp_path)
    assert [e.step for e in _accumulator(tmp_path).Histograms("posterior_mu/z1")] == [3, 6, 7]
    train(_model(), _images(), _config(steps=4, hist_every=500), seed=0, tb_dir=tmp_path / "q")
    assert [e.step for e in _accumulator(tmp_path / "q").Histograms("codes/all")] == [4]


def test_resume_keeps_the_checkpoint_step_in_tensorboard_and_no_duplicates(tmp_path):
    cfg = _config(hist_every=5)  # 12 steps, checkpoints at 5 and 10, every step logged
    train(_model(), _images(), cfg, seed=0, tb_dir=tmp_path / "full")

    def die_at_8(row):
        if row["step"] == 8:
            raise _Killed  # dies after logging step 8; the last checkpoint is step 5

    ckpt, tb = tmp_path / "last.pt", tmp_path / "tb"
    with pytest.raises(_Killed):
        train(_model(), _images(), cfg, seed=0, ckpt_path=ckpt, tb_dir=tb, on_log=die_at_8)
    assert load_checkpoint(ckpt)["step"] == 5
    # A resume is a later process: its event file sorts after the first one only if its name's
    # timestamp (whole seconds) is later; within one second the names' counters could misorder.
    second = int(time.time())
    while int(time.time()) == second:
        time.sleep(0.05)
    train(_model(), _images(), cfg, seed=0, ckpt_path=ckpt, tb_dir=tb, resume=True)
    full, resumed = _accumulator(tmp_path / "full"), _accumulator(tb)
    for tag in ("train/loss", "kl_layer/z2"):
        steps = [e.step for e in resumed.Scalars(tag)]
        assert steps == list(range(1, 13)), tag
        assert [e.value for e in resumed.Scalars(tag)] == [e.value for e in full.Scalars(tag)]
    assert [e.step for e in resumed.Histograms("posterior_mu/z1")] == [5, 10, 12]


def test_log_final_scores_writes_scalars_and_hparams_into_the_run_folder(tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    tb = tmp_path / "tb"
    train(_model(), _images(), _config(steps=3), seed=0, tb_dir=tb)
    metrics = {"test.dci.disentanglement": 0.25, "test_decorrelated.mig": 0.5,
               "train.steps": 3, "test.recon.mse_vs_pca": None, "test.elbo": math.nan,
               "flag": True, "note": "text"}
    hparams = {"model": "vae", "corr": "0.2", "seed": 0, "train.lr": 3e-3, "fp32": False}
    log_final_scores(tb, 3, metrics, hparams)
    assert all(p.is_file() for p in tb.iterdir())  # no timestamped subfolder
    acc = _accumulator(tb)
    scalars = set(acc.Tags()["scalars"])
    assert {"score/test/dci.disentanglement", "score/test_decorrelated/mig",
            "score/train/steps", "train/loss"} <= scalars
    assert not {"score/test/recon.mse_vs_pca", "score/test/elbo", "score/flag"} & scalars
    [event] = acc.Scalars("score/test/dci.disentanglement")
    assert event.step == 3 and event.value == 0.25
    content = acc.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert {m.name.tag for m in experiment.experiment.metric_infos} == {
        "score/test/dci.disentanglement", "score/test_decorrelated/mig", "score/train/steps"}
    session = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["model"].string_value == "vae"
    assert session.hparams["train.lr"].number_value == 3e-3
    assert score_tag("test.dci.disentanglement") == "score/test/dci.disentanglement"
    with pytest.raises(TypeError, match="hparams"):
        log_final_scores(tb, 3, metrics, {"bad": [1]})


# --- progress lines (echo) -------------------------------------------------------------------

ECHO_LINE = re.compile(r"^train  step (\d+)/40  loss \S+  recon \S+  kl \S+  [\d.]+k? img/s  "
                       r"elapsed \d+s  eta (\d+s|\?)$")


def test_echo_prints_about_ten_lines_without_a_bar(tmp_path):
    lines: list[str] = []
    cfg = _config(steps=40, log_every=2)
    train(_model(), _images(), cfg, seed=0, progress=False, echo=lines.append,
          ckpt_path=tmp_path / "last.pt", stop_after=20)
    assert all(ECHO_LINE.match(line) for line in lines), lines
    assert [int(ECHO_LINE.match(line)[1]) for line in lines] == [4, 8, 12, 16, 20]
    lines.clear()
    train(_model(), _images(), cfg, seed=0, progress=False, echo=lines.append,
          ckpt_path=tmp_path / "last.pt", resume=True)
    assert lines[0] == f"train  resuming at step 20/40 from {tmp_path / 'last.pt'}"
    assert [int(ECHO_LINE.match(line)[1]) for line in lines[1:]] == [24, 28, 32, 36, 40]


def test_echo_is_silent_with_a_bar_or_by_default(capsys):
    lines: list[str] = []
    train(_model(), _images(), _config(steps=4), seed=0, progress=True, echo=lines.append)
    assert lines == []
    train(_model(), _images(), _config(steps=4), seed=0, progress=False)
    assert capsys.readouterr().out == ""


# --- Ctrl-C ----------------------------------------------------------------------------------


def _interrupt_at(step, how="raise"):
    def on_log(row):
        if row["step"] == step:
            if how == "signal":
                signal.raise_signal(signal.SIGINT)  # a real Ctrl-C: deferred to the step's end
            else:
                raise KeyboardInterrupt
    return on_log


class InterruptedVAE(TinyVAE):
    """Ctrl-C inside the forward pass of one step, after it drew its noise."""

    def __init__(self, at_step):
        super().__init__()
        self.at_step = at_step

    def loss(self, x, step, *, generator=None, **kw):
        out = super().loss(x, step, generator=generator, **kw)
        if step == self.at_step:
            self.at_step = None
            raise KeyboardInterrupt
        return out


@pytest.mark.parametrize("how", ["raise", "signal", "mid-step"])
def test_ctrl_c_checkpoints_the_last_step_and_resumes_exactly(tmp_path, how, request):
    cfg = _config(log_every=1)
    full_model = _model()
    full = train(full_model, _images(), cfg, seed=2)
    ckpt = tmp_path / "ckpt" / "last.pt"
    # what train() must restore: Python's default, or SIG_IGN where the process was started in
    # the background by a shell without job control (nohup ... &)
    before = signal.getsignal(signal.SIGINT)
    if how == "signal" and before is not signal.default_int_handler:
        # a real SIGINT needs Python's handler, which such a process lacks (it ignores Ctrl-C,
        # and so does train()): give it back for this case, as an interactive shell would
        signal.signal(signal.SIGINT, signal.default_int_handler)
        request.addfinalizer(lambda: signal.signal(signal.SIGINT, before))
        before = signal.default_int_handler
    if how == "mid-step":
        torch.manual_seed(0)
        model, on_log = InterruptedVAE(at_step=7), None  # the 8th step (index 7) is cut
    else:
        model, on_log = _model(), _interrupt_at(7, how)
    with pytest.raises(TrainingInterrupted) as info:
        train(model, _images(), cfg, seed=2, ckpt_path=ckpt, on_log=on_log)
    err = info.value
    assert err.step == 7 and err.checkpoint == ckpt and err.exit_code == 130
    assert isinstance(err, ToybenchError) and "\n" not in str(err)
    assert str(err) == f"training interrupted at step 7/12; checkpoint saved to {ckpt}"
    assert signal.getsignal(signal.SIGINT) is before
    assert load_checkpoint(ckpt)["step"] == 7 and len(err.history) == 7
    resumed_model = _model(seed=5)
    resumed = train(resumed_model, _images(), cfg, seed=2, ckpt_path=ckpt, resume=True)
    assert all(torch.equal(v, resumed_model.state_dict()[k])
               for k, v in full_model.state_dict().items())
    drop = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history]
    assert drop == [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]


def test_ctrl_c_without_a_checkpoint_path_says_nothing_was_saved():
    with pytest.raises(TrainingInterrupted, match="interrupted at step 3/12; nothing saved"):
        train(_model(), _images(), _config(), seed=0, on_log=_interrupt_at(3))


@pytest.mark.slow
def test_cli_run_at_max_seed_then_resume_from_a_damaged_checkpoint(tmp_path, monkeypatch):
    """End to end: the largest accepted seed runs through every stream (data, training,
    scores); then a damaged checkpoint of that run is refused with one line on --resume."""
    from click.testing import CliRunner

    from toybench.cli import main

    tiny = ("train.steps=2", "train.batch_size=32", "train.n_train=128", "train.n_test=100",
            "eval.factor_vae_train=20", "eval.factor_vae_eval=10",
            "eval.factor_vae_variance=100", "eval.beta_vae_train=20", "eval.beta_vae_eval=10",
            "eval.consistency_pairs=20", "eval.batch_size=8")
    args = ["run", "--model", "csvae", "--seed", str(MAX_SEED), "--no-plots", "--out",
            str(tmp_path / "out"), *[item for o in tiny for item in ("--set", o)]]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    [run_dir] = [p for p in (tmp_path / "out").iterdir() if p.name != ".cache"]
    assert f"-s{MAX_SEED}-" in run_dir.name and (run_dir / "ckpt" / "last.pt").is_file()
    (run_dir / "metrics.json").unlink()  # an unfinished run...
    ckpt = run_dir / "ckpt" / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    del state["optimizer"]  # ...whose checkpoint lost its optimizer state
    save_checkpoint(ckpt, state)
    result = CliRunner().invoke(main, [*args, "--resume"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no 'optimizer' entry" in lines[0] and str(ckpt) in lines[0]

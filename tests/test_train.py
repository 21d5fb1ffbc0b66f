"""Tests of the training loop: schedules, exact resume, NaN guard, atomic checkpoints, TensorBoard.

A tiny stand-in VAE (8×8 grey images, MLP, two latent layers) keeps each test well under a second.
"""

from __future__ import annotations

import math
import platform
import sys
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
    NONFINITE_EXIT_CODE,
    TrainConfig,
    TrainingDiverged,
    batch_indices,
    keep_freed_memory,
    kl_weight_at,
    load_checkpoint,
    save_checkpoint,
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


# --- determinism and exact resume ------------------------------------------------------------


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_is_bit_identical(tmp_path: Path, precision):
    cfg = _config(precision=precision)
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


def test_kill_during_checkpoint_write_keeps_previous(tmp_path: Path, monkeypatch):
    ckpt = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(ckpt, {"format": CHECKPOINT_FORMAT, "step": 5, "w": torch.ones(3)})

    def killed(_fd):
        raise KeyboardInterrupt  # the process dies after the bytes, before the rename

    monkeypatch.setattr(tio.os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ckpt, {"format": CHECKPOINT_FORMAT, "step": 10, "w": torch.zeros(3)})
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
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(tio.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
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
    old = tmp_path / "old.pt"
    save_checkpoint(old, {"format": 1, "step": 1})  # an earlier layout
    with pytest.raises(ToybenchError, match="has format 1; this toybench reads format 2"):
        load_checkpoint(old)


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

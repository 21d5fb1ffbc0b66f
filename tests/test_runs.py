"""Tests of ``toybench.runs.run`` and the baseline loader: the run folder, byte-identical
metrics for a seed, done/unfinished/resume/force semantics, and typed ``--set`` overrides.

Runs are tiny (a few steps, a few hundred images, small scoring sizes) so the file stays fast.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FP32

from toybench import runs
from toybench.baselines import baseline_names, build_config, load_baseline, parse_override
from toybench.errors import ToybenchError
from toybench.train import TrainConfig, train

TINY = (
    "train.steps=4", "train.batch_size=32", "train.n_train=256", "train.n_test=200",
    "train.checkpoint_every=2", "train.log_every=1", "train.hist_every=4",
    "eval.factor_vae_train=20", "eval.factor_vae_eval=10", "eval.factor_vae_variance=100",
    "eval.beta_vae_train=20", "eval.beta_vae_eval=10", "eval.consistency_pairs=20",
    "eval.batch_size=8",
    *FP32,
)
PLOTS = ("reconstructions", "traversals", "kl_per_unit", "activation_histograms",
         "latent_scatter", "dci_importance", "perturbation_matrix")


def _run(out: Path, model="vae", **kw):
    kw.setdefault("overrides", TINY)
    kw.setdefault("plots", False)
    kw.setdefault("echo", lambda _line: None)
    return runs.run(model, corr=kw.pop("corr", 0.2), seed=kw.pop("seed", 1), protocol="quick",
                    out=out, **kw)


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("runs"), plots=True)


# --- the run folder --------------------------------------------------------------------------


def test_run_folder_layout(done_run):
    d = done_run.run_dir
    assert d.name.startswith("vae-toy-causal-corr0.2-s1-") and len(d.name.split("-")[-1]) == 8
    for name in ("config.json", "env.json", "history.csv", "metrics.json", "data_card.json",
                 "ckpt/last.pt"):
        assert (d / name).is_file(), name
    assert list((d / "tb").glob("events.out.tfevents.*"))
    assert sorted(p.stem for p in (d / "plots").glob("*.png")) == sorted(PLOTS)
    config = json.loads((d / "config.json").read_text())
    assert config["data"]["corr"] == "0.2" and "sigma" in config["data"]["corr_meaning"]
    assert config["data"]["splits"]["test_decorrelated"]["corr"] == "inf"
    assert config["train"]["steps"] == 4 and config["protocol"] == "quick"
    env = json.loads((d / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["timings"]["train_seconds"] > 0
    # the CPU type, which decides the bf16 kernels (so the bits of a bf16 run)
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["cpu_model"] is None or (isinstance(env["cpu_model"], str) and env["cpu_model"])
    if Path("/proc/cpuinfo").is_file():
        flags = Path("/proc/cpuinfo").read_text().split()
        assert env["cpu_bf16_flags"] == [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    card = json.loads((d / "data_card.json").read_text())
    assert set(card) == {"train", "test", "test_decorrelated"}
    rows = list(csv.DictReader((d / "history.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    ckpt = torch.load(d / "ckpt" / "last.pt", weights_only=True)
    assert ckpt["step"] == 4


def test_final_scores_reach_tensorboard_as_scalars_and_hparams(done_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(done_run.run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    tags = events.Tags()["scalars"]
    assert "score/test/dci.disentanglement" in tags and "score/test_decorrelated/mig" in tags
    (final,) = events.Scalars("score/test/mig")
    assert final.step == 4 and final.value == pytest.approx(done_run.metrics["test.mig"])
    assert any("hparams" in tag for tag in events.summary_metadata)


def test_the_run_prints_one_line_per_phase_and_where_its_results_are(tmp_path):
    lines: list[str] = []
    _run(tmp_path, echo=lines.append, plots=True)
    text = "\n".join(lines)
    for phase in ("run ", "data ", "train  vae", "train  step 2/4", "train  done", "score ",
                  "plots ", "done "):
        assert phase in text, phase
    assert all(line.startswith("[") for line in lines if " s] " in line)
    assert "plots:" in text and "tensorboard --logdir" in text


def test_metrics_are_flat_per_split_with_pca_reference(done_run):
    m = json.loads((done_run.run_dir / "metrics.json").read_text())
    for split in ("test", "test_decorrelated"):
        for key in ("dci.disentanglement", "dci.completeness", "dci.informativeness_test", "mig",
                    "active_units", "recon.bce", "recon.mse", "recon.pca_bce", "recon.pca_mse",
                    "recon.bce_vs_pca", "elbo"):
            assert isinstance(m[f"{split}.{key}"], int | float), f"{split}.{key}"
        assert m[f"{split}.recon.bce_vs_pca"] == pytest.approx(
            m[f"{split}.recon.bce"] / m[f"{split}.recon.pca_bce"])
    assert m["train.steps"] == 4 and m["train.nan_skipped_steps"] == 0
    assert all(not isinstance(v, dict) for v in m.values())
    assert "seconds" not in json.dumps(m)  # timings live in env.json


def test_done_run_is_left_alone(done_run):
    before = (done_run.run_dir / "metrics.json").stat().st_mtime_ns
    lines = []
    result = runs.run("vae", corr=0.2, seed=1, protocol="quick", overrides=TINY,
                      out=done_run.run_dir.parent, echo=lines.append)
    assert result.status == "existing" and "already done" in lines[0]
    assert (done_run.run_dir / "metrics.json").stat().st_mtime_ns == before


def test_interrupted_run_needs_resume_and_resumes_exactly(done_run, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        train(*args, **{**kwargs, "stop_after": 2})
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "train", interrupted)
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, echo=lines.append)
    monkeypatch.undo()
    run_dir = tmp_path / done_run.run_dir.name
    assert not (run_dir / "metrics.json").exists()
    # Ctrl-C says how to resume, and status.json records it
    assert lines[-1].startswith("interrupted (Ctrl-C); resume with: toybench run --model vae")
    assert lines[-1].endswith("--resume")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and status["exit_code"] == 130
    with pytest.raises(ToybenchError, match="unfinished run.*--resume"):
        _run(tmp_path)
    resumed = _run(tmp_path, resume=True)
    assert resumed.status == "done"
    assert (run_dir / "metrics.json").read_bytes() == \
        (done_run.run_dir / "metrics.json").read_bytes()
    loss = [r["loss"] for r in csv.DictReader((run_dir / "history.csv").open())]
    assert loss == [r["loss"] for r in csv.DictReader((done_run.run_dir / "history.csv").open())]


def test_score_at_writes_a_curve_and_changes_no_result(done_run, tmp_path):
    """Scoring along training pauses at each step and resumes exactly: metrics.json is the
    same bytes as a run without it, and curve.json has one point per step plus the last."""
    result = _run(tmp_path, score_at=(3, 1))
    assert (result.run_dir / "metrics.json").read_bytes() == \
        (done_run.run_dir / "metrics.json").read_bytes()
    curve = json.loads((result.run_dir / "curve.json").read_text())
    assert [row["step"] for row in curve] == [1, 3, 4]
    assert sorted(p.name for p in (result.run_dir / "ckpt").glob("step*.pt")) == \
        ["step1.pt", "step3.pt"]
    final = json.loads((result.run_dir / "metrics.json").read_text())
    assert all(curve[-1][key] == final[key] for key in curve[-1] if key != "step")
    assert curve[0]["test.recon.bce"] != curve[-1]["test.recon.bce"]  # scored at other weights


def test_score_at_survives_an_interruption(tmp_path, monkeypatch):
    """Ctrl-C between two scored steps, then --resume: the curve keeps its first point and
    ends as an uninterrupted run's (same bytes)."""
    whole = _run(tmp_path / "whole", score_at=(1, 3))

    def interrupted(*args, **kwargs):
        if kwargs.get("stop_after") == 3:
            train(*args, **{**kwargs, "stop_after": 2})
            raise KeyboardInterrupt
        return train(*args, **kwargs)

    monkeypatch.setattr(runs, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "cut", score_at=(1, 3))
    monkeypatch.undo()
    cut = tmp_path / "cut" / whole.run_dir.name
    assert [row["step"] for row in json.loads((cut / "curve.json").read_text())] == [1]
    resumed = _run(tmp_path / "cut", score_at=(1, 3), resume=True)
    for name in ("curve.json", "metrics.json"):
        assert (resumed.run_dir / name).read_bytes() == (whole.run_dir / name).read_bytes()


def test_score_at_scores_a_step_whose_checkpoint_was_saved_before_an_interruption(
        tmp_path, monkeypatch):
    """Killed while scoring step 3 (its checkpoint already written): the resumed run scores
    step 3 from that checkpoint instead of skipping it."""
    whole = _run(tmp_path / "whole", score_at=(1, 3))

    def dies_scoring_step_3(*args, **kwargs):
        if kwargs.get("perturbation_images") == 0 and len(calls) == 1:
            raise KeyboardInterrupt  # the second scored point: step 3
        calls.append(1)
        return evaluate_model(*args, **kwargs)

    calls: list[int] = []
    evaluate_model = runs.evaluate_model
    monkeypatch.setattr(runs, "evaluate_model", dies_scoring_step_3)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "cut", score_at=(1, 3))
    monkeypatch.undo()
    resumed = _run(tmp_path / "cut", score_at=(1, 3), resume=True)
    for name in ("curve.json", "metrics.json"):
        assert (resumed.run_dir / name).read_bytes() == (whole.run_dir / name).read_bytes()


@pytest.mark.parametrize(("steps", "message"), [((4,), r"\[1, 3\]"), ((0,), r"\[1, 3\]"),
                                                 (("2",), "integers")])
def test_score_at_refuses_steps_outside_the_run(tmp_path, steps, message):
    with pytest.raises(ToybenchError, match=message):
        _run(tmp_path, score_at=steps)
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ToybenchError, match="cannot resume: no checkpoint"):
        _run(tmp_path, resume=True)


def test_force_reruns_and_same_seed_gives_byte_identical_metrics(done_run, tmp_path):
    copy = tmp_path / done_run.run_dir.name
    shutil.copytree(done_run.run_dir, copy)
    (copy / "stale.txt").write_text("old")
    again = _run(tmp_path, force=True)
    assert again.status == "done" and not (again.run_dir / "stale.txt").exists()
    assert again.run_dir == copy and (copy / "metrics.json").read_bytes() == \
        (done_run.run_dir / "metrics.json").read_bytes()
    with pytest.raises(ToybenchError, match="exclude"):
        _run(tmp_path, force=True, resume=True)


@pytest.mark.slow
def test_pca_is_fitted_not_trained(tmp_path):
    result = _run(tmp_path, model="pca", corr="inf")
    m = result.metrics
    assert m["train.steps"] == 0 and m["family"] == "pca"
    # the fitted buffers are checkpointed, so load_run rebuilds the PCA too
    loaded = runs.load_run(result.run_dir)
    assert bool(loaded.model.fitted)
    # PCA with as many components as codes *is* the PCA reference (float32 model vs float64
    # reference: equal to ~1e-4).
    assert m["test.recon.mse_vs_pca"] == pytest.approx(1.0, rel=1e-3)


def test_diverging_run_keeps_history_and_no_metrics(tmp_path):
    from toybench.train import TrainingDiverged

    with pytest.raises(TrainingDiverged):
        _run(tmp_path, overrides=(*TINY, "train.lr=1e30", "train.grad_clip=0",
                                  "train.nan_patience=2", "train.steps=8"))
    (run_dir,) = (p for p in tmp_path.iterdir() if p.name != ".cache")  # (the PCA reference)
    assert (run_dir / "history.csv").is_file() and not (run_dir / "metrics.json").exists()


def test_summary_table_lists_both_splits(done_run):
    table = runs.summary_table(done_run.metrics)
    header, *rows = table.splitlines()
    assert "test_decorrelated" in header
    assert any(r.startswith("dci.disentanglement") for r in rows)


# --- baseline loader -------------------------------------------------------------------------


def test_every_shipped_baseline_loads_with_both_protocols():
    assert {"vae", "beta-vae", "beta-tcvae", "csvae", "hvae", "pca"} <= set(baseline_names())
    for name in baseline_names():
        for protocol in ("quick", "standard"):
            b = load_baseline(name, protocol=protocol)
            assert b.protocol == protocol and isinstance(b.train, TrainConfig)


def test_protocol_and_set_overrides_apply_in_order():
    b = load_baseline("beta-vae", protocol="quick", overrides=["train.steps=7", "model.beta=8"])
    base = load_baseline("beta-vae")
    quick = load_baseline("beta-vae", protocol="quick")
    assert quick.train.steps != base.train.steps
    assert b.train.steps == 7 and b.model.beta == 8.0 and isinstance(b.model.beta, float)
    assert b.train.n_train == quick.train.n_train


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "unknown key train.lrr; allowed train keys: steps, batch_size, lr"),
        ("model.nope=1", "unknown key model.nope; allowed model keys: latent_dim"),
        ("optim.lr=1", "unknown override key 'optim.lr'"),
        ("train.lr=fast", "train.lr expects float, got 'fast'"),
        ("train.steps=2.5", "train.steps expects int"),
        ("train.kl_schedule=cosine", "kl_schedule='cosine'; valid: constant, linear, cyclic"),
        ("train.steps", "--set expects KEY=VALUE"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ToybenchError) as info:
        load_baseline("vae", overrides=[override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unknown_baseline_and_protocol():
    with pytest.raises(ToybenchError, match="unknown model 'vea'; valid: .*beta-vae.*csvae"):
        load_baseline("vea")
    with pytest.raises(ToybenchError, match="no protocol 'huge'; valid: quick, standard"):
        load_baseline("vae", protocol="huge")


def test_baseline_file_with_unknown_key(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('family = "vae"\nmodel_typo = 1\n')
    with pytest.raises(ToybenchError, match="unknown key 'model_typo'; allowed: .*name"):
        load_baseline(path)
    path.write_text('family = "vae"\n[model]\nbeta = 2\n[train]\nsteps = 5\n')
    b = load_baseline(path)
    assert b.model.beta == 2.0 and b.train.steps == 5 and b.name == "mine"


def test_parse_override_values():
    assert parse_override("train.lr=3e-4") == ("train.lr", 3e-4)
    assert parse_override("model.beta=8") == ("model.beta", 8)
    assert parse_override("train.kl_schedule=cyclic") == ("train.kl_schedule", "cyclic")
    assert parse_override('model.arch="conv32"') == ("model.arch", "conv32")
    assert parse_override("model.latent_dims=[4, 4]") == ("model.latent_dims", [4, 4])
    assert build_config(TrainConfig, {"lr": 1}, "train").lr == 1.0


# --- a shorter run taken from a longer one (execute(prefix_of=...)) ---------------------------

CONSTANT = tuple(o for o in TINY if not o.startswith("train.steps=")) + (
    "train.lr_schedule=constant", "train.kl_delay_steps=1", "train.kl_warmup_steps=2")


def test_a_run_taken_from_a_longer_runs_checkpoint_is_byte_identical(tmp_path):
    """The first 4 steps of an 8-step constant-rate run, scored from its ckpt/step4.pt, give
    the same metrics.json bytes as a 4-step run trained from scratch; status.json names the
    source; a second call finds the run done."""
    short = _run(tmp_path / "short", overrides=(*CONSTANT, "train.steps=4"))
    long = _run(tmp_path / "long", overrides=(*CONSTANT, "train.steps=8"), score_at=(4,))
    spec = runs.RunSpec("vae", "toy-causal", 0.2, 1, "quick", (*CONSTANT, "train.steps=4"))
    lines: list[str] = []
    taken = runs.execute(spec, tmp_path / "taken", plots=False, echo=lines.append,
                         prefix_of=long.run_dir)
    assert taken.run_dir.name == short.run_dir.name
    assert (taken.run_dir / "metrics.json").read_bytes() == \
        (short.run_dir / "metrics.json").read_bytes()
    status = json.loads((taken.run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["derived_from"].endswith("ckpt/step4.pt")
    assert any("taken from the first 4 steps" in line for line in lines)
    again = runs.execute(spec, tmp_path / "taken", plots=False, echo=lambda _l: None,
                         prefix_of=long.run_dir)
    assert again.status == "existing"


def test_a_longer_run_with_another_schedule_or_setting_is_refused(tmp_path):
    """A cosine rate over the run changes its first steps, another β is another run, and a
    longer run without the step's checkpoint has nothing to give: each is one line, before
    anything is written."""
    cosine = (*(o for o in CONSTANT if o != "train.lr_schedule=constant"),
              "train.lr_schedule=cosine")
    long_cos = _run(tmp_path / "cos", overrides=(*cosine, "train.steps=8"), score_at=(4,))
    other = _run(tmp_path / "beta", overrides=(*CONSTANT, "train.steps=8", "model.beta=2"),
                 score_at=(4,))
    unscored = _run(tmp_path / "plain", overrides=(*CONSTANT, "train.steps=8"))
    cases = [(cosine, long_cos, "schedule differs"), (CONSTANT, other, "differs in 'model'"),
             (CONSTANT, unscored, "no checkpoint at step 4")]
    for base, source, message in cases:
        spec = runs.RunSpec("vae", "toy-causal", 0.2, 1, "quick", (*base, "train.steps=4"))
        with pytest.raises(ToybenchError, match=message):
            runs.execute(spec, tmp_path / "taken", plots=False, echo=lambda _l: None,
                         prefix_of=source.run_dir)
    assert not (tmp_path / "taken").exists()


@pytest.mark.parametrize(("capability", "precision", "warned"), [
    ("AVX2", "bf16", True), (None, "bf16", False), ("AVX2", "fp32", False)])
def test_a_bf16_run_on_a_cpu_without_avx512_says_it_is_slow_there(tmp_path, monkeypatch,
                                                                  capability, precision, warned):
    monkeypatch.setattr(runs, "slow_cpu_bf16", lambda: capability)
    lines: list[str] = []
    _run(tmp_path, echo=lines.append, overrides=(*TINY, f"train.precision={precision}"))
    warns = [line for line in lines if " warn " in line]
    assert len(warns) == int(warned)
    if warned:
        assert "AVX2" in warns[0] and "--fp32" in warns[0]


def test_slow_cpu_bf16_names_a_capability_only_below_avx512():
    from toybench.hardware import slow_cpu_bf16

    capability = torch.backends.cpu.get_cpu_capability()
    assert slow_cpu_bf16() == (None if capability.startswith("AVX512") else capability)


def test_git_sha_is_read_once_per_process(monkeypatch):
    """A sweep process records the commit of the code it imported: the SHA is read once (at
    the first run's start), not when each run ends."""
    import subprocess

    from toybench import runs

    calls = []
    real = subprocess.run

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    runs._git_sha.cache_clear()
    monkeypatch.setattr(runs.subprocess, "run", counting)
    first = runs._git_sha()
    assert runs._git_sha() == first
    assert len(calls) <= 2  # rev-parse and status, once (none outside a checkout)
    runs._git_sha.cache_clear()

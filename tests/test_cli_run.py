"""``toybench run`` through click's CliRunner: one clear line and a non-zero exit for bad input,
exit code 3 for a diverged run, and a summary table for a good one."""

from __future__ import annotations

import math

from click.testing import CliRunner
from conftest import FP32

from toybench.cli import main
from toybench.rundir import RunDir, RunSpec

TINY = (
    "train.steps=3", "train.batch_size=32", "train.n_train=256", "train.n_test=200",
    "eval.factor_vae_train=20", "eval.factor_vae_eval=10", "eval.factor_vae_variance=100",
    "eval.beta_vae_train=20", "eval.beta_vae_eval=10", "eval.consistency_pairs=20",
    "eval.batch_size=8",
    *FP32,
)


def _invoke(*args: str):
    return CliRunner().invoke(main, ["run", *args])


def _sets(overrides=TINY) -> list[str]:
    return [item for o in overrides for item in ("--set", o)]


def _one_line_error(result, *fragments: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)  # click's exit, not a traceback
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_model_lists_valid_ones(tmp_path):
    result = _invoke("--model", "resnet", "--out", str(tmp_path))
    _one_line_error(result, "unknown model 'resnet'", "vae", "csvae", "hvae", "pca")


def test_unknown_set_key_names_key_and_allowed_ones(tmp_path):
    result = _invoke("--model", "vae", "--set", "train.learning_rate=1e-3", "--out", str(tmp_path))
    _one_line_error(result, "train.learning_rate", "allowed train keys", "lr", "batch_size")


def test_bad_set_value(tmp_path):
    result = _invoke("--model", "vae", "--set", "train.batch_size=big", "--out", str(tmp_path))
    _one_line_error(result, "train.batch_size expects int, got 'big'")
    result = _invoke("--model", "vae", "--set", "train.precision=fp8", "--out", str(tmp_path))
    _one_line_error(result, "train.precision='fp8'", "bf16, fp32")


def test_bad_score_at(tmp_path):
    _one_line_error(_invoke("--model", "vae", "--score-at", "10,x", "--out", str(tmp_path)),
                    "--score-at takes comma-separated step counts")
    _one_line_error(_invoke("--model", "pca", "--score-at", "10", "--out", str(tmp_path)),
                    "pca is fitted")
    assert not any(tmp_path.iterdir())


def test_bad_corr_data_and_protocol(tmp_path):
    _one_line_error(_invoke("--model", "vae", "--corr", "-1", "--out", str(tmp_path)), "corr")
    _one_line_error(_invoke("--model", "vae", "--data", "nope", "--out", str(tmp_path)), "nope")
    _one_line_error(_invoke("--model", "vae", "--protocol", "huge", "--out", str(tmp_path)),
                    "no protocol 'huge'")


def _run_dir(tmp_path, overrides=TINY):
    return RunDir.of(RunSpec("vae", "toy-causal", math.inf, 0, "quick", overrides), tmp_path).path


def test_unreadable_checkpoint_is_one_line_error(tmp_path):
    run_dir = _run_dir(tmp_path)
    (run_dir / "ckpt").mkdir(parents=True)
    (run_dir / "ckpt" / "last.pt").write_bytes(b"\x00garbage")
    args = ("--model", "vae", "--protocol", "quick", *_sets(), "--out", str(tmp_path))
    _one_line_error(_invoke(*args, "--resume"), "unreadable", "last.pt")
    # Without --resume the unfinished run is refused, never silently restarted.
    _one_line_error(_invoke(*args), "unfinished run", "--resume", "--force")


def test_resume_without_checkpoint(tmp_path):
    result = _invoke("--model", "vae", "--protocol", "quick", *_sets(), "--out", str(tmp_path),
                     "--resume")
    _one_line_error(result, "cannot resume: no checkpoint")


def test_diverged_training_exits_3(tmp_path):
    overrides = (*TINY, "train.lr=1e30", "train.grad_clip=0", "train.nan_patience=2",
                 "train.steps=10")
    result = _invoke("--model", "vae", "--protocol", "quick", *_sets(overrides),
                     "--out", str(tmp_path))
    assert result.exit_code == 3, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "consecutive non-finite" in lines[0]
    assert "Traceback" not in result.output


def test_good_run_prints_summary_then_reports_done(tmp_path):
    args = ("--model", "vae", "--protocol", "quick", "--corr", "0.2", *_sets(), "--out",
            str(tmp_path), "--no-plots")
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    assert "test_decorrelated" in result.output and "dci.disentanglement" in result.output
    again = _invoke(*args)
    assert again.exit_code == 0 and "run already done" in again.output

"""Hand-written run folders for the leaderboard and gate tests: a real resolved config.json (from
`RunSpec`, no training) and a metrics.json with its identity keys and the scores you give."""

from __future__ import annotations

import json
from pathlib import Path

from toybench.rundir import RunSpec
from toybench.runs import run_identity


def fake_run(out: Path, model: str, scores: dict, *, corr="0.2", seed: int = 0,
             generator: str = "toy-causal", protocol: str = "quick", overrides=(),
             status: str | None = "done", supervision: str | None = None) -> Path:
    """Write ``<out>/<spec.name>/`` with config.json, metrics.json (identity + ``scores``) and
    status.json; returns the folder."""
    spec = RunSpec(model, generator, corr, seed, protocol, tuple(overrides))
    folder = Path(out) / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(spec.config, indent=2, sort_keys=True))
    metrics = {**run_identity(spec.config, supervision_text=supervision), **scores}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    if status is not None:
        (folder / "status.json").write_text(json.dumps({"state": status, "exit_code": 0}))
    return folder


def fake_external_run(out: Path, name: str, scores: dict, *, corr="0.2", seed: int = 0,
                      generator: str = "toy-causal", protocol: str = "quick",
                      supervision: str = "none") -> Path:
    """An external encoder's folder as `toybench.score_encoder` writes it (no scoring)."""
    from toybench.rundir import external_config, run_name

    config = external_config(name, generator, corr, seed, protocol)
    folder = Path(out) / run_name(config)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    metrics = {**run_identity(config, supervision_text=supervision), **scores}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (folder / "status.json").write_text(json.dumps({"state": "done", "exit_code": 0}))
    return folder

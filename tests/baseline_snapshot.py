"""Every resolved value of every shipped baseline, as JSON: the reference for ``test_baselines.py``.

Uses only the loader API that predates ``baselines/protocols.toml`` (``baseline_names``,
``load_baseline``), so the same file dumps the values of an older checkout::

    PYTHONPATH=/path/to/old/checkout python tests/baseline_snapshot.py > snapshot.json

``baseline_snapshot.json`` beside this file was first written from commit 88efdab (the loader
before protocols were shared), which showed that sharing them changed no value; it was
regenerated for issue 9's protocols (KL delay, n_train 50,000, standard 2,400 steps, long, the
normalized beta of beta-vae, eval precision) and for the quick protocol's fp32. Regenerate it
whenever a resolved value changes on purpose.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

PROTOCOLS = (None, "quick", "standard")
# Override sets that exercise the layering: --set after a protocol, and the data size that
# beta-TCVAE's dataset_size follows.
OVERRIDES = ((), ("train.n_train=3000",), ("train.steps=7", "model.latent_dim=4"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def resolved_values() -> dict[str, Any]:
    """``{"<name>|<protocol>|<overrides>": {attribute: value}}`` for every shipped baseline."""
    from toybench.baselines import baseline_names, load_baseline

    out: dict[str, Any] = {}
    for name in baseline_names():
        for protocol in PROTOCOLS:
            for overrides in OVERRIDES:
                if "model.latent_dim=4" in overrides and name in ("csvae", "hvae", "pca"):
                    continue  # no latent_dim field in these families
                b = load_baseline(name, protocol=protocol, overrides=overrides)
                out[f"{name}|{protocol}|{','.join(overrides)}"] = _jsonable({
                    "name": b.name, "description": b.description, "family": b.family,
                    "model": dataclasses.asdict(b.model), "train": dataclasses.asdict(b.train),
                    "eval": dataclasses.asdict(b.eval), "protocol": b.protocol,
                    "overrides": [list(o) for o in b.overrides],
                    "file": b.path.replace("\\", "/").rsplit("/", 2)[-2:],
                })
    return out


if __name__ == "__main__":
    json.dump(resolved_values(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")

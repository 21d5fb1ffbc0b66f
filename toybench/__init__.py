"""toybench: representation learning benchmarks on synthetic correlated causal data.

Generators with known causal structure (``toybench.scm``, ``toybench.render``), baselines
(``toybench.models``), scores (``toybench.metrics``) and the ``toybench`` command line
(``toybench.cli``). See README.md and docs/architecture.md.
"""

__version__ = "0.1.0"

from toybench.metrics import score as score  # noqa: E402  (numpy only: no torch, no scikit-learn)

# Runs import torch: load them on first use, so `import toybench` stays light.
_LAZY = {"RunSpec": "toybench.rundir", "RunDir": "toybench.rundir", "execute": "toybench.runs",
         "run": "toybench.runs", "load_run": "toybench.runs", "score_encoder": "toybench.runs"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toybench' has no attribute {name!r}")

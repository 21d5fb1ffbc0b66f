"""toybench: representation learning benchmarks on synthetic correlated causal data.

Generators with known causal structure (``toybench.scm``, ``toybench.render``), baselines
(``toybench.models``), scores (``toybench.metrics``) and the ``toybench`` command line
(``toybench.cli``). See README.md and docs/architecture.md.
"""

__version__ = "0.1.0"

from toybench.metrics import score as score  # noqa: E402  (numpy only: no torch, no scikit-learn)

"""What every key of ``metrics.json`` means: its direction, its bounds and one line of meaning.

One entry per *base key*. Scores of an evaluation split are stored as ``<split>.<base key>``
(``test.dci.disentanglement``, ``test_decorrelated.mig``); run-level keys (``train.steps``,
``n_codes``, ``warnings``) have no split prefix; `SPLIT_INFO` says what each split is (runs with
``--test-corr`` add ``test_corr<σ>`` splits: ``test_corr0_4.mig``). Per-concept keys are
patterns: ``<c>`` stands for one concept name (``consistency.<c>`` → ``consistency.hue``),
``<a>-<b>`` for one DAG edge, parent first (``entanglement.<a>-<b>`` → ``entanglement.size-hue``).

Directions follow scikit-learn's scorers, which know their sign
(https://scikit-learn.org/stable/modules/model_evaluation.html): ``"higher"`` or ``"lower"`` is
better, or ``"info"`` (a count, a reference value or a setting: neither direction is better).
Bounds are closed intervals ``(lo, hi)``, ``None`` for unbounded. The end-of-run summary,
``toybench list``, the leaderboard and the gate read all three from here. The run's identity
keys (``model``, ``generator``, ``seed``, ...) are registered too, as informational.

>>> metric_info("test.dci.disentanglement").direction
'higher'
>>> metric_info("test_decorrelated.consistency.hue").key
'consistency.<c>'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

DIRECTIONS = ("higher", "lower", "info")
KINDS = ("number", "text", "texts")
ARROWS = {"higher": "↑", "lower": "↓", "info": "·"}

_UNIT = (0.0, 1.0)
_NON_NEGATIVE = (0.0, None)
_ANY = (None, None)


@dataclass(frozen=True)
class MetricInfo:
    """One registered key of ``metrics.json``.

    Attributes
    ----------
    key : str
        The base key or pattern (``mig``, ``recon.bce``, ``consistency.<c>``, ``train.steps``).
    direction : {"higher", "lower", "info"}
        Which values are better; ``"info"`` for counts, references and settings.
    bounds : (float or None, float or None)
        Closed range of valid values; ``None`` is unbounded on that side.
    meaning : str
        One line.
    per_split : bool
        Stored once per evaluation split as ``<split>.<key>`` (scores), or once per run.
    kind : {"number", "text", "texts"}
        A number (JSON writes non-finite ones as ``"inf"`` / ``"-inf"`` / ``null``), a string
        (the run's identity: ``model``, ``generator``, ...; ``null`` where unknown) or a list
        of strings (``warnings``).
    """

    key: str
    direction: str
    bounds: tuple[float | None, float | None]
    meaning: str
    per_split: bool = True
    kind: str = "number"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"{self.key}: direction {self.direction!r} not in {DIRECTIONS}")
        if self.kind not in KINDS:
            raise ValueError(f"{self.key}: kind {self.kind!r} not in {KINDS}")
        lo, hi = self.bounds
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"{self.key}: bounds {self.bounds} are empty")

    @property
    def arrow(self) -> str:
        """``↑`` (higher is better), ``↓`` (lower is better) or ``·`` (informational)."""
        return ARROWS[self.direction]

    @property
    def display_key(self) -> str:
        """The key as it appears in ``metrics.json``: ``<split>.mig``, ``train.steps``."""
        return f"<split>.{self.key}" if self.per_split else self.key

    @property
    def numeric(self) -> bool:
        """Whether the key holds a number (scores, counts) rather than text."""
        return self.kind == "number"

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is valid for this key: a number within the bounds (``"inf"`` /
        ``"-inf"`` as JSON spells them; NaN is not), a string (or None), a list of strings."""
        if self.kind == "text":
            return value is None or isinstance(value, str)
        if self.kind == "texts":
            return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        if value in ("inf", "-inf"):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if math.isnan(value):
            return False
        lo, hi = self.bounds
        return (lo is None or value >= lo) and (hi is None or value <= hi)


def _entries() -> tuple[MetricInfo, ...]:
    m = MetricInfo
    return (
        # toybench.metrics.score (disentanglement_lib's families)
        m("mig", "higher", _UNIT, "Mutual Information Gap (Chen et al. 2018): mean over "
          "concepts of the gap between the two most informative codes, / H(c)"),
        m("mig.active", "higher", _UNIT, "MIG over the active units only (Var > 0.01): dead "
          "units cannot be the runner-up; 0 when no unit is active"),
        m("sap", "higher", _UNIT, "Separated Attribute Predictability (Kumar et al. 2018): "
          "mean gap between the two codes that best predict each concept"),
        m("modularity", "higher", _UNIT, "modularity (Ridgeway & Zemel 2018): how much each "
          "code's mutual information concentrates on one concept"),
        m("explicitness_train", "higher", _UNIT, "explicitness (Ridgeway & Zemel 2018): "
          "one-vs-rest ROC AUC of a logistic regression from all codes, on its train rows"),
        m("explicitness_test", "higher", _UNIT, "explicitness on the held-out rows "
          "(0.5 = chance)"),
        m("dci.disentanglement", "higher", _UNIT, "DCI disentanglement (Eastwood & Williams "
          "2018): each code's importance concentrated on one concept"),
        m("dci.completeness", "higher", _UNIT, "DCI completeness: each concept captured by one "
          "code"),
        m("dci.informativeness_train", "higher", _UNIT, "DCI informativeness: mean accuracy of "
          "the boosted trees predicting each concept from the codes, train rows"),
        m("dci.informativeness_test", "higher", _UNIT, "DCI informativeness on the held-out "
          "rows"),
        m("active_units", "info", _NON_NEGATIVE, "number of active units (Burda et al. 2016): "
          "codes whose posterior mean varies with Var > 0.01 across images"),
        m("active_units.fraction", "info", _UNIT, "active units / number of codes"),
        # graph-aware scores (toybench.metrics.graph via toybench.evaluate)
        m("assignment", "higher", _UNIT, "mean normalized MI I(z; c) / H(c) of the latents "
          "matched one-to-one to the concepts (Hungarian assignment)"),
        m("entanglement", "lower", _UNIT, "mean calibrated pairwise entanglement over the "
          "DAG's edges (0 = separable, 1 = shared or rotated codes; active units only)"),
        m("entanglement.<a>-<b>", "lower", _UNIT, "share of what the active units know about "
          "the less-encoded of a, b that sits in units which also know the other"),
        m("entanglement_threshold", "lower", _UNIT, "mean Träuble et al. 2021 threshold "
          "entanglement over the DAG's edges (for comparison with the paper)"),
        m("entanglement_threshold.<a>-<b>", "lower", _UNIT, "normalized-MI threshold at which "
          "concepts a and b first share a component of the factor-latent graph"),
        m("leakage", "lower", _UNIT, "mean DAG leakage over the concepts with parents"),
        m("leakage.<c>", "lower", _UNIT, "share of c's latent's uncertainty given c that c's "
          "parents explain: I(z_c; pa(c) | c) / H(z_c | c)"),
        # interventional scores (toybench.evaluate, on config.intervention_splits)
        m("factor_vae.train_accuracy", "higher", _UNIT, "FactorVAE score (Kim & Mnih 2018) "
          "from do(c = v) batches: majority-vote accuracy on its training votes"),
        m("factor_vae.eval_accuracy", "higher", _UNIT, "FactorVAE score on fresh points"),
        m("factor_vae.n_active", "info", _NON_NEGATIVE, "codes the FactorVAE score kept "
          "(standard deviation >= prune_threshold)"),
        m("beta_vae.train_accuracy", "higher", _UNIT, "BetaVAE score (Higgins et al. 2017) "
          "from do(c = v) pairs: logistic-regression accuracy on its training points"),
        m("beta_vae.eval_accuracy", "higher", _UNIT, "BetaVAE score on fresh points"),
        m("consistency", "higher", _UNIT, "mean intervention consistency over concepts"),
        m("consistency.<c>", "higher", _UNIT, "share of the squared code change under a "
          "do(c = v) counterfactual that lands in c's assigned latent"),
        m("consistency_descendants", "higher", _UNIT, "mean over concepts of "
          "consistency_descendants.<c>"),
        m("consistency_descendants.<c>", "higher", _UNIT, "the same share, counting the "
          "latents of c and of its DAG descendants"),
        # reconstruction (toybench.metrics.recon via toybench.evaluate)
        m("recon.bce", "lower", _NON_NEGATIVE, "Bernoulli cross-entropy of the posterior-mean "
          "reconstruction, nats per image (summed over pixels)"),
        m("recon.mse", "lower", _NON_NEGATIVE, "squared error of the posterior-mean "
          "reconstruction per image, summed over pixels on the [0, 1] scale"),
        m("recon.pca_bce", "info", _NON_NEGATIVE, "recon.bce of a PCA with as many components "
          "as the model has codes (the reference)"),
        m("recon.pca_mse", "info", _NON_NEGATIVE, "recon.mse of that PCA"),
        m("recon.bce_vs_pca", "lower", _NON_NEGATIVE, "recon.bce / recon.pca_bce (< 1: better "
          "than PCA)"),
        m("recon.mse_vs_pca", "lower", _NON_NEGATIVE, "recon.mse / recon.pca_mse (< 1: better "
          "than PCA)"),
        m("elbo", "higher", _ANY, "evidence lower bound per image, nats (KL weight 1, one "
          "seeded posterior sample per image)"),
        # collapse flags (toybench.evaluate.collapse_warnings; 1 = the warning fired)
        m("collapse.no_active_units", "lower", _UNIT, "1 if no unit is active (posterior "
          "collapse), else 0"),
        m("collapse.few_active_units", "lower", _UNIT, "1 if some but fewer units are active "
          "than min(concepts, codes), else 0"),
        m("collapse.recon_no_better_than_pca", "lower", _UNIT, "1 if recon.bce_vs_pca > "
          "1 + 1e-4 (reconstructions no better than PCA), else 0"),
        # run-level keys
        m("n_codes", "info", (1.0, None), "number of code columns L of the encoder",
          per_split=False),
        m("train.steps", "info", _NON_NEGATIVE, "optimizer steps run (0 for fitted models "
          "such as PCA)", per_split=False),
        m("train.nan_skipped_steps", "lower", _NON_NEGATIVE, "steps skipped for a non-finite "
          "loss or gradient", per_split=False),
        m("train.final_loss", "info", _ANY, "training objective at the last logged step (its "
          "scale depends on the model's weights)", per_split=False),
        m("warnings", "info", _ANY, "warnings a researcher needs (posterior collapse, ...), "
          "a list of strings", per_split=False, kind="texts"),
        # the run's identity, beside its scores (written by toybench.runs)
        m("schema_version", "info", (1.0, None), "version of the meaning of metrics.json's "
          "identity keys", per_split=False),
        m("model", "info", _ANY, "baseline name, or external:<name> for your own encoder",
          per_split=False, kind="text"),
        m("family", "info", _ANY, "model family (vae, csvae, hvae, pca, external)",
          per_split=False, kind="text"),
        m("supervision", "info", _ANY, "what the model was trained with: none, or weak "
          "(labels N%)", per_split=False, kind="text"),
        m("generator", "info", _ANY, "the data set's generator", per_split=False, kind="text"),
        m("spec_hash", "info", _ANY, "SHA-256 of the generator's canonical spec",
          per_split=False, kind="text"),
        m("corr", "info", (0.0, None), "training correlation width sigma (inf = independent)",
          per_split=False),
        m("seed", "info", _NON_NEGATIVE, "the run seed", per_split=False),
        m("protocol", "info", _ANY, "protocol of the run (quick, standard, ...)",
          per_split=False, kind="text"),
        m("config_hash", "info", _ANY, "first 8 hex digits of the run config's SHA-256",
          per_split=False, kind="text"),
        m("toybench_version", "info", _ANY, "toybench version that wrote the file",
          per_split=False, kind="text"),
        m("git_sha", "info", _ANY, "git commit of the toybench checkout (null outside one)",
          per_split=False, kind="text"),
    )


#: Every key of ``metrics.json``, by base key or pattern.
METRIC_INFO: dict[str, MetricInfo] = {info.key: info for info in _entries()}

#: The evaluation splits that prefix per-split keys (``<split>.<key>``), by name or pattern.
SPLIT_INFO: dict[str, str] = {
    "test": "drawn at the run's training σ (the correlated test split)",
    "test_decorrelated": "drawn at σ = inf, every concept independent (the decorrelation test "
                         "of Träuble et al. 2021)",
    "test_corr<σ>": "an extra test split drawn at σ (--test-corr, eval.test_corr), the decimal "
                    "point written _ (test_corr0_4: σ = 0.4; test_corrinf: σ = inf, a draw of "
                    "its own): Roth et al. 2023's train σ × test σ grid",
}
_TEST_CORR_SPLIT = re.compile(r"test_corr(inf|[0-9][0-9_e+-]*)")


def split_info(split: str) -> str:
    """The meaning of an evaluation split's name (`SPLIT_INFO`).

    >>> split_info("test_corr0_4").startswith("an extra test split")
    True

    Raises
    ------
    KeyError
        For a name that is not a registered split (the message lists them).
    """
    if split in SPLIT_INFO:
        return SPLIT_INFO[split]
    if isinstance(split, str) and _TEST_CORR_SPLIT.fullmatch(split):
        return SPLIT_INFO["test_corr<σ>"]
    raise KeyError(f"unknown split {split!r}; valid: {', '.join(SPLIT_INFO)}")

_PLACEHOLDERS = {"<a>-<b>": r"[^.]+-[^.]+", "<c>": r"[^.]+"}


def _pattern(key: str) -> re.Pattern[str]:
    text = re.escape(key)
    for placeholder, regex in _PLACEHOLDERS.items():
        text = text.replace(re.escape(placeholder), regex)
    return re.compile(text)


_PATTERNS = [(info, _pattern(info.key)) for info in METRIC_INFO.values() if "<" in info.key]


def _lookup(base: str, *, per_split_only: bool) -> MetricInfo | None:
    info = METRIC_INFO.get(base)
    if info is not None and (info.per_split or not per_split_only):
        return info
    for info, pattern in _PATTERNS:
        if pattern.fullmatch(base):
            return info
    return None


def metric_info(key: str) -> MetricInfo:
    """The entry for a key of ``metrics.json`` (or of ``toybench score``, without a split).

    ``key`` is a run-level key (``train.steps``), a base key (``mig``) or ``<split>.<base key>``
    (``test.mig``, ``test_decorrelated.entanglement.size-hue``); the split is any name, so a
    split named like a metric family (``consistency``) would be read as that family.

    Raises
    ------
    KeyError
        For an unregistered key; the message lists the valid keys.
    """
    if not isinstance(key, str):
        raise KeyError(f"metric keys are strings, got {key!r}")
    info = _lookup(key, per_split_only=False)
    if info is None and "." in key:
        info = _lookup(key.split(".", 1)[1], per_split_only=True)
    if info is None:
        valid = ", ".join(info.display_key for info in METRIC_INFO.values())
        raise KeyError(f"unknown metric key {key!r}; valid: {valid}")
    return info


def split_of(key: str) -> str | None:
    """The split prefix of a registered per-split key (``"test"`` of ``test.mig``), else None."""
    info = metric_info(key)
    if not info.per_split or "." not in key or _lookup(key, per_split_only=False) is info:
        return None
    return key.split(".", 1)[0]

"""Where encoders, generators and metrics meet: scores that need fresh images.

- **BetaVAE score** (Higgins et al. 2017, "β-VAE: Learning Basic Visual Concepts with a
  Constrained Variational Framework", https://openreview.net/forum?id=Sy2fzU9gl) and
  **FactorVAE score** (Kim & Mnih 2018, "Disentangling by Factorising",
  https://arxiv.org/abs/1802.05983), following disentanglement_lib's ``beta_vae.py`` and
  ``factor_vae.py`` (batch 64, 10,000 training and 5,000 evaluation points, 10,000 points for
  the global variances, dimensions pruned below a standard deviation of 0.05). Their "fix one
  factor, vary the rest" batches come from the generator's *interventions*
  ``do(factor = level)``, so they stay exact when the factors are correlated (disentanglement_lib
  overwrites one column of an independent sample, which under correlation produces factor
  combinations the data never shows).
- **Intervention consistency**: do(c = v) counterfactual pairs (same exogenous noise) are
  encoded and the share of the code change landing in c's Hungarian-assigned latent is reported.
- **Responsibilities** and the **perturbation matrix** (`toybench.metrics.diagnostics`).
- `evaluate_encoder`: every score of `toybench.metrics` per data split, plus the above, as one
  flat ``dict[str, float]`` with keys ``"<split>.<metric>"``.
- **One evaluation pass**: `evaluate_model` (a toybench model) and `evaluate_functions` (any
  encoder, optionally its decoder) encode each split once and compute every score from those
  codes — the above, reconstruction errors against a PCA reference (`pca_reference_for`,
  cached across runs), the ELBO, the collapse warnings (`collapse_warnings`) — and hand back an
  `Evaluation` with the codes, KL per unit, DCI importance and perturbation matrix that the
  figures reuse. `summary_table` prints the headline scores with the registry's directions
  (`toybench.metrics.METRIC_INFO`).

An ``encode`` callable maps uint8 images ``(n, C, H, W)`` to codes ``(n, L)`` (a numpy array or
anything ``np.asarray`` accepts); no torch is imported here (`toybench.encoders` adapts a torch
model, imported only by `evaluate_model`). It must be deterministic (posterior means, not
samples): the generator-based scores render and encode each distinct factor row once per
evaluation and reuse its code wherever the row recurs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import lzma
import math
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

from toybench import metrics, seeds
from toybench.errors import ToybenchError, check_allocation

Encode = Callable[[np.ndarray], Any]
Decode = Callable[[np.ndarray], Any]


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Settings of `evaluate_encoder`; the defaults are disentanglement_lib's metric configs."""

    dci_backend: str = "fast"
    batch_size: int = 64  # images per FactorVAE / BetaVAE training point
    factor_vae_train: int = 10000
    factor_vae_eval: int = 5000
    factor_vae_variance: int = 10000  # images for the global per-dimension variances
    prune_threshold: float = 0.05  # std below which a dimension counts as collapsed
    beta_vae_train: int = 10000
    beta_vae_eval: int = 5000
    consistency_pairs: int = 1000  # counterfactual pairs per concept
    encode_batch: int = 1024  # images per call of ``encode``
    precision: str = "bf16"  # of a toybench model's passes (toybench.encoders): bf16 or fp32
    # splits on which the generator-based scores run (with that split's σ)
    intervention_splits: tuple[str, ...] = ("test", "test_decorrelated")
    # σ of extra test splits, one ``test_corr<σ>`` split each (Roth et al. 2023's train σ ×
    # test σ grid, https://arxiv.org/abs/2209.15456); kept sorted, inf last
    test_corr: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.dci_backend not in metrics.DCI_BACKENDS:
            raise ToybenchError(
                f"dci_backend {self.dci_backend!r} is not one of {list(metrics.DCI_BACKENDS)}"
            )
        if self.precision not in ("bf16", "fp32"):
            raise ToybenchError(f"eval.precision={self.precision!r}; valid: bf16, fp32")
        object.__setattr__(self, "test_corr", check_test_corr(self.test_corr))
        for field in dataclasses.fields(self):
            if field.type != "int":
                continue
            value = getattr(self, field.name)
            if field.type == "int" and value < 1:
                raise ToybenchError(f"{field.name} must be a positive integer, got {value}")


def check_test_corr(values: Any) -> tuple[float, ...]:
    """``eval.test_corr`` as sorted σ floats (inf last), each a valid σ, none twice.

    Raises
    ------
    ToybenchError
        Not a list, a value that is not a σ (`toybench.scm.parse_corr`), or a σ given twice.
    """
    from toybench.scm import corr_label, parse_corr

    if isinstance(values, str) or not isinstance(values, tuple | list):
        raise ToybenchError(f"eval.test_corr must be a list of σ values, got {values!r}")
    sigmas = []
    for value in values:
        try:
            sigmas.append(parse_corr(value))
        except ToybenchError as err:
            raise ToybenchError(f"eval.test_corr: {err}") from None
    seen = [corr_label(sigma) for sigma in sigmas]
    twice = sorted({label for label in seen if seen.count(label) > 1})
    if twice:
        raise ToybenchError(f"eval.test_corr lists σ = {', '.join(twice)} more than once")
    return tuple(sorted(sigmas))


#: A smaller protocol (about 1/20 of the images) for smoke runs and CPU-only sweeps.
QUICK = EvalConfig(
    factor_vae_train=500,
    factor_vae_eval=250,
    factor_vae_variance=2000,
    beta_vae_train=500,
    beta_vae_eval=250,
    consistency_pairs=200,
)


@contextlib.contextmanager
def _small_blas():
    """One BLAS thread for the scikit-learn fits (logistic regressions on at most 10,000 × L),
    and no scikit-learn input checks inside (`_sklearn_unchecked`).

    Problems this small gain nothing from a second thread, and on shared cores its hand-offs
    made them up to 10x slower (a 500-point LogisticRegression: 264 ms -> 29 ms on the
    loaded 2-core machine). The BLAS limit holds for the whole process; scikit-learn's
    settings are per thread, so a worker thread that fits enters `_sklearn_unchecked` itself.
    """
    with threadpool_limits(limits=1, user_api="blas"), _sklearn_unchecked():
        yield


@contextlib.contextmanager
def _sklearn_unchecked():
    """scikit-learn without its parameter validation and finiteness checks, in this thread.

    The scores' inputs are checked before (finite codes, integer factors), and the hundreds of
    small ROC AUC and regression calls of one evaluation spent about a third of their time in
    those checks. Results are identical.
    """
    import sklearn

    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        yield


def encode_images(encode: Encode, images: np.ndarray, *, batch: int = 1024) -> np.ndarray:
    """Run ``encode`` over ``images (n, C, H, W)`` in batches and return ``(n, L)`` float64 codes.

    Raises
    ------
    ValueError
        If the encoder returns the wrong number of rows, not 2-D codes, or non-finite values.
    """
    chunks = []
    for start in range(0, len(images), batch):
        part = images[start : start + batch]
        codes = np.asarray(encode(part), dtype=np.float64)
        if codes.ndim != 2 or codes.shape[0] != len(part):
            raise ValueError(
                f"encode returned shape {codes.shape} for images of shape {part.shape}; "
                "expected (n_images, n_codes)"
            )
        if not np.isfinite(codes).all():
            raise ValueError(f"encode returned NaN or inf codes for images of shape {part.shape}")
        chunks.append(codes)
    return np.concatenate(chunks, axis=0)


#: Images per ``generator.render`` call: large enough that per-call costs (patch building,
#: validation) vanish, small enough to bound memory (8,192 RGB 64 × 64 images are 100 MB).
RENDER_CHUNK = 8192


def _codes_of_factors(encode: Encode, generator, factors: np.ndarray, encode_batch: int):
    """``(n, L)`` float64 codes of the images of factor rows ``(n, K)``.

    Renders ``RENDER_CHUNK`` rows at a time and encodes each chunk in batches of
    ``encode_batch``; no image array larger than one chunk is ever held.
    """
    return np.concatenate(
        [
            encode_images(
                encode, generator.render(factors[start : start + RENDER_CHUNK]), batch=encode_batch
            )
            for start in range(0, len(factors), RENDER_CHUNK)
        ],
        axis=0,
    )


class _CodeBook:
    """Codes of factor rows; each distinct row is rendered and encoded once, then looked up.

    Exact, because an image is a function of its factor row (renderers draw every row on its
    own) and a code a function of its image (deterministic encoders: posterior means, no
    sampling). The interventional scores draw hundreds of thousands of rows from a grid of a few
    ten thousand factor combinations, and one book serves every split of `evaluate_encoder`.
    Rows are keyed by their mixed-radix index into the grid; a generator whose grid does not fit
    in int64 gets no book (every row is rendered and encoded).
    """

    def __init__(self, encode: Encode, generator, encode_batch: int) -> None:
        self.encode = encode
        self.generator = generator
        self.encode_batch = encode_batch
        sizes = [concept.n_levels for concept in generator.concepts]
        strides = [math.prod(sizes[k + 1 :]) for k in range(len(sizes))]
        self._strides = np.array(strides, dtype=np.int64) if math.prod(sizes) < 2**62 else None
        self._keys = np.empty(0, dtype=np.int64)  # (u,) sorted keys of the rows seen
        self._codes: np.ndarray | None = None  # (u, L) their codes

    def _key(self, factors: np.ndarray) -> np.ndarray:
        return (np.asarray(factors, dtype=np.int64) * self._strides).sum(axis=1)  # (n,)

    def add(self, factors: np.ndarray) -> None:
        """Render and encode the rows of ``factors (n, K)`` not seen before (in large chunks)."""
        if self._strides is None:
            return
        keys, first = np.unique(self._key(factors), return_index=True)
        if self._codes is not None:
            fresh = ~np.isin(keys, self._keys, assume_unique=True)
            keys, first = keys[fresh], first[fresh]
        if not len(keys):
            return
        codes = _codes_of_factors(self.encode, self.generator, factors[first], self.encode_batch)
        if self._codes is not None:
            keys = np.concatenate([self._keys, keys])
            codes = np.concatenate([self._codes, codes], axis=0)
        order = np.argsort(keys)
        self._keys, self._codes = keys[order], codes[order]

    def __call__(self, factors: np.ndarray) -> np.ndarray:
        """``(n, L)`` float64 codes of the images of factor rows ``(n, K)``."""
        if self._strides is None:
            return _codes_of_factors(self.encode, self.generator, factors, self.encode_batch)
        self.add(factors)
        return self._codes[np.searchsorted(self._keys, self._key(factors))]


def _reduce_points(book: _CodeBook, factors: np.ndarray, per_point: int, reduce) -> np.ndarray:
    """Codes of factor rows grouped by point, each point's codes reduced to one row.

    ``factors`` is ``(n_points * per_point, K)``, point i owning rows
    ``i * per_point : (i + 1) * per_point``; ``reduce`` maps codes ``(S, per_point, L)`` to
    ``(S, ...)``. The distinct rows are encoded first, then whole points are reduced about
    ``RENDER_CHUNK`` rows at a time, so only one chunk's codes are held.
    """
    book.add(factors)
    step = max(1, RENDER_CHUNK // per_point) * per_point  # whole points per chunk
    out = []
    for start in range(0, len(factors), step):
        codes = book(factors[start : start + step])
        out.append(reduce(codes.reshape(-1, per_point, codes.shape[1])))
    return np.concatenate(out, axis=0)


def _sample_fixed(generator, rng, corr, factor_per_row, level_per_row) -> np.ndarray:
    """``(m, K)`` factors; row i is drawn under do(factor_per_row[i] = level_per_row[i]).

    One vectorized ``sample_factors`` call per distinct intervened factor.
    """
    out = np.empty((len(factor_per_row), len(generator.concept_names)), dtype=np.int64)
    for k in np.unique(factor_per_row):
        rows = np.flatnonzero(factor_per_row == k)
        do = {generator.concept_names[k]: level_per_row[rows]}
        out[rows] = generator.sample_factors(len(rows), rng, corr=corr, do=do)
    return out


def _marginal_levels(generator, rng, corr, factor_per_row) -> np.ndarray:
    """``(m,)`` a level of factor ``factor_per_row[i]`` per row, from its observational marginal."""
    observed = generator.sample_factors(len(factor_per_row), rng, corr=corr)  # (m, K)
    return observed[np.arange(len(factor_per_row)), factor_per_row]


class FactorVAEScore(NamedTuple):
    """Majority-vote classifier accuracies and the number of dimensions it used."""

    train_accuracy: float
    eval_accuracy: float
    n_active: int


def _factor_vae_votes(book, rng, corr, n_points, config, scale, active):
    """``(K, L)`` votes: for each point, the fixed factor votes for its least-varying dimension.

    All points' factors are drawn first (point i: factor k_i uniform, a level v_i from k_i's
    marginal, ``batch_size`` rows under do(k_i = v_i)), then rendered and encoded in large chunks.
    """
    generator = book.generator
    n_factors = len(generator.concept_names)
    batch = config.batch_size
    fixed = rng.integers(n_factors, size=n_points)  # (P,) which factor each point fixes
    levels = _marginal_levels(generator, rng, corr, fixed)  # (P,)
    factors = _sample_fixed(
        generator, rng, corr, np.repeat(fixed, batch), np.repeat(levels, batch)
    )  # (P * B, K), point-major
    local = _reduce_points(
        book, factors, batch, lambda codes: codes.var(axis=1, ddof=1)
    )  # (S, B, L) -> (P, L)
    local = local[:, active] / scale[active]  # (P, L_active)
    # disentanglement_lib indexes the vote with the position inside the *active* subset;
    # mapping it back to the dimension's own index is the correct reading.
    chosen = np.flatnonzero(active)[np.argmin(local, axis=1)]
    votes = np.zeros((n_factors, len(scale)), dtype=np.int64)
    np.add.at(votes, (fixed, chosen), 1)
    return votes


def factor_vae_score(
    encode: Encode,
    generator,
    *,
    corr: float,
    rng: np.random.Generator,
    config: EvalConfig = EvalConfig(),
) -> FactorVAEScore:
    """FactorVAE score (Kim & Mnih 2018) with interventional batches.

    Procedure (disentanglement_lib's ``compute_factor_vae``): per-dimension variances (ddof 1)
    of ``factor_vae_variance`` codes of observational images; dimensions with standard deviation
    below ``prune_threshold`` are dropped. Each training point picks a factor k uniformly, a level
    v from the factor's observational marginal, draws ``batch_size`` factor vectors under
    ``do(k = v)``, and votes (k, argmin over kept dimensions of local variance / global variance).
    The classifier maps each dimension to its majority factor; accuracy is the share of votes it
    gets right, on the training votes and on ``factor_vae_eval`` fresh points.

    Deviations from disentanglement_lib: batches come from ``do(k = v)``, not from overwriting
    column k; the vote goes to the winning dimension's own index (disentanglement_lib uses its
    position among the kept dimensions, which is wrong once any dimension is pruned); and
    ``n_active`` counts kept dimensions (disentanglement_lib reports the total).

    Parameters
    ----------
    encode : callable, uint8 images (n, C, H, W) -> codes (n, L)
    generator : a `toybench.scm` generator (sample_factors, render, concept_names)
    corr : float, the correlation width σ to sample with
    rng : np.random.Generator
    config : EvalConfig

    Returns
    -------
    FactorVAEScore(train_accuracy, eval_accuracy, n_active)
    """
    return _factor_vae_score(_CodeBook(encode, generator, config.encode_batch), corr, rng, config)


def _factor_vae_score(book: _CodeBook, corr, rng, config) -> FactorVAEScore:
    factors = book.generator.sample_factors(config.factor_vae_variance, rng, corr=corr)
    codes = book(factors)
    variances = codes.var(axis=0, ddof=1)
    active = np.sqrt(variances) >= config.prune_threshold
    if not active.any():
        return FactorVAEScore(0.0, 0.0, 0)
    train_votes = _factor_vae_votes(
        book, rng, corr, config.factor_vae_train, config, variances, active
    )
    classifier = np.argmax(train_votes, axis=0)  # (L,) majority factor of each dimension
    columns = np.arange(train_votes.shape[1])
    eval_votes = _factor_vae_votes(
        book, rng, corr, config.factor_vae_eval, config, variances, active
    )
    return FactorVAEScore(
        float(train_votes[classifier, columns].sum() / train_votes.sum()),
        float(eval_votes[classifier, columns].sum() / eval_votes.sum()),
        int(active.sum()),
    )


class BetaVAEScore(NamedTuple):
    """Logistic-regression accuracies of predicting the fixed factor."""

    train_accuracy: float
    eval_accuracy: float


def _beta_vae_points(book, rng, corr, n_points, config):
    """``(n_points, L)`` mean |z1 − z2| features over pairs sharing one factor, and labels.

    All points' factors are drawn first (point i: factor k_i uniform; pair j: a level v_ij from
    k_i's marginal and two rows under do(k_i = v_ij)), then rendered and encoded in large chunks.
    """
    generator = book.generator
    n_factors = len(generator.concept_names)
    batch = config.batch_size
    fixed = rng.integers(n_factors, size=n_points)  # (P,)
    rows = np.repeat(fixed, batch)  # (P * B,)
    levels = _marginal_levels(generator, rng, corr, rows)  # pair j shares level levels[j]
    first = _sample_fixed(generator, rng, corr, rows, levels)  # (P * B, K)
    second = _sample_fixed(generator, rng, corr, rows, levels)
    n_concepts = first.shape[1]
    factors = np.stack(
        [first.reshape(n_points, batch, n_concepts), second.reshape(n_points, batch, n_concepts)],
        axis=1,
    ).reshape(-1, n_concepts)  # (P * 2B, K): per point its B first images, then the B second

    def mean_abs_diff(codes: np.ndarray) -> np.ndarray:  # (S, 2B, L) -> (S, L)
        return np.abs(codes[:, :batch] - codes[:, batch:]).mean(axis=1)

    return _reduce_points(book, factors, 2 * batch, mean_abs_diff), fixed


def beta_vae_score(
    encode: Encode,
    generator,
    *,
    corr: float,
    rng: np.random.Generator,
    config: EvalConfig = EvalConfig(),
) -> BetaVAEScore:
    """BetaVAE score (Higgins et al. 2017) with interventional pairs.

    Procedure (disentanglement_lib's ``compute_beta_vae_sklearn``): each point picks a factor k
    uniformly and ``batch_size`` pairs of images that share the level of k; its feature is the
    mean absolute code difference over the pairs, its label k. A ``LogisticRegression`` is fit on
    ``beta_vae_train`` points and scored on them and on ``beta_vae_eval`` fresh points.

    Deviation from disentanglement_lib: the shared level v of pair i is drawn from k's
    observational marginal and *both* images of the pair are sampled under ``do(k = v)`` (the
    reference overwrites column k of an independent sample).

    Parameters
    ----------
    encode : callable, uint8 images (n, C, H, W) -> codes (n, L)
    generator : a `toybench.scm` generator
    corr : float, the correlation width σ to sample with
    rng : np.random.Generator
    config : EvalConfig

    Returns
    -------
    BetaVAEScore(train_accuracy, eval_accuracy)
    """
    return _beta_vae_score(_CodeBook(encode, generator, config.encode_batch), corr, rng, config)


def _beta_vae_score(book: _CodeBook, corr, rng, config) -> BetaVAEScore:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = _beta_vae_points(book, rng, corr, config.beta_vae_train, config)
    if np.unique(y_train).size < 2:
        raise ValueError(f"beta_vae_train={config.beta_vae_train} points drew a single factor")
    x_eval, y_eval = _beta_vae_points(book, rng, corr, config.beta_vae_eval, config)
    with warnings.catch_warnings(), _small_blas():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(random_state=0).fit(x_train, y_train)
        return BetaVAEScore(
            float(np.mean(model.predict(x_train) == y_train)), float(model.score(x_eval, y_eval))
        )


def _other_level(levels: np.ndarray, n_levels: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly drawn level different from each entry of ``levels``."""
    return (levels + rng.integers(1, n_levels, size=levels.shape)) % n_levels


def intervention_consistency_scores(
    encode: Encode,
    generator,
    latent_of_concept: np.ndarray,
    *,
    corr: float,
    rng: np.random.Generator,
    n_pairs: int = 1000,
    encode_batch: int = 1024,
) -> dict[str, float]:
    """Intervention consistency of each concept, and the same counting its descendants' latents.

    For concept c: ``n_pairs`` exogenous noise draws give factual factors and their do(c = v)
    counterfactuals (v a different level of c, descendants recomputed from the same noise); both
    are rendered and encoded, and `toybench.metrics.intervention_consistency` measures the
    share of the squared code change in c's assigned latent (``consistency.<c>``) and in the
    latents of c and its descendants (``consistency_descendants.<c>``). A concept left without a
    latent by the assignment scores 0. The means over concepts are ``consistency`` and
    ``consistency_descendants``.
    """
    book = _CodeBook(encode, generator, encode_batch)
    return _consistency_scores(book, latent_of_concept, corr, rng, n_pairs)


def _consistency_scores(book: _CodeBook, latent_of_concept, corr, rng, n_pairs):
    generator = book.generator
    names = generator.concept_names
    pairs = []  # per concept: factual (n, K) and counterfactual (n, K) rows
    for k, name in enumerate(names):
        noise = generator.sample_noise(n_pairs, rng)
        factual = generator.factors_from_noise(noise, corr=corr)
        level = _other_level(factual[:, k], generator.concepts[k].n_levels, rng)
        pairs += [factual, generator.counterfactual(factual, noise, {name: level}, corr=corr)]
    codes = book(np.concatenate(pairs))
    codes = codes.reshape(len(names), 2, n_pairs, -1)  # (K, factual | counterfactual, n, L)
    out: dict[str, float] = {}
    for k, name in enumerate(names):
        before, after = codes[k, 0], codes[k, 1]
        own = [int(latent_of_concept[k])] if latent_of_concept[k] >= 0 else []
        family = [names.index(d) for d in generator.dag.descendants(name)] + [k]
        with_descendants = [int(latent_of_concept[j]) for j in family if latent_of_concept[j] >= 0]
        out[f"consistency.{name}"] = (
            metrics.intervention_consistency(before, after, own) if own else 0.0
        )
        out[f"consistency_descendants.{name}"] = (
            metrics.intervention_consistency(before, after, with_descendants)
            if with_descendants
            else 0.0
        )
    out["consistency"] = float(np.mean([out[f"consistency.{n}"] for n in names]))
    out["consistency_descendants"] = float(
        np.mean([out[f"consistency_descendants.{n}"] for n in names])
    )
    return out


def responsibility_matrix(
    encode: Encode,
    generator,
    *,
    corr: float,
    rng: np.random.Generator,
    n_pairs: int = 1000,
    encode_batch: int = 1024,
) -> np.ndarray:
    """Responsibilities ``(K, L)``: z-scored |change| of each latent when one factor changes.

    ``n_pairs`` observational factor vectors (σ = ``corr``) are drawn; for each factor k a copy
    with only column k moved to another level is rendered (a direct edit, not an intervention:
    nothing else changes). Latents are z-scored by their standard deviation over the
    observational codes. See `toybench.metrics.responsibilities`.
    """
    base = generator.sample_factors(n_pairs, rng, corr=corr)
    edited = []
    for k, concept in enumerate(generator.concepts):
        moved = base.copy()
        moved[:, k] = _other_level(base[:, k], concept.n_levels, rng)
        edited.append(moved)
    n_factors = len(generator.concepts)
    codes = _CodeBook(encode, generator, encode_batch)(np.concatenate([base, *edited]))
    base_codes, after = codes[:n_pairs], codes[n_pairs:]  # (n, L), (K * n, L)
    scale = base_codes.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return metrics.responsibilities(
        np.tile(base_codes, (n_factors, 1)),
        after,
        np.repeat(np.arange(n_factors), n_pairs),
        n_factors,
        scale=scale,
    )


def _as_uint8_images(images) -> np.ndarray:
    arr = np.asarray(images)
    if arr.dtype == np.uint8:
        return arr
    return np.round(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def perturbation_matrix_of(
    encode: Encode,
    decode: Callable[[np.ndarray], Any],
    images: np.ndarray,
    *,
    delta: float = 1.0,
    encode_batch: int = 1024,
) -> np.ndarray:
    """Perturbation matrix ``(L, L)``: add ``delta`` to code i, decode, re-encode, squared change.

    ``decode`` maps codes ``(n, L)`` to images ``(n, C, H, W)``, uint8 or float in [0, 1] (floats
    are rounded to uint8 before re-encoding, since ``encode`` takes uint8 images). The reference
    is ``encode(decode(z))`` of the unperturbed codes. See `toybench.metrics.perturbation_matrix`.
    """
    if not np.isfinite(delta) or delta == 0:
        raise ValueError(f"delta must be a finite non-zero number, got {delta}")
    codes = encode_images(encode, images, batch=encode_batch)  # (n, L)

    def roundtrip(z: np.ndarray) -> np.ndarray:
        return encode_images(encode, _as_uint8_images(decode(z)), batch=encode_batch)

    base = roundtrip(codes)
    perturbed = np.stack(
        [roundtrip(codes + delta * np.eye(codes.shape[1])[i]) for i in range(codes.shape[1])]
    )  # (L, n, L)
    return metrics.perturbation_matrix(base, perturbed)


def _graph_scores(codes, factors, generator) -> tuple[dict[str, float], np.ndarray]:
    """Assignment, pairwise entanglement (calibrated headline and Träuble-style threshold) over
    DAG edges and DAG leakage, with concept names."""
    names = list(generator.concept_names)
    # toybench's own scores, no reference to match: dead units (Var <= 0.01) earn no credit
    active = metrics.active_units(codes).active  # (L,)
    assignment = metrics.concept_assignment(codes, factors, active=active)
    out = {"assignment": assignment.score}
    edges = list(generator.dag.edges)
    if edges:
        pairs = [(names.index(a), names.index(b)) for a, b in edges]
        values = metrics.pairwise_entanglement(codes, factors, pairs, active=active)
        threshold = metrics.pairwise_entanglement_threshold(codes, factors, pairs)
        for (a, b), value, old in zip(edges, values, threshold, strict=True):
            out[f"entanglement.{a}-{b}"] = float(value)
            out[f"entanglement_threshold.{a}-{b}"] = float(old)
        out["entanglement"] = float(values.mean())
        out["entanglement_threshold"] = float(threshold.mean())
    parents = [[names.index(p) for p in generator.dag.parents(name)] for name in names]
    leakage = metrics.dag_leakage(codes, factors, parents, active=active)
    for k, value in leakage.items():
        out[f"leakage.{names[k]}"] = value
    if leakage:
        out["leakage"] = float(np.mean(list(leakage.values())))
    return out, assignment.latent_of_concept


def _check_concepts(split: str, dataset, generator) -> None:
    concepts = tuple(dataset.concepts)
    if concepts != tuple(generator.concept_names):
        raise ToybenchError(
            f"dataset {split!r} has concepts {list(concepts)} but the generator has "
            f"{list(generator.concept_names)}"
        )


def _score_splits(
    book: _CodeBook, datasets: Mapping[str, Any], codes: Mapping[str, np.ndarray], *, seed: int,
    config: EvalConfig,
    encoder_threads: Callable[[int], contextlib.AbstractContextManager] | None = None,
) -> dict[str, tuple[dict[str, float], np.ndarray]]:
    """Disentanglement, graph-aware and (on ``config.intervention_splits``) interventional
    scores of every split from its codes ``(n, L)``: ``{split: (scores, DCI importance (L, K))}``.

    The work per split: the DCI fit (numba; it releases the GIL), the other scores of the codes
    (single-threaded scikit-learn and numpy) and the interventional scores, which render and
    encode about 10^5 images. With a second CPU and the fast DCI backend, a second thread fits
    every split's DCI, one after the other, beside the rest. With ``encoder_threads`` (a context
    manager that holds the encoder to n threads, as `toybench.encoders.torch_threads` does for
    a toybench model) the interventional encoding runs beside the fits too, on half the CPUs
    (the fits on the other half), and the second thread then also scores the later half of the
    splits' codes, so that both halves stay busy; without it, the encoder runs after the fits
    with all its threads. No score depends on the schedule: a DCI fit gives the same bits on
    any number of threads, so do the encoder's codes (`tests/test_evaluation.py` checks the
    one- and two-CPU schedules against each other), and each split's interventional
    scores draw from their own stream in the same order. Beside the fits the codebook fills in
    another order (both splits' FactorVAE and BetaVAE images before the consistency pairs), so
    its batches differ: `evaluate_model` gives ``encoder_threads`` only to bf16 passes, whose
    codes do not depend on the batch (fp32 codes of a batch of a few images do, in the last
    bits)."""
    from concurrent.futures import ThreadPoolExecutor

    from toybench.hardware import available_threads

    names = list(datasets)
    inter = [name for name in names if name in config.intervention_splits]
    rngs = {name: seeds.numpy_rng(seed, f"eval.{name}") for name in inter}
    cpus = available_threads()
    parallel = config.dci_backend == "fast" and cpus > 1
    beside = parallel and encoder_threads is not None  # the encoder can run beside the fits
    tail = names[(len(names) + 1) // 2 :] if beside else []  # codes scored by the 2nd thread

    def fit(name: str):
        return metrics.dci(codes[name], datasets[name].factors, backend=config.dci_backend,
                           n_threads=cpus - cpus // 2 if beside else None)

    def observational(name: str) -> tuple[dict[str, float], np.ndarray]:
        with _sklearn_unchecked():
            scores = metrics.scores_but_dci(codes[name], datasets[name].factors)
            graph, latent_of_concept = _graph_scores(codes[name], datasets[name].factors,
                                                     book.generator)
        return {**scores, **graph}, latent_of_concept

    def interventional(name: str) -> dict[str, float]:
        corr = float(datasets[name].corr)
        fvae = _factor_vae_score(book, corr, rngs[name], config)
        bvae = _beta_vae_score(book, corr, rngs[name], config)
        return {"factor_vae.train_accuracy": fvae.train_accuracy,
                "factor_vae.eval_accuracy": fvae.eval_accuracy,
                "factor_vae.n_active": float(fvae.n_active),
                "beta_vae.train_accuracy": bvae.train_accuracy,
                "beta_vae.eval_accuracy": bvae.eval_accuracy}

    def consistency(name: str) -> dict[str, float]:  # needs the split's concept assignment
        return _consistency_scores(book, observed[name][1], float(datasets[name].corr),
                                   rngs[name], config.consistency_pairs)

    def second_thread():
        return {name: fit(name) for name in names}, {name: observational(name) for name in tail}

    fits: dict[str, Any] = {}
    observed: dict[str, tuple[dict[str, float], np.ndarray]] = {}
    intervened: dict[str, dict[str, float]] = {}
    with _small_blas():
        if parallel:
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = pool.submit(second_thread)
                observed.update({name: observational(name) for name in names if name not in tail})
                if beside:
                    with encoder_threads(cpus // 2):
                        intervened.update({name: interventional(name) for name in inter})
                fitted, scored = pending.result()
            fits.update(fitted)
            observed.update(scored)
        else:
            for name in names:
                fits[name], observed[name] = fit(name), observational(name)
    for name in inter:
        # split by split, as the codebook's batches were always formed
        if name not in intervened:
            intervened[name] = interventional(name)
        intervened[name].update(consistency(name))

    out = {}
    for name in names:
        scores = {**observed[name][0], **metrics.dci_scores(fits[name]),
                  **intervened.get(name, {})}
        out[name] = ({key: float(value) for key, value in scores.items()}, fits[name].importance)
    return out


# --------------------------------------------------------------------------------------------
# One evaluation pass: codes once per split, every score from them.
# --------------------------------------------------------------------------------------------

#: The split that only feeds the PCA reference; every other split given is evaluated.
TRAIN_SPLIT = "train"
#: The split whose codes give ``kl_per_unit``, ``importance``, the perturbation matrix and the
#: collapse warnings.
MAIN_SPLIT = "test"
#: Test images the perturbation matrix uses (its figure; 0 skips it).
PERTURBATION_IMAGES = 500
#: Codes per ``decode`` call. A multiple of `toybench.encoders.BATCH_SIZE`, so a toybench
#: model decodes the same batches of 500 codes as it always did.
DECODE_CHUNK = 1000


@dataclasses.dataclass(frozen=True, eq=False)
class Evaluation:
    """Everything one evaluation pass computed: the scores and what the figures reuse.

    Attributes
    ----------
    metrics : dict
        Flat ``"<split>.<key>"`` scores (floats) of every evaluation split, ``"n_codes"``, and
        ``"warnings"`` (a list of strings, `collapse_warnings`); every key is registered in
        `toybench.metrics.METRIC_INFO`.
    codes : dict[str, np.ndarray]
        Per evaluation split, the ``(n, L)`` float64 codes every score of that split used.
    kl_per_unit : np.ndarray or None
        ``(L,)`` KL of each code column on the ``test`` split (models with an ELBO).
    importance : np.ndarray or None
        ``(L, K)`` DCI importance on the ``test`` split, from the fit behind its DCI scores.
    perturbation : np.ndarray or None
        ``(L, L)`` perturbation matrix on the first test images (when a decoder exists).
    """

    metrics: dict[str, Any]
    codes: dict[str, np.ndarray]
    kl_per_unit: np.ndarray | None = None
    importance: np.ndarray | None = None
    perturbation: np.ndarray | None = None

    @property
    def warnings(self) -> tuple[str, ...]:
        """The collapse warnings of ``metrics["warnings"]``."""
        return tuple(self.metrics.get("warnings", ()))

    @property
    def artefacts(self) -> dict[str, Any]:
        """What the run figures take: ``codes`` (per split), ``kl_per_unit``, ``importance``
        and ``perturbation``, as a plain dict."""
        return {"codes": self.codes, "kl_per_unit": self.kl_per_unit,
                "importance": self.importance, "perturbation": self.perturbation}


def evaluate_model(
    model,
    generator,
    splits: Mapping[str, Any],
    *,
    seed: int,
    config: EvalConfig = QUICK,
    reference: Mapping[str, metrics.PCAReference] | None = None,
    perturbation_images: int = PERTURBATION_IMAGES,
) -> Evaluation:
    """Score a toybench model (a trained network or a fitted PCA) in one pass.

    Each evaluation split (every key of ``splits`` but ``"train"``) is encoded once, by
    `toybench.encoders` (posterior means, eval mode, batches of 500), and everything is computed
    from those codes: `evaluate_encoder`'s scores, reconstruction errors of the decoded codes
    (``recon.bce``, ``recon.mse``), the PCA reference (``recon.pca_*``, ``recon.*_vs_pca``), and
    for a trainable model the ELBO (``elbo``; ``model.loss`` with weights 1 and seeded noise,
    its own pass) and KL per unit. See `evaluate_functions` for the keys.

    Parameters
    ----------
    model
        ``encode``, ``decode``, ``n_codes``, ``trainable`` and (trainable models) ``loss(x, step,
        *, kl_weight, recon_weight, generator, diagnostics)``; it is put in eval mode.
    generator : the `toybench.scm` generator the splits were drawn from
    splits : mapping split name -> `toybench.data.Dataset`
        ``"test"`` and ``"test_decorrelated"``, and ``"train"`` for the PCA reference.
    seed : int
        The run seed: the interventional scores' streams, the PCA's and the ELBO's noise.
    config : EvalConfig
    reference : mapping split -> PCAReference, optional
        A precomputed PCA reference (`pca_reference_for`, cached across runs); by default it is
        fitted on ``splits["train"]``.
    perturbation_images : int
        Test images of the perturbation matrix (0: no matrix).

    Returns
    -------
    Evaluation
    """
    from toybench import encoders  # torch lives there, not here

    def encode(images: np.ndarray) -> np.ndarray:
        return encoders.encode_images(model, images, precision=config.precision)

    def decode(codes: np.ndarray) -> np.ndarray:
        return encoders.decode_codes(model, codes, precision=config.precision)

    elbo = None
    if model.trainable:
        def elbo(images: np.ndarray) -> encoders.ELBOTerms:
            return encoders.elbo_terms(model, images, seed=seed, precision=config.precision)

    return _evaluate(encode, generator, splits, seed=seed, config=config, decode=decode,
                     n_codes=int(model.n_codes), elbo=elbo, reference=reference,
                     perturbation_images=perturbation_images,
                     # bf16 only: why, in _score_splits
                     encoder_threads=encoders.torch_threads if config.precision == "bf16"
                     else None)


def evaluate_functions(
    encode: Encode,
    generator,
    splits: Mapping[str, Any],
    *,
    seed: int,
    config: EvalConfig = QUICK,
    decode: Decode | None = None,
    n_codes: int | None = None,
    reference: Mapping[str, metrics.PCAReference] | None = None,
    perturbation_images: int = PERTURBATION_IMAGES,
) -> Evaluation:
    """Score any encoder (and optionally its decoder) in one pass, without torch.

    Every key of ``splits`` but ``"train"`` is an evaluation split; its images are encoded once
    (``config.encode_batch`` images per call) and the codes give `evaluate_encoder`'s scores
    (``<split>.mig``, ``<split>.dci.*``, graph-aware and interventional scores). With a
    ``decode``: ``<split>.recon.bce`` and ``recon.mse`` of the decoded codes (means per image,
    summed over pixels), and with a PCA reference (``reference``, or fitted on ``splits["train"]``
    with ``n_codes`` components) ``recon.pca_bce``, ``recon.pca_mse``, ``recon.bce_vs_pca`` and
    ``recon.mse_vs_pca``; plus the perturbation matrix. Always: ``n_codes``, the collapse flags
    ``test.collapse.*`` and ``warnings`` (`collapse_warnings`).

    Parameters
    ----------
    encode : callable, uint8 images (n, C, H, W) -> codes (n, L)
        Deterministic (posterior means, not samples).
    generator : the `toybench.scm` generator the splits were drawn from
    splits : mapping split name -> Dataset
    seed : int
    config : EvalConfig
    decode : callable, codes (n, L) -> images (n, C, H, W), optional
        uint8, or floats in [0, 1] (the decoder's mean image).
    n_codes : int, optional
        The encoder's code width L (checked against the codes; default: the codes' width).
    reference : mapping split -> PCAReference, optional
    perturbation_images : int
        Test images of the perturbation matrix (0: no matrix; needs ``decode``).

    Returns
    -------
    Evaluation

    Raises
    ------
    ToybenchError
        No evaluation split, concepts that differ from the generator's, codes of another width
        than ``n_codes``, or a reference that does not cover the splits.
    """
    return _evaluate(encode, generator, splits, seed=seed, config=config, decode=decode,
                     n_codes=n_codes, elbo=None, reference=reference,
                     perturbation_images=perturbation_images)


def _evaluate(encode, generator, splits, *, seed, config, decode, n_codes, elbo, reference,
              perturbation_images, encoder_threads=None) -> Evaluation:
    eval_sets = {name: ds for name, ds in splits.items() if name != TRAIN_SPLIT}
    if not eval_sets:
        raise ToybenchError(f"no split to evaluate: got only {list(splits)}")
    for name, dataset in splits.items():
        _check_concepts(name, dataset, generator)
    missing = [name for name in eval_sets if reference is not None and name not in reference]
    if missing:  # fail before the costly part
        raise ToybenchError(f"the PCA reference has splits {sorted(reference)}, not {missing}")
    out: dict[str, Any] = {}
    codes: dict[str, np.ndarray] = {}
    importance = None
    book = _CodeBook(encode, generator, config.encode_batch)  # shared by all splits
    for name, dataset in eval_sets.items():
        codes[name] = encode_images(encode, dataset.images, batch=config.encode_batch)
        width = codes[name].shape[1]
        if n_codes is not None and width != n_codes:
            raise ToybenchError(f"encoder returned {width} codes per image on split {name!r}, "
                                f"expected n_codes={n_codes}")
        n_codes = width
    scored = _score_splits(book, eval_sets, codes, seed=seed, config=config,
                           encoder_threads=encoder_threads)
    for name, (scores, split_importance) in scored.items():
        if name == MAIN_SPLIT:
            importance = split_importance
        out.update({f"{name}.{key}": value for key, value in scores.items()})
    out["n_codes"] = float(n_codes)

    kl_per_unit = None
    perturbation = None
    if decode is not None:
        if reference is None and TRAIN_SPLIT in splits:
            reference = pca_reference_for(splits, n_codes, seed=seed)
        n_components = min(n_codes, len(splits[TRAIN_SPLIT].images)) if TRAIN_SPLIT in splits \
            else n_codes
        for name, dataset in eval_sets.items():
            pca = None if reference is None else _reference_of(reference, name, n_components)
            out.update(_recon_scores(name, dataset.images, codes[name], decode, pca))
        main = eval_sets.get(MAIN_SPLIT)
        if main is not None and perturbation_images > 0:
            perturbation = perturbation_matrix_of(
                encode, decode, main.images[:perturbation_images], encode_batch=config.encode_batch
            )
    if elbo is not None:
        for name, dataset in eval_sets.items():
            terms = elbo(dataset.images)
            if not math.isfinite(terms.elbo):
                raise ValueError(f"ELBO on split {name!r} is not finite: {terms.elbo}")
            out[f"{name}.elbo"] = float(terms.elbo)
            if name == MAIN_SPLIT:
                kl_per_unit = np.asarray(terms.kl_per_unit, dtype=np.float64)
    n_concepts = len(generator.concept_names)
    out.update(collapse_flags(out, n_concepts))
    out["warnings"] = collapse_warnings(out, n_concepts)
    return Evaluation(out, codes, kl_per_unit, importance, perturbation)


def _reference_of(reference: Mapping[str, Any], split: str, n_components: int):
    """``reference[split]``, checked to have the PCA's ``n_components`` (codes, at most n_train)."""
    pca = reference[split]
    if pca.n_components != n_components:
        raise ToybenchError(f"the PCA reference of split {split!r} has {pca.n_components} "
                            f"components; this evaluation needs {n_components}")
    return pca


def _recon_scores(split: str, images: np.ndarray, codes: np.ndarray, decode: Decode,
                  pca) -> dict[str, float]:
    """``recon.*`` of one split: the decoded codes' errors, ``DECODE_CHUNK`` images at a time."""
    bce, mse = [], []
    for start in range(0, len(codes), DECODE_CHUNK):
        target = images[start : start + DECODE_CHUNK]
        recon = np.asarray(decode(codes[start : start + DECODE_CHUNK]))
        if recon.shape != target.shape:
            raise ValueError(f"decode returned shape {recon.shape} for {len(target)} codes; "
                             f"expected {target.shape}")
        chunk_bce, chunk_mse = metrics.errors_per_image(target, recon)  # (m,) each
        bce.append(chunk_bce)
        mse.append(chunk_mse)
    model_bce = float(np.concatenate(bce).mean())
    model_mse = float(np.concatenate(mse).mean())
    out = {f"{split}.recon.bce": model_bce, f"{split}.recon.mse": model_mse}
    if pca is not None:
        out[f"{split}.recon.pca_bce"] = pca.bce
        out[f"{split}.recon.pca_mse"] = pca.mse
        out[f"{split}.recon.bce_vs_pca"] = model_bce / pca.bce if pca.bce > 0 else math.nan
        out[f"{split}.recon.mse_vs_pca"] = model_mse / pca.mse if pca.mse > 0 else math.nan
    return out


# --------------------------------------------------------------------------------------------
# The PCA reference, cached across runs.
# --------------------------------------------------------------------------------------------

#: Bump when the reference's computation changes, so that older cache files are not read.
PCA_CACHE_FORMAT = 1


def _pca_cache_key(splits: Mapping[str, Any], n_components: int, seed: int) -> str:
    """SHA-256 of everything the reference's numbers depend on: the images of every split
    (train and evaluated), the number of components, the seed and the library versions."""
    import scipy
    import sklearn

    from toybench import __version__

    header = {
        "format": PCA_CACHE_FORMAT, "toybench": __version__, "numpy": np.__version__,
        "scipy": scipy.__version__, "scikit_learn": sklearn.__version__,
        "n_components": n_components, "seed": seed,
        "splits": {name: list(np.shape(ds.images)) + [str(np.asarray(ds.images).dtype)]
                   for name, ds in splits.items()},
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode("utf-8"))
    for name, dataset in splits.items():
        digest.update(name.encode("utf-8"))
        digest.update(memoryview(np.ascontiguousarray(dataset.images)).cast("B"))
    return digest.hexdigest()


def _read_pca_cache(path: Path, key: str, names) -> dict[str, metrics.PCAReference] | None:
    """The cached reference, or None if the file is missing, not a regular file, or not ours."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        if content["key"] != key:
            return None
        out = {}
        for name in names:
            entry = content["references"][name]
            out[name] = metrics.PCAReference(int(entry["n_components"]), float(entry["bce"]),
                                             float(entry["mse"]),
                                             float(entry["explained_variance_ratio"]))
        return out
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or foreign: recompute and replace it


def pca_reference_for(
    splits: Mapping[str, Any],
    n_components: int,
    *,
    seed: int,
    cache_dir: str | Path | None = None,
) -> dict[str, metrics.PCAReference]:
    """The PCA reference of every evaluation split: a PCA fitted on ``splits["train"]``.

    `toybench.metrics.recon.pca_references` with ``min(n_components, n_train)`` components
    (randomized SVD seeded by ``seed``). It does not depend on the model, so with a
    ``cache_dir`` the few numbers are kept in ``<cache_dir>/pca-<sha256[:16]>.json``, keyed by
    the SHA-256 of the images of every split (about 0.1 s for a standard run's 30,000 images),
    the component count, the seed and the versions of toybench, numpy, scipy and scikit-learn:
    every run on the same data reuses one fit, and a changed renderer, split or library cannot
    hit a stale entry. Cached numbers are the fresh ones exactly (JSON keeps every bit of a
    float). A missing, foreign or unreadable file is recomputed and replaced (atomically); a
    path that is not a regular file is left alone and not used.

    Parameters
    ----------
    splits : mapping split name -> Dataset
        ``"train"`` and the splits to evaluate.
    n_components : int
        The model's number of codes.
    seed : int
    cache_dir : str or Path, optional

    Returns
    -------
    dict[str, PCAReference]
        One entry per split but ``"train"``.
    """
    if TRAIN_SPLIT not in splits:
        raise ToybenchError(f"the PCA reference needs a {TRAIN_SPLIT!r} split, got {list(splits)}")
    train = splits[TRAIN_SPLIT]
    names = [name for name in splits if name != TRAIN_SPLIT]
    n_components = min(int(n_components), len(train.images))
    path = key = None
    if cache_dir is not None:
        key = _pca_cache_key(splits, n_components, seed)
        path = Path(cache_dir) / f"pca-{key[:16]}.json"
        cached = _read_pca_cache(path, key, names)
        if cached is not None:
            return cached
    from toybench.metrics.recon import pca_references

    references = pca_references(
        train.images, {name: splits[name].images for name in names}, n_components, seed=seed
    )
    if path is not None and not (path.is_symlink() or path.exists() and not path.is_file()):
        from toybench.io import atomic_write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"key": key, "references": {
            name: ref._asdict() for name, ref in references.items()}})
    return references


# --------------------------------------------------------------------------------------------
# Collapse warnings and the summary table.
# --------------------------------------------------------------------------------------------


#: Relative margin within which a reconstruction counts as tied with the PCA reference: the
#: PCA baseline itself (float32) differs from its float64 reference by ~2e-8 either way.
PCA_TIE = 1e-4


def _collapse_rules(scores: Mapping[str, Any], n_concepts: int, split: str):
    """``(flag key, fired, message)`` of each rule whose inputs are in ``scores``."""
    rules = []
    n_codes = scores.get("n_codes")
    active = scores.get(f"{split}.active_units")
    if isinstance(active, int | float) and isinstance(n_codes, int | float):
        k, width = int(active), int(n_codes)
        rules.append((f"{split}.collapse.no_active_units", k == 0,
                      f"posterior collapse: no active units on the {split} split (0 of {width} "
                      f"codes vary with Var > 0.01 across images)"))
        rules.append((f"{split}.collapse.few_active_units", 0 < k < min(n_concepts, width),
                      f"few active units: {k} of {width} on the {split} split, fewer than the "
                      f"{n_concepts} concepts"))
    ratio = scores.get(f"{split}.recon.bce_vs_pca")
    if isinstance(ratio, int | float) and math.isfinite(ratio):
        rules.append((f"{split}.collapse.recon_no_better_than_pca", ratio > 1 + PCA_TIE,
                      f"reconstructions no better than PCA: recon.bce is {ratio:.2f}x that of a "
                      f"PCA with as many components, on the {split} split"))
    return rules


def collapse_flags(scores: Mapping[str, Any], n_concepts: int, *,
                   split: str = MAIN_SPLIT) -> dict[str, float]:
    """The numeric flags (1.0 fired, 0.0 not) behind `collapse_warnings`, for the leaderboard.

    Keys ``<split>.collapse.no_active_units``, ``.few_active_units`` and
    ``.recon_no_better_than_pca``, each present when its inputs are.
    """
    return {key: float(fired) for key, fired, _ in _collapse_rules(scores, n_concepts, split)}


def collapse_warnings(scores: Mapping[str, Any], n_concepts: int, *,
                      split: str = MAIN_SPLIT) -> list[str]:
    """Warnings a researcher needs about a trained model, from its scores on one split.

    Rules (on the ``test`` split by default, the data the model was trained for; the
    decorrelated split is a probe, where doing worse is a finding, not a failure), with ``k``
    active units (Burda et al. 2016, Var > 0.01) of ``L = scores["n_codes"]`` codes:

    - ``k == 0``: "posterior collapse" — the codes carry nothing about the images (a decoder
      then draws the same mean image for every input);
    - ``0 < k < min(n_concepts, L)``: "few active units: k of L" — fewer informative codes than
      concepts, so some concepts cannot have a code of their own;
    - ``recon.bce_vs_pca > 1 + PCA_TIE``: "reconstructions no better than PCA" with as many
      components (``PCA_TIE = 1e-4`` keeps the PCA baseline, its own reference up to float32
      rounding, from warning about itself).

    Parameters
    ----------
    scores : mapping
        Flat ``<split>.<key>`` scores with ``n_codes`` (an `Evaluation`'s ``metrics``, or a
        run's ``metrics.json``).
    n_concepts : int
        The generator's number of concepts.
    split : str

    Returns
    -------
    list of str
        One line per rule that fired, in the order above; empty for a healthy model.
    """
    return [message for _, fired, message in _collapse_rules(scores, n_concepts, split) if fired]


#: Rows of the end-of-run summary (base keys; one column per evaluation split).
SUMMARY_KEYS = ("recon.bce", "recon.pca_bce", "recon.bce_vs_pca", "active_units",
                "dci.disentanglement", "dci.completeness", "dci.informativeness_test", "mig")
SUMMARY_SPLITS = ("test", "test_decorrelated")


def summary_table(scores: Mapping[str, Any]) -> str:
    """A short text table of the headline metrics for both evaluation splits, then warnings.

    Each row names its key with the registry's arrow (↑ higher is better, ↓ lower, · neither);
    rows with no value on either split are left out.
    """
    from toybench.metrics.registry import metric_info

    labels = {key: f"{key} {metric_info(key).arrow}" for key in SUMMARY_KEYS}
    width = max(len(label) for label in labels.values())
    lines = [f"{'metric':<{width}}  {'test':>10}  {'test_decorrelated':>17}"]
    for key in SUMMARY_KEYS:
        cells = [scores.get(f"{split}.{key}") for split in SUMMARY_SPLITS]
        if all(c is None for c in cells):
            continue
        lines.append(f"{labels[key]:<{width}}  {_fmt(cells[0]):>10}  {_fmt(cells[1]):>17}")
    if "train.nan_skipped_steps" in scores:
        lines.append(f"train: {scores.get('train.steps')} steps, "
                     f"{scores['train.nan_skipped_steps']} skipped (non-finite)")
    lines += [f"warning: {message}" for message in scores.get("warnings", ())]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def evaluate_encoder(
    encode: Encode,
    generator,
    datasets: Mapping[str, Any],
    *,
    seed: int,
    config: EvalConfig = EvalConfig(),
) -> dict[str, float]:
    """Every score of an encoder on each data split, as one flat dict of floats.

    For each ``split, dataset`` (a `toybench.data.Dataset`: uint8 ``images``, ``factors`` in the
    generator's concept order, ``corr``): the dataset's images are encoded and scored with
    `toybench.metrics.score` (keys ``"<split>.mig"``, ``"<split>.dci.disentanglement"``, ...),
    the Hungarian assignment score, pairwise entanglement of every DAG edge (``entanglement.*``:
    calibrated, active units only; ``entanglement_threshold.*``: Träuble et al.'s threshold
    score, all units) and the DAG leakage of every concept with parents (active units only).
    On the splits in ``config.intervention_splits`` the
    generator-based scores follow, sampled at the split's σ: ``factor_vae.*``, ``beta_vae.*`` and
    ``consistency*``.

    Parameters
    ----------
    encode : callable, uint8 images (n, C, H, W) -> codes (n, L)
    generator : the `toybench.scm` generator the datasets were drawn from
    datasets : mapping split name -> Dataset
    seed : int
        Seeds every sampled batch (one independent stream per split name).
    config : EvalConfig

    Returns
    -------
    dict[str, float]
    """
    out: dict[str, float] = {}
    book = _CodeBook(encode, generator, config.encode_batch)  # codes are shared by all splits
    codes = {}
    for split, dataset in datasets.items():
        _check_concepts(split, dataset, generator)
        codes[split] = encode_images(encode, dataset.images, batch=config.encode_batch)
    for split, (scores, _) in _score_splits(book, datasets, codes, seed=seed,
                                            config=config).items():
        out.update({f"{split}.{key}": value for key, value in scores.items()})
    return out


#: Errors a damaged or forged ``.npz`` raises while it is read (zip structure, compression, CRC,
#: the ``.npy`` header): each becomes one ``ToybenchError`` line.
_DAMAGED = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,  # a compression method or zip version zipfile does not know
    RuntimeError,  # "File ... is encrypted, password required"
)


def load_codes_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``codes`` and ``factors`` from an ``.npz`` (no pickles).

    The archive is read with ``zipfile``; before an array is allocated, its ``.npy`` header
    (shape × item size) must match the member's uncompressed size and fit in memory
    (``toybench.errors.check_allocation``), so a forged header never triggers a huge allocation.
    Reading each member to its end checks its CRC.

    Raises
    ------
    ToybenchError
        One line naming the file: missing, not an ``.npz``, truncated or corrupted (bad zip
        structure, CRC or compressed data), an array header that does not match its data, an
        array too large for memory, object arrays (pickles), or without the two arrays.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except FileNotFoundError:
        raise ToybenchError(f"{path}: no such file") from None
    except OSError as err:
        raise ToybenchError(f"{path}: cannot read ({err.strerror or err})") from None
    if magic != b"PK\x03\x04":
        raise ToybenchError(f"{path}: not an .npz archive (expected arrays 'codes' and 'factors')")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            missing = [key for key in ("codes", "factors") if key not in members]
            if missing:
                raise ToybenchError(
                    f"{path}: missing array(s) {missing}; it holds {sorted(members)[:20]}, "
                    "expected 'codes' (n, L) and 'factors' (n, K)"
                )
            codes, factors = (
                _read_npy_member(archive, members[key], key, path) for key in ("codes", "factors")
            )
    except _DAMAGED as err:
        if isinstance(err, ToybenchError):
            raise
        raise ToybenchError(
            f"{path}: not a readable .npz archive, truncated or corrupted "
            f"({type(err).__name__}: {str(err)[:120] or 'no detail'})"
        ) from None
    return codes, factors


def _read_npy_member(
    archive: zipfile.ZipFile, member: str, key: str, path: Path
) -> np.ndarray:
    """One ``.npy`` member of an open archive, its header checked against its size first."""
    fmt = np.lib.format
    info = archive.getinfo(member)
    with archive.open(info) as stream:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(stream)
        else:
            raise ToybenchError(
                f"{path}: array {key!r} uses .npy format {version[0]}.{version[1]}; expected "
                "1.0 or 2.0 (plain numeric arrays)"
            )
        header_bytes = stream.tell()
    if dtype.hasobject:
        raise ToybenchError(f"{path}: array {key!r} holds Python objects; cannot read it without "
                            "pickle (store numbers)")
    n_bytes = math.prod(shape) * dtype.itemsize  # Python int: no overflow
    data_bytes = info.file_size - header_bytes
    if n_bytes != data_bytes:
        raise ToybenchError(
            f"{path}: array {key!r} claims shape {shape} of {dtype} ({n_bytes:,} bytes) but holds "
            f"{data_bytes:,} bytes of data; the file is damaged"
        )
    check_allocation(n_bytes, f"{path}: array {key!r} of shape {shape}")
    with archive.open(info) as stream:
        return fmt.read_array(stream, allow_pickle=False)


class RowOrderWarning(UserWarning):
    """The rows of a codes file look ordered, so its first-80% / last-20% split is biased."""


#: `row_order_problem` flags a factor column that changes level between consecutive rows fewer
#: than ``_ORDER_RATIO`` times as often as a random order would, where a random order would give
#: at least ``_ORDER_MIN_CHANGES`` changes (so that small inputs never warn by chance).
_ORDER_RATIO, _ORDER_MIN_CHANGES = 0.5, 100


def row_order_problem(factors: np.ndarray) -> str | None:
    """Why the rows of ``factors`` ``(n, K)`` look ordered, or None if they look shuffled.

    Rule: some factor column changes level between consecutive rows fewer than half as often as
    a random order would make it change, whose expectation is
    ``(n − 1) · (1 − Σ_l c_l (c_l − 1) / (n (n − 1)))`` for level counts ``c_l``; only columns
    with an expectation of at least 100 changes are judged. A grid in order (the full dSprites
    grid) changes its first column a handful of times; a random order of the same rows is within
    a few standard deviations (each ≤ √expectation) of the expectation, so the rule practically
    never fires on shuffled data.
    """
    factors = np.asarray(factors)
    n = len(factors)
    if n < 2:
        return None
    for k in range(factors.shape[1]):
        column = factors[:, k]
        changes = int(np.count_nonzero(column[1:] != column[:-1]))
        counts = np.unique(column, return_counts=True)[1].astype(np.float64)
        expected = (n - 1) * (1.0 - float(np.sum(counts * (counts - 1))) / (n * (n - 1.0)))
        if expected >= _ORDER_MIN_CHANGES and changes < _ORDER_RATIO * expected:
            return (
                f"factor column {k} changes level {changes:,} times between consecutive rows, "
                f"a random order would give about {expected:,.0f}"
            )
    return None


def score_codes_file(
    path: str | Path, *, dci_backend: str = "fast", shuffle_seed: int | None = None
) -> dict[str, float]:
    """`toybench.metrics.score` of the ``codes`` and ``factors`` stored in an ``.npz``.

    The metrics take the first ⌈0.8 n⌉ rows as train and the rest as test, in the stored order.
    Rows that look ordered (`row_order_problem`) give a biased split: a `RowOrderWarning` says
    so. ``shuffle_seed`` applies one random permutation (``np.random.default_rng(shuffle_seed)
    .permutation(n)``) to the rows of codes and factors alike before scoring.

    Parameters
    ----------
    path : str or Path
    dci_backend : {"fast", "reference"}
    shuffle_seed : int ≥ 0, optional
        Shuffle the rows with this seed first (None: keep the stored order).

    Raises
    ------
    ToybenchError
        One line for an unreadable file, a bad seed, or arrays the metrics refuse (shapes,
        NaN, ...).
    """
    if shuffle_seed is not None and (
        isinstance(shuffle_seed, bool)
        or not isinstance(shuffle_seed, (int, np.integer))
        or shuffle_seed < 0
    ):
        raise ToybenchError(f"shuffle seed must be an integer ≥ 0, got {shuffle_seed!r}")
    codes, factors = load_codes_npz(path)
    try:
        codes, factors = metrics.check_inputs(codes, factors)
        if shuffle_seed is not None:
            order = seeds.numpy_rng(int(shuffle_seed), "shuffle").permutation(len(codes))
            codes, factors = codes[order], factors[order]
        problem = row_order_problem(factors)
        if problem is not None:
            warnings.warn(
                f"{path}: rows look ordered ({problem}), so the first-80% train / last-20% test "
                "split is biased; shuffle them first (toybench score --shuffle-seed 0)",
                RowOrderWarning,
                stacklevel=2,
            )
        return metrics.score(codes, factors, dci_backend=dci_backend)
    except (ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ToybenchError(f"{path}: {message}") from None


def format_scores(scores: Mapping[str, float]) -> str:
    """A two-column text table of scores, keys in the given order."""
    width = max((len(key) for key in scores), default=0)
    return "\n".join(f"{key:<{width}}  {value:.4f}" for key, value in scores.items())

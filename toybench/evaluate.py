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

An ``encode`` callable maps uint8 images ``(n, C, H, W)`` to codes ``(n, L)`` (a numpy array or
anything ``np.asarray`` accepts); no torch is imported here. It must be deterministic (posterior
means, not samples): the generator-based scores render and encode each distinct factor row once
per evaluation and reuse its code wherever the row recurs.
"""

from __future__ import annotations

import dataclasses
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

from toybench import metrics
from toybench.errors import ToybenchError, check_allocation

Encode = Callable[[np.ndarray], Any]


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
    # splits on which the generator-based scores run (with that split's σ)
    intervention_splits: tuple[str, ...] = ("test", "test_decorrelated")

    def __post_init__(self) -> None:
        if self.dci_backend not in metrics.DCI_BACKENDS:
            raise ToybenchError(
                f"dci_backend {self.dci_backend!r} is not one of {list(metrics.DCI_BACKENDS)}"
            )
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "int" and value < 1:
                raise ToybenchError(f"{field.name} must be a positive integer, got {value}")


#: A smaller protocol (about 1/20 of the images) for smoke runs and CPU-only sweeps.
QUICK = EvalConfig(
    factor_vae_train=500,
    factor_vae_eval=250,
    factor_vae_variance=2000,
    beta_vae_train=500,
    beta_vae_eval=250,
    consistency_pairs=200,
)


def _small_blas():
    """One BLAS thread for the scikit-learn fits (logistic regressions on at most 10,000 × L).

    Problems this small gain nothing from a second thread, and on shared cores its hand-offs
    made them up to 10x slower (a 500-point LogisticRegression: 264 ms -> 29 ms on the
    loaded 2-core machine). Results are identical; encoders run outside this limit.
    """
    return threadpool_limits(limits=1, user_api="blas")


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
    """Assignment, pairwise entanglement over DAG edges and DAG leakage, with concept names."""
    names = list(generator.concept_names)
    assignment = metrics.concept_assignment(codes, factors)
    out = {"assignment": assignment.score}
    edges = list(generator.dag.edges)
    if edges:
        pairs = [(names.index(a), names.index(b)) for a, b in edges]
        values = metrics.pairwise_entanglement(codes, factors, pairs)
        for (a, b), value in zip(edges, values, strict=True):
            out[f"entanglement.{a}-{b}"] = float(value)
        out["entanglement"] = float(values.mean())
    parents = [[names.index(p) for p in generator.dag.parents(name)] for name in names]
    leakage = metrics.dag_leakage(codes, factors, parents)
    for k, value in leakage.items():
        out[f"leakage.{names[k]}"] = value
    if leakage:
        out["leakage"] = float(np.mean(list(leakage.values())))
    return out, assignment.latent_of_concept


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
    the Hungarian assignment score, pairwise entanglement of every DAG edge and the DAG leakage of
    every concept with parents. On the splits in ``config.intervention_splits`` the
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
    for split, dataset in datasets.items():
        concepts = tuple(dataset.concepts)
        if concepts != tuple(generator.concept_names):
            raise ToybenchError(
                f"dataset {split!r} has concepts {list(concepts)} but the generator has "
                f"{list(generator.concept_names)}"
            )
        codes = encode_images(encode, dataset.images, batch=config.encode_batch)
        with _small_blas():
            scores = metrics.score(codes, dataset.factors, dci_backend=config.dci_backend)
            graph, latent_of_concept = _graph_scores(codes, dataset.factors, generator)
        scores.update(graph)
        if split in config.intervention_splits:
            rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
            corr = float(dataset.corr)
            fvae = _factor_vae_score(book, corr, rng, config)
            bvae = _beta_vae_score(book, corr, rng, config)
            scores.update(
                {
                    "factor_vae.train_accuracy": fvae.train_accuracy,
                    "factor_vae.eval_accuracy": fvae.eval_accuracy,
                    "factor_vae.n_active": float(fvae.n_active),
                    "beta_vae.train_accuracy": bvae.train_accuracy,
                    "beta_vae.eval_accuracy": bvae.eval_accuracy,
                }
            )
            scores.update(
                _consistency_scores(book, latent_of_concept, corr, rng, config.consistency_pairs)
            )
        out.update({f"{split}.{key}": float(value) for key, value in scores.items()})
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
            order = np.random.default_rng(int(shuffle_seed)).permutation(len(codes))
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

"""evaluate.py: generator-based scores with known answers on a small fake generator whose
"images" spell out the factors, plus an end-to-end run on the shipped toy-causal generator."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from toybench import evaluate as ev
from toybench.errors import ToybenchError

SIZES = (3, 5, 4)
NAMES = ("a", "b", "c")  # a -> b; c independent


class FakeDAG:
    edges = (("a", "b"),)

    def parents(self, name):
        return ("a",) if name == "b" else ()

    def descendants(self, name):
        return frozenset({"b"}) if name == "a" else frozenset()


class FakeGenerator:
    """Contract-shaped generator: b copies a with probability 0.8 (σ < inf); images hold levels."""

    concept_names = NAMES
    concepts = tuple(SimpleNamespace(name=n, n_levels=s) for n, s in zip(NAMES, SIZES, strict=True))
    dag = FakeDAG()

    def sample_noise(self, n, rng):
        return rng.random((n, 3))

    def factors_from_noise(self, noise, *, corr, do=None):
        do = do or {}
        n = len(noise)
        out = np.empty((n, 3), dtype=np.int64)
        out[:, 0] = do.get("a", np.floor(noise[:, 0] * 3))
        keep = noise[:, 1] < (0.8 if np.isfinite(corr) else 0.0)
        free = np.floor((noise[:, 1] * 7919) % 1 * 5)
        out[:, 1] = do.get("b", np.where(keep, out[:, 0], free))
        out[:, 2] = do.get("c", np.floor(noise[:, 2] * 4))
        return out

    def sample_factors(self, n, rng, *, corr, do=None):
        return self.factors_from_noise(self.sample_noise(n, rng), corr=corr, do=do)

    def counterfactual(self, factors, noise, do, *, corr):
        return self.factors_from_noise(noise, corr=corr, do=do)

    def render(self, factors):
        return factors.astype(np.uint8)[:, None, None, :]  # (n, 1, 1, 3)


def oracle(images):
    return images[:, 0, 0, :].astype(float)


def rotated(images):
    q = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    return oracle(images) @ q


SMALL = dataclasses.replace(
    ev.QUICK,
    dci_backend="fast",
    batch_size=16,
    factor_vae_train=120,
    factor_vae_eval=60,
    factor_vae_variance=500,
    beta_vae_train=150,
    beta_vae_eval=60,
    consistency_pairs=200,
)


def test_factor_vae_oracle_is_perfect():
    result = ev.factor_vae_score(
        oracle, FakeGenerator(), corr=0.3, rng=np.random.default_rng(0), config=SMALL
    )
    assert result == (1.0, 1.0, 3)


def test_factor_vae_prunes_collapsed_dims_and_counts_active():
    def with_dead(images):
        return np.c_[np.zeros(len(images)), oracle(images), np.full(len(images), 0.01)]

    result = ev.factor_vae_score(
        with_dead, FakeGenerator(), corr=0.3, rng=np.random.default_rng(0), config=SMALL
    )
    assert result == (1.0, 1.0, 3)  # votes land on the live dims' own indices


def test_factor_vae_all_collapsed():
    def dead(images):
        return np.zeros((len(images), 2))

    assert ev.factor_vae_score(
        dead, FakeGenerator(), corr=0.3, rng=np.random.default_rng(0), config=SMALL
    ) == (0.0, 0.0, 0)


def test_factor_vae_two_factors_in_one_dim_caps_accuracy():
    def mixed(images):  # dim 0 holds a + c: fixing a or fixing c both vote for dim 0
        codes = oracle(images)
        return np.c_[codes[:, 0] + codes[:, 2], codes[:, 1]]

    result = ev.factor_vae_score(
        mixed, FakeGenerator(), corr=np.inf, rng=np.random.default_rng(0), config=SMALL
    )
    assert result.eval_accuracy == pytest.approx(2 / 3, abs=0.12)


def test_beta_vae_oracle_is_perfect():
    result = ev.beta_vae_score(
        oracle, FakeGenerator(), corr=0.3, rng=np.random.default_rng(0), config=SMALL
    )
    assert result == (1.0, 1.0)


def test_scores_are_seeded():
    first = ev.beta_vae_score(
        rotated, FakeGenerator(), corr=0.3, rng=np.random.default_rng(4), config=SMALL
    )
    second = ev.beta_vae_score(
        rotated, FakeGenerator(), corr=0.3, rng=np.random.default_rng(4), config=SMALL
    )
    assert first == second


class CountingEncoder:
    """``rotated`` codes; remembers every image row it was asked to encode."""

    def __init__(self):
        self.rows = []

    def __call__(self, images):
        self.rows.append(images[:, 0, 0, :].copy())
        return rotated(images)

    @property
    def seen(self):
        return np.concatenate(self.rows)


def test_code_book_encodes_each_distinct_row_once_and_returns_its_code():
    gen = FakeGenerator()
    encode = CountingEncoder()
    book = ev._CodeBook(encode, gen, encode_batch=7)
    rng = np.random.default_rng(0)
    for n in (50, 300, 1):  # later calls mostly hit rows already encoded
        factors = gen.sample_factors(n, rng, corr=np.inf)
        np.testing.assert_allclose(book(factors), rotated(gen.render(factors)), rtol=1e-12)
    seen = encode.seen
    assert len(np.unique(seen, axis=0)) == len(seen) <= int(np.prod(SIZES))


def test_code_book_without_a_key_grid_encodes_every_row():
    class HugeGenerator(FakeGenerator):  # 2^63 level combinations: no int64 key
        concepts = tuple(SimpleNamespace(name=n, n_levels=2**21) for n in NAMES)

    gen, encode = HugeGenerator(), CountingEncoder()
    factors = FakeGenerator().sample_factors(40, np.random.default_rng(0), corr=np.inf)
    book = ev._CodeBook(encode, gen, encode_batch=16)
    np.testing.assert_allclose(book(factors), rotated(gen.render(factors)), rtol=1e-12)
    book(factors)
    assert len(encode.seen) == 2 * len(factors)


def test_scores_do_not_depend_on_the_render_chunk(monkeypatch):
    gen, config = FakeGenerator(), dataclasses.replace(SMALL, factor_vae_variance=100)

    def scores():
        return (
            ev.factor_vae_score(
                rotated, gen, corr=0.3, rng=np.random.default_rng(3), config=config
            ),
            ev.beta_vae_score(rotated, gen, corr=0.3, rng=np.random.default_rng(3), config=config),
        )

    default = scores()
    monkeypatch.setattr(ev, "RENDER_CHUNK", 40)  # 2 FactorVAE points, 1 BetaVAE point per chunk
    assert scores() == default


def test_intervention_consistency_oracle():
    scores = ev.intervention_consistency_scores(
        oracle,
        FakeGenerator(),
        np.array([0, 1, 2]),
        corr=0.3,
        rng=np.random.default_rng(0),
        n_pairs=300,
    )
    assert scores["consistency.b"] == 1.0 and scores["consistency.c"] == 1.0
    assert scores["consistency_descendants.a"] == 1.0
    assert 0.3 < scores["consistency.a"] < 1.0  # do(a) also moves its child b's latent


def test_intervention_consistency_unassigned_concept_scores_zero():
    scores = ev.intervention_consistency_scores(
        oracle,
        FakeGenerator(),
        np.array([0, 1, -1]),
        corr=0.3,
        rng=np.random.default_rng(0),
        n_pairs=50,
    )
    assert scores["consistency.c"] == 0.0


def test_responsibilities_oracle_is_diagonal():
    matrix = ev.responsibility_matrix(
        oracle, FakeGenerator(), corr=0.3, rng=np.random.default_rng(0), n_pairs=400
    )
    assert matrix.shape == (3, 3)
    off_diagonal = matrix[~np.eye(3, dtype=bool)]
    assert (np.diag(matrix) > 0.5).all() and (off_diagonal == 0).all()


def test_perturbation_matrix_oracle_roundtrip():
    gen = FakeGenerator()
    factors = gen.sample_factors(200, np.random.default_rng(0), corr=0.3)

    def decode(z):
        return np.clip(np.round(z), 0, np.array(SIZES) - 1).astype(np.uint8)[:, None, None, :]

    matrix = ev.perturbation_matrix_of(oracle, decode, gen.render(factors), delta=1.0)
    not_at_top = (factors < np.array(SIZES) - 1).mean(axis=0)  # +1 is clipped at the top level
    np.testing.assert_allclose(np.diag(matrix), not_at_top)
    assert (matrix[~np.eye(3, dtype=bool)] == 0).all()


def test_encoder_output_is_checked():
    gen = FakeGenerator()
    with pytest.raises(ValueError, match="expected"):
        ev.encode_images(lambda x: np.zeros(len(x)), gen.render(np.zeros((4, 3), dtype=int)))
    with pytest.raises(ValueError, match="NaN"):
        ev.encode_images(
            lambda x: np.full((len(x), 2), np.nan), gen.render(np.zeros((4, 3), dtype=int))
        )


def _dataset(gen, split, corr, n, seed):
    factors = gen.sample_factors(n, np.random.default_rng(seed), corr=corr)
    return SimpleNamespace(
        images=gen.render(factors), factors=factors, concepts=NAMES, corr=corr, split=split
    )


def test_evaluate_encoder_keys_and_oracle_values():
    gen = FakeGenerator()
    datasets = {
        "test": _dataset(gen, "test", 0.3, 400, 1),
        "test_decorrelated": _dataset(gen, "test_decorrelated", np.inf, 400, 2),
    }
    config = dataclasses.replace(SMALL, intervention_splits=("test_decorrelated",))
    scores = ev.evaluate_encoder(oracle, gen, datasets, seed=0, config=config)
    assert all(type(v) is float for v in scores.values())
    for key in (
        "mig",
        "dci.disentanglement",
        "explicitness_test",
        "active_units",
        "assignment",
        "entanglement.a-b",
        "leakage.b",
    ):
        assert f"test.{key}" in scores and f"test_decorrelated.{key}" in scores
    assert "test_decorrelated.factor_vae.eval_accuracy" in scores
    assert "test.factor_vae.eval_accuracy" not in scores
    assert scores["test_decorrelated.factor_vae.eval_accuracy"] == 1.0
    assert scores["test_decorrelated.mig"] > 0.9
    assert scores["test_decorrelated.leakage.b"] == 0.0
    # a and b are 80 % copies under σ = 0.3, so b's latent is informative about a on that split
    assert scores["test.entanglement.a-b"] > scores["test_decorrelated.entanglement.a-b"] + 0.2
    again = ev.evaluate_encoder(oracle, gen, datasets, seed=0, config=config)
    assert again == scores


def test_evaluate_encoder_encodes_each_generated_row_once_across_splits():
    gen = FakeGenerator()
    datasets = {
        "test": _dataset(gen, "test", 0.3, 100, 1),
        "test_decorrelated": _dataset(gen, "test_decorrelated", np.inf, 100, 2),
    }
    encode = CountingEncoder()
    ev.evaluate_encoder(encode, gen, datasets, seed=0, config=SMALL)
    # the two datasets' own images, then at most every grid point once (of ~22,000 rows drawn)
    assert len(encode.seen) <= 200 + int(np.prod(SIZES))


def test_evaluate_encoder_rejects_mismatched_concepts():
    gen = FakeGenerator()
    bad = _dataset(gen, "test", 0.3, 50, 0)
    bad.concepts = ("x", "y", "z")
    with pytest.raises(ToybenchError, match="concepts"):
        ev.evaluate_encoder(oracle, gen, {"test": bad}, seed=0, config=SMALL)


def test_eval_config_validates():
    with pytest.raises(ToybenchError, match="dci_backend"):
        ev.EvalConfig(dci_backend="xgb")
    with pytest.raises(ToybenchError, match="batch_size"):
        ev.EvalConfig(batch_size=0)


def test_evaluate_encoder_on_shipped_toy_causal():
    from toybench import data, specs

    gen = specs.load_generator("toy-causal")
    splits = {
        split: data.make_split(gen, split, corr=0.3, n=300, seed=0)
        for split in ("test", "test_decorrelated")
    }
    projection = np.random.default_rng(0).normal(size=(int(np.prod(gen.image_shape)), 8))

    def encode(images):  # a fixed random projection: a poor but deterministic encoder
        return (images.reshape(len(images), -1) / 255.0) @ projection / 30.0

    config = dataclasses.replace(
        SMALL,
        factor_vae_train=40,
        factor_vae_eval=20,
        factor_vae_variance=200,
        beta_vae_train=60,
        beta_vae_eval=20,
        consistency_pairs=30,
        intervention_splits=("test",),
    )
    scores = ev.evaluate_encoder(encode, gen, splits, seed=0, config=config)
    names = gen.concept_names
    assert {f"test.consistency.{n}" for n in names} <= set(scores)
    assert all(np.isfinite(v) for v in scores.values())
    assert 0.0 <= scores["test.factor_vae.eval_accuracy"] <= 1.0

"""The one evaluation pass (`evaluate_model`, `evaluate_functions`), the PCA reference cache,
the collapse warnings and the summary table, on the shipped toy-causal generator."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from toybench import encoders, metrics
from toybench import evaluate as ev
from toybench.data import make_split
from toybench.metrics.registry import METRIC_INFO, metric_info
from toybench.models import build_model
from toybench.specs import load_generator

REPO = Path(__file__).resolve().parents[1]
N_TEST = 200
TINY = dataclasses.replace(  # small interventional scores; QUICK in the one slow test
    ev.QUICK, batch_size=8, factor_vae_train=20, factor_vae_eval=10, factor_vae_variance=100,
    beta_vae_train=20, beta_vae_eval=10, consistency_pairs=20, precision="fp32",
)


@pytest.fixture(scope="module", autouse=True)
def _data_root(tmp_path_factory):
    """Any data cache goes to a temporary folder (main has none; its make_split has no cache
    argument, so the tests do not pass one)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TOYBENCH_DATA_ROOT", str(tmp_path_factory.mktemp("data")))
    yield
    patch.undo()


@pytest.fixture(scope="module")
def gen():
    return load_generator("toy-causal")


@pytest.fixture(scope="module")
def splits(gen):
    sizes = {"train": 400, "test": N_TEST, "test_decorrelated": N_TEST}
    return {name: make_split(gen, name, corr=0.3, n=n, seed=0) for name, n in sizes.items()}


def _model(gen, family="vae", **config):
    from toybench.models import model_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model(family, model_config(family, config), image_shape=gen.image_shape,
                           dag=gen.dag, concept_sizes={c.name: c.n_levels for c in gen.concepts})


@pytest.fixture(scope="module")
def vae(gen):
    return _model(gen, latent_dim=6)  # untrained: a real network, random but deterministic


@pytest.fixture(scope="module")
def evaluation(gen, splits, vae):
    return ev.evaluate_model(vae, gen, splits, seed=0, config=TINY)


# --- one pass --------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_evaluation_keys_are_registered_and_within_bounds(gen, splits, vae):
    quick = dataclasses.replace(ev.QUICK, precision="fp32")  # bf16: ~10x slower without AVX-512
    m = ev.evaluate_model(vae, gen, splits, seed=0, config=quick).metrics
    assert len(m) > 100
    for key, value in m.items():
        info = metric_info(key)  # KeyError for an unregistered key
        assert info.contains(value), (key, value, info.bounds)
    for split in ("test", "test_decorrelated"):
        for key in ("mig", "dci.disentanglement", "factor_vae.eval_accuracy", "consistency.hue",
                    "entanglement.size-hue", "leakage.rotation", "recon.bce", "recon.pca_bce",
                    "recon.bce_vs_pca", "recon.mse_vs_pca", "elbo"):
            assert isinstance(m[f"{split}.{key}"], float), f"{split}.{key}"
    assert m["n_codes"] == 6.0 and isinstance(m["warnings"], list)
    assert {"test.collapse.no_active_units", "test.collapse.few_active_units",
            "test.collapse.recon_no_better_than_pca"} <= set(m)


def test_evaluation_artefacts_come_from_the_scored_codes(gen, splits, vae, evaluation):
    e = evaluation
    assert set(e.codes) == {"test", "test_decorrelated"}
    for name, codes in e.codes.items():
        assert codes.shape == (N_TEST, 6) and codes.dtype == np.float64
        # one encoding, in the engine's chunks of encode_batch, each batched by the adapter
        direct = ev.encode_images(lambda x: encoders.encode_images(vae, x, precision="fp32"),
                                  splits[name].images, batch=TINY.encode_batch)
        np.testing.assert_array_equal(codes, direct)
    dci = metrics.dci(e.codes["test"], splits["test"].factors, backend="fast")
    np.testing.assert_array_equal(e.importance, dci.importance)  # the same fit, no refit
    assert e.metrics["test.dci.disentanglement"] == dci.disentanglement
    assert e.kl_per_unit.shape == (6,) and (e.kl_per_unit >= 0).all()
    assert e.perturbation.shape == (6, 6) and np.isfinite(e.perturbation).all()
    assert e.artefacts["codes"] is e.codes and e.artefacts["importance"] is e.importance


def test_evaluate_model_scores_equal_the_separate_functions(gen, splits, vae, evaluation):
    m = evaluation.metrics
    eval_sets = {name: splits[name] for name in ("test", "test_decorrelated")}
    scores = ev.evaluate_encoder(lambda x: encoders.encode_images(vae, x, precision="fp32"), gen,
                                 eval_sets, seed=0, config=TINY)
    assert scores == {key: m[key] for key in scores}
    images = splits["test"].images
    codes = encoders.encode_images(vae, images, precision="fp32")  # the adapter's batches of 500
    recon = metrics.reconstruction_errors(images,
                                          encoders.decode_codes(vae, codes, precision="fp32"))
    assert (m["test.recon.bce"], m["test.recon.mse"]) == (recon.bce, recon.mse)
    assert m["test.elbo"] == encoders.elbo_terms(vae, images, seed=0, precision="fp32").elbo
    pca = metrics.recon.pca_references(splits["train"].images, {"test": images}, 6, seed=0)
    assert m["test.recon.pca_bce"] == pca["test"].bce
    assert m["test.recon.bce_vs_pca"] == recon.bce / pca["test"].bce


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_scores_do_not_depend_on_the_evaluation_schedule(gen, splits, vae, monkeypatch,
                                                         precision):
    # One CPU: every score in turn. Two: the DCI fits in a second thread, and in bf16 the
    # interventional encoding beside them on one torch thread (encoders.torch_threads), the
    # codebook filled in another order. Same scores and importance, bit for bit.
    calls = []
    torch_threads = encoders.torch_threads

    @contextlib.contextmanager
    def counted(n):
        calls.append(n)
        with torch_threads(n):
            assert torch.get_num_threads() == 1
            yield

    monkeypatch.setattr(encoders, "torch_threads", counted)
    monkeypatch.setattr("toybench.hardware.cpu_count", lambda: 2)
    config = dataclasses.replace(TINY, precision=precision)
    threads = torch.get_num_threads()
    runs = []
    for cap in ("1", "2"):
        monkeypatch.setenv("TOYBENCH_THREADS", cap)
        runs.append(ev.evaluate_model(vae, gen, splits, seed=0, config=config,
                                      perturbation_images=0))
    assert calls == ([1] if precision == "bf16" else [])  # beside the fits: bf16, 2 CPUs
    assert torch.get_num_threads() == threads  # restored
    assert runs[0].metrics == runs[1].metrics
    assert np.array_equal(runs[0].importance, runs[1].importance)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_codes_on_one_thread_are_the_same_bits(gen, splits, vae, precision):
    images = splits["test"].images
    codes = encoders.encode_images(vae, images, precision=precision)
    with encoders.torch_threads(1):
        alone = encoders.encode_images(vae, images, precision=precision)
    assert np.array_equal(codes, alone)


def test_pca_model_has_no_elbo_and_no_warnings(gen, splits):
    pca = _model(gen, "pca", n_components=6)
    pca.fit(torch.from_numpy(splits["train"].images).float().div_(255.0))
    e = ev.evaluate_model(pca, gen, splits, seed=0, config=TINY, perturbation_images=0)
    assert e.kl_per_unit is None and e.perturbation is None
    assert not any(key.endswith(".elbo") for key in e.metrics)
    # PCA is its own reference, up to float32 rounding: a tie, not a warning
    assert e.metrics["test.recon.bce_vs_pca"] == pytest.approx(1.0, abs=1e-4)
    assert e.metrics["test.collapse.recon_no_better_than_pca"] == 0.0
    assert e.metrics["warnings"] == [] and e.warnings == ()


def _linear_codec(gen, splits, n_codes=5):
    """A fixed linear encoder and its least-squares decoder: an external, torch-free model."""
    x = splits["train"].images.reshape(len(splits["train"].images), -1) / 255.0
    mean = x.mean(axis=0)
    basis = np.linalg.svd(x - mean, full_matrices=False)[2][:n_codes]  # (L, D)

    def encode(images):
        return (images.reshape(len(images), -1) / 255.0 - mean) @ basis.T

    def decode(codes):
        return np.clip(codes @ basis + mean, 0, 1).reshape(len(codes), *gen.image_shape)

    return encode, decode


def test_evaluate_functions_without_decoder_has_no_reconstruction(gen, splits):
    encode, _ = _linear_codec(gen, splits)
    e = ev.evaluate_functions(encode, gen, splits, seed=0, config=TINY)
    assert not any(".recon." in key or key.endswith(".elbo") for key in e.metrics)
    assert e.perturbation is None and e.kl_per_unit is None
    assert e.importance.shape == (5, len(gen.concept_names))
    assert "test.collapse.no_active_units" in e.metrics
    assert "test.collapse.recon_no_better_than_pca" not in e.metrics


def test_evaluate_functions_with_decoder(gen, splits):
    encode, decode = _linear_codec(gen, splits)
    e = ev.evaluate_functions(encode, gen, splits, seed=0, config=TINY, decode=decode,
                              n_codes=5)
    assert e.metrics["test.recon.bce"] > 0 and e.perturbation.shape == (5, 5)
    for key, value in e.metrics.items():
        assert metric_info(key).contains(value), key
    with pytest.raises(ev.ToybenchError, match="expected n_codes=4"):
        ev.evaluate_functions(encode, gen, splits, seed=0, config=TINY, n_codes=4)
    with pytest.raises(ev.ToybenchError, match="no split to evaluate"):
        ev.evaluate_functions(encode, gen, {"train": splits["train"]}, seed=0, config=TINY)


def test_evaluate_imports_no_torch():
    code = ("import sys, toybench.evaluate, toybench.metrics.registry; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


# --- the PCA reference cache -----------------------------------------------------------------


def test_pca_reference_cache_gives_the_fresh_numbers(splits, tmp_path, monkeypatch):
    fresh = ev.pca_reference_for(splits, 6, seed=0)
    first = ev.pca_reference_for(splits, 6, seed=0, cache_dir=tmp_path)
    (path,) = tmp_path.glob("pca-*.json")
    assert first == fresh

    def no_fit(*args, **kwargs):
        raise AssertionError("the cached reference was fitted again")

    monkeypatch.setattr(metrics.recon, "pca_references", no_fit)
    assert ev.pca_reference_for(splits, 6, seed=0, cache_dir=tmp_path) == fresh  # bit for bit
    with pytest.raises(AssertionError, match="fitted again"):  # another seed: another key
        ev.pca_reference_for(splits, 6, seed=1, cache_dir=tmp_path)
    changed = dict(splits)
    images = splits["test"].images.copy()
    images[0, 0, 0, 0] ^= 1  # one pixel of one split
    changed["test"] = dataclasses.replace(splits["test"], images=images)
    with pytest.raises(AssertionError, match="fitted again"):
        ev.pca_reference_for(changed, 6, seed=0, cache_dir=tmp_path)
    monkeypatch.undo()
    path.write_text("{not json")  # a damaged file is recomputed and replaced
    assert ev.pca_reference_for(splits, 6, seed=0, cache_dir=tmp_path) == fresh
    assert json.loads(path.read_text())["references"]["test"]["bce"] == fresh["test"].bce


def test_a_given_reference_is_used_and_checked(gen, splits, vae):
    reference = ev.pca_reference_for(splits, 6, seed=0)
    e = ev.evaluate_model(vae, gen, splits, seed=0, config=TINY, reference=reference,
                          perturbation_images=0)
    assert e.metrics["test.recon.pca_bce"] == reference["test"].bce
    with pytest.raises(ev.ToybenchError, match="has 3 components; this evaluation needs 6"):
        ev.evaluate_model(vae, gen, splits, seed=0, config=TINY, perturbation_images=0,
                          reference=ev.pca_reference_for(splits, 3, seed=0))
    with pytest.raises(ev.ToybenchError, match=r"not \['test_decorrelated'\]"):
        ev.evaluate_model(vae, gen, splits, seed=0, config=TINY, perturbation_images=0,
                          reference={"test": reference["test"]})


def test_pca_reference_cache_leaves_odd_paths_alone(splits, tmp_path):
    fresh = ev.pca_reference_for(splits, 6, seed=0)
    key = ev._pca_cache_key(splits, 6, 0)
    (tmp_path / f"pca-{key[:16]}.json").mkdir()
    assert ev.pca_reference_for(splits, 6, seed=0, cache_dir=tmp_path) == fresh
    assert (tmp_path / f"pca-{key[:16]}.json").is_dir()
    with pytest.raises(ev.ToybenchError, match="needs a 'train' split"):
        ev.pca_reference_for({"test": splits["test"]}, 6, seed=0)


# --- collapse warnings and the summary -------------------------------------------------------


def _scores(active, ratio, n_codes=10):
    return {"n_codes": float(n_codes), "test.active_units": float(active),
            "test.recon.bce_vs_pca": ratio}


@pytest.mark.parametrize(
    ("active", "ratio", "expected"),
    [
        (10, 0.85, []),
        (0, 1.78, ["posterior collapse", "reconstructions no better than PCA: recon.bce is 1.78x"]),
        (3, 0.90, ["few active units: 3 of 10 on the test split, fewer than the 6 concepts"]),
        (6, 0.90, []),
        (10, 1.0 + 2e-8, []),  # a tie with PCA (the PCA baseline itself)
        (10, 1.01, ["reconstructions no better than PCA"]),
    ],
)
def test_collapse_rules(active, ratio, expected):
    warnings = ev.collapse_warnings(_scores(active, ratio), 6)
    assert len(warnings) == len(expected)
    for line, fragment in zip(warnings, expected, strict=True):
        assert fragment in line
    flags = ev.collapse_flags(_scores(active, ratio), 6)
    assert sorted(flags) == ["test.collapse.few_active_units", "test.collapse.no_active_units",
                             "test.collapse.recon_no_better_than_pca"]
    assert sum(flags.values()) == len(expected)


def test_few_active_units_needs_more_concepts_than_codes_active():
    assert ev.collapse_warnings(_scores(4, 0.9, n_codes=4), 6) == []  # every code is used
    assert ev.collapse_warnings({"n_codes": 4.0}, 6) == []  # nothing to judge
    assert ev.collapse_flags({"n_codes": 4.0}, 6) == {}


def test_summary_table_arrows_and_warnings():
    m = {"test.recon.bce": 120.0, "test_decorrelated.recon.bce": 150.0, "test.mig": 0.5,
         "train.steps": 7, "train.nan_skipped_steps": 0,
         "warnings": ["posterior collapse: no active units"]}
    header, *rows = ev.summary_table(m).splitlines()
    assert "test_decorrelated" in header
    assert rows[0].split()[:2] == ["recon.bce", "↓"] and rows[1].split()[:2] == ["mig", "↑"]
    assert rows[-2] == "train: 7 steps, 0 skipped (non-finite)"
    assert rows[-1] == "warning: posterior collapse: no active units"
    assert all(key in METRIC_INFO for key in ev.SUMMARY_KEYS)


@pytest.mark.slow
def _reduced_run(name: str, generator: str, overrides: list[str]):
    """Train a shipped baseline (quick protocol + overrides) at σ = inf and score it."""
    from toybench.baselines import load_baseline
    from toybench.train import train

    gen = load_generator(generator)
    b = load_baseline(name, protocol="quick", overrides=overrides)
    data = {split: make_split(gen, split, corr=float("inf"), seed=1,
                              n=b.train.n_train if split == "train" else b.train.n_test)
            for split in ("train", "test", "test_decorrelated")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net = build_model(b.family, b.model, image_shape=gen.image_shape)
    train(net, data["train"].images, b.train, seed=1, progress=False)
    return ev.evaluate_model(net, gen, data, seed=1, config=TINY, perturbation_images=0), gen


@pytest.mark.slow
@pytest.mark.parametrize("name", ["beta-vae", "beta-tcvae"])
def test_shipped_beta_models_do_not_collapse_on_toy_causal(name):
    """Issue 9's guard at a reduced size: the shipped β-VAE and β-TCVAE (β normalized to
    32x32, the KL delay of the quick protocol) keep at least one active unit per concept where
    the old settings (β = 8 unnormalized, no delay: the test below) collapse to none."""
    e, gen = _reduced_run(name, "toy-causal",
                          ["train.steps=150", "train.n_train=2000", "train.n_test=300"])
    assert e.metrics["test.active_units"] >= len(gen.concept_names)
    assert not any(w.startswith("posterior collapse") for w in e.warnings)


@pytest.mark.slow
def test_shipped_beta_vae_leaves_the_mean_image_on_dsprites_pairs_32():
    """dsprites-pairs-32's small sprites: the decoder first learns the mean image (BCE about
    2.2x PCA's), and the protocols' 200-step pure-autoencoder phase is what let β-VAE leave it.
    At 500 steps x 128 it must keep at least one active unit per concept and beat PCA."""
    e, gen = _reduced_run("beta-vae", "dsprites-pairs-32",
                          ["train.steps=500", "train.n_train=5000", "train.n_test=300",
                           "train.kl_delay_steps=200", "train.kl_warmup_steps=200"])
    assert e.metrics["test.active_units"] >= len(gen.concept_names)
    assert e.metrics["test.recon.bce_vs_pca"] < 1.0


def test_readme_beta8_example_warns_of_collapse(gen):
    """README (before issue 9's protocols): `toybench run --model beta-vae --corr 0.4 --seed 1
    --protocol quick --set model.beta=8` ended with 0 active units and grey reconstructions and
    said nothing. The same settings (β = 8 unnormalized, KL ramp from step 0, constant learning
    rate), at a third of the steps and a fifth of the images, collapse the same way: the
    warnings must say so."""
    from toybench.baselines import load_baseline
    from toybench.train import train

    b = load_baseline("beta-vae", protocol="quick", overrides=[
        "model.beta=8", "model.beta_normalized=false", "train.steps=100", "train.n_train=1000",
        "train.n_test=300", "train.kl_delay_steps=0", "train.kl_warmup_steps=30",
        "train.lr_schedule=constant"])
    data = {name: make_split(gen, name, corr=0.4, n=b.train.n_train if name == "train"
                             else b.train.n_test, seed=1)
            for name in ("train", "test", "test_decorrelated")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net = build_model(b.family, b.model, image_shape=gen.image_shape)
    train(net, data["train"].images, b.train, seed=1, progress=False)
    e = ev.evaluate_model(net, gen, data, seed=1, config=TINY, perturbation_images=0)
    assert e.metrics["test.active_units"] == 0.0
    assert e.metrics["test.collapse.no_active_units"] == 1.0
    assert e.metrics["test.recon.bce_vs_pca"] > 1.5
    assert e.warnings[0].startswith("posterior collapse")
    assert "reconstructions no better than PCA" in e.warnings[1]
    assert "warning: posterior collapse" in ev.summary_table(e.metrics)

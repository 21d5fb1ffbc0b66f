"""Contract tests over every shipped baseline, plus known answers for the models' building blocks.

Every shipped baseline is built from its resolved ``family`` and model config (at 32×32, and a
64×64 smoke check) and gets the same checks: it satisfies the ``Model`` protocol, its ``loss``
takes the common keywords, finite loss, every parameter gets a gradient, the loss falls within 20
CPU Adam steps, encode/decode shapes, units cover the codes, bf16 autocast with channels_last,
pinned parameter counts. (The loader itself: ``test_baselines.py``.)
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from toybench.baselines import baseline_names, load_baseline
from toybench.configs import effective_beta
from toybench.errors import ToybenchError
from toybench.models import MODELS, Fittable, LossOutput, Model, Paired, build_model, model_config
from toybench.models.ada import aggregate, shared_units, unit_kl
from toybench.models.common import kl_normal, kl_standard_normal, log_normal
from toybench.models.csvae import precision_weighted
from toybench.models.likelihoods import Likelihood
from toybench.models.nets import resolve_arch, subpixel_conv_transpose
from toybench.models.vae import total_correlation
from toybench.pairs import PairSpec
from toybench.scm import DAG

BASELINES = {name: load_baseline(name) for name in baseline_names()}
NEURAL = sorted(name for name, b in BASELINES.items() if MODELS[b.family].trainable)
LOSS_KEYWORDS = ("factors", "kl_weight", "recon_weight", "generator", "diagnostics")

CONCEPT_SIZES = {"shape": 3, "scale": 4, "pos_x": 6, "pos_y": 6}
NODES = tuple(CONCEPT_SIZES)
DAGS = {
    "empty": DAG(NODES, ()),
    "chain": DAG(NODES, (("shape", "scale"), ("scale", "pos_x"), ("pos_x", "pos_y"))),
    "fork": DAG(NODES, (("shape", "scale"), ("shape", "pos_x"), ("shape", "pos_y"))),
    "collider": DAG(NODES, (("shape", "pos_y"), ("pos_x", "pos_y"), ("scale", "pos_y"))),
}
TEST_DAG = DAG(NODES, (("shape", "scale"), ("shape", "pos_x"), ("scale", "pos_x")))

# Parameters at (1, 32, 32) with TEST_DAG / CONCEPT_SIZES, and at (3, 64, 64). Pinned so that an
# architecture change is a deliberate, visible edit. The 64×64 VAE is the Burgess et al. network:
# convs 1,568 (RGB) + 16,416 + 32,832 + 65,600, FC 262,400, head 5,140; decoder FC 2,816 +
# 263,168, deconvs 65,600 + 32,800 + 16,416 + 1,539 (RGB) = 766,295. CSVAE adds its prior MLPs
# (228 for scale | shape, 292 for pos_x | shape, scale) and classifiers (57); the head and decoder
# input keep the VAE's size because 4 concepts x 2 units + 2 style units = 10 codes. Ada-GVAE and
# Ada-ML-VAE are the VAE's network trained on pairs: the same count.
PARAMS_32 = {
    "vae": 633045, "beta-vae": 633045, "beta-tcvae": 633045,
    "csvae": 633622, "hvae": 702565, "pca": 0, "ada-gvae": 633045, "ada-ml-vae": 633045,
}
PARAMS_64 = {
    "vae": 766295, "beta-vae": 766295, "beta-tcvae": 766295,
    "csvae": 766872, "hvae": 835815, "pca": 0, "ada-gvae": 766295, "ada-ml-vae": 766295,
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny batches gain nothing from threads; one thread avoids oversubscribing a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _build(name: str, image_shape=(1, 32, 32), dag=TEST_DAG, **overrides):
    baseline = BASELINES[name]
    config = dataclasses.replace(baseline.model, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # parameter init only; the caller's RNG is untouched
        return build_model(baseline.family, config, image_shape=image_shape, dag=dag,
                           concept_sizes=CONCEPT_SIZES)


def _batch(n: int = 8, channels: int = 1, size: int = 32, seed: int = 0):
    """Bright squares whose size and position follow the factors; ``(x, factors)``."""
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, k, n) for k in CONCEPT_SIZES.values()], axis=1)
    images = np.zeros((n, channels, size, size), np.float32)
    for i, (shape, scale, px, py) in enumerate(factors):
        half = size // 16 + scale * size // 16
        cx = half + px * (size - 2 * half) // 5
        cy = half + py * (size - 2 * half) // 5
        images[i, :, cy - half:cy + half, cx - half:cx + half] = 0.4 + 0.3 * shape
    return torch.from_numpy(images), torch.from_numpy(factors.astype(np.int64))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the baseline files -------------------------------------------------------------------------

def test_all_eight_baselines_ship():
    assert set(BASELINES) == {"vae", "beta-vae", "beta-tcvae", "csvae", "hvae", "pca",
                              "ada-gvae", "ada-ml-vae"}
    assert set(PARAMS_32) == set(BASELINES)


@pytest.mark.parametrize("name", NEURAL)
@pytest.mark.parametrize("protocol", ["quick", "standard"])
def test_protocol_image_budget(name, protocol):
    # standard <= 5 min: 700k images at ~3,000 img/s (the CSVAE, 32x32, bf16, 2 cores) leave a
    # minute for data and scoring; quick (a <= 60 s smoke test) is a small fraction of that.
    # A batch of a model trained on pairs holds two images per example.
    baseline = load_baseline(name, protocol=protocol)
    per_example = 2 if baseline.family == "ada" else 1
    images = baseline.train.steps * baseline.train.batch_size * per_example
    assert images <= {"quick": 60_000, "standard": 700_000}[protocol]


# --- the model contract, over every registered family and every shipped baseline -------------

@pytest.mark.parametrize("family", sorted(MODELS))
def test_every_family_builds_and_satisfies_the_model_protocol(family):
    config_class, build, trainable = MODELS[family]
    assert dataclasses.is_dataclass(config_class) and isinstance(trainable, bool)
    model = build(config_class(), image_shape=(1, 32, 32), dag=TEST_DAG,
                  concept_sizes=CONCEPT_SIZES)
    assert model.trainable is trainable and isinstance(model, Model)
    assert isinstance(model, Fittable) == (not trainable)
    parameters = inspect.signature(model.loss).parameters
    assert list(parameters)[:2] == ["x", "step"]
    for keyword in LOSS_KEYWORDS:
        assert parameters[keyword].kind is inspect.Parameter.KEYWORD_ONLY, keyword
    defaults = {k: parameters[k].default for k in LOSS_KEYWORDS}
    assert defaults == {"factors": None, "kl_weight": 1.0, "recon_weight": 1.0,
                        "generator": None, "diagnostics": True}
    assert isinstance(model.n_codes, int) and model.n_codes >= 1


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_loss_takes_every_common_keyword(name):
    model = _build(name)
    x, factors = _batch()
    if isinstance(model, Fittable):
        model.fit(_batch(n=32, seed=1)[0])
    for diagnostics in (True, False):
        out = model.loss(x, 3, factors=factors, kl_weight=0.5, recon_weight=2.0,
                         generator=_gen(), diagnostics=diagnostics)
        assert isinstance(out, LossOutput) and torch.isfinite(out.total)
    units = model.units()
    assert isinstance(units, list) and units


def test_a_model_missing_a_member_is_not_a_model():
    class NoUnits(torch.nn.Module):
        trainable = True
        n_codes = 2

        def loss(self, x, step, **kw): ...  # noqa: ANN001, ANN003, D102
        def encode(self, x): ...  # noqa: ANN001, D102
        def decode(self, z): ...  # noqa: ANN001, D102
        def posteriors(self, x): ...  # noqa: ANN001, D102

    assert not isinstance(NoUnits(), Model)
    assert isinstance(_build("pca"), Fittable) and not isinstance(_build("vae"), Fittable)


# --- contract tests over every neural baseline --------------------------------------------------

@pytest.mark.parametrize("name", NEURAL)
def test_loss_is_finite_with_consistent_fields(name):
    model = _build(name)
    x, factors = _batch()
    out = model.loss(x, 0, factors=factors, generator=_gen())
    for value in (out.total, out.recon, out.kl):
        assert value.shape == () and value.dtype == torch.float32 and torch.isfinite(value)
    assert out.kl_per_unit.shape == (model.n_codes,)
    assert torch.isfinite(out.kl_per_unit).all() and (out.kl_per_unit >= -1e-6).all()
    torch.testing.assert_close(out.kl_per_unit.sum(), out.kl)
    assert all(v.shape == () and torch.isfinite(v) for v in out.extras.values())
    # Bernoulli NLL of [0, 1] images is positive; the untrained decoder predicts ~0.5 everywhere.
    assert 0 < out.recon.item() < 1024 * math.log(2) * 1.5


@pytest.mark.parametrize("name", NEURAL)
def test_every_parameter_gets_a_gradient(name):
    model = _build(name)
    x, factors = _batch()
    model.loss(x, 0, factors=factors, kl_weight=0.5, generator=_gen()).total.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NEURAL)
def test_loss_falls_within_20_adam_steps(name):
    model = _build(name)
    x, factors = _batch()
    before = model.loss(x, 0, factors=factors, generator=_gen(1)).total.item()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    noise = _gen(2)
    for step in range(20):
        optimizer.zero_grad()
        model.loss(x, step, factors=factors, generator=noise).total.backward()
        optimizer.step()
    after = model.loss(x, 20, factors=factors, generator=_gen(1)).total.item()
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("image_shape", [(1, 32, 32), (3, 64, 64)])
def test_encode_decode_shapes_units_and_parameter_count(name, image_shape):
    model = _build(name, image_shape=image_shape)
    x, _ = _batch(n=4, channels=image_shape[0], size=image_shape[1])
    if not model.trainable:
        model.fit(_batch(n=32, channels=image_shape[0], size=image_shape[1], seed=1)[0])
    expected = (PARAMS_32 if image_shape[1] == 32 else PARAMS_64)[name]
    assert sum(p.numel() for p in model.parameters()) == expected
    with torch.no_grad():
        codes = model.encode(x)
        image = model.decode(codes)
        stats = model.posteriors(x)
    if model.trainable:
        factors = _batch(n=4, channels=image_shape[0], size=image_shape[1])[1]
        assert torch.isfinite(model.loss(x, 0, factors=factors, generator=_gen()).total)
    assert codes.shape == (4, model.n_codes) and torch.isfinite(codes).all()
    assert image.shape == x.shape and image.min() >= 0 and image.max() <= 1
    columns = sorted(c for group in model.units() for c in group.columns)
    assert columns == list(range(model.n_codes))
    if stats:  # PCA has no posterior
        torch.testing.assert_close(torch.cat([mu for mu, _ in stats.values()], dim=1), codes)
        assert all((sigma > 0).all() for _, sigma in stats.values())
        assert [g.name for g in model.units()] == list(stats)


@pytest.mark.parametrize("name", NEURAL)
def test_bf16_autocast_channels_last_matches_fp32(name):
    model = _build(name)
    x, factors = _batch()
    reference = model.loss(x, 0, factors=factors, generator=_gen(3)).total
    model = model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.loss(x.contiguous(memory_format=torch.channels_last), 0, factors=factors,
                         generator=_gen(3))
    assert out.total.dtype == torch.float32 and torch.isfinite(out.total)
    assert abs(out.total.item() - reference.item()) < 0.02 * abs(reference.item())
    out.total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", NEURAL)
def test_same_generator_same_loss(name):
    model = _build(name)
    x, factors = _batch()
    first = model.loss(x, 0, factors=factors, generator=_gen(5)).total
    second = model.loss(x, 0, factors=factors, generator=_gen(5)).total
    third = model.loss(x, 0, factors=factors, generator=_gen(6)).total
    assert first.item() == second.item() and first.item() != third.item()


# --- VAE / β-VAE / β-TCVAE ----------------------------------------------------------------------

def test_vae_objective_is_recon_plus_weighted_kl():
    x, _ = _batch()
    model = _build("beta-vae", beta_normalized=False)
    assert model.config.beta == 4.0 and model.beta == 4.0
    out = model.loss(x, 0, kl_weight=0.25, recon_weight=2.0, generator=_gen())
    torch.testing.assert_close(out.total, 2.0 * out.recon + 0.25 * 4.0 * out.kl)
    out = model.loss(x, 0, kl_weight=0.0, generator=_gen())
    torch.testing.assert_close(out.total, out.recon)


@pytest.mark.parametrize("family", ["vae", "csvae", "hvae"])
def test_normalized_beta_scales_its_excess_over_1_with_the_pixel_count(family):
    """β given at 64x64: the part above 1 scales with H·W (grey or RGB alike), β = 1 stays the
    ELBO; the loss uses the scaled value and an unnormalized ``beta`` is used as it is."""
    for shape, want in [((1, 64, 64), 8.0), ((3, 64, 64), 8.0), ((1, 32, 32), 2.75),
                        ((3, 32, 32), 2.75), ((1, 128, 128), 29.0)]:
        assert effective_beta(model_config(family, {"beta": 8.0, "beta_normalized": True}),
                              shape) == want
        assert effective_beta(model_config(family, {"beta": 8.0}), shape) == 8.0
    assert effective_beta(model_config(family, {"beta": 1.0, "beta_normalized": True}),
                          (3, 32, 32)) == 1.0
    x, _ = _batch()
    plain = _build(family, beta=2.75)
    scaled = _build(family, beta=8.0, beta_normalized=True)
    assert scaled.beta == plain.beta == 2.75
    scaled.load_state_dict(plain.state_dict())
    a = plain.loss(x, 0, kl_weight=0.5, generator=_gen(), diagnostics=False)
    b = scaled.loss(x, 0, kl_weight=0.5, generator=_gen(), diagnostics=False)
    torch.testing.assert_close(a.total, b.total)


def test_normalized_tc_beta_scales_its_excess_over_1():
    x, _ = _batch()
    plain = _build("beta-tcvae", tc_beta=2.25, beta_normalized=False)
    scaled = _build("beta-tcvae", tc_beta=6.0, beta_normalized=True)  # at 1x32x32: 1 + 5/4
    assert (scaled.beta, scaled.tc_beta) == (1.0, 2.25) and plain.tc_beta == 2.25
    scaled.load_state_dict(plain.state_dict())
    torch.testing.assert_close(plain.loss(x, 0, generator=_gen()).total,
                               scaled.loss(x, 0, generator=_gen()).total)


def test_beta_tcvae_adds_weighted_total_correlation():
    x, _ = _batch()
    model = _build("beta-tcvae")
    out = model.loss(x, 0, generator=_gen())
    tc_beta = model.tc_beta
    torch.testing.assert_close(out.total, out.recon + out.kl + (tc_beta - 1.0) * out.extras["tc"])


def test_tc_diagnostic_is_skipped_only_when_it_is_not_part_of_the_loss():
    x, _ = _batch()
    vae = _build("vae")
    full = vae.loss(x, 0, generator=_gen())
    lean = vae.loss(x, 0, generator=_gen(), diagnostics=False)
    assert "tc" in full.extras and "tc" not in lean.extras
    torch.testing.assert_close(lean.total, full.total, rtol=0, atol=0)  # same objective
    tcvae = _build("beta-tcvae")
    assert "tc" in tcvae.loss(x, 0, generator=_gen(), diagnostics=False).extras  # in the loss


@pytest.mark.parametrize(("c_in", "c_out", "size"), [(32, 1, 8), (32, 3, 16), (5, 6, 3), (2, 2, 1)])
def test_subpixel_conv_transpose_equals_conv_transpose2d(c_in, c_out, size):
    gen = torch.Generator().manual_seed(c_in * 100 + c_out)
    x = torch.randn(2, c_in, size, size, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(c_in, c_out, 4, 4, dtype=torch.float64, generator=gen,
                         requires_grad=True)
    bias = torch.randn(c_out, dtype=torch.float64, generator=gen, requires_grad=True)
    expected = torch.nn.functional.conv_transpose2d(x, weight, bias, stride=2, padding=1)
    got = subpixel_conv_transpose(x, weight, bias)
    assert got.shape == (2, c_out, 2 * size, 2 * size)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    seed = torch.randn(expected.shape, dtype=torch.float64, generator=gen)
    grads = torch.autograd.grad((expected * seed).sum(), (x, weight, bias))
    sub_grads = torch.autograd.grad((got * seed).sum(), (x, weight, bias))
    for a, b in zip(sub_grads, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    no_bias = subpixel_conv_transpose(x, weight, None)
    torch.testing.assert_close(no_bias, expected - bias[None, :, None, None])


def test_total_correlation_known_answer_for_identical_posteriors():
    # All M posteriors equal and factorized: the importance weights sum to 1, so the estimated
    # q(z) is q(z|x) = Π_d q(z_d|x) and TC = 0 exactly, whatever N.
    gen = _gen()
    mu = torch.randn(1, 5, generator=gen).expand(7, 5)
    logvar = torch.randn(1, 5, generator=gen).expand(7, 5)
    z = torch.randn(7, 5, generator=gen)
    for n in (7, 1000):
        assert total_correlation(z, mu, logvar, dataset_size=n).item() == pytest.approx(0, abs=1e-4)


def test_total_correlation_matches_the_gaussian_closed_form():
    # Posterior means on the diagonal (x, x) + small noise, posterior σ = 0.3: the aggregate q(z)
    # is bivariate Gaussian with unit covariance and variances 1 + 0.05² + 0.3², so
    # TC = −½ log(1 − ρ²) with ρ = 1 / 1.0925 (0.91 nats); independent means give TC ≈ 0.
    gen = _gen()
    m, sigma = 512, 0.3
    shared = torch.randn(m, 1, generator=gen).repeat(1, 2)  # (m, 2), both columns equal
    dependent = shared + 0.05 * torch.randn(m, 2, generator=gen)
    independent = torch.randn(m, 2, generator=gen)
    logvar = torch.full((m, 2), math.log(sigma**2))
    rho = 1.0 / (1.0 + 0.05**2 + sigma**2)
    for means, expected in ((dependent, -0.5 * math.log(1 - rho**2)), (independent, 0.0)):
        z = means + sigma * torch.randn(m, 2, generator=gen)
        tc = total_correlation(z, means, logvar, dataset_size=m).item()
        assert tc == pytest.approx(expected, abs=0.12), (tc, expected)


# --- Gaussian algebra and likelihoods -----------------------------------------------------------

def test_gaussian_kls_match_torch_distributions():
    gen = _gen()
    mu_q, lv_q, mu_p, lv_p = (torch.randn(6, 3, generator=gen) for _ in range(4))
    q = torch.distributions.Normal(mu_q, (0.5 * lv_q).exp())
    p = torch.distributions.Normal(mu_p, (0.5 * lv_p).exp())
    torch.testing.assert_close(kl_normal(mu_q, lv_q, mu_p, lv_p),
                               torch.distributions.kl_divergence(q, p))
    zeros = torch.zeros_like(mu_q)
    torch.testing.assert_close(kl_standard_normal(mu_q, lv_q), kl_normal(mu_q, lv_q, zeros, zeros))
    assert kl_standard_normal(zeros, zeros).abs().max() == 0
    z = torch.randn(6, 3, generator=gen)
    torch.testing.assert_close(log_normal(z, mu_q, lv_q), q.log_prob(z))


def test_precision_weighting_known_answers():
    mu_a, mu_b = torch.tensor([1.0]), torch.tensor([3.0])
    mu, logvar = precision_weighted(mu_a, torch.zeros(1), mu_b, torch.zeros(1))
    assert mu.item() == pytest.approx(2.0) and logvar.exp().item() == pytest.approx(0.5)
    # σ_a² = 1, σ_b² = 3: precisions 1 and 1/3 -> σ² = 3/4, μ = (1 + 3/3) · 3/4 = 1.5.
    mu, logvar = precision_weighted(mu_a, torch.zeros(1), mu_b, torch.log(torch.tensor([3.0])))
    assert mu.item() == pytest.approx(1.5) and logvar.exp().item() == pytest.approx(0.75)


def test_likelihoods_match_closed_forms():
    gen = _gen()
    x = torch.rand(2, 1, 4, 4, generator=gen)
    out = torch.randn(2, 1, 4, 4, generator=gen)
    p = torch.sigmoid(out)
    bce = -(x * p.log() + (1 - x) * (1 - p).log()).sum(dim=(1, 2, 3))
    torch.testing.assert_close(Likelihood("bernoulli").nll(out, x), bce)
    normal = torch.distributions.Normal(p, 0.2)
    torch.testing.assert_close(Likelihood("gaussian", sigma=0.2).nll(out, x),
                               -normal.log_prob(x).sum(dim=(1, 2, 3)))
    learned = Likelihood("gaussian_learned", variance_floor=1e-3)
    raw = torch.cat([out, torch.full_like(out, -200.0)], dim=1)  # softplus -> 0: variance = floor
    floor = torch.distributions.Normal(p, math.sqrt(1e-3))
    torch.testing.assert_close(learned.nll(raw, x), -floor.log_prob(x).sum(dim=(1, 2, 3)))
    torch.testing.assert_close(learned.mean(raw), p)


def test_learned_variance_stays_finite_when_the_decoder_explodes():
    model = _build("vae", likelihood="gaussian_learned")
    x, _ = _batch()
    with torch.no_grad():
        model.decoder.deconvs[-1].bias[1:] = -1e4  # variance logits -> softplus ~ 0
    out = model.loss(x, 0, generator=_gen())
    assert torch.isfinite(out.total)
    out.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# --- CSVAE --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dag_name", sorted(DAGS))
def test_csvae_follows_any_dag(dag_name):
    dag = DAGS[dag_name]
    model = _build("csvae", dag=dag)
    with_parents = {n for n in NODES if dag.parents(n)}
    assert set(model.priors) == with_parents
    assert [(g.name, g.kind) for g in model.units()] == (
        [(n, "concept") for n in NODES] + [("style", "style")])
    x, factors = _batch()
    out = model.loss(x, 0, factors=factors, generator=_gen())
    assert torch.isfinite(out.total)
    out.total.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname


def test_csvae_child_prior_reads_its_parents():
    model = _build("csvae", dag=DAGS["chain"])
    x, _ = _batch()
    parent = torch.zeros(8, model.config.unit_dim)
    prior = model.priors["scale"]
    assert not torch.allclose(prior(parent), prior(parent + 1.0))
    # The top-down pass: the child's posterior changes with the parent's value, the root's not.
    blocks = model._infer(x, None, sample=False)
    with torch.no_grad():
        model.heads.bias[0] += 5.0  # shift the root's (shape) bottom-up mean
    shifted = model._infer(x, None, sample=False)
    assert not torch.allclose(blocks["shape"].mu, shifted["shape"].mu)
    assert not torch.allclose(blocks["scale"].prior_mu, shifted["scale"].prior_mu)
    assert torch.equal(blocks["shape"].prior_mu, torch.zeros_like(blocks["shape"].mu))
    # Information flows top-down only: moving the leaf's (pos_y) proposal leaves its ancestors.
    with torch.no_grad():
        model.heads.bias[model.columns["pos_y"][0]] += 5.0
    leaf_shifted = model._infer(x, None, sample=False)
    for name in ("shape", "scale", "pos_x"):
        torch.testing.assert_close(leaf_shifted[name].mu, shifted[name].mu)
    assert not torch.allclose(leaf_shifted["pos_y"].mu, shifted["pos_y"].mu)


def test_csvae_supervision_uses_only_labelled_rows():
    model = _build("csvae")
    x, factors = _batch()
    assert model.config.supervision_weight > 0 and set(model.classifiers) == set(NODES)
    unlabelled = torch.full_like(factors, -1)
    out = model.loss(x, 0, factors=unlabelled, generator=_gen())
    assert out.extras["supervision"].item() == 0.0
    assert "supervision" not in model.loss(x, 0, generator=_gen()).extras
    labelled = model.loss(x, 0, factors=factors, generator=_gen())
    plain = model.loss(x, 0, generator=_gen())
    weight = model.config.supervision_weight
    torch.testing.assert_close(labelled.total,
                               plain.total + weight * labelled.extras["supervision"])
    # At init each classifier is near uniform: CE ≈ Σ_c log(levels_c).
    expected = sum(math.log(k) for k in CONCEPT_SIZES.values())
    assert labelled.extras["supervision"].item() == pytest.approx(expected, rel=0.3)


def test_csvae_without_supervision_has_no_classifiers():
    model = _build("csvae", supervision_weight=0.0)
    assert len(model.classifiers) == 0
    assert model.n_codes == len(NODES) * model.config.unit_dim + model.config.style_dim


def test_csvae_rejects_concepts_that_are_not_the_dag_nodes():
    config = model_config("csvae")
    with pytest.raises(ToybenchError, match="do not match"):
        build_model("csvae", config, image_shape=(1, 32, 32), dag=TEST_DAG,
                    concept_sizes={"shape": 3, "scale": 4})
    with pytest.raises(ToybenchError, match="needs the generator's DAG"):
        build_model("csvae", config, image_shape=(1, 32, 32))


# --- HVAE ---------------------------------------------------------------------------------------

def test_hvae_layers_free_bits_and_balance():
    model = _build("hvae")
    dims = model.config.latent_dims
    assert [g.name for g in model.units()] == ["z1", "z2", "z3"]
    assert [len(g.columns) for g in model.units()] == list(dims)
    x, _ = _batch()
    full = model.loss(x, 0, kl_weight=1.0, generator=_gen())
    assert all(v.item() == 1.0 for k, v in full.extras.items() if k.startswith("kl_balance"))
    warm = model.loss(x, 0, kl_weight=0.5, generator=_gen())
    coeffs = torch.stack([warm.extras[f"kl_balance.z{i + 1}"] for i in range(len(dims))])
    assert coeffs.mean().item() == pytest.approx(1.0)
    # Known answer: with kl_weight=1 and no balancing, total = recon + β Σ_l max(KL_l, fb·d_l).
    per_layer = [full.kl_per_unit[g.columns[0]:g.columns[-1] + 1].sum() for g in model.units()]
    penalty = sum(max(k.item(), model.config.free_bits * d) for k, d in zip(per_layer, dims,
                                                                          strict=True))
    assert full.total.item() == pytest.approx(full.recon.item() + model.config.beta * penalty,
                                              rel=1e-5)
    assert full.extras["kl_penalty"].item() == pytest.approx(penalty, rel=1e-5)


def test_hvae_latent_dims_are_validated():
    with pytest.raises(ToybenchError, match="latent_dims"):
        model_config("hvae", {"latent_dims": [4]})
    assert model_config("hvae", {"latent_dims": [4, 2]}).latent_dims == (4, 2)


# --- PCA ----------------------------------------------------------------------------------------

def _pca_data():
    x, _ = _batch(n=64, seed=3)
    return (x * 255).round().to(torch.uint8)


def test_pca_reconstructs_better_than_the_mean_image_and_is_deterministic():
    images = _pca_data()
    model = _build("pca")
    assert model.trainable is False and list(model.parameters()) == []
    with pytest.raises(ToybenchError, match="fit"):
        model.encode(images.float())
    model.fit(images)
    x = images.float() / 255
    recon = model.decode(model.encode(x))
    mean_error = (x - x.mean(dim=0)).pow(2).sum()
    assert (recon - x).pow(2).sum() < 0.5 * mean_error
    out = model.loss(x, 0)
    assert out.kl.item() == 0 and out.recon.item() == pytest.approx(
        (recon - x).pow(2).sum().item() / len(x), rel=1e-4)
    again = _build("pca")
    again.fit(images.numpy())
    torch.testing.assert_close(again.encode(x), model.encode(x), rtol=0, atol=0)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model.encode(channels_last), model.encode(x))


def test_pca_matches_exact_svd():
    images = _pca_data()
    model = _build("pca")
    model.fit(images)
    data = images.reshape(len(images), -1).double().numpy() / 255
    centred = data - data.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    k = model.n_codes
    exact = vt[:k].T @ vt[:k]  # (D, D) projector onto the top-k subspace
    ours = model.components.double().numpy()
    np.testing.assert_allclose(ours @ ours.T, np.eye(k), atol=1e-5)
    np.testing.assert_allclose(ours.T @ ours, exact, atol=1e-3)
    np.testing.assert_allclose(model.explained_variance.numpy(),
                               singular[:k] ** 2 / (len(images) - 1), rtol=1e-3)


def test_pca_state_dict_roundtrip_and_bad_input():
    images = _pca_data()
    model = _build("pca")
    model.fit(images)
    fresh = _build("pca")
    fresh.load_state_dict(model.state_dict())
    x = images.float() / 255
    torch.testing.assert_close(fresh.encode(x), model.encode(x))
    with pytest.raises(ToybenchError, match="shape"):
        fresh.fit(images[:, :, :16])
    with pytest.raises(ToybenchError, match="at least"):
        _build("pca").fit(images[:3])


# --- registry and configs -----------------------------------------------------------------------

def test_registry_and_config_errors_name_the_allowed_values():
    with pytest.raises(KeyError, match="valid: vae, csvae, hvae, pca"):
        model_config("nope")
    with pytest.raises(ToybenchError, match="unknown vae model key 'latent'.*latent_dim"):
        model_config("vae", {"latent": 3})
    with pytest.raises(ToybenchError, match="likelihood"):
        model_config("vae", {"likelihood": "poisson"})
    with pytest.raises(ToybenchError, match="no conv backbone for 48x48"):
        resolve_arch("auto", (1, 48, 48))
    with pytest.raises(ToybenchError, match="is for 64x64"):
        resolve_arch("conv64", (1, 32, 32))
    with pytest.raises(TypeError):
        build_model("vae", model_config("hvae"), image_shape=(1, 32, 32))
    for config_class, _, _ in MODELS.values():
        assert dataclasses.is_dataclass(config_class)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(config_class(), next(iter(config_class.__dataclass_fields__)), 1)


@pytest.mark.parametrize(("name", "overrides"), [
    ("csvae", {"unit_dim": 1, "style_dim": 0, "supervision_weight": 0.0}),
    ("hvae", {"latent_dims": (4, 2)}),
    ("hvae", {"free_bits": 0.0, "kl_balance": False, "likelihood": "gaussian"}),
    ("vae", {"likelihood": "gaussian_learned", "beta": 0.0}),
])
def test_config_variants_train(name, overrides):
    model = _build(name, **overrides)
    x, factors = _batch()
    out = model.loss(x, 0, factors=factors, kl_weight=0.5, generator=_gen())
    out.total.backward()
    assert torch.isfinite(out.total)
    assert all(p.grad is not None for p in model.parameters())
    assert sorted(c for g in model.units() for c in g.columns) == list(range(model.n_codes))
    assert model.encode(x).shape == (8, model.n_codes)


# --- config values: every bad value is one line at construction (helper "train", issue #11) ---

BAD_MODEL_VALUES = [
    ("vae", "latent_dim", 0), ("vae", "latent_dim", 2.5), ("vae", "latent_dim", True),
    ("vae", "beta", math.nan), ("vae", "beta", -1.0), ("vae", "beta", math.inf),
    ("vae", "tc_beta", math.nan), ("vae", "tc_beta", math.inf), ("vae", "dataset_size", 0),
    ("vae", "sigma", math.nan), ("vae", "sigma", 0.0), ("vae", "variance_floor", math.inf),
    ("vae", "variance_floor", -1e-3),
    ("csvae", "unit_dim", 0), ("csvae", "style_dim", -1), ("csvae", "prior_hidden", 0),
    ("csvae", "supervision_weight", math.nan), ("csvae", "supervision_weight", -1.0),
    ("csvae", "beta", math.nan),
    ("hvae", "latent_dims", (5, 0)), ("hvae", "latent_dims", (5,)), ("hvae", "latent_dims", 5),
    ("hvae", "latent_dims", (3, True)), ("hvae", "ladder_hidden", 0),
    ("hvae", "free_bits", math.nan), ("hvae", "free_bits", -0.1), ("hvae", "kl_balance", "yes"),
    ("hvae", "beta", math.inf), ("vae", "beta_normalized", "yes"), ("hvae", "beta_normalized", 1),
    ("pca", "n_components", 0), ("pca", "n_components", 1.5),
    ("ada", "latent_dim", 0), ("ada", "aggregation", "mean"), ("ada", "pair_mode", "do"),
    ("ada", "pair_k", -1), ("ada", "pair_k", 1.5), ("ada", "beta", math.nan),
    ("ada", "beta_normalized", 1),
]


@pytest.mark.parametrize(("family", "key", "value"), BAD_MODEL_VALUES)
def test_model_configs_refuse_every_bad_value(family, key, value):
    config_class = MODELS[family].config
    with pytest.raises(ToybenchError, match=f"{family}.{key}") as info:
        config_class(**{key: value})
    assert "\n" not in str(info.value)


def test_model_configs_accept_their_boundaries():
    MODELS["vae"][0](beta=0.0, tc_beta=0.0, latent_dim=1, dataset_size=1)
    MODELS["csvae"][0](style_dim=0, supervision_weight=0.0)
    MODELS["hvae"][0](latent_dims=[1, 1], free_bits=0.0, kl_balance=False)
    MODELS["pca"][0](n_components=1)
    MODELS["ada"][0](latent_dim=1, pair_k=0, beta=0.0, aggregation="ml-vae",
                     pair_mode="intervention")


def test_registry_trainable_flag_matches_the_model_class():
    from toybench.models import CSVAE, HVAE, PCA, VAE, AdaVAE

    classes = {"vae": VAE, "csvae": CSVAE, "hvae": HVAE, "pca": PCA, "ada": AdaVAE}
    assert set(classes) == set(MODELS)
    for family, entry in MODELS.items():
        assert entry.trainable is classes[family].trainable, family


def test_a_meta_device_model_first_does_not_break_real_models():
    """`train.meta_model` may import a family's modules for the first time inside a
    `torch.device("meta")` block; module-level tensors must still be real afterwards."""
    code = ("import torch; from toybench.train import meta_model; "
            "from toybench.models import build_model, MODELS; "
            "meta_model('vae', MODELS['vae'].config(), image_shape=(3, 32, 32)); "
            "net = build_model('vae', MODELS['vae'].config(), image_shape=(3, 32, 32)); "
            "out = net.loss(torch.rand(2, 3, 32, 32), 0); assert torch.isfinite(out.total)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]


# --- Ada-GVAE / Ada-ML-VAE (weak supervision from pairs) -----------------------------------------

def test_adaptive_threshold_keeps_apart_only_the_unit_that_differs():
    """Two posteriors equal in every unit but one: δ = 0 there, so τ = ½ δ_max and every unit
    but that one is shared (Locatello et al. 2020, eqs. 5-6)."""
    gen = _gen()
    mu_1, logvar_1 = torch.randn(3, 6, generator=gen), 0.3 * torch.randn(3, 6, generator=gen)
    mu_2, logvar_2 = mu_1.clone(), logvar_1.clone()
    apart = torch.tensor([4, 0, 2])  # the differing unit of each pair
    rows = torch.arange(3)
    mu_2[rows, apart] += torch.tensor([2.0, -0.5, 1e-3])  # large, small, tiny differences
    logvar_2[1, 0] -= 1.0  # a variance that differs too
    shared = shared_units(mu_1, logvar_1, mu_2, logvar_2)
    expected = torch.ones(3, 6, dtype=torch.bool)
    expected[rows, apart] = False
    assert torch.equal(shared, expected)
    # identical posteriors: every δ equals τ = 0, so nothing is shared (disentanglement_lib)
    assert not shared_units(mu_1, logvar_1, mu_1, logvar_1).any()
    # δ is the KL of the two posteriors, exactly 0 for equal ones (the reason for its own form)
    torch.testing.assert_close(unit_kl(mu_1, logvar_1, mu_2, logvar_2),
                               kl_normal(mu_1, logvar_1, mu_2, logvar_2))
    assert torch.equal(unit_kl(mu_1, logvar_1, mu_1, logvar_1), torch.zeros(3, 6))
    # a unit exactly at τ is kept apart: Δμ = (1, 5, 7), σ = 1 -> δ = (0.5, 12.5, 24.5), τ = 12.5
    zeros = torch.zeros(1, 3)
    at_tau = shared_units(zeros, zeros, torch.tensor([[1.0, 5.0, 7.0]]), zeros)
    assert at_tau.tolist() == [[True, False, False]]


def test_aggregations_known_answers():
    mu_1, mu_2 = torch.tensor([[1.0]]), torch.tensor([[3.0]])
    lv_1, lv_2 = torch.zeros(1, 1), torch.log(torch.tensor([[3.0]]))  # σ² = 1 and 3
    mean, logvar = aggregate(mu_1, lv_1, mu_2, lv_2, "gvae")
    assert mean.item() == pytest.approx(2.0) and logvar.exp().item() == pytest.approx(2.0)
    # ML-VAE: precision-weighted mean (1/1 + 3/3) / (1 + 1/3) = 1.5, variance 2·1·3 / 4 = 1.5
    mean, logvar = aggregate(mu_1, lv_1, mu_2, lv_2, "ml-vae")
    assert mean.item() == pytest.approx(1.5) and logvar.exp().item() == pytest.approx(1.5)
    # the ML aggregate is the normalized q1^½ q2^½ (densities on a grid)
    z = torch.linspace(-8, 12, 20001, dtype=torch.float64)
    q1 = torch.distributions.Normal(1.0, 1.0).log_prob(z)
    q2 = torch.distributions.Normal(3.0, 3.0**0.5).log_prob(z)
    geometric = torch.exp(0.5 * (q1 + q2))
    geometric = geometric / torch.trapezoid(geometric, z)
    got = torch.distributions.Normal(1.5, 1.5**0.5).log_prob(z).exp()
    torch.testing.assert_close(geometric, got, atol=1e-6, rtol=0)
    # stable at the clamp limits
    lo, hi = torch.full((1, 1), -10.0), torch.full((1, 1), 10.0)
    for mode in ("gvae", "ml-vae"):
        mean, logvar = aggregate(mu_1, lo, mu_2, hi, mode)
        assert torch.isfinite(mean).all() and torch.isfinite(logvar).all()
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(mu_1, lv_1, mu_2, lv_2, "mean")


@pytest.mark.parametrize("name", ["ada-gvae", "ada-ml-vae"])
def test_ada_on_identical_pairs_is_the_beta_vae_on_the_same_images(name):
    """x2 = x1: identical posteriors share nothing, so the loss is the β-VAE's on the 2B
    images (same network, same noise)."""
    ada = _build(name)
    assert isinstance(ada, Paired) and ada.pairing == PairSpec("conditional", 0)
    vae = _build("beta-vae")
    vae.load_state_dict({k.removeprefix("vae."): v for k, v in ada.state_dict().items()})
    assert ada.beta == vae.beta == 1.75  # 4 at 64x64, normalized to 32x32 as beta-vae's
    assert _build(name, beta_normalized=False).beta == 4.0
    assert _build(name, image_shape=(3, 64, 64)).beta == 4.0
    x, _ = _batch(n=4)
    pairs = torch.cat([x, x])
    a = ada.loss(pairs, 0, kl_weight=0.5, recon_weight=2.0, generator=_gen(7))
    b = vae.loss(pairs, 0, kl_weight=0.5, recon_weight=2.0, generator=_gen(7), diagnostics=False)
    torch.testing.assert_close(a.total, b.total)
    torch.testing.assert_close(a.kl_per_unit, b.kl_per_unit)
    assert a.extras["shared"].item() == 0.0
    torch.testing.assert_close(a.total, 2.0 * a.recon + 0.5 * ada.beta * a.kl)


def test_ada_loss_shares_the_units_the_threshold_picks():
    """Pairs of different images: the KL of the loss is that of the aggregated posteriors."""
    model = _build("ada-ml-vae")
    x, _ = _batch()  # 8 images: 4 pairs
    out = model.loss(x, 0, generator=_gen())
    with torch.no_grad():
        mu, logvar = model.vae.posterior(x)
    (mu_1, mu_2), (lv_1, lv_2) = mu.chunk(2), logvar.chunk(2)
    shared = shared_units(mu_1, lv_1, mu_2, lv_2)
    assert 0 < shared.sum() < shared.numel()
    mean, log_var = aggregate(mu_1, lv_1, mu_2, lv_2, "ml-vae")
    mus = torch.cat([torch.where(shared, mean, mu_1), torch.where(shared, mean, mu_2)])
    lvs = torch.cat([torch.where(shared, log_var, lv_1), torch.where(shared, log_var, lv_2)])
    torch.testing.assert_close(out.kl_per_unit, kl_standard_normal(mus, lvs).mean(dim=0))
    assert out.extras["shared"].item() == pytest.approx(shared.sum().item() / 4)
    with pytest.raises(ValueError, match="pairs stacked along the batch"):
        model.loss(x[:7], 0)
    assert not isinstance(_build("vae"), Paired)


def test_the_elbo_of_an_ada_model_is_that_of_single_images():
    """The evaluation's ELBO pass scores single images (odd batches too) with ``image_loss``:
    the β-VAE's ELBO of the same network, nothing shared between unrelated test images."""
    from toybench.encoders import elbo_terms

    ada = _build("ada-gvae")
    vae = _build("beta-vae", beta_normalized=True)
    vae.load_state_dict({k.removeprefix("vae."): v for k, v in ada.state_dict().items()})
    images = (_batch(n=7)[0] * 255).round().to(torch.uint8).numpy()  # 7 images: not pairs
    ours, reference = elbo_terms(ada, images, seed=3), elbo_terms(vae, images, seed=3)
    assert ours.elbo == reference.elbo
    np.testing.assert_array_equal(ours.kl_per_unit, reference.kl_per_unit)
    x = torch.from_numpy(images).float() / 255
    torch.testing.assert_close(ada.image_loss(x, 0, generator=_gen()).total,
                               vae.loss(x, 0, generator=_gen()).total)

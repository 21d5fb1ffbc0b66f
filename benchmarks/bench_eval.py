"""Speed of one evaluation pass of a `standard` run: `toybench.evaluate.evaluate_model` of a VAE
on the standard splits (5,000 images each of ``test`` and ``test_decorrelated``) with the
standard `EvalConfig` (disentanglement_lib's metric sizes, bf16 passes) and the 500-image
perturbation matrix that a run with plots computes: what ``env.json``'s ``eval_seconds`` times.

The PCA reference is fitted once per data set and cached across runs (`pca_reference_for`), so
it is computed in the fixture, not timed. The model has its seed's initial weights (the work of
every pass is the same for trained weights). Run on a quiet machine:
``pytest benchmarks/bench_eval.py --benchmark-only`` uses every core, as ``toybench run`` does;
``OMP_NUM_THREADS=1 TOYBENCH_THREADS=1`` in front of it times one thread (a sweep's cell).
"""

from __future__ import annotations

import pytest

from toybench import seeds
from toybench.data import make_split
from toybench.evaluate import evaluate_model, pca_reference_for
from toybench.rundir import RunSpec, load_baseline_for
from toybench.runs import _build, model_meta
from toybench.specs import load_generator

SEED = 0


@pytest.fixture(scope="module", params=["toy-causal", "dsprites-pairs-32"])
def standard_eval(request):
    spec = RunSpec("vae", request.param, corr=0.2, seed=SEED, protocol="standard")
    baseline = load_baseline_for(spec)
    generator = load_generator(spec.generator)
    sizes = {"train": baseline.train.n_train, "test": baseline.train.n_test,
             "test_decorrelated": baseline.train.n_test}
    splits = {name: make_split(generator, name, corr=spec.corr, n=n, seed=SEED)
              for name, n in sizes.items()}
    model = _build(model_meta(baseline, generator), SEED)
    reference = pca_reference_for(splits, model.n_codes, seed=seeds.torch_seed(SEED, "pca"))
    return model, generator, splits, baseline.eval, reference


def test_evaluate_standard_run(benchmark, standard_eval):
    model, generator, splits, config, reference = standard_eval
    result = benchmark.pedantic(
        evaluate_model, args=(model, generator, splits),
        kwargs={"seed": SEED, "config": config, "reference": reference,
                "perturbation_images": 500},
        rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(generator=generator.name, n_test=len(splits["test"].images),
                                precision=config.precision)
    assert result.metrics["n_codes"] == model.n_codes

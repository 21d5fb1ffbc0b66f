"""The metric registry: every key of metrics.json has a direction, bounds and a meaning, full
keys resolve through split prefixes and per-concept suffixes, and `toybench list` shows them."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from toybench.cli import main
from toybench.metrics import METRIC_INFO, MetricInfo, metric_info
from toybench.metrics.registry import split_of


def test_entries_are_well_formed():
    assert len(METRIC_INFO) >= 40
    for key, info in METRIC_INFO.items():
        assert info.key == key and info.meaning and "\n" not in info.meaning
        assert info.direction in ("higher", "lower", "info")
        assert info.arrow in "↑↓·"
    with pytest.raises(ValueError, match="direction"):
        MetricInfo("x", "up", (0.0, 1.0), "bad")
    with pytest.raises(ValueError, match="empty"):
        MetricInfo("x", "higher", (1.0, 0.0), "bad")


@pytest.mark.parametrize(
    ("key", "entry", "split"),
    [
        ("mig", "mig", None),  # as `toybench score` writes it
        ("test.mig", "mig", "test"),
        ("dci.disentanglement", "dci.disentanglement", None),
        ("test_decorrelated.dci.disentanglement", "dci.disentanglement", "test_decorrelated"),
        ("test.consistency", "consistency", "test"),
        ("test.consistency.hue", "consistency.<c>", "test"),
        ("test.consistency_descendants.pos_x", "consistency_descendants.<c>", "test"),
        ("test_decorrelated.entanglement.size-hue", "entanglement.<a>-<b>", "test_decorrelated"),
        ("test.leakage.rotation", "leakage.<c>", "test"),
        ("test.active_units.fraction", "active_units.fraction", "test"),
        ("test.collapse.no_active_units", "collapse.no_active_units", "test"),
        ("test_corr0_4.mig", "mig", "test_corr0_4"),  # --test-corr 0.4
        ("test_corrinf.entanglement.size-hue", "entanglement.<a>-<b>", "test_corrinf"),
        ("train.steps", "train.steps", None),
        ("warnings", "warnings", None),
        ("n_codes", "n_codes", None),
    ],
)
def test_full_keys_resolve(key, entry, split):
    assert metric_info(key) is METRIC_INFO[entry]
    assert split_of(key) == split


@pytest.mark.parametrize("key", ["test.bogus", "bogus", "test.train.steps", "test.warnings",
                                 "test.entanglement.size", "test.recon", ""])
def test_unknown_keys_raise_listing_the_valid_ones(key):
    with pytest.raises(KeyError, match=r"unknown metric key .*valid: <split>\.mig, "):
        metric_info(key)


def test_bounds_and_directions_of_headline_keys():
    assert metric_info("test.recon.bce").direction == "lower"
    assert metric_info("test.elbo").direction == "higher"
    assert metric_info("test.recon.pca_bce").direction == "info"
    info = metric_info("test.dci.completeness")
    assert info.contains(0.0) and info.contains(1) and not info.contains(1.0001)
    assert not info.contains(math.nan) and not info.contains(True) and not info.contains("0.5")
    assert metric_info("test.elbo").contains(-1e9)
    assert metric_info("warnings").contains(["a"]) and not metric_info("warnings").contains([1])
    assert metric_info("corr").contains("inf") and not metric_info("corr").contains(-1.0)
    assert metric_info("model").contains("vae") and metric_info("git_sha").contains(None)
    assert not metric_info("model").contains(1.0)
    with pytest.raises(ValueError, match="kind"):
        MetricInfo("x", "info", (None, None), "bad", kind="blob")


def test_list_prints_every_registered_key_with_direction_and_bounds():
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    section = []
    for line in lines[lines.index("metrics:") + 1:]:
        if not line.startswith("  "):
            break  # the next section's title
        section.append(line)
    shown = {line.split()[0]: line for line in section}
    assert len(shown) == len(section) == len(METRIC_INFO)
    for info in METRIC_INFO.values():
        line = shown[info.display_key]
        assert f" {info.arrow} " in line and info.meaning in line
    assert "[0, 1]" in shown["<split>.dci.disentanglement"]
    assert "[-inf, inf]" in shown["<split>.elbo"]


def test_splits_are_registered_and_listed():
    from toybench.metrics import SPLIT_INFO, split_info
    from toybench.rundir import EVAL_SPLITS, split_at_corr

    for split in EVAL_SPLITS:
        assert split_info(split) == SPLIT_INFO[split]
    for sigma in (0.4, 0.25, 1e-5, float("inf")):
        assert split_info(split_at_corr(sigma)) == SPLIT_INFO["test_corr<σ>"]
    with pytest.raises(KeyError, match="unknown split 'val'; valid: test, test_decorrelated"):
        split_info("val")
    lines = CliRunner().invoke(main, ["list"]).output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("splits"))
    shown = [line.split()[0] for line in lines[start + 1:start + 1 + len(SPLIT_INFO)]]
    assert shown == list(SPLIT_INFO)

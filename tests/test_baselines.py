"""The baseline loader: shared protocols, ``extends``, ``[derived]`` values, user files, and that
every resolved value of every shipped baseline is what it was before the files were factored."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
from baseline_snapshot import resolved_values
from click.testing import CliRunner

from toybench.baselines import (
    TOP_LEVEL_KEYS,
    baseline_names,
    load_baseline,
    shared_settings,
    shipped_baselines,
)
from toybench.cli import main
from toybench.errors import ToybenchError
from toybench.resources import shipped_specs
from toybench.train import TrainConfig

SNAPSHOT = Path(__file__).with_name("baseline_snapshot.json")

def _write(folder: Path, text: str, name: str = "mine.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _raw(name: str) -> dict:
    return tomllib.loads(shipped_specs("baselines")[name].read_text(encoding="utf-8"))


# --- nothing changed ------------------------------------------------------------------------

def test_every_resolved_value_matches_the_snapshot():
    """Every baseline x {no protocol, quick, standard} x some --set: name, description, family,
    model/train/eval configs, protocol, overrides and file, against baseline_snapshot.json. A
    change to any resolved value must be deliberate: regenerate the snapshot in the same commit
    (``python tests/baseline_snapshot.py > tests/baseline_snapshot.json``) and say why."""
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    actual = json.loads(json.dumps(resolved_values()))
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert actual[key] == expected[key], key


# --- layout ---------------------------------------------------------------------------------

def test_protocols_file_is_shared_and_not_a_baseline():
    assert "protocols" in shipped_specs("baselines")
    assert "protocols" not in baseline_names() and "protocols" not in shipped_baselines()
    assert set(shared_settings()["protocols"]) == {"quick", "standard", "long"}
    listed = CliRunner().invoke(main, ["list"])
    assert listed.exit_code == 0
    assert not any(line.split()[:1] == ["protocols"] for line in listed.output.splitlines())
    with pytest.raises(ToybenchError, match="unknown model 'protocols'"):
        load_baseline("protocols")


@pytest.mark.parametrize("name", sorted(baseline_names()))
def test_shipped_files_hold_only_what_is_their_own(name):
    raw = _raw(name)
    assert set(raw) <= set(TOP_LEVEL_KEYS) and raw["name"] == name
    assert raw["description"].strip()
    # quick and standard live in baselines/protocols.toml; a file may only adjust, per protocol,
    # a [train] key it sets itself (ada's batch counts pairs: half the shared batch, each protocol)
    for protocol, table in raw.get("protocols", {}).items():
        assert set(table) == {"train"} and set(table["train"]) <= set(raw.get("train", {})), \
            f"{name} restates protocol {protocol}"
    shared = shared_settings()["train"]
    for key, value in raw.get("train", {}).items():
        assert shared.get(key) != value, f"{name} restates the shared train.{key}"
    if "extends" in raw:
        base = load_baseline(raw["extends"])
        for key, value in raw.get("model", {}).items():
            assert getattr(base.model, key) != value, f"{name} restates model.{key}"


def test_beta_vae_is_vae_with_normalized_beta_4_and_keeps_its_own_description():
    vae, beta = load_baseline("vae", protocol="quick"), load_baseline("beta-vae", protocol="quick")
    assert _raw("beta-vae")["extends"] == "vae"
    assert beta.model == dataclasses.replace(vae.model, beta=4.0, beta_normalized=True)
    assert beta.train == vae.train and beta.eval == vae.eval and beta.family == "vae"
    assert beta.name == "beta-vae" and beta.description.startswith("beta-VAE (Higgins")
    assert vae.description.startswith("VAE (Kingma")


def test_shared_protocols_apply_to_every_trainable_baseline():
    trained = {n: load_baseline(n, protocol="quick").train for n in ("vae", "csvae", "hvae")}
    assert {t.steps for t in trained.values()} == {300}
    assert {t.n_train for t in trained.values()} == {5000}
    assert trained["csvae"].supervised_fraction == 0.1  # csvae's own [train] key


def test_a_family_without_gradient_training_takes_only_the_data_sizes(tmp_path):
    for protocol, sizes in ((None, (50000, 5000)), ("quick", (5000, 1000)),
                            ("standard", (50000, 5000))):
        pca = load_baseline("pca", protocol=protocol)
        assert pca.train == TrainConfig(n_train=sizes[0], n_test=sizes[1]), protocol
    assert load_baseline("pca").protocols["quick"] == {"train.n_train": 5000,
                                                       "train.n_test": 1000}
    # Its own protocol keys still apply.
    path = _write(tmp_path, 'extends = "pca"\n[protocols.quick]\ntrain.steps = 7\n')
    assert load_baseline(path, protocol="quick").train.steps == 7


# --- derived values -------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [None, "quick", "standard"])
def test_beta_tcvae_dataset_size_follows_n_train(protocol):
    b = load_baseline("beta-tcvae", protocol=protocol)
    assert b.model.dataset_size == b.train.n_train and b.model.tc_beta == 6.0
    b = load_baseline("beta-tcvae", protocol=protocol, overrides=["train.n_train=3000"])
    assert b.model.dataset_size == 3000 == b.train.n_train
    assert b.derived == {"model.dataset_size": "train.n_train"}


def test_explicit_set_of_a_derived_key_wins():
    b = load_baseline("beta-tcvae", protocol="quick",
                      overrides=["model.dataset_size=1234", "train.n_train=3000"])
    assert b.model.dataset_size == 1234 and b.train.n_train == 3000
    assert ("model.dataset_size", 1234) in b.overrides


def test_a_derived_key_set_in_a_file_or_protocol_is_refused(tmp_path):
    path = _write(tmp_path, 'extends = "beta-tcvae"\n[model]\ndataset_size = 10\n')
    with pytest.raises(ToybenchError, match=r"model.dataset_size is derived from train.n_train"):
        load_baseline(path)
    path = _write(tmp_path, 'extends = "beta-tcvae"\n[protocols.quick]\n'
                            'model.dataset_size = 10\n')
    load_baseline(path)  # the protocol is not applied
    with pytest.raises(ToybenchError, match="also set; set train.n_train instead"):
        load_baseline(path, protocol="quick")


@pytest.mark.parametrize(("table", "message"), [
    ('model.dataset_size = 5', "must name a key such as"),
    ('dataset_size = "train.n_train"', "'dataset_size' is not a model.<field>"),
    ('model.dataset_size = "optim.n"', "'optim.n' is not a model.<field>"),
    ('model.dataset_size = "train.n_images"', "unknown source key train.n_images"),
    ('model.size = "train.n_train"', "unknown key model.size"),
])
def test_bad_derived_tables_are_one_line_errors(tmp_path, table, message):
    path = _write(tmp_path, f'extends = "vae"\n[derived]\n{table}\n')
    with pytest.raises(ToybenchError) as info:
        load_baseline(path)
    assert message in str(info.value) and "\n" not in str(info.value)


# --- user files -----------------------------------------------------------------------------

def test_user_file_extends_a_shipped_baseline_and_adds_protocols(tmp_path):
    path = _write(tmp_path, 'extends = "beta-vae"\n[model]\nlatent_dim = 6\n'
                            '[protocols.huge]\ntrain.steps = 50000\n'
                            '[protocols.quick]\ntrain.steps = 50\n')
    mine = load_baseline(path)
    assert mine.name == "mine" and mine.description == ""  # neither is inherited
    assert mine.family == "vae" and mine.model.beta == 4.0 and mine.model.latent_dim == 6
    assert list(mine.protocols) == ["quick", "standard", "long", "huge"]
    huge = load_baseline(path, protocol="huge")
    assert huge.train == dataclasses.replace(load_baseline("vae").train, steps=50000)
    quick = load_baseline(path, protocol="quick")
    assert quick.train == dataclasses.replace(load_baseline("vae", protocol="quick").train,
                                              steps=50)
    assert load_baseline(path, protocol="standard").train.steps == 2400


def test_user_file_without_extends_gets_the_shared_defaults_and_protocols(tmp_path):
    path = _write(tmp_path, 'family = "vae"\n[train]\nlr = 3e-4\n')
    mine = load_baseline(path, protocol="standard")
    assert mine.train == dataclasses.replace(load_baseline("vae", protocol="standard").train,
                                             lr=3e-4)


def test_extends_a_file_next_to_it_and_chains(tmp_path):
    _write(tmp_path, 'extends = "beta-tcvae"\n[model]\nlatent_dim = 4\n', "base.toml")
    path = _write(tmp_path, 'name = "child"\nextends = "base.toml"\n[model]\ntc_beta = 2.0\n')
    child = load_baseline(path, overrides=["train.n_train=100"])
    assert child.name == "child" and child.model.latent_dim == 4 and child.model.tc_beta == 2.0
    assert child.model.dataset_size == 100  # [derived] is inherited


@pytest.mark.parametrize(("text", "message"), [
    ('extends = "nope"', "extends = 'nope' is neither a shipped baseline (ada-gvae, ada-ml-vae, "
                         "beta-tcvae, beta-vae, csvae, hvae, pca, vae) nor a file next to the "
                         "spec"),
    ('extends = "protocols"', "is neither a shipped baseline"),
    ('extends = "mine.toml"', "'extends' loops"),
    ('extends = 3', "key 'extends' must be a string"),
    ('[model]\nbeta = 2.0', "missing required key 'family'"),
    ('extends = "vae"\nmodel = 3', "key 'model' must be a table"),
    ('extends = "vae"\nprotocols = { quick = 1 }', "key 'quick' must be a table"),
    ('family = "gan"', "unknown family 'gan'; valid: vae, csvae, hvae, pca"),
    ('family = "vae"\nmodel_typo = 1', "unknown key 'model_typo'; allowed: derived, "),
    ('family = "vae"\n[model]\nbeta = "big"', "model.beta expects float"),
])
def test_bad_user_files_are_one_line_errors(tmp_path, text, message):
    path = _write(tmp_path, text + "\n")
    with pytest.raises(ToybenchError) as info:
        load_baseline(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_bad_base_names_the_base_file(tmp_path):
    _write(tmp_path, 'family = "vae"\ncolour = 1\n', "base.toml")
    path = _write(tmp_path, 'extends = "base.toml"\n')
    with pytest.raises(ToybenchError, match=r"base.toml: unknown key 'colour'"):
        load_baseline(path)


# --- a --model longer than a file name may be -------------------------------------------------

def test_overlong_model_name_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", "--model", "v" * 300, "--protocol", "quick",
                                       "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # click's exit, not an OSError traceback
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: unknown model 'vvvv"), result.output
    assert "(300 characters)" in lines[0] and "valid: ada-gvae, ada-ml-vae, beta-tcvae" in lines[0]
    assert len(lines[0]) < 300  # the name is shortened, not echoed whole
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ToybenchError, match="not a usable path"):
        load_baseline("x" * 300 + ".toml")

"""Tests of the run figures (``toybench.plots``), ``toybench show`` and the CLI help texts.

What a person reads is checked on the matplotlib artists: code names from ``units()``, legend
colours equal to bar colours, a KL axis that does not shrink to a dead model's ~0, inactive units
marked, cell text that contrasts with its cell, the data card's three statistics, and help lines
that are not truncated. Models are untrained and tiny; every figure of a run is written once per
baseline family.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.container import BarContainer

from toybench import plots
from toybench.baselines import baseline_names, load_baseline
from toybench.cli import main
from toybench.data import CARD_STATISTICS, contact_sheet, make_split
from toybench.models import build_model
from toybench.models.common import UnitGroup
from toybench.specs import load_generator

N_TEST = 120


@pytest.fixture(scope="module")
def generator():
    return load_generator("toy-causal")


@pytest.fixture(scope="module")
def test_split(generator):
    return make_split(generator, "test", corr=0.2, n=N_TEST, seed=0)


def _model(name: str, generator, images: np.ndarray):
    baseline = load_baseline(name, protocol="quick")
    torch.manual_seed(0)
    net = build_model(baseline.family, baseline.model, image_shape=generator.image_shape,
                      dag=generator.dag,
                      concept_sizes={c.name: c.n_levels for c in generator.concepts})
    if baseline.family == "pca":
        net.fit(torch.from_numpy(images).float().div_(255.0))
    return net.eval()


def _expected_names(family: str, units) -> list[str]:
    if family in ("vae", "pca", "ada"):  # one flat layer: z0.., pc0..
        (group,) = units
        return [f"{group.name}{k}" for k in range(len(group.columns))]
    return [f"{g.name}[{k}]" for g in units for k in range(len(g.columns))]


# --- code names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", baseline_names())
def test_code_names_of_every_baseline(name, generator, test_split):
    net = _model(name, generator, test_split.images)
    family = load_baseline(name).family
    names = plots.code_names(net.units(), net.n_codes)
    assert names == _expected_names(family, net.units())
    assert len(set(names)) == net.n_codes
    if family == "vae":
        assert names[3] == "z3"
    if family == "pca":
        assert names[3] == "pc3"
    if family == "hvae":
        assert names[0] == "z1[0]" and names[-1].startswith(f"z{len(net.units())}[")
    if family == "csvae":
        assert names[:2] == ["shape[0]", "shape[1]"] and names[-1].startswith("style[")


def test_code_names_follow_the_columns_not_the_group_order():
    units = [UnitGroup("b", "concept", (2, 0)), UnitGroup("style", "style", (1,))]
    assert plots.code_names(units, 3) == ["b[1]", "style[0]", "b[0]"]


@pytest.mark.parametrize("units, match", [
    ([UnitGroup("z", "layer", (0, 1))], "no unit group"),
    ([UnitGroup("a", "layer", (0, 1, 2)), UnitGroup("b", "layer", (2,))], "two unit groups"),
    ([UnitGroup("z", "layer", (0, 1, 2, 3))], "outside"),
])
def test_code_names_refuse_a_bad_cover(units, match):
    with pytest.raises(ValueError, match=match):
        plots.code_names(units, 3)


# --- KL and activity per unit ----------------------------------------------------------------


def _bars(ax) -> BarContainer:
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    return bars


CSVAE_LIKE = [UnitGroup("shape", "concept", (0, 1)), UnitGroup("hue", "concept", (2, 3)),
              UnitGroup("style", "style", (4, 5))]


@pytest.mark.parametrize("with_kl", [True, False])
def test_legend_colour_of_each_unit_group_is_its_bar_colour(with_kl):
    kl = np.array([0.5, 0.2, 2.0, 0.0, 1.0, 0.3]) if with_kl else None
    variances = np.array([0.5, 0.2, 1.0, 1e-6, 0.3, 0.05])
    fig = plots.unit_activity_figure(kl, variances, CSVAE_LIKE)
    top = fig.axes[0]
    handles = {text.get_text(): handle for text, handle in
               zip(top.get_legend().get_texts(), top.get_legend().legend_handles, strict=True)}
    for ax in fig.axes[: 2 if with_kl else 1]:
        bars = _bars(ax)
        for group in CSVAE_LIKE:
            legend_colour = handles[group.name].get_facecolor()
            for j in group.columns:
                assert bars[j].get_facecolor() == pytest.approx(legend_colour), (group.name, j)
        colours = {tuple(bars[g.columns[0]].get_facecolor()) for g in CSVAE_LIKE}
        assert len(colours) == len(CSVAE_LIKE)  # the groups are told apart


def test_kl_axis_of_a_dead_model_is_not_autoscaled_to_zero():
    units = [UnitGroup("z", "layer", tuple(range(10)))]
    fig = plots.unit_activity_figure(np.zeros(10), np.full(10, 1e-7), units)
    kl_ax, var_ax = fig.axes[:2]
    assert kl_ax.get_ylim()[0] == 0.0 and kl_ax.get_ylim()[1] >= plots.KL_AXIS_MIN_NATS
    assert var_ax.get_yscale() == "log"
    assert var_ax.get_ylim()[0] == pytest.approx(plots.VARIANCE_AXIS_FLOOR)
    lines = [line.get_ydata()[0] for line in var_ax.get_lines()]
    assert plots.ACTIVE_THRESHOLD in lines
    marks = [t for t in kl_ax.texts if t.get_text() == "inactive"]
    assert len(marks) == 10
    assert "0 of 10 active" in fig.texts[0].get_text()  # suptitle


def test_kl_axis_grows_with_a_large_kl_and_only_inactive_units_are_marked():
    units = [UnitGroup("z", "layer", (0, 1, 2))]
    fig = plots.unit_activity_figure(np.array([5.0, 0.1, 0.0]), np.array([2.0, 0.02, 0.001]),
                                     units)
    kl_ax = fig.axes[0]
    assert kl_ax.get_ylim()[1] >= 5.0
    marks = [t for t in kl_ax.texts if t.get_text() == "inactive"]
    assert [round(t.get_position()[0]) for t in marks] == [2]
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == ["z0", "z1", "z2"]


# --- heatmap cell text -----------------------------------------------------------------------


def test_text_colour_rule():
    assert plots.text_colour((0.0, 0.0, 0.0, 1.0)) == "white"
    assert plots.text_colour((1.0, 1.0, 1.0, 1.0)) == "black"
    assert plots.text_colour(colormaps["viridis"](0.0)) == "white"  # dark purple
    assert plots.text_colour(colormaps["viridis"](1.0)) == "black"  # yellow
    assert plots.text_colour(colormaps["magma"](1.0)) == "black"  # pale yellow
    assert plots.text_colour(to_rgba("tab:blue")) == "white"
    # Either side of the WCAG crossover (relative luminance ≈ 0.179).
    assert plots.text_colour((0.45, 0.45, 0.45)) == "white"
    assert plots.text_colour((0.47, 0.47, 0.47)) == "black"


@pytest.mark.parametrize("cmap", ["viridis", "magma"])
def test_heatmap_cell_text_contrasts_with_its_cell(cmap):
    matrix = np.linspace(0.0, 1.0, 12).reshape(3, 4)
    fig = plots.heatmap_figure(matrix, ["a", "b", "c"], list("wxyz"), "t", xlabel="x",
                               ylabel="y", cmap=cmap)
    ax = fig.axes[0]
    image = ax.images[0]
    colours = set()
    for text in ax.texts:
        j, i = (round(v) for v in text.get_position())
        expected = plots.text_colour(image.cmap(image.norm(matrix[i, j])))
        assert text.get_color() == expected
        colours.add(expected)
    assert len(ax.texts) == 12 and colours == {"black", "white"}


def test_heatmap_scales_small_values_so_the_cells_are_not_all_zero():
    matrix = np.array([[0.0071, 0.0004], [0.0, 0.0023]])
    fig = plots.heatmap_figure(matrix, ["a", "b"], ["a", "b"], "perturbation", xlabel="j",
                               ylabel="i")
    ax = fig.axes[0]
    assert "1e-3" in ax.get_title()
    assert sorted(t.get_text() for t in ax.texts) == ["0.00", "0.40", "2.30", "7.10"]


# --- the figures of a run --------------------------------------------------------------------


def _refit(*_args, **_kwargs):
    raise AssertionError("recomputed an artefact that was given")


@pytest.mark.parametrize("name", ["vae", "csvae", "hvae", "pca"])
def test_every_run_figure_is_written_for_each_family(name, generator, test_split, tmp_path,
                                                     monkeypatch):
    net = _model(name, generator, test_split.images)
    with torch.no_grad():
        codes = net.encode(torch.from_numpy(test_split.images).float() / 255).double().numpy()
    family = load_baseline(name).family
    artefacts = {"codes": {"test": codes},
                 "kl_per_unit": None if family == "pca" else np.linspace(0, 2, net.n_codes)}
    if name != "vae":  # given: used as they are (the VAE's are computed in write_run_plots)
        rng = np.random.default_rng(0)
        artefacts["importance"] = rng.random((net.n_codes, test_split.factors.shape[1]))
        artefacts["perturbation"] = rng.random((net.n_codes, net.n_codes))
        monkeypatch.setattr(importlib.import_module("toybench.metrics.dci"),
                            "importance_matrix", _refit)
        monkeypatch.setattr(importlib.import_module("toybench.evaluate"),
                            "perturbation_matrix_of", _refit)
    folder = tmp_path / "plots"
    written = plots.write_run_plots(folder, net, generator, test_split, artefacts)
    assert sorted(p.name for p in written) == sorted(f"{n}.png" for n in plots.RUN_PLOTS)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in written)
    for path in written:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, path.name


def test_run_figures_refuse_a_wrong_artefact_shape_before_writing(generator, test_split,
                                                                   tmp_path):
    net = _model("vae", generator, test_split.images)
    codes = np.zeros((N_TEST, net.n_codes))
    artefacts = {"codes": {"test": codes}, "kl_per_unit": None,
                 "importance": np.zeros((net.n_codes + 1, 6))}
    with pytest.raises(ValueError, match="importance"):
        plots.write_run_plots(tmp_path / "plots", net, generator, test_split, artefacts)
    assert not (tmp_path / "plots").exists()


def test_latent_scatter_names_its_codes_and_keys_its_colours(test_split, generator):
    units = [UnitGroup("hue", "concept", (0, 1)), UnitGroup("style", "style", (2,))]
    codes = np.random.default_rng(0).normal(size=(N_TEST, 3)) * [1.0, 3.0, 2.0]
    names = list(generator.concept_names)
    fig = plots.latent_scatter_figure(codes, test_split.factors, names,
                                      [c.labels for c in generator.concepts], units)
    assert "hue[1], style[0], hue[0]" in fig.texts[0].get_text()  # by variance
    panels = [ax for ax in fig.axes if ax.collections]
    assert {ax.get_xlabel() for ax in panels} >= {"hue[1]", "style[0]"}
    keys = [ax for ax in fig.axes if ax.get_ylabel().startswith("colour: ")]
    assert [ax.get_ylabel() for ax in keys] == [f"colour: {n}" for n in names]
    shape_key = keys[names.index("shape")]
    assert [t.get_text() for t in shape_key.get_yticklabels()] == ["square", "triangle", "cross"]


def test_traversal_rows_are_labelled_with_code_names(generator, test_split):
    net = _model("hvae", generator, test_split.images)
    x = torch.from_numpy(test_split.images[:8]).float() / 255
    codes = net.encode(x).detach()
    names = plots.code_names(net.units(), net.n_codes)
    fig = plots.traversal_figure(net, x[:1], codes, names)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert sum("…" in t.get_text() or "constant" in t.get_text() for t in ax.texts) == len(names)


# --- toybench show ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["toy-causal", "pendulum"])
def test_show_draws_pearson_spearman_and_mi_with_labels_inside_the_figure(name):
    gen = load_generator(name)
    dataset = make_split(gen, "train", corr=0.3, n=8, seed=0)
    fig = contact_sheet(gen, dataset)
    fig.canvas.draw()
    titles = [ax.get_title() for ax in fig.axes]
    for title, _cmap, _limits in CARD_STATISTICS.values():
        assert title in titles
    names = list(gen.concept_names)
    pairs = {(p["a"], p["b"]): p for p in dataset.card["pairs"]}
    for stat, (title, _cmap, _limits) in CARD_STATISTICS.items():
        (ax,) = [a for a in fig.axes if a.get_title() == title]
        image = ax.images[0]
        cells = {tuple(round(v) for v in t.get_position()): t for t in ax.texts}
        (a, b), pair = next(iter(pairs.items()))
        text = cells[(names.index(b), names.index(a))]
        assert text.get_text() == f"{round(pair[stat], 2) + 0.0:.2f}"
        assert text.get_color() == plots.text_colour(image.cmap(image.norm(pair[stat])))
    # No tick label sticks out of the figure (they were clipped at the bottom before).
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for ax in fig.axes:
        if not ax.axison:  # the sample grid and the DAG draw no ticks
            continue
        for label in ax.get_xticklabels() + ax.get_yticklabels():
            if label.get_text():
                extent = label.get_window_extent(renderer)
                assert extent.x0 >= box.x0 - 2 and extent.y0 >= box.y0 - 2, label.get_text()
                assert extent.x1 <= box.x1 + 2 and extent.y1 <= box.y1 + 2, label.get_text()
    assert isinstance(fig.canvas, FigureCanvasAgg)


# --- CLI help ----------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [80, 60])
def test_help_lists_every_command_untruncated(width):
    result = CliRunner().invoke(main, ["--help"], terminal_width=width)
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1]
    assert "…" not in commands and "..." not in commands
    for name, command in main.commands.items():
        assert name in commands
        assert command.short_help and command.short_help.split()[0] in commands


def test_run_help_points_at_where_the_set_keys_are_listed():
    result = CliRunner().invoke(main, ["run", "--help"], terminal_width=100)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "`toybench list` (settings)" in text
    listed = CliRunner().invoke(main, ["list"]).output
    for key in ("train.steps", "train.lr", "eval.factor_vae_train", "model.beta",
                "model.latent_dims", "model.n_components"):
        assert f"  {key} " in listed, key

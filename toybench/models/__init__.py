"""The baseline model families and their registry.

One file per family, each holding its frozen config dataclass, modules and loss:
``vae.py`` (VAE / β-VAE / β-TCVAE, Kingma & Welling 2014 https://arxiv.org/abs/1312.6114,
Higgins et al. 2017, Chen et al. 2018 https://arxiv.org/abs/1802.04942), ``csvae.py`` (causally
structured VAE along the generator's DAG), ``hvae.py`` (ladder VAE, Sønderby et al. 2016
https://arxiv.org/abs/1602.02282, with NVAE stabilisers), ``ada.py`` (Ada-GVAE and Ada-ML-VAE,
weakly supervised by pairs of images, Locatello et al. 2020 https://arxiv.org/abs/2002.02886),
``pca.py`` (the non-neural reference).
Shared parts: ``nets.py`` (conv backbones), ``likelihoods.py``, ``common.py`` (the model contract
``Model`` / ``Fittable`` / ``Paired``, ``LossOutput``, ``UnitGroup``, Gaussian algebra; see also
docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from toybench.configs import AdaConfig, CSVAEConfig, HVAEConfig, PCAConfig, VAEConfig
from toybench.errors import ToybenchError

__all__ = ["MODELS", "Family", "Fittable", "LossOutput", "Model", "Paired", "UnitGroup",
           "build_model", "model_config"]

# The model classes need torch; the registry and the configs do not (a run's config resolves
# without torch), so the classes are imported when first used.
_LAZY = {"Fittable": "toybench.models.common", "LossOutput": "toybench.models.common",
         "Model": "toybench.models.common", "Paired": "toybench.models.common",
         "UnitGroup": "toybench.models.common", "VAE": "toybench.models.vae",
         "CSVAE": "toybench.models.csvae", "HVAE": "toybench.models.hvae",
         "AdaVAE": "toybench.models.ada", "PCA": "toybench.models.pca"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toybench.models' has no attribute {name!r}")


def _build_vae(config: VAEConfig, *, image_shape, dag, concept_sizes):  # noqa: ANN001, ANN202
    from toybench.models.vae import VAE

    return VAE(config, image_shape)


def _build_csvae(config: CSVAEConfig, *, image_shape, dag, concept_sizes):  # noqa: ANN001, ANN202
    from toybench.models.csvae import CSVAE

    if dag is None or concept_sizes is None:
        raise ToybenchError("csvae needs the generator's DAG and concept sizes")
    return CSVAE(config, image_shape, dag, concept_sizes)


def _build_hvae(config: HVAEConfig, *, image_shape, dag, concept_sizes):  # noqa: ANN001, ANN202
    from toybench.models.hvae import HVAE

    return HVAE(config, image_shape)


def _build_ada(config: AdaConfig, *, image_shape, dag, concept_sizes):  # noqa: ANN001, ANN202
    from toybench.models.ada import AdaVAE

    return AdaVAE(config, image_shape)


def _build_pca(config: PCAConfig, *, image_shape, dag, concept_sizes):  # noqa: ANN001, ANN202
    from toybench.models.pca import PCA

    return PCA(config, image_shape)


class Family(NamedTuple):
    """A registry entry: what a family's baselines are built from.

    Attributes
    ----------
    config : type
        The frozen config dataclass (the ``[model]`` table, in `toybench.configs`).
    build : callable
        ``build(config, *, image_shape, dag, concept_sizes) -> Model`` (imports the model).
    trainable : bool
        Whether the family trains by gradient steps (PCA ``fit``s instead); equals the model
        class's ``trainable`` (tested).
    """

    config: type
    build: Callable[..., Any]
    trainable: bool


MODELS: dict[str, Family] = {
    "vae": Family(VAEConfig, _build_vae, True),
    "csvae": Family(CSVAEConfig, _build_csvae, True),
    "hvae": Family(HVAEConfig, _build_hvae, True),
    "pca": Family(PCAConfig, _build_pca, False),
    "ada": Family(AdaConfig, _build_ada, True),
}


def _family(family: str) -> Family:
    try:
        return MODELS[family]
    except KeyError:
        raise KeyError(f"unknown model family {family!r}; valid: {', '.join(MODELS)}") from None


def model_config(family: str, values: Mapping[str, Any] | None = None):  # noqa: ANN201
    """The family's config dataclass built from ``values`` (defaults for missing keys).

    Parameters
    ----------
    family : str
        A key of ``MODELS``.
    values : Mapping[str, Any], optional
        Field values, e.g. a TOML ``[model]`` table; lists become tuples.

    Returns
    -------
    The frozen config dataclass instance.

    Raises
    ------
    KeyError
        Unknown family (the message lists the valid ones).
    ToybenchError
        Unknown field (the message names it and the allowed ones) or an invalid value.
    """
    config_class = _family(family).config
    values = dict(values or {})
    allowed = tuple(config_class.__dataclass_fields__)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ToybenchError(f"unknown {family} model key {unknown[0]!r}; allowed: "
                            f"{', '.join(allowed)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return config_class(**values)


def build_model(
    family: str,
    config: Any,
    *,
    image_shape: tuple[int, int, int],
    dag: Any = None,
    concept_sizes: Mapping[str, int] | None = None,
) -> Any:
    """Build a model of ``family`` for images of ``image_shape``.

    Parameters
    ----------
    family : str
        A key of ``MODELS``.
    config : dataclass
        An instance of the family's config class (``MODELS[family].config``).
    image_shape : (int, int, int)
        ``(C, H, W)``.
    dag : DAG, optional
        The generator's DAG (``nodes``, ``parents(name)``, ``layers()``); required by ``csvae``.
    concept_sizes : Mapping[str, int], optional
        Concept name -> number of levels, in factor-column order; required by ``csvae``.

    Returns
    -------
    Model
        A ``torch.nn.Module`` satisfying ``toybench.models.common.Model`` (and ``Fittable`` when
        ``trainable`` is False).
    """
    config_class, build, _ = _family(family)
    if not isinstance(config, config_class):
        raise TypeError(f"{family} needs a {config_class.__name__}, got {type(config).__name__}")
    return build(config, image_shape=tuple(image_shape), dag=dag, concept_sizes=concept_sizes)

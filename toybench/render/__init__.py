"""Renderers: factor values in, ``(n, C, H, W)`` uint8 images out, vectorized numpy.

``RENDERERS`` is a plain dict (scikit-learn style registry) of :class:`Renderer` records:

* ``sprites``: dSprites-compatible binary sprites (Matthey et al. 2017,
  https://github.com/deepmind/dsprites-dataset), see :mod:`toybench.render.sprites`;
* ``scene``: RGB toy scenes with one coloured object, see :mod:`toybench.render.scene`;
* ``pendulum``: a CausalVAE-style pendulum, light and shadow (Yang et al. 2021,
  https://arxiv.org/abs/2004.08697), see :mod:`toybench.render.pendulum`.

The contract is written down in ``docs/architecture.md`` ("Renderer contract", "Renderer inputs").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from toybench.errors import ToybenchError
from toybench.render import pendulum, scene, sprites


@dataclass(frozen=True)
class Renderer:
    """One renderer: which concepts it reads and how it draws them.

    Attributes
    ----------
    name : str
        Registry name.
    inputs : tuple of str
        The concept names it needs, all of them, exactly.
    categories : dict
        Categorical inputs -> level names, in renderer order (level index ``i`` means
        ``categories[name][i]``).
    channels : int
        1 (grey) or 3 (RGB).
    sizes : tuple of int
        Supported square image sizes.
    fn : callable
        ``fn(values, size) -> (n, channels, size, size)`` uint8. ``values`` maps each input to a
        length-n array: the level index (int) for categorical inputs, the physical value (float)
        for ordinal ones.
    """

    name: str
    inputs: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    channels: int
    sizes: tuple[int, ...]
    fn: Callable[[Mapping[str, np.ndarray], int], np.ndarray]


RENDERERS: dict[str, Renderer] = {
    "sprites": Renderer(
        name="sprites",
        inputs=sprites.INPUTS,
        categories={"shape": sprites.SHAPES},
        channels=1,
        sizes=sprites.SIZES,
        fn=sprites.render,
    ),
    "scene": Renderer(
        name="scene",
        inputs=scene.INPUTS,
        categories={"shape": scene.SHAPES},
        channels=scene.CHANNELS,
        sizes=scene.SIZES,
        fn=scene.render,
    ),
    "pendulum": Renderer(
        name="pendulum",
        inputs=pendulum.INPUTS,
        categories={},
        channels=pendulum.CHANNELS,
        sizes=pendulum.SIZES,
        fn=pendulum.render,
    ),
}


def get_renderer(name: str) -> Renderer:
    """Look up a renderer by name.

    Raises
    ------
    ToybenchError
        If ``name`` is not registered; the message lists the valid names.
    """
    try:
        return RENDERERS[name]
    except KeyError:
        raise ToybenchError(
            f"unknown renderer {name!r}; valid renderers: {', '.join(sorted(RENDERERS))}"
        ) from None


def render(name: str, values: Mapping[str, np.ndarray], size: int) -> np.ndarray:
    """Render with a registered renderer after checking the inputs and the size.

    Parameters
    ----------
    name : str
        Renderer name (a key of ``RENDERERS``).
    values : Mapping[str, np.ndarray]
        Exactly the renderer's inputs, each a length-n array.
    size : int
        Image side, one of the renderer's ``sizes``.

    Returns
    -------
    np.ndarray
        ``(n, channels, size, size)`` uint8.
    """
    renderer = get_renderer(name)
    missing = [k for k in renderer.inputs if k not in values]
    extra = [k for k in values if k not in renderer.inputs]
    if missing or extra:
        raise ToybenchError(
            f"renderer {name!r} needs inputs {', '.join(renderer.inputs)}"
            f" (missing: {', '.join(missing) or '-'}; unexpected: {', '.join(extra) or '-'})"
        )
    return renderer.fn(values, size)  # the renderer checks the size and the arrays itself

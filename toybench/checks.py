"""Value checks for config dataclasses: each raises one ``ToybenchError`` line naming key and rule.

Used by the ``__post_init__`` of ``TrainConfig`` and of every model family's config, so a bad
``--set`` value (``train.lr=nan``, ``train.adam_beta1=1.5``, ``model.latent_dim=0``) is refused
when the baseline is loaded, before a run writes anything.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from toybench.errors import ToybenchError


def check_int(value: Any, key: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (bools are not integers here).

    Raises
    ------
    ToybenchError
        ``"<key> must be an integer ≥ 1, got 0"``.
    """
    rule = _rule(minimum, maximum, None, None, "an integer")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ToybenchError(f"{key} must be {rule}, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ToybenchError(f"{key} must be {rule}, got {value}")
    return value


def check_real(value: Any, key: str, *, minimum: float | None = None,
               maximum: float | None = None, above: float | None = None,
               below: float | None = None) -> float:
    """``value`` as a finite ``float`` within the bounds given (inclusive or strict).

    NaN and ±inf are always refused (a NaN compares false with every bound, so without this
    check ``grad_clip=nan`` would pass ``>= 0`` and silently mean "no clipping").

    Raises
    ------
    ToybenchError
        ``"<key> must be a finite number in [0, 1), got 1.5"``.
    """
    rule = _rule(minimum, maximum, above, below, "a finite number")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ToybenchError(f"{key} must be {rule}, got {value!r}")
    value = float(value)
    ok = math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    ok = ok and (above is None or value > above) and (below is None or value < below)
    if not ok:
        raise ToybenchError(f"{key} must be {rule}, got {value!r}")
    return value


def check_choice(value: Any, key: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``; else ``"<key>='x'; valid: a, b"``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ToybenchError(f"{key}={value!r}; valid: {', '.join(choices)}")
    return value


def check_bool(value: Any, key: str) -> bool:
    """``value`` if it is a ``bool``."""
    if not isinstance(value, bool):
        raise ToybenchError(f"{key} must be true or false, got {value!r}")
    return value


def _rule(minimum, maximum, above, below, kind: str) -> str:  # noqa: ANN001 - numbers or None
    low = (f"[{_num(minimum)}" if minimum is not None else
           f"({_num(above)}" if above is not None else None)
    high = (f"{_num(maximum)}]" if maximum is not None else
            f"{_num(below)})" if below is not None else None)
    if low and high:
        return f"{kind} in {low}, {high}"
    if low:
        return f"{kind} {'≥' if minimum is not None else '>'} {low[1:]}"
    if high:
        return f"{kind} {'≤' if maximum is not None else '<'} {high[:-1]}"
    return kind


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def require(ok: bool, message: str) -> None:
    """Raise ``ToybenchError(message)`` unless ``ok`` (config validation, one-line messages)."""
    if not ok:
        raise ToybenchError(message)

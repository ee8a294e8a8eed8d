"""Type and range checks for configuration dataclasses that may come from an untrusted side.

A plan, a graph configuration or a model configuration can arrive as JSON from a data
scientist. Python dataclasses check no types, so ``k = -0.4999999`` or ``intra_dim = 1e-6``
would be accepted and would silently shrink the sensitivity the noise is computed from. Each
such dataclass calls these helpers from ``__post_init__``: integers must be integers (not
floats, not booleans) within a range, floats finite within a range, flags real booleans.
Accepted values are normalised in place (``numpy.int64`` becomes ``int``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from fedmugrep.errors import ConfigError

__all__ = ["check_bool", "check_choice", "check_float", "check_int"]


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def check_int(
    obj: Any, name: str, low: int, high: int, *, error: type[ConfigError] = ConfigError
) -> int:
    """``obj.name`` must be an integer in ``[low, high]``; stored back as ``int``.

    Raises:
        ConfigError: for a float, a boolean, a string or a value out of range.
    """
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(
            f"{type(obj).__name__}.{name} must be an integer (got {type(value).__name__} "
            f"{value!r:.40}); pass a whole number in [{low}, {high}]"
        )
    value = int(value)
    if not low <= value <= high:
        raise error(
            f"{type(obj).__name__}.{name} must be in [{low}, {high}] (got {value}); pass a "
            "value in range"
        )
    _set(obj, name, value)
    return value


def check_float(
    obj: Any,
    name: str,
    low: float,
    high: float,
    *,
    low_open: bool = True,
    optional: bool = False,
    error: type[ConfigError] = ConfigError,
) -> float | None:
    """``obj.name`` must be a finite real number in ``(low, high]`` (``[low, high]`` when
    ``low_open`` is false); ``None`` is allowed when ``optional``. Stored back as ``float``.

    Raises:
        ConfigError: for a boolean, a string, NaN, an infinity or a value out of range.
    """
    value = getattr(obj, name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(
            f"{type(obj).__name__}.{name} must be a number (got {type(value).__name__} "
            f"{value!r:.40}); pass a finite value"
        )
    value = float(value)
    lo_ok = value > low if low_open else value >= low
    if not math.isfinite(value) or not lo_ok or value > high:
        bracket = "(" if low_open else "["
        raise error(
            f"{type(obj).__name__}.{name} must be in {bracket}{low:g}, {high:g}] (got "
            f"{value!r}); pass a finite value in range"
        )
    _set(obj, name, value)
    return value


def check_bool(obj: Any, name: str, *, optional: bool = False) -> bool | None:
    """``obj.name`` must be ``True`` or ``False`` (or ``None`` when ``optional``).

    Raises:
        ConfigError: for anything else (``0``, ``"yes"``, ...).
    """
    value = getattr(obj, name)
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise ConfigError(
            f"{type(obj).__name__}.{name} must be true or false (got {type(value).__name__} "
            f"{value!r:.40})"
        )
    return value


def check_choice(obj: Any, name: str, choices: tuple[str, ...]) -> str:
    """``obj.name`` must be one of ``choices``.

    Raises:
        ConfigError: naming the valid choices.
    """
    value = getattr(obj, name)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            f"{type(obj).__name__}.{name} must be one of {list(choices)} (got {value!r:.40})"
        )
    return value

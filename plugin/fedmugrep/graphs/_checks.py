"""Argument checks shared by the graph builders (messages say what is wrong and how to fix it)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from fedmugrep.errors import ConfigError, PrivacyParameterError


def float_array(name: str, value: object, n: int | None = None) -> np.ndarray:
    """A finite 1-D float64 array, optionally of length ``n``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be numeric ({exc}); pass a float array") from None
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be 1-D (got shape {tuple(arr.shape)}); pass a flat array")
    if n is not None and arr.shape[0] != n:
        raise ConfigError(
            f"{name} must have the same length as lat ({n}) (got {arr.shape[0]}); "
            "pass one value per point"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise ConfigError(
            f"{name} must be finite (got {arr[i]} at index {i}); drop or impute missing values"
        )
    return arr


def lat_lon(lat: object, lon: object, *, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Validated WGS84 degree arrays of equal length."""
    la = float_array(f"{prefix}lat", lat)
    lo = float_array(f"{prefix}lon", lon, la.shape[0])
    if la.size and (np.abs(la) > 90).any():
        i = int(np.argmax(np.abs(la) > 90))
        raise ConfigError(
            f"{prefix}lat must be in [-90, 90] (got {la[i]} at index {i}); pass WGS84 degrees"
        )
    if lo.size and (np.abs(lo) > 180).any():
        i = int(np.argmax(np.abs(lo) > 180))
        raise ConfigError(
            f"{prefix}lon must be in [-180, 180] (got {lo[i]} at index {i}); pass WGS84 degrees"
        )
    return la, lo


def degree_bound(name: str, value: object) -> int:
    """A degree bound K >= 1 (a privacy parameter: sensitivities are derived from it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise PrivacyParameterError(
            f"{name} must be an integer >= 1 (got {value!r}); pass the degree bound K, e.g. {name}=8"
        )
    return int(value)


def count(name: str, value: object) -> int:
    """A neighbour count >= 0 (0 gives an empty relation)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise ConfigError(f"{name} must be an integer >= 0 (got {value!r}); pass e.g. {name}=4")
    return int(value)


def positive(name: str, value: object) -> float:
    """A finite float > 0."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number > 0 (got {value!r}); pass e.g. 1.5") from None
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name} must be > 0 (got {value!r}); pass a positive finite value")
    return v


def labels(name: str, value: object, n: int) -> np.ndarray:
    """A length-``n`` label array (any hashable dtype) as int codes ``[n]``."""
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ConfigError(
            f"{name} must be 1-D with one entry per point ({n}) (got shape {tuple(arr.shape)}); "
            "pass one label per point"
        )
    if arr.dtype == object:
        arr = arr.astype(str)
    _, codes = np.unique(arr, return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def bool_mask(name: str, value: object, n: int) -> np.ndarray:
    """A length-``n`` boolean mask."""
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.shape[0] != n or arr.dtype != np.bool_:
        raise ConfigError(
            f"{name} must be a 1-D bool array of length {n} (got dtype {arr.dtype}, "
            f"shape {tuple(arr.shape)}); pass e.g. known_price.astype(bool)"
        )
    return arr

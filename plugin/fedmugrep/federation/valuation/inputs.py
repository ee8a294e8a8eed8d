"""Reading and checking the properties and sales a valuation is asked for: every file, row and
column a user gives is checked against what the model was trained on, with errors that name it."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from fedmugrep.data import loading as _loading
from fedmugrep.data.regions import assign_regions
from fedmugrep.data.schema import LAT_RANGE, LON_RANGE
from fedmugrep.errors import ConfigError
from fedmugrep.training.prepare import Encoders

__all__ = [
    "MAX_PRICE",
    "MAX_PROFILE_Z",
    "PRICE_FACTOR",
    "check_prices",
    "check_profile",
    "load_history",
    "load_properties",
    "profile_columns",
    "validate_properties",
    "with_regions",
]

_SOURCE = "<properties>"

#: Highest sale price a history row may have (currency units): far above any property sale, in
#: any currency, but it stops overflowing values such as 1e308.
MAX_PRICE = 1e15

#: A history price more than this factor above or below the model's typical price (the
#: geometric mean of its training prices) is refused as absurd (wrong unit or currency).
PRICE_FACTOR = 1000.0

#: A numeric profile value more than this many training standard deviations away from the
#: training mean is refused as absurd (wrong unit, a typo, a sentinel such as 999999).
MAX_PROFILE_Z = 100.0

#: Profile columns holding a size, which must be > 0 (``area_m2``, ``living_area``, ``size``...).
_POSITIVE_PROFILE = re.compile(r"(^|_)(area|size|surface|sqm|sqft|m2)(_|$)", re.IGNORECASE)
#: Profile columns holding a count or an age, which must be >= 0 (``rooms``, ``building_age``...).
_NON_NEGATIVE_PROFILE = re.compile(r"(^|_)(rooms?|bedrooms?|bathrooms?|age)(_|$)", re.IGNORECASE)

_PRICE_FIX = "give the sale price in currency units (the currency the model was trained in)"


# ============================================================================ input validation
def load_properties(path: str | Path, *, id_column: str = "transaction_id") -> pd.DataFrame:
    """Load and validate a properties file (``.csv`` or ``.parquet``): the transactions schema
    without ``price`` (a ``price`` column, if any, is ignored).

    Raises:
        DataValidationError: naming the file, the 1-based data row and the column.
    """
    p, file = _loading._check_path(path)
    df = (
        _loading._read_csv(p, file)
        if p.suffix.lower() == ".csv"
        else _loading._read_parquet(p, file)
    )
    return validate_properties(df, file=file, id_column=id_column)


def load_history(path: str | Path, *, id_column: str = "transaction_id") -> pd.DataFrame:
    """Load and validate the caller's own earlier sales (the transactions schema, with ``price``)."""
    p, file = _loading._check_path(path)
    df = (
        _loading._read_csv(p, file)
        if p.suffix.lower() == ".csv"
        else _loading._read_parquet(p, file)
    )
    return validate_properties(df, file=file, id_column=id_column, require_price=True)


def validate_properties(
    frame: pd.DataFrame,
    *,
    file: str | None = None,
    id_column: str = "transaction_id",
    require_price: bool = False,
    required: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Check and type a properties (or, with ``require_price``, a sales history) frame.

    Columns: ``id_column`` (unique, non-empty), ``date`` (ISO 8601), ``lat`` in [-90, 90],
    ``lon`` in [-180, 180], optional ``district``/``community`` (non-empty when present),
    ``price`` > 0 and at most :data:`MAX_PRICE` when ``require_price``, every column of
    ``required`` (the model's profile columns), other columns typed like a transactions file's
    profile columns. Numeric profile values must be finite; a size column (``area_m2``,
    ``living_area``, ``size``...) must be > 0, a count or age column (``rooms``,
    ``building_age``...) >= 0. :meth:`ValuationModel.prepare` also refuses values absurd for
    the model (:data:`PRICE_FACTOR`, :data:`MAX_PROFILE_Z`).

    Args:
        frame: the raw or typed frame.
        file: name used in errors (default ``frame.attrs["source"]`` or ``<properties>``).
        id_column: the identifier column returned with each valuation.
        require_price: the frame is a sales history (prices required).
        required: further columns that must be present.

    Returns:
        A typed copy (ids ``str``, ``date`` ``datetime64[ns]``, coordinates ``float64``).

    Raises:
        DataValidationError: naming the file, the 1-based data row (header excluded) and the
            column of the first problem, with a fix.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ConfigError(
            f"properties must be a pandas DataFrame (got {type(frame).__name__}); "
            "load a file with load_properties"
        )
    file = file or str(frame.attrs.get("source", _SOURCE))
    kind = "history" if require_price else "properties"
    if len(frame) == 0:
        raise _loading._fail(
            file, f"{kind} table has no data rows", "add at least one property under the header"
        )
    df = frame.reset_index(drop=True)
    need = [id_column, "date", "lat", "lon"] + (["price"] if require_price else [])
    for name in [*need, *required]:
        if name not in df.columns:
            extra = "" if name in need else " (the model was trained with it)"
            raise _loading._fail(
                file,
                f"required column '{name}' is missing{extra}",
                f"add a '{name}' column; a {kind} table needs {', '.join(need)}"
                + (f" and the profile columns {', '.join(required)}" if required else ""),
                column=name,
            )
    col = _loading._Collector(file, [str(c) for c in df.columns])
    out: dict[str, Any] = {}
    out[id_column] = _loading._check_ids(
        col, df, id_column, unique=True, what=f"a unique {id_column}"
    )
    out["date"] = _loading._check_date(col, df, "date")
    out["lat"] = _loading._check_number(
        col,
        df,
        "lat",
        required=True,
        low=LAT_RANGE[0],
        high=LAT_RANGE[1],
        range_fix=_loading._LAT_FIX,
    )
    out["lon"] = _loading._check_number(
        col,
        df,
        "lon",
        required=True,
        low=LON_RANGE[0],
        high=LON_RANGE[1],
        range_fix=_loading._LON_FIX,
    )
    if require_price:
        price = _loading._check_number(
            col, df, "price", required=True, low=0.0, low_open=True, range_fix=_PRICE_FIX
        )
        col.add_mask(
            np.isfinite(price) & (price > MAX_PRICE),
            "price",
            lambda i: (
                f"price must be <= {MAX_PRICE:g} (got {price[i]:g}), no sale costs that much",
                _PRICE_FIX,
            ),
        )
        out["price"] = price
    for name in ("district", "community"):
        if name in df.columns:
            out[name] = _loading._check_ids(
                col, df, name, unique=False, what=f"the {name}, or delete the '{name}' column"
            )
    reserved = {*out, "price"}
    for name in (str(c) for c in df.columns if str(c) not in reserved):
        _check_profile_number(col, df, name)
    col.raise_if_any()
    result = {}
    for c in df.columns:
        if c in out:
            result[c] = pd.Series(out[c])
        elif c == "price":
            continue  # a properties table's price (if any) is never used
        else:
            result[c] = _loading._infer_profile(df[c])
    typed = pd.DataFrame(result)
    typed.attrs["source"] = file
    return typed


def _check_profile_number(col: _loading._Collector, df: pd.DataFrame, name: str) -> None:
    """A profile column that holds numbers only: finite; a size > 0, a count or age >= 0.

    Text columns (categorical) are left alone; empty cells are allowed (imputed).
    """
    raw = df[name]
    if ptypes.is_bool_dtype(raw) or ptypes.is_datetime64_any_dtype(raw):
        return
    _, empty, bad = _loading._numbers(raw)
    if bad.any() or empty.all():
        return
    if _POSITIVE_PROFILE.search(name):
        fix = f"give {name} as a positive number in the unit the model was trained with"
        _loading._check_number(col, df, name, required=False, low=0.0, low_open=True, range_fix=fix)
    elif _NON_NEGATIVE_PROFILE.search(name):
        fix = f"give {name} as a number >= 0"
        _loading._check_number(col, df, name, required=False, low=0.0, range_fix=fix)
    else:
        _loading._check_number(col, df, name, required=False)


def check_profile(df: pd.DataFrame, enc: Encoders) -> None:
    """Numeric profile columns must hold numbers (empty cells are imputed by the encoder),
    none more than :data:`MAX_PROFILE_Z` training standard deviations from the training mean."""
    file = str(df.attrs.get("source", _SOURCE))
    col = _loading._Collector(file, [str(c) for c in df.columns])
    for spec in enc.features.numeric:
        name = spec["name"]
        raw = df[name]
        values, _, bad = _loading._numbers(raw)
        col.add_mask(
            bad,
            name,
            lambda i, n=name, r=raw: (
                f"{n} is numeric in the model but holds {_loading._show(r.iloc[i])}",
                _loading._NUMBER_FIX,
            ),
        )
        mean, std = float(spec["mean"]), float(spec["std"]) or 1.0
        with np.errstate(invalid="ignore", over="ignore"):
            far = np.isfinite(values) & (np.abs(values - mean) > MAX_PROFILE_Z * std)
        col.add_mask(
            far,
            name,
            lambda i, n=name, v=values, m=mean, sd=std: (
                f"{n} {v[i]:g} is absurd for this model: more than {MAX_PROFILE_Z:g} standard "
                f"deviations from the mean of its training data ({m:.4g}, sd {sd:.4g})",
                f"check the unit of {n} and the value (a typo, or a placeholder such as "
                "999999?); leave the cell empty if it is unknown",
            ),
        )
    col.raise_if_any()


def check_prices(df: pd.DataFrame, enc: Encoders) -> None:
    """History prices within :data:`PRICE_FACTOR` of the model's typical price."""
    file = str(df.attrs.get("source", _SOURCE))
    col = _loading._Collector(file, [str(c) for c in df.columns])
    price = df["price"].to_numpy(np.float64)
    typical = math.exp(enc.y_center)
    with np.errstate(divide="ignore", invalid="ignore"):
        far = np.abs(np.log(price) - enc.y_center) > math.log(PRICE_FACTOR)
    col.add_mask(
        far,
        "price",
        lambda i: (
            f"price {price[i]:g} is absurd for this model: more than {PRICE_FACTOR:g} times "
            f"above or below its typical price {typical:,.0f}",
            f"{_PRICE_FIX}; check the unit (thousands?) and the currency, or delete the row",
        ),
    )
    col.raise_if_any()


def profile_columns(enc: Encoders) -> tuple[str, ...]:
    """The profile columns the model's feature encoder was fitted on (numeric, then categorical)."""
    return tuple(c["name"] for c in enc.features.numeric + enc.features.categorical)


def with_regions(df: pd.DataFrame, enc: Encoders, geography: pd.DataFrame | None) -> pd.DataFrame:
    """``df`` with ``community`` and ``district`` filled from the public geography (nearest
    community centre, its district) where missing, and both checked against the vocabulary."""
    file = str(df.attrs.get("source", _SOURCE))
    if not {"community", "district"} <= set(df.columns):
        if geography is None:
            missing = "community" if "community" not in df.columns else "district"
            raise _loading._fail(
                file,
                f"column '{missing}' is missing and no public geography was given to derive it",
                "add 'community' and 'district' columns (names from the model's vocabulary), "
                "or give the public communities table (community, district, lat, lon)",
                column=missing,
            )
        df = assign_regions(df, geography)
        df.attrs["source"] = file
    for name, codes in (
        ("community", enc.vocab.community_codes(df["community"])),
        ("district", enc.vocab.district_codes(df["district"])),
    ):
        bad = np.flatnonzero(codes < 0)
        if len(bad):
            i = int(bad[0])
            known = enc.vocab.communities if name == "community" else enc.vocab.districts
            raise _loading._fail(
                file,
                f"{name} {_loading._show(df[name].iloc[i])} is not in the model's vocabulary",
                f"use one of the model's {len(known)} {name} names (e.g. {known[0]!r}), or "
                f"delete the '{name}' column to derive it from the public geography",
                row=i + 1,
                column=name,
            )
    return df

"""Mocks from public information only: what a data owner declares public about a table.

A datasite shows data scientists a *mock* of each private table: a frame with the same columns
and types whose rows are made up. The federation fits its public artefacts (feature encoder,
split dates, price scale) and pretrains on the mocks, so a mock must say something true about
the data without copying a row or revealing the row count. Here it is drawn from a
:class:`MockDeclaration`: what the owner declares public, per column, in the ``[mock]`` section
of the datasite TOML (or a ``public.toml`` beside a city folder)::

    [mock]
    rows = 300                              # rows of the mock (never the private count)
    dates = ["2008-05-15", "2008-05-21"]    # first and last sale date, inclusive
    price = [30000, 900000]                 # plausible price range, currency units

    [mock.columns.beds]
    kind = "integer"                        # "number", "integer" or "category"
    range = [1, 8]
    unit = "bedrooms"                       # optional, shown to reviewers

    [mock.columns.type]
    kind = "category"
    categories = ["Residential", "Condo", "Multi_Family"]

Locations come from the public geography of the communities (their names, districts and
centres): each mock sale lies near a community centre drawn at random. What is not declared
is *neutral* in the mock (missing numbers, categories and dates): with nothing declared the
datasite still starts on a schema-only mock, and :func:`declaration_notes` says what declaring
would add. The federation uses only what the mock describes (:func:`described_columns`): an
undeclared profile column is left out of the model rather than fitted on made-up values, and
training refuses a mock without a date range or a price range, which the split dates and the
price scale need.

:func:`check_declaration` is the owner's check, at upload time, that the private table matches
what it declares (every declared column present, every value inside its declared range or
categories), with errors that name the file, row and column.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from fedmugrep.data.geo import project_km
from fedmugrep.data.regions import _kmeans, default_n_districts
from fedmugrep.data.schema import TRANSACTION_RESERVED, community_attribute_columns
from fedmugrep.errors import ConfigError, DataValidationError
from fedmugrep.tomlfile import read_toml

__all__ = [
    "ColumnDeclaration",
    "DEFAULT_MOCK_ROWS",
    "MockDeclaration",
    "check_declaration",
    "declaration_notes",
    "declared_region_mocks",
    "declared_transaction_mock",
    "described_columns",
    "load_declaration",
    "with_public_districts",
]

#: Rows of a declared mock when ``[mock] rows`` is not given.
DEFAULT_MOCK_ROWS = 200
KINDS = ("number", "integer", "category")
_MOCK_KEYS = frozenset({"source", "file", "rows", "seed", "dates", "price", "columns"})
#: ``[mock] source``: drawn from the declaration (default), read from the owner's ``file``, or
#: the built-in synthetic city (for the synthetic example data only).
SOURCES = ("declared", "file", "synthetic")
_COLUMN_KEYS = frozenset({"kind", "range", "categories", "unit"})
#: Spread of a mock sale around its community centre, in degrees (about 500 m).
_JITTER_DEG = 0.005


@dataclass(frozen=True)
class ColumnDeclaration:
    """What an owner declares public about one column.

    Attributes:
        name: the column.
        kind: ``"number"``, ``"integer"`` or ``"category"``.
        range: ``(low, high)`` plausible bounds, inclusive (numbers and integers).
        categories: the possible values (categories).
        unit: the unit, shown to reviewers (optional).
    """

    name: str
    kind: str
    range: tuple[float, float] | None = None
    categories: tuple[str, ...] | None = None
    unit: str | None = None

    def describe(self) -> str:
        """One line for a review sheet, e.g. ``beds: integer in [1, 8] bedrooms``."""
        if self.kind == "category":
            shown = ", ".join(self.categories or ())
            return f"{self.name}: category of {{{shown}}}"
        lo, hi = self.range or (float("nan"), float("nan"))
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.name}: {self.kind} in [{lo:g}, {hi:g}]{unit}"


@dataclass(frozen=True)
class MockDeclaration:
    """What an owner declares public about a sales table (the ``[mock]`` section).

    Attributes:
        rows: rows of the mock (public; never the private table's count).
        seed: seed of the mock's random draws (with the datasite name).
        dates: first and last sale date, inclusive, or ``None`` (not declared).
        price: plausible price range, or ``None``.
        columns: column name -> its :class:`ColumnDeclaration`.
        source: where the declaration was read from (for messages).
        kind: how the mock is made (:data:`SOURCES`): ``"declared"`` from this declaration,
            ``"file"`` read from :attr:`file` (a mock table the owner wrote), ``"synthetic"``
            the built-in synthetic city drawn with :attr:`seed` (for the example data, which
            the synthetic generator made).
        file: the owner's mock file (``kind == "file"``).
    """

    rows: int = DEFAULT_MOCK_ROWS
    seed: int = 1000
    dates: tuple[pd.Timestamp, pd.Timestamp] | None = None
    price: tuple[float, float] | None = None
    columns: Mapping[str, ColumnDeclaration] = field(default_factory=dict)
    source: str = "<declaration>"
    kind: str = "declared"
    file: Path | None = None

    @property
    def is_empty(self) -> bool:
        """Nothing declared: the mock is schema-only."""
        return (
            self.kind == "declared"
            and self.dates is None
            and self.price is None
            and not self.columns
        )

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], *, source: str, base: Path | None = None
    ) -> MockDeclaration:
        """Parse a ``[mock]`` table (a relative ``file`` is relative to ``base``).

        Raises:
            ConfigError: naming ``source`` and the key, on an unknown key, a bad kind, range,
                category list or date.
        """
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: [mock] must be a table")
        unknown = sorted(set(raw) - _MOCK_KEYS)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {unknown} in [mock]; valid keys: {sorted(_MOCK_KEYS)}"
            )
        kind = raw.get("source", "file" if "file" in raw else "declared")
        if kind not in SOURCES:
            raise ConfigError(
                f"{source}: [mock] source must be one of {list(SOURCES)} (got {kind!r})"
            )
        file = None
        if kind == "file":
            if not isinstance(raw.get("file"), str):
                raise ConfigError(f'{source}: [mock] source = "file" needs file = "mock.csv"')
            file = Path(raw["file"])
            if not file.is_absolute() and base is not None:
                file = base / file
        rows = raw.get("rows", DEFAULT_MOCK_ROWS)
        if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= 100_000:
            raise ConfigError(
                f"{source}: [mock] rows must be an integer in 1..100000 (got {rows!r})"
            )
        seed = raw.get("seed", 1000)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"{source}: [mock] seed must be an integer (got {seed!r})")
        dates = None
        if "dates" in raw:
            dates = _date_pair(raw["dates"], f"{source}: [mock] dates")
        price = None
        if "price" in raw:
            price = _range(raw["price"], f"{source}: [mock] price")
            if price[0] <= 0:
                raise ConfigError(f"{source}: [mock] price must be positive (got {list(price)})")
        columns_raw = raw.get("columns", {})
        if not isinstance(columns_raw, Mapping):
            raise ConfigError(f"{source}: [mock.columns] must be a table of column tables")
        columns = {
            str(name): _column(str(name), spec, f"{source}: [mock.columns.{name}]")
            for name, spec in columns_raw.items()
        }
        reserved = sorted(set(columns) & set(TRANSACTION_RESERVED))
        if reserved:
            raise ConfigError(
                f"{source}: [mock.columns] declares reserved column(s) {reserved}; declare dates "
                "and price in [mock] (dates = [...], price = [...]); locations come from the "
                "communities' public geography"
            )
        return cls(rows, seed, dates, price, columns, source, kind, file)

    def describe(self) -> list[str]:
        """Lines for a review sheet: everything the mock is drawn from."""
        if self.kind == "synthetic":
            return [f"the built-in synthetic city, seed {self.seed} (example data only)"]
        if self.kind == "file":
            return [f"the owner's mock file {self.file}"]
        if self.is_empty:
            return ["schema only (nothing declared: neutral values)"]
        lines = [f"rows: {self.rows} (made up; not the private count)"]
        if self.dates is not None:
            lines.append(f"dates: {self.dates[0].date()} .. {self.dates[1].date()}")
        if self.price is not None:
            lines.append(f"price: [{self.price[0]:g}, {self.price[1]:g}]")
        lines += [c.describe() for c in self.columns.values()]
        return lines


def load_declaration(path: str | Path) -> MockDeclaration:
    """The ``[mock]`` section of a TOML file (an empty declaration when it has none)."""
    raw = read_toml(path, what="public declaration")
    return MockDeclaration.from_dict(
        raw.get("mock", {}), source=str(path), base=Path(path).resolve().parent
    )


def _range(value: Any, where: str) -> tuple[float, float]:
    ok = (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )
    if not ok or not all(np.isfinite(value)) or value[0] > value[1]:
        raise ConfigError(f"{where} must be [low, high] with finite low <= high (got {value!r})")
    return float(value[0]), float(value[1])


def _date_pair(value: Any, where: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    if not (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2):
        raise ConfigError(f'{where} must be ["first", "last"] ISO dates (got {value!r})')
    try:
        first, last = (pd.Timestamp(str(v)).normalize() for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f'{where} must be ["first", "last"] ISO dates (got {value!r})') from None
    if first > last:
        raise ConfigError(f"{where}: the first date {first.date()} is after the last {last.date()}")
    return first, last


def _column(name: str, spec: Any, where: str) -> ColumnDeclaration:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} must be a table (kind = ..., range = [...] or categories)")
    unknown = sorted(set(spec) - _COLUMN_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(_COLUMN_KEYS)}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {list(KINDS)} (got {kind!r})")
    unit = spec.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise ConfigError(f"{where}: unit must be text (got {unit!r})")
    if kind == "category":
        cats = spec.get("categories")
        if (
            not isinstance(cats, Sequence)
            or isinstance(cats, str)
            or not cats
            or len(set(map(str, cats))) != len(cats)
        ):
            raise ConfigError(f"{where}: categories must be a non-empty list of distinct values")
        return ColumnDeclaration(name, kind, None, tuple(str(c) for c in cats), unit)
    if "range" not in spec:
        raise ConfigError(f"{where}: a {kind} column needs range = [low, high]")
    return ColumnDeclaration(name, kind, _range(spec["range"], f"{where} range"), None, unit)


# ============================================================================ geography
def with_public_districts(communities: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """``communities`` with a ``district`` column: its own, or one derived from the public
    community centres alone (k-means, ``round(sqrt(n))`` districts named ``D1``, ``D2``, ...),
    so that every party of a federation derives the same districts without seeing a sale.

    A table without centres and without districts gets a single district ``D1``.
    """
    if "district" in communities.columns:
        return communities
    # the same rule assign_regions uses when a table has no districts, on public centres only
    out = communities.copy()
    if {"lat", "lon"} <= set(out.columns) and len(out) > 1:
        lat = out["lat"].to_numpy(dtype=float)
        lon = out["lon"].to_numpy(dtype=float)
        xy = project_km(lat, lon, float(lat.mean()), float(lon.mean()))
        n_distinct = len(np.unique(np.round(xy, 9), axis=0))
        k = min(default_n_districts(len(out)), n_distinct)
        labels, _ = _kmeans(xy, k, seed)
        out["district"] = [f"D{j + 1}" for j in labels]
    else:
        out["district"] = "D1"
    out.attrs = dict(communities.attrs)
    return out


# ============================================================================ mocks
def _rng(decl: MockDeclaration, name: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{decl.seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _neutral(dtype: Any, n: int) -> pd.Series:
    if ptypes.is_datetime64_any_dtype(dtype):
        return pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns]")
    if ptypes.is_bool_dtype(dtype) or not ptypes.is_numeric_dtype(dtype):
        return pd.Series([None] * n, dtype=object)
    return pd.Series(np.full(n, np.nan))


def _draw(col: ColumnDeclaration, n: int, rng: np.random.Generator) -> pd.Series:
    if col.kind == "category":
        assert col.categories is not None
        return pd.Series(rng.choice(np.array(col.categories, dtype=object), size=n), dtype=object)
    assert col.range is not None
    lo, hi = col.range
    if col.kind == "integer":
        return pd.Series(rng.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1, size=n))
    return pd.Series(rng.uniform(lo, hi, size=n))


def declared_transaction_mock(
    schema: pd.DataFrame,
    decl: MockDeclaration,
    geography: pd.DataFrame | None,
    name: str,
) -> pd.DataFrame:
    """A transaction datasite's mock, drawn from ``decl`` and the public ``geography``.

    Args:
        schema: the private table; only its column names and dtypes are read.
        decl: the owner's declaration.
        geography: the communities' public geography (``community``, ``district``, ``lat``,
            ``lon``) the mock's sales are placed in, or ``None`` (neutral locations).
        name: the datasite's name (seeds the draws with ``decl.seed``).

    Returns:
        ``decl.rows`` rows with ``schema``'s columns in its order: ids ``mock-<name>-<i>``;
        dates uniform over the declared range; prices log-uniform over the declared range;
        each sale at a random community's centre plus about 500 m of jitter; declared columns
        drawn uniformly from their range or categories; the rest neutral (missing).
    """
    n, rng = decl.rows, _rng(decl, name)
    out: dict[str, pd.Series] = {}
    out["transaction_id"] = pd.Series([f"mock-{name}-{i}" for i in range(n)], dtype=object)
    if decl.dates is not None:
        first, last = decl.dates
        days = rng.integers(0, (last - first).days + 1, size=n)
        out["date"] = pd.Series(first + pd.to_timedelta(days, unit="D")).astype("datetime64[ns]")
    else:
        out["date"] = _neutral("datetime64[ns]", n)
    if decl.price is not None:
        lo, hi = np.log(decl.price[0]), np.log(decl.price[1])
        out["price"] = pd.Series(np.exp(rng.uniform(lo, hi, size=n)))
    else:
        out["price"] = _neutral(np.float64, n)
    if geography is not None and len(geography):
        pick = rng.integers(0, len(geography), size=n)
        geo = geography.reset_index(drop=True).iloc[pick].reset_index(drop=True)
        for c in ("community", "district"):
            if c in geo.columns:
                out[c] = geo[c].astype(str).astype(object)
        for c in ("lat", "lon"):
            base = geo[c].to_numpy(dtype=float) if c in geo.columns else np.full(n, np.nan)
            out[c] = pd.Series(base + rng.normal(0.0, _JITTER_DEG, size=n))
    else:
        out["lat"], out["lon"] = _neutral(np.float64, n), _neutral(np.float64, n)
    for c, col in decl.columns.items():
        out[c] = _draw(col, n, rng)
    frame = pd.DataFrame(
        {c: (out[c] if c in out else _neutral(schema[c].dtype, n)) for c in schema.columns}
    )
    return _cast_like(frame, schema)


def declared_region_mocks(
    communities: pd.DataFrame,
    mobility: pd.DataFrame | None,
    decl: MockDeclaration,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The region datasite's mocks: the public geography with declared (else neutral)
    community attributes, and an empty mobility table (flows are never mocked from the
    private ones)."""
    rng = _rng(decl, "region")
    n = len(communities)
    frame = communities.reset_index(drop=True).copy()
    for c in community_attribute_columns(communities):
        col = decl.columns.get(c)
        frame[c] = _draw(col, n, rng) if col is not None else _neutral(communities[c].dtype, n)
    mob_cols = list(mobility.columns) if mobility is not None else ["src", "dst", "flow"]
    mob = pd.DataFrame({c: pd.Series([], dtype=object if c != "flow" else float) for c in mob_cols})
    return _cast_like(frame, communities), mob


def _cast_like(frame: pd.DataFrame, schema: pd.DataFrame) -> pd.DataFrame:
    out = frame[list(schema.columns)].reset_index(drop=True).copy()
    for col, dtype in schema.dtypes.items():
        if out[col].isna().all() and not ptypes.is_numeric_dtype(dtype):
            continue  # a neutral column keeps its missing values
        try:
            out[col] = out[col].astype(dtype)
        except (TypeError, ValueError):
            pass
    return out


def described_columns(mock: pd.DataFrame, candidates: Sequence[str]) -> list[str]:
    """The ``candidates`` a mock actually describes (not entirely missing): the columns the
    public encoders may be fitted on."""
    return [c for c in candidates if c in mock.columns and not mock[c].isna().all()]


# ============================================================================ owner checks
def check_declaration(private: pd.DataFrame, decl: MockDeclaration, *, file: str) -> None:
    """The owner's check that ``private`` matches what ``decl`` declares public.

    Raises:
        DataValidationError: naming ``file``, the first offending 1-based row and the column:
            a declared column the table lacks, a value outside its declared range or
            categories, a date outside the declared range, a price outside it.
    """
    for c in decl.columns:
        if c not in private.columns:
            raise DataValidationError(
                file=file,
                column=c,
                problem=f"column '{c}' is declared public in {decl.source} but the table has "
                "no such column",
                fix=f"remove [mock.columns.{c}] from {decl.source} or add the column",
            )
    checks: list[tuple[str, np.ndarray, str, str]] = []
    if decl.dates is not None and "date" in private.columns:
        d = pd.to_datetime(private["date"]).dt.normalize()
        first, last = decl.dates
        bad = (d < first) | (d > last)
        checks.append(
            (
                "date",
                bad.to_numpy(),
                f"outside the declared dates {first.date()}..{last.date()}",
                "dates",
            )
        )
    if decl.price is not None and "price" in private.columns:
        p = private["price"].to_numpy(dtype=float)
        checks.append(
            (
                "price",
                (p < decl.price[0]) | (p > decl.price[1]),
                f"outside the declared price range [{decl.price[0]:g}, {decl.price[1]:g}]",
                "price",
            )
        )
    for c, col in decl.columns.items():
        s = private[c]
        if col.kind == "category":
            assert col.categories is not None
            text = s.astype(object).map(lambda v: None if pd.isna(v) else str(v))
            bad = text.notna() & ~text.isin(col.categories)
            checks.append(
                (
                    c,
                    bad.to_numpy(),
                    f"not one of the declared categories {list(col.categories)}",
                    f"columns.{c}",
                )
            )
        else:
            assert col.range is not None
            x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
            bad = np.isfinite(x) & ((x < col.range[0]) | (x > col.range[1]))
            bad |= s.notna().to_numpy() & ~np.isfinite(x)
            checks.append(
                (
                    c,
                    bad,
                    f"outside the declared range [{col.range[0]:g}, {col.range[1]:g}]",
                    f"columns.{c}",
                )
            )
    for c, bad, why, key in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataValidationError(
                file=file,
                row=i + 1,
                column=c,
                problem=f"value {private[c].iloc[i]!r} is {why} ({int(bad.sum())} row(s) are)",
                fix=f"widen [mock] {key} in {decl.source} (what you declare is public), or fix "
                "the rows",
            )


def declaration_notes(
    private: pd.DataFrame, decl: MockDeclaration, profile: Sequence[str]
) -> list[str]:
    """What the owner could declare to make the mock useful (``[]`` when nothing is missing)."""
    notes = []
    if decl.dates is None:
        notes.append(
            "no date range declared ([mock] dates): training cannot choose its split dates "
            "from public information"
        )
    if decl.price is None:
        notes.append("no price range declared ([mock] price): training has no public price scale")
    missing = [c for c in profile if c not in decl.columns]
    if missing:
        notes.append(
            f"undeclared column(s) {missing} are neutral in the mock and unused by the model; "
            "declare their range or categories in [mock.columns.<name>]"
        )
    return notes

"""Load and validate ``transactions``, ``communities`` and ``mobility`` files (CSV or Parquet).

Each loader either returns a fully validated frame or raises
:class:`~fedmugrep.errors.DataValidationError`; nothing is half-loaded. The error names the
file, the **1-based data row** (header excluded: row 1 is the first record under the header,
i.e. line 2 of a CSV file; blank lines are not counted) and the column, says what is wrong and
how to fix it. When a file has several cell-level problems, the error is about the first one
in reading order (row, then column position in the file); its message also lists up to
:data:`MAX_LISTED` problems, and all of them (up to that many) are on the exception's
``problems`` attribute as :class:`Problem` records.

Output dtypes: identifiers (``transaction_id``, ``community``, ``district``, ``src``, ``dst``)
are ``str`` with surrounding whitespace stripped; ``date`` is ``datetime64[ns]`` normalised to
midnight (time zones dropped, keeping the local wall-clock date); ``lat``, ``lon``, ``price``,
``flow`` and community attributes are ``float64``. Profile columns of a CSV transactions file
are inferred: numeric when every non-empty value parses as a number (``int64`` when all are
integral and none is missing, ``float64`` otherwise), categorical (``object`` of ``str``, NaN
for empty) otherwise. Parquet numeric, bool and datetime profile columns keep their stored
dtype, ``object`` text columns are inferred as for CSV, and ``category``/``string`` columns
become categorical ``object``. Rows keep file order; the index is a fresh ``RangeIndex``.
``df.attrs["source"]`` holds the path and ``df.attrs["kind"]`` the file kind.

Empty cells: ``""`` (after stripping) counts as empty everywhere; in numeric and date columns
``NA``, ``NaN``, ``null``, ``None``, ``N/A`` and ``#N/A`` (any case) also count as empty.
"""

from __future__ import annotations

import csv
import difflib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from fedmugrep.data.regions import assign_regions
from fedmugrep.data.schema import (
    COMMUNITIES,
    LAT_RANGE,
    LON_RANGE,
    MOBILITY,
    TRANSACTIONS,
    TableSchema,
)
from fedmugrep.errors import ConfigError, DataValidationError

__all__ = [
    "MAX_LISTED",
    "Problem",
    "assign_regions",
    "load_communities",
    "load_mobility",
    "load_transactions",
]

PathLike = str | os.PathLike[str]

MAX_LISTED = 10
"""Most problems listed in one error message (and kept on ``DataValidationError.problems``)."""

_SUFFIXES = (".csv", ".parquet")
_NA_TOKENS = frozenset({"", "na", "nan", "null", "none", "n/a", "#n/a"})
_NUMBER_FIX = (
    "write a plain number such as 350000.5 (no currency symbols, units, spaces or "
    "thousands separators)"
)
_DATE_FIX = "write dates as ISO 8601, e.g. 2021-03-15 (YYYY-MM-DD)"


@dataclass(frozen=True)
class Problem:
    """One cell-level problem found while validating a file.

    Attributes:
        row: 1-based data row (header excluded) or ``None`` for a file-wide problem.
        column: offending column or ``None``.
        problem: what is wrong.
        fix: how to fix it.
    """

    row: int | None
    column: str | None
    problem: str
    fix: str

    def describe(self) -> str:
        """``row 3, column 'price': price must be > 0 (got -1.0)``."""
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{', '.join(where)}: {self.problem}" if where else self.problem


def _fail(
    file: str, problem: str, fix: str, *, row: int | None = None, column: str | None = None
) -> DataValidationError:
    err = DataValidationError(file=file, row=row, column=column, problem=problem, fix=fix)
    err.problems = [Problem(row, column, problem, fix)]  # type: ignore[attr-defined]
    return err


def _show(value: object) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Collector:
    """Collects cell-level problems; raises for the first one in (row, column position) order."""

    def __init__(self, file: str, columns: Sequence[str]) -> None:
        self.file = file
        self._position = {c: i for i, c in enumerate(columns)}
        self._items: list[Problem] = []

    def add(self, row: int, column: str, problem: str, fix: str) -> None:
        self._items.append(Problem(row, column, problem, fix))

    def add_mask(
        self, mask: np.ndarray, column: str, describe: Callable[[int], tuple[str, str]]
    ) -> None:
        """Record the first :data:`MAX_LISTED` rows where ``mask`` is true.

        ``describe(i)`` gets the 0-based position and returns ``(problem, fix)``.
        """
        for i in np.flatnonzero(mask)[:MAX_LISTED]:
            problem, fix = describe(int(i))
            self.add(int(i) + 1, column, problem, fix)

    def raise_if_any(self) -> None:
        if not self._items:
            return
        items = sorted(
            self._items, key=lambda p: (p.row or 0, self._position.get(p.column or "", -1))
        )[:MAX_LISTED]
        first = items[0]
        problem = first.problem
        if len(self._items) > 1:
            more = "; ".join(p.describe() for p in items[1:])
            total = len(self._items)
            extra = f"{total - 1}+" if total >= MAX_LISTED else f"{total - 1}"
            problem = f"{problem} [{extra} more problem(s): {more}]"
        err = DataValidationError(
            file=self.file, row=first.row, column=first.column, problem=problem, fix=first.fix
        )
        err.problems = items  # type: ignore[attr-defined]
        raise err


# --------------------------------------------------------------------------- reading


def _check_path(path: PathLike) -> tuple[Path, str]:
    if not isinstance(path, str | os.PathLike):
        raise ConfigError(
            f"path must be a str or os.PathLike (got {type(path).__name__}); pass a file path"
        )
    p = Path(path)
    file = str(p)
    suffix = p.suffix.lower()
    if suffix not in _SUFFIXES:
        raise _fail(
            file,
            f"unsupported file type '{p.suffix or '(none)'}'",
            "save the table as .csv (UTF-8, comma-separated, one header line) or .parquet",
        )
    if not p.exists():
        raise _fail(
            file,
            "file not found",
            f"check the path (relative paths start at the current directory, {Path.cwd()})",
        )
    if p.is_dir():
        raise _fail(file, "is a directory, not a file", "pass the path of the file itself")
    return p, file


def _header_problems(names: list[str], file: str) -> None:
    for j, name in enumerate(names):
        if not name or name.startswith("Unnamed: "):
            raise _fail(
                file,
                f"header field {j + 1} has no name",
                "give every column a name or delete the column (a leading unnamed column is "
                "usually a saved index: write the file with index=False)",
                column=f"<unnamed column {j + 1}>",
            )
    seen: dict[str, int] = {}
    for j, name in enumerate(names):
        if name in seen:
            raise _fail(
                file,
                f"column name appears twice in the header (fields {seen[name] + 1} and {j + 1})",
                "rename or delete one of the two columns",
                column=name,
            )
        seen[name] = j


def _read_csv(p: Path, file: str) -> pd.DataFrame:
    """Read every cell as text with the ``csv`` module, so row numbers are exact."""
    unreadable = (
        "check that the file is a readable CSV file and that you have permission to read it"
    )
    try:
        with p.open("r", encoding="utf-8-sig", newline="") as fh:
            stripped = ([f.strip() for f in row] for row in csv.reader(fh))
            records = [row for row in stripped if any(row)]
    except UnicodeDecodeError:
        raise _fail(file, "file is not UTF-8 text", "re-save the file as UTF-8 CSV") from None
    except csv.Error as exc:
        raise _fail(file, f"malformed CSV ({exc})", unreadable) from None
    except OSError as exc:
        raise _fail(file, f"cannot read file ({exc.strerror or exc})", unreadable) from None
    if not records:
        raise _fail(
            file,
            "file is empty (no header and no rows)",
            "write a header line with the column names, then one line per record",
        )
    names = records[0]
    _header_problems(names, file)
    for i, row in enumerate(records[1:]):
        if len(row) != len(names):
            raise _fail(
                file,
                f"row has {len(row)} fields but the header has {len(names)}",
                "give every row exactly as many comma-separated fields as the header; quote "
                'values that contain commas ("Paris, 5e")',
                row=i + 1,
            )
    return pd.DataFrame(records[1:], columns=names, dtype=object)


def _read_parquet(p: Path, file: str) -> pd.DataFrame:
    try:
        df = pd.read_parquet(p)
    except Exception as exc:  # pyarrow raises many unrelated types for a corrupt file
        raise _fail(
            file,
            f"cannot read Parquet file ({type(exc).__name__}: {str(exc)[:200]})",
            "check that it is a valid Parquet file (pandas.read_parquet must open it); "
            "re-export it or save it as .csv",
        ) from None
    if not isinstance(df.index, pd.RangeIndex) and any(n is not None for n in df.index.names):
        df = df.reset_index()  # a column saved as the index (e.g. df.set_index("community"))
    df.columns = [str(c).strip() for c in df.columns]
    _header_problems(list(df.columns), file)
    for c in df.columns:  # strip text cells once, like the CSV reader does
        if ptypes.is_object_dtype(df[c]) and ptypes.infer_dtype(df[c], skipna=True) == "string":
            df[c] = df[c].map(lambda v: v.strip() if isinstance(v, str) else v)
    return df.reset_index(drop=True)


def _read(path: PathLike, schema: TableSchema) -> tuple[pd.DataFrame, str]:
    p, file = _check_path(path)
    df = _read_csv(p, file) if p.suffix.lower() == ".csv" else _read_parquet(p, file)
    if len(df) == 0:
        raise _fail(
            file, f"{schema.kind} file has no data rows", "add at least one record under the header"
        )
    _check_columns(df, schema, file)
    return df, file


def _check_columns(df: pd.DataFrame, schema: TableSchema, file: str) -> None:
    present = list(df.columns)
    for name in schema.required:
        if name in present:
            continue
        close = [c for c in present if c.lower() == name.lower()] or difflib.get_close_matches(
            name, present, n=1, cutoff=0.75
        )
        hint = f" (found '{close[0]}': rename it to '{name}')" if close else ""
        raise _fail(
            file,
            f"required column '{name}' is missing",
            f"add a '{name}' column{hint}; a {schema.kind} file needs "
            + ", ".join(schema.required),
            column=name,
        )
    if schema.closed:
        for name in present:
            if name not in schema.reserved:
                raise _fail(
                    file,
                    f"unknown column '{name}' in a {schema.kind} file",
                    f"a {schema.kind} file has exactly the columns "
                    f"{', '.join(schema.reserved)}; rename or delete '{name}'",
                    column=name,
                )


# --------------------------------------------------------------------------- cell parsing


def _cell_text(v: object) -> str:
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v)):
        return ""
    return str(v)


def _text(s: pd.Series) -> pd.Series:
    """Text of each cell (None/NaN/NA/NaT -> ""); the readers already stripped str cells."""
    obj = s.astype(object)
    if ptypes.infer_dtype(obj, skipna=False) == "string":  # fast path: every cell is a str
        return obj
    return pd.Series([_cell_text(v).strip() for v in obj], index=s.index, dtype=object)


def _na_mask(s: pd.Series) -> np.ndarray:
    if ptypes.is_numeric_dtype(s) or ptypes.is_datetime64_any_dtype(s):
        return s.isna().to_numpy()
    tokens = np.fromiter((v.lower() in _NA_TOKENS for v in _text(s)), dtype=bool, count=len(s))
    return tokens | s.isna().to_numpy()


def _strings(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Identifier cells as stripped ``str``; returns ``(values, empty_mask)``."""
    if ptypes.is_float_dtype(s):
        finite = s.dropna()
        if len(finite) and bool((finite == np.round(finite)).all()):
            s = s.astype("Int64")
    if ptypes.is_bool_dtype(s):
        s = s.astype(object)
    values = _text(s.astype(object))
    return values.to_numpy(dtype=object), (values == "").to_numpy()


def _numbers(s: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numeric cells as float64; returns ``(values, empty_mask, not_a_number_mask)``."""
    if ptypes.is_bool_dtype(s):
        return np.full(len(s), np.nan), s.isna().to_numpy(), s.notna().to_numpy()
    if ptypes.is_numeric_dtype(s):
        values = s.to_numpy(dtype=np.float64, na_value=np.nan)
        return values, np.isnan(values), np.zeros(len(s), dtype=bool)
    empty = _na_mask(s)
    text = _text(s).where(~empty, None)
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~empty & np.isnan(values)
    return values, empty, bad


def _dates(s: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Date cells as normalised ``datetime64[ns]``; returns ``(values, empty, unparseable)``."""
    empty = _na_mask(s)
    if ptypes.is_datetime64_any_dtype(s):
        parsed = s
    else:
        raw = s.where(~empty, None)
        is_text = np.fromiter((isinstance(v, str) for v in raw), dtype=bool, count=len(raw))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if is_text.any():
                raw = _text(raw).where(~empty, None)
                try:
                    parsed = pd.to_datetime(raw, format="ISO8601", errors="coerce")
                except (ValueError, TypeError):
                    parsed = None
                if parsed is None or not ptypes.is_datetime64_any_dtype(parsed):
                    parsed = pd.to_datetime(raw, format="ISO8601", errors="coerce", utc=True)
            else:  # date/datetime objects (e.g. a Parquet date32 column)
                parsed = pd.to_datetime(raw, errors="coerce")
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_localize(None)
    parsed = parsed.astype("datetime64[ns]").dt.normalize()
    bad = ~empty & parsed.isna().to_numpy()
    return parsed.to_numpy(), empty, bad


def _infer_profile(s: pd.Series) -> pd.Series:
    """Type a profile column: numeric if every non-empty cell is a number, else categorical."""
    s = s.reset_index(drop=True)
    if ptypes.is_bool_dtype(s) or ptypes.is_numeric_dtype(s) or ptypes.is_datetime64_any_dtype(s):
        return s
    text = _text(s.astype(object))
    categorical = text.where(text != "", np.nan).astype(object)
    if not ptypes.is_object_dtype(s):  # Parquet category / string columns stay categorical
        return categorical
    values, empty, bad = _numbers(s)
    if empty.all():
        return pd.Series(np.full(len(s), np.nan))
    if bad.any():
        return categorical
    if not empty.any() and np.all(values == np.round(values)) and np.all(np.abs(values) < 2**53):
        return pd.Series(values.astype(np.int64))
    return pd.Series(values)


# --------------------------------------------------------------------------- column checks


def _check_ids(
    col: _Collector, df: pd.DataFrame, name: str, *, unique: bool, what: str
) -> np.ndarray:
    values, empty = _strings(df[name])
    col.add_mask(
        empty,
        name,
        lambda i: (f"{name} is empty", f"fill in {what} for this row or delete the row"),
    )
    if unique:
        s = pd.Series(values[~empty], index=np.flatnonzero(~empty))
        later = s.duplicated(keep="first")
        if later.any():
            first_row = {v: int(i) for i, v in s[~s.duplicated(keep="first")].items()}
            for pos, v in s[later].iloc[:MAX_LISTED].items():
                col.add(
                    int(pos) + 1,
                    name,
                    f"{name} {_show(v)} is duplicated (rows {first_row[v] + 1} and {int(pos) + 1})",
                    f"make {name} unique: delete the duplicate record or give it a new id",
                )
    return values


def _check_number(
    col: _Collector,
    df: pd.DataFrame,
    name: str,
    *,
    required: bool,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    range_fix: str = "",
) -> np.ndarray:
    raw = df[name]
    values, empty, bad = _numbers(raw)
    if required:
        col.add_mask(
            empty,
            name,
            lambda i: (f"{name} is empty", f"fill in {name} for this row or delete the row"),
        )
    col.add_mask(
        bad, name, lambda i: (f"{name} is not a number (got {_show(raw.iloc[i])})", _NUMBER_FIX)
    )
    ok = ~empty & ~bad
    nonfinite = ok & ~np.isfinite(values)
    col.add_mask(
        nonfinite,
        name,
        lambda i: (f"{name} must be a finite number (got {values[i]})", _NUMBER_FIX),
    )
    ok &= ~nonfinite
    if low is not None or high is not None:
        out = np.zeros(len(values), dtype=bool)
        with np.errstate(invalid="ignore"):
            if low is not None:
                out |= values <= low if low_open else values < low
            if high is not None:
                out |= values > high
        out &= ok
        if low is not None and high is not None:
            rule = f"in [{low:g}, {high:g}]"
        elif low is not None:
            rule = f"> {low:g}" if low_open else f">= {low:g}"
        else:
            rule = f"<= {high:g}"
        col.add_mask(out, name, lambda i: (f"{name} must be {rule} (got {values[i]:g})", range_fix))
    return values


def _check_date(col: _Collector, df: pd.DataFrame, name: str) -> np.ndarray:
    raw = df[name]
    values, empty, bad = _dates(raw)
    col.add_mask(
        empty, name, lambda i: (f"{name} is empty", f"fill in the {name} for this row; {_DATE_FIX}")
    )
    col.add_mask(
        bad,
        name,
        lambda i: (f"{name} is not a valid ISO 8601 date (got {_show(raw.iloc[i])})", _DATE_FIX),
    )
    return values


_LAT_FIX = "use WGS84 decimal degrees (lat in [-90, 90]); check that lat and lon are not swapped"
_LON_FIX = "use WGS84 decimal degrees (lon in [-180, 180]); check that lat and lon are not swapped"


def _finish(df: pd.DataFrame, file: str, kind: str) -> pd.DataFrame:
    df = df.reset_index(drop=True)
    df.attrs["source"] = file
    df.attrs["kind"] = kind
    return df


# --------------------------------------------------------------------------- public loaders


def load_transactions(path: PathLike) -> pd.DataFrame:
    """Load and validate a transactions file (``.csv`` or ``.parquet``).

    Required columns ``transaction_id`` (unique), ``date`` (ISO 8601), ``lat`` in [-90, 90],
    ``lon`` in [-180, 180], ``price`` (> 0); optional ``district`` and ``community`` (non-empty
    when present); any other column is a profile column (see the module docstring for typing).

    Args:
        path: file path; the suffix picks the reader.

    Returns:
        The validated frame, rows in file order, columns in file order.

    Raises:
        DataValidationError: naming the file, 1-based data row and column of the first problem,
            with a fix.
    """
    df, file = _read(path, TRANSACTIONS)
    col = _Collector(file, list(df.columns))
    out: dict[str, np.ndarray] = {}
    out["transaction_id"] = _check_ids(
        col, df, "transaction_id", unique=True, what="a unique transaction id"
    )
    out["date"] = _check_date(col, df, "date")
    out["lat"] = _check_number(
        col, df, "lat", required=True, low=LAT_RANGE[0], high=LAT_RANGE[1], range_fix=_LAT_FIX
    )
    out["lon"] = _check_number(
        col, df, "lon", required=True, low=LON_RANGE[0], high=LON_RANGE[1], range_fix=_LON_FIX
    )
    out["price"] = _check_number(
        col,
        df,
        "price",
        required=True,
        low=0.0,
        low_open=True,
        range_fix="give the sale price in currency units; delete records without a real sale "
        "(price 0 usually marks a transfer, not a sale)",
    )
    for name in ("district", "community"):
        if name in df.columns:
            out[name] = _check_ids(
                col,
                df,
                name,
                unique=False,
                what=f"the {name}, or delete the whole '{name}' column to let fedmugrep derive it",
            )
    col.raise_if_any()
    result = pd.DataFrame(
        {c: (pd.Series(out[c]) if c in out else _infer_profile(df[c])) for c in df.columns}
    )
    return _finish(result, file, "transactions")


def load_communities(path: PathLike) -> pd.DataFrame:
    """Load and validate a communities file (``.csv`` or ``.parquet``).

    Columns: ``community`` (unique, non-empty), optional ``district`` (non-empty when present),
    optional ``lat``/``lon`` (both or neither; non-empty and in range when present), and any
    number of numeric attribute columns (empty cells become NaN).

    Args:
        path: file path; the suffix picks the reader.

    Returns:
        The validated frame, rows and columns in file order; attributes ``float64``.

    Raises:
        DataValidationError: naming the file, 1-based data row and column of the first problem,
            with a fix.
    """
    df, file = _read(path, COMMUNITIES)
    has_lat, has_lon = "lat" in df.columns, "lon" in df.columns
    if has_lat != has_lon:
        missing = "lon" if has_lat else "lat"
        raise _fail(
            file,
            f"column '{missing}' is missing while '{'lat' if has_lat else 'lon'}' is present",
            "give both lat and lon (the community centre, WGS84 degrees) or neither",
            column=missing,
        )
    col = _Collector(file, list(df.columns))
    out: dict[str, np.ndarray] = {}
    out["community"] = _check_ids(col, df, "community", unique=True, what="a unique community id")
    if "district" in df.columns:
        out["district"] = _check_ids(
            col, df, "district", unique=False, what="the district (or delete the 'district' column)"
        )
    if has_lat:
        out["lat"] = _check_number(
            col, df, "lat", required=True, low=LAT_RANGE[0], high=LAT_RANGE[1], range_fix=_LAT_FIX
        )
        out["lon"] = _check_number(
            col, df, "lon", required=True, low=LON_RANGE[0], high=LON_RANGE[1], range_fix=_LON_FIX
        )
    for name in df.columns:
        if name in out:
            continue
        raw = df[name]
        values, _, bad = _numbers(raw)
        col.add_mask(
            bad,
            name,
            lambda i, raw=raw, name=name: (
                f"community attribute '{name}' must be numeric (got {_show(raw.iloc[i])})",
                "community attributes are numbers; encode categories as numbers "
                "(e.g. one 0/1 column per category) or delete the column",
            ),
        )
        inf = ~bad & np.isinf(values)
        col.add_mask(
            inf,
            name,
            lambda i, name=name, values=values: (
                f"community attribute '{name}' must be finite (got {values[i]})",
                _NUMBER_FIX,
            ),
        )
        out[name] = values
    col.raise_if_any()
    return _finish(pd.DataFrame({c: out[c] for c in df.columns}), file, "communities")


def load_mobility(path: PathLike, communities: pd.DataFrame | None = None) -> pd.DataFrame:
    """Load and validate a mobility file (``.csv`` or ``.parquet``).

    Columns: exactly ``src``, ``dst`` (non-empty community ids), ``flow`` (finite, >= 0).
    A ``(src, dst)`` pair may appear once. With ``communities`` given, every ``src`` and ``dst``
    must be one of its ``community`` values.

    Args:
        path: file path; the suffix picks the reader.
        communities: a communities frame (from :func:`load_communities`) to check ids against.

    Returns:
        The validated frame ``[src: str, dst: str, flow: float64]`` in file order.

    Raises:
        DataValidationError: naming the file, 1-based data row and column of the first problem,
            with a fix.
        ConfigError: ``communities`` has no ``community`` column.
    """
    known: set[str] | None = None
    if communities is not None:
        if not isinstance(communities, pd.DataFrame) or "community" not in communities.columns:
            raise ConfigError(
                "communities must be a DataFrame with a 'community' column; pass the frame "
                "returned by load_communities"
            )
        known = set(communities["community"].astype(str))
    df, file = _read(path, MOBILITY)
    col = _Collector(file, list(df.columns))
    out: dict[str, np.ndarray] = {}
    out["src"] = _check_ids(col, df, "src", unique=False, what="the source community id")
    out["dst"] = _check_ids(col, df, "dst", unique=False, what="the destination community id")
    out["flow"] = _check_number(
        col,
        df,
        "flow",
        required=True,
        low=0.0,
        range_fix="flows are counts or volumes: use a value >= 0",
    )
    src_ok, dst_ok = out["src"] != "", out["dst"] != ""
    if known is not None:
        ext = "the communities file"
        for name in ("src", "dst"):
            values = out[name]
            missing = (values != "") & ~pd.Series(values).isin(known).to_numpy()
            col.add_mask(
                missing,
                name,
                lambda i, name=name, values=values: (
                    f"{name} {_show(values[i])} is not a community in {ext}",
                    f"add community {_show(values[i])} to {ext} or delete this row",
                ),
            )
    pairs = pd.Series(list(zip(out["src"], out["dst"], strict=True)))
    pairs = pairs[src_ok & dst_ok]
    later = pairs.duplicated(keep="first")
    if later.any():
        first_row = {v: int(i) for i, v in pairs[~pairs.duplicated(keep="first")].items()}
        for pos, v in pairs[later].iloc[:MAX_LISTED].items():
            col.add(
                int(pos) + 1,
                "dst",
                f"pair src={v[0]!r}, dst={v[1]!r} is duplicated (rows {first_row[v] + 1} "
                f"and {int(pos) + 1})",
                "keep one row per (src, dst) pair: add the flows together",
            )
    col.raise_if_any()
    return _finish(pd.DataFrame(out), file, "mobility")

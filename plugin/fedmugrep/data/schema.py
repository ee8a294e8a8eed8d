"""The input schema: which columns each file has, what they mean and what values they accept.

Three kinds of file feed fedmugrep (ARCHITECTURE §6):

``transactions`` (one per transaction datasite)
    ``transaction_id`` (str, unique), ``date`` (ISO 8601), ``lat`` in [-90, 90], ``lon`` in
    [-180, 180] (WGS84 degrees), ``price`` (> 0, currency units); optional ``district`` and
    ``community`` (str; derived by :func:`fedmugrep.data.loading.assign_regions` when absent);
    every other column is a *profile* column (numeric or categorical) describing the asset.

``communities`` (region datasite)
    ``community`` (str, unique), optional ``district`` (str), optional ``lat``/``lon`` (both or
    neither: the community centre), every other column a numeric *attribute* (NaN allowed).

``mobility`` (region datasite, optional)
    exactly ``src``, ``dst`` (community ids that exist in the communities file), ``flow`` (>= 0).

Row numbers in every error are **1-based data rows, header excluded**: "row 1" is the first
record under the header (line 2 of a CSV without blank lines), as a spreadsheet user counts
records. The constants here are the single source of truth for the loaders and encoders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

__all__ = [
    "COMMUNITY_RESERVED",
    "LAT_RANGE",
    "LON_RANGE",
    "MOBILITY_COLUMNS",
    "TRANSACTION_OPTIONAL",
    "TRANSACTION_REQUIRED",
    "TRANSACTION_RESERVED",
    "TableSchema",
    "COMMUNITIES",
    "MOBILITY",
    "TRANSACTIONS",
    "community_attribute_columns",
    "profile_columns",
]

TRANSACTION_REQUIRED: tuple[str, ...] = ("transaction_id", "date", "lat", "lon", "price")
TRANSACTION_OPTIONAL: tuple[str, ...] = ("district", "community")
TRANSACTION_RESERVED: tuple[str, ...] = TRANSACTION_REQUIRED + TRANSACTION_OPTIONAL
COMMUNITY_RESERVED: tuple[str, ...] = ("community", "district", "lat", "lon")
MOBILITY_COLUMNS: tuple[str, ...] = ("src", "dst", "flow")

LAT_RANGE: tuple[float, float] = (-90.0, 90.0)
LON_RANGE: tuple[float, float] = (-180.0, 180.0)


@dataclass(frozen=True)
class TableSchema:
    """Column roles of one kind of input file.

    Attributes:
        kind: ``"transactions"``, ``"communities"`` or ``"mobility"``.
        required: columns that must be present.
        optional: reserved columns that may be present.
        string_columns: identifier columns loaded as ``str`` (whitespace stripped).
        closed: when true, any column outside ``required + optional`` is an error.
    """

    kind: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    string_columns: tuple[str, ...]
    closed: bool

    @property
    def reserved(self) -> tuple[str, ...]:
        """Required plus optional columns."""
        return self.required + self.optional


TRANSACTIONS = TableSchema(
    kind="transactions",
    required=TRANSACTION_REQUIRED,
    optional=TRANSACTION_OPTIONAL,
    string_columns=("transaction_id", "district", "community"),
    closed=False,
)
COMMUNITIES = TableSchema(
    kind="communities",
    required=("community",),
    optional=("district", "lat", "lon"),
    string_columns=("community", "district"),
    closed=False,
)
MOBILITY = TableSchema(
    kind="mobility",
    required=MOBILITY_COLUMNS,
    optional=(),
    string_columns=("src", "dst"),
    closed=True,
)


def _non_reserved(columns: Iterable[object], reserved: tuple[str, ...]) -> list[str]:
    return [str(c) for c in columns if str(c) not in reserved]


def profile_columns(df: pd.DataFrame) -> list[str]:
    """Profile columns of a transactions frame: every column that is not reserved.

    Reserved columns are ``transaction_id, date, lat, lon, price, district, community``.

    Args:
        df: a transactions frame (as returned by ``load_transactions``).

    Returns:
        Column names in frame order.
    """
    return _non_reserved(df.columns, TRANSACTION_RESERVED)


def community_attribute_columns(df: pd.DataFrame) -> list[str]:
    """Attribute columns of a communities frame: every column but ``community, district, lat, lon``.

    Args:
        df: a communities frame (as returned by ``load_communities``).

    Returns:
        Column names in frame order.
    """
    return _non_reserved(df.columns, COMMUNITY_RESERVED)

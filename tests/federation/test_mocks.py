"""Mocks from what an owner declares public, on tables the synthetic generator did not make."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedmugrep.errors import ConfigError, DataValidationError
from fedmugrep.federation.artefacts import public_artefacts
from fedmugrep.federation.mocks import (
    MockDeclaration,
    check_declaration,
    declaration_notes,
    declared_region_mocks,
    declared_transaction_mock,
    described_columns,
    load_declaration,
    with_public_districts,
)
from fedmugrep.federation.owners import agency_files
from fedmugrep.federation.plan import FederationPlan
from fedmugrep.federation.run import check_same_schema
from fedmugrep.training.prepare import GraphConfig

DECL = {
    "rows": 120,
    "dates": ["2008-05-15", "2008-05-21"],
    "price": [20000, 900000],
    "columns": {
        "beds": {"kind": "integer", "range": [1, 8], "unit": "bedrooms"},
        "sqft": {"kind": "number", "range": [300, 6000]},
        "type": {"kind": "category", "categories": ["Residential", "Condo"]},
    },
}


def _private(n: int = 57, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "transaction_id": [f"s{i}" for i in range(n)],
            "date": pd.Timestamp("2008-05-16") + pd.to_timedelta(rng.integers(0, 5, n), unit="D"),
            "lat": 38.5 + rng.normal(0, 0.05, n),
            "lon": -121.4 + rng.normal(0, 0.05, n),
            "price": rng.uniform(50_000, 500_000, n),
            "beds": rng.integers(1, 6, n),
            "sqft": rng.uniform(500, 3000, n),
            "type": rng.choice(["Residential", "Condo"], n).astype(object),
            "pool": rng.choice(["yes", "no"], n).astype(object),  # not declared
            "community": rng.choice(["z95814", "z95815", "z95816"], n).astype(object),
        }
    )


GEO = pd.DataFrame(
    {
        "community": ["z95814", "z95815", "z95816", "z95817"],
        "lat": [38.58, 38.60, 38.57, 38.55],
        "lon": [-121.49, -121.44, -121.47, -121.45],
    }
)


def test_the_mock_is_drawn_from_the_declaration_never_from_the_rows() -> None:
    decl = MockDeclaration.from_dict(DECL, source="t.toml")
    private = _private()
    mock = declared_transaction_mock(private, decl, with_public_districts(GEO), "sac1")
    assert list(mock.columns) == list(private.columns)
    assert len(mock) == 120 != len(private)  # the declared size, not the private count
    assert not set(mock["transaction_id"]) & set(private["transaction_id"])
    assert mock["date"].between("2008-05-15", "2008-05-21").all()
    assert mock["price"].between(20000, 900000).all()
    assert mock["beds"].between(1, 8).all() and set(mock["type"]) <= {"Residential", "Condo"}
    assert mock["pool"].isna().all()  # undeclared: neutral
    assert set(mock["community"]) <= set(GEO["community"])
    # the same declaration and datasite name draw the same mock; another name another one
    again = declared_transaction_mock(private, decl, with_public_districts(GEO), "sac1")
    other = declared_transaction_mock(private, decl, with_public_districts(GEO), "sac2")
    pd.testing.assert_frame_equal(mock, again)
    assert not mock["price"].equals(other["price"])
    # changing the private rows (not their schema) changes nothing in the mock
    changed = declared_transaction_mock(_private(200, 9), decl, with_public_districts(GEO), "sac1")
    pd.testing.assert_frame_equal(mock, changed)


def test_the_encoders_use_only_what_the_mock_describes() -> None:
    decl = MockDeclaration.from_dict(DECL, source="t.toml")
    geo = with_public_districts(GEO)
    mock = declared_transaction_mock(_private(), decl, geo, "sac1")
    assert described_columns(mock, ["beds", "sqft", "type", "pool"]) == ["beds", "sqft", "type"]
    public = public_artefacts(geo, mock, FederationPlan(rounds=1, privacy=None), GraphConfig())
    names = public.encoders.features.feature_names
    assert "beds" in names and "type=Condo" in names
    assert not any(n.startswith("pool") for n in names)
    # the split dates fall inside the declared five days
    assert pd.Timestamp("2008-05-15") <= public.val_start <= public.test_start
    assert public.test_start <= pd.Timestamp("2008-05-21")


def test_a_schema_only_mock_starts_but_training_says_what_to_declare() -> None:
    decl = MockDeclaration.from_dict({}, source="agency.toml")
    assert decl.is_empty and decl.describe() == ["schema only (nothing declared: neutral values)"]
    private = _private()
    mock = declared_transaction_mock(private, decl, GEO, "a")
    assert list(mock.columns) == list(private.columns)
    assert mock["date"].isna().all() and mock["price"].isna().all()
    notes = declaration_notes(private, decl, ["beds", "sqft", "type", "pool"])
    assert any("[mock] dates" in n for n in notes) and any("[mock] price" in n for n in notes)
    assert any("'pool'" in n for n in notes)
    with pytest.raises(ConfigError, match=r"declared no date range \(\[mock\] dates"):
        public_artefacts(with_public_districts(GEO), mock, FederationPlan(rounds=1), GraphConfig())


def test_the_private_table_must_match_its_declaration() -> None:
    decl = MockDeclaration.from_dict(DECL, source="agency.toml")
    ok = _private()
    check_declaration(ok, decl, file="sales.csv")
    bad = ok.copy()
    bad.loc[6, "beds"] = 12
    with pytest.raises(DataValidationError) as exc:
        check_declaration(bad, decl, file="sales.csv")
    assert (exc.value.file, exc.value.row, exc.value.column) == ("sales.csv", 7, "beds")
    assert "[1, 8]" in str(exc.value) and "agency.toml" in str(exc.value)
    late = ok.copy()
    late.loc[2, "date"] = pd.Timestamp("2008-06-01")
    with pytest.raises(DataValidationError, match="row 3, column 'date'"):
        check_declaration(late, decl, file="sales.csv")
    odd = ok.copy()
    odd.loc[0, "type"] = "Castle"
    with pytest.raises(DataValidationError, match="row 1, column 'type'.*categories"):
        check_declaration(odd, decl, file="sales.csv")
    with pytest.raises(DataValidationError, match="column 'sqft'.*no such column"):
        check_declaration(ok.drop(columns=["sqft"]), decl, file="sales.csv")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"rows": 0}, "rows must be an integer"),
        ({"dates": ["2008-05-21", "2008-05-15"]}, "after the last"),
        ({"dates": ["someday", "2008-05-15"]}, "ISO dates"),
        ({"price": [-1, 10]}, "positive"),
        ({"columns": {"beds": {"kind": "integer"}}}, "needs range"),
        ({"columns": {"beds": {"kind": "count", "range": [1, 2]}}}, "kind must be one of"),
        ({"columns": {"t": {"kind": "category", "categories": []}}}, "non-empty"),
        ({"columns": {"price": {"kind": "number", "range": [1, 2]}}}, "reserved"),
        ({"colour": 1}, "unknown key"),
        ({"source": "magic"}, "source must be one of"),
    ],
)
def test_bad_declarations_name_the_file_and_key(raw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as exc:
        MockDeclaration.from_dict(raw, source="agency.toml")
    assert "agency.toml" in str(exc.value)


def test_a_declaration_file_and_region_mocks(tmp_path: Path) -> None:
    f = tmp_path / "public.toml"
    f.write_text(
        '[mock]\nrows = 10\ndates = ["2020-01-01", "2020-12-31"]\nprice = [1, 2]\n'
        '[mock.columns.parks]\nkind = "number"\nrange = [0, 5]\n'
    )
    decl = load_declaration(f)
    assert decl.rows == 10 and decl.price == (1.0, 2.0)
    comms = with_public_districts(GEO.assign(parks=[1.0, 2.0, 3.0, 4.0], schools=[1, 2, 3, 4]))
    mock, mob = declared_region_mocks(comms, None, decl)
    for c in ("community", "district", "lat", "lon"):  # the public geography is kept
        assert mock[c].tolist() == comms[c].tolist()
    assert mock["parks"].between(0, 5).all() and not mock["parks"].equals(comms["parks"])
    assert mock["schools"].isna().all()  # undeclared attribute: neutral
    assert list(mob.columns) == ["src", "dst", "flow"] and len(mob) == 0


def test_districts_come_from_the_public_centres_only() -> None:
    geo = with_public_districts(GEO)
    assert set(geo["district"]) <= {"D1", "D2"} and len(geo) == 4
    assert with_public_districts(GEO)["district"].tolist() == geo["district"].tolist()
    own = GEO.assign(district=["x", "x", "y", "y"])
    assert with_public_districts(own)["district"].tolist() == ["x", "x", "y", "y"]


def test_agencies_must_agree_on_one_schema() -> None:
    a = _private()
    check_same_schema({"north": a, "south": a.copy()})
    with pytest.raises(ConfigError, match="datasite 'south' has column 'garage'"):
        check_same_schema({"north": a, "south": a.assign(garage=1)})
    with pytest.raises(ConfigError, match="datasite 'east' lacks column 'sqft'"):
        check_same_schema({"north": a, "east": a.drop(columns=["sqft"])})


def test_agency_files_take_any_agency_name(tmp_path: Path) -> None:
    for name in ("transactions_north.csv", "transactions_all.csv", "transactions_b.parquet"):
        (tmp_path / name).write_text("x")
    (tmp_path / "notes.txt").write_text("x")
    assert list(agency_files(tmp_path)) == ["b", "north"]
    with pytest.raises(ConfigError, match="transactions_<agency>.csv"):
        agency_files(tmp_path / "nothing")

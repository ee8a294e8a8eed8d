"""Synthetic city: determinism, sizes, agencies, loadability, the residual recursion recomputed
independently from the written files, the Bayes floor, and the ``synth`` command."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fedmugrep.commands import synth
from fedmugrep.data.loading import load_communities, load_mobility, load_transactions
from fedmugrep.data.synthetic import (
    CityConfig,
    SyntheticCity,
    _recursion,
    bayes_floor,
    bayes_floor_factor,
    make_city,
    write_city,
)
from fedmugrep.errors import ConfigError

SCHEMA = ["transaction_id", "date", "lat", "lon", "price", "district", "community"]
PROFILE = ["area_m2", "rooms", "floor", "building_age", "property_type", "has_parking"]


@pytest.fixture(scope="module")
def city() -> SyntheticCity:
    return make_city()


@pytest.fixture(scope="module")
def city_dir(city: SyntheticCity, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("city")
    write_city(city, out)
    return out


@pytest.fixture(scope="module")
def written(city_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    tx = load_transactions(city_dir / "transactions_all.csv")
    truth = pd.read_csv(city_dir / "truth.csv", keep_default_na=False, dtype={"prior_ids": str})
    meta = json.loads((city_dir / "metadata.json").read_text())
    return tx, truth, meta


# --------------------------------------------------------------------------- determinism, sizes


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    cfg = CityConfig(seed=5, n_transactions=3000)
    a = write_city(make_city(cfg), tmp_path / "a")
    b = write_city(make_city(cfg), tmp_path / "b")
    c = write_city(make_city(CityConfig(seed=6, n_transactions=3000)), tmp_path / "c")
    assert a.keys() == b.keys() == c.keys()
    for stem in a:
        assert a[stem].read_bytes() == b[stem].read_bytes(), stem
    assert a["transactions_all"].read_bytes() != c["transactions_all"].read_bytes()


def test_default_city_is_fast(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    write_city(make_city(), tmp_path)
    assert time.perf_counter() - t0 < 5.0


def test_100k_transactions_generate_in_time() -> None:
    t0 = time.perf_counter()
    big = make_city(CityConfig(n_transactions=100_000))
    assert time.perf_counter() - t0 < 30.0
    assert len(big.transactions) == 100_000


def test_sizes_and_names(city: SyntheticCity, city_dir: Path) -> None:
    assert len(city.transactions) == len(city.truth) == 12_000
    assert (city.truth["transaction_id"] == city.transactions["transaction_id"]).all()
    assert len(city.communities) == 60 and city.communities["community"].is_unique
    assert city.communities["district"].nunique() == 6
    assert set(city.transactions["district"]) == {f"D{j}" for j in range(1, 7)}
    assert city.communities["community"].iloc[16] == "C017"
    assert city.transactions["transaction_id"].iloc[0] == "T000001"
    mob = city.mobility
    assert mob.groupby("src").size().eq(8).all() and len(mob) == 480
    assert (mob["src"] != mob["dst"]).all() and (mob["flow"] > 0).all()
    assert sorted(p.name for p in city_dir.iterdir()) == sorted(city.metadata["files"])


def test_changing_the_size_keeps_the_map(city: SyntheticCity) -> None:
    small = make_city(CityConfig(n_transactions=500))
    pd.testing.assert_frame_equal(small.communities, city.communities)
    pd.testing.assert_frame_equal(small.mobility, city.mobility)


def test_community_district_is_nearest_district_centre(city: SyntheticCity) -> None:
    comm = city.communities.set_index("community")
    centres = comm.loc[city.metadata["coefficients"]["district_centre_community"], ["lat", "lon"]]
    xy = np.column_stack([comm["lon"] * np.cos(np.radians(48.85)), comm["lat"]])
    cxy = np.column_stack([centres["lon"] * np.cos(np.radians(48.85)), centres["lat"]])
    nearest = np.argmin(np.linalg.norm(xy[:, None] - cxy[None], axis=2), axis=1)
    assert comm["district"].tolist() == [f"D{j + 1}" for j in nearest]


def test_profiles_within_documented_ranges(city: SyntheticCity) -> None:
    tx = city.transactions
    assert tx["area_m2"].between(18, 250).all() and tx["area_m2"].median() == pytest.approx(
        62, rel=0.1
    )
    assert (tx["rooms"] >= 1).all() and tx["floor"].between(0, 15).all()
    assert tx["building_age"].between(0, 120).all()
    assert set(tx["property_type"]) == {"apartment", "house", "studio"}
    assert (tx.loc[tx["property_type"] == "studio", "area_m2"] < 35).all()
    assert set(tx["has_parking"]) == {"yes", "no"}
    ppm2 = (tx["price"] / tx["area_m2"]).median()
    assert 3000 < ppm2 < 10000
    # locations stay within a few km of the box
    assert tx["lat"].between(48.85 - 0.09, 48.85 + 0.09).all()
    assert tx["lon"].between(2.35 - 0.16, 2.35 + 0.16).all()


def test_dates_strictly_within_period(written: tuple) -> None:
    tx, _, meta = written
    start, end = pd.Timestamp("2021-01-01"), pd.Timestamp("2024-01-01")
    assert meta["period"] == {"start": "2021-01-01", "end_exclusive": "2024-01-01"}
    assert (tx["date"] >= start).all() and (tx["date"] < end).all()
    assert (tx["date"] == tx["date"].dt.normalize()).all()
    assert tx["date"].is_monotonic_increasing
    # all three years are used
    assert tx["date"].dt.year.value_counts().min() > 3000


# --------------------------------------------------------------------------- agencies


def test_agencies_non_empty_uneven_and_overlapping(city: SyntheticCity, city_dir: Path) -> None:
    sizes = city.truth["agency"].value_counts().reindex(city.agencies)
    assert (sizes > 0).all()
    assert sizes.max() >= 1.5 * sizes.min() and sizes.nunique() == len(sizes)
    assert sizes.tolist() == sorted(sizes.tolist(), reverse=True)  # weights 0.6^k: 1 > 2 > 3
    coverage = {a: set(v["districts"]) for a, v in city.metadata["agencies"].items()}
    per_district = pd.Series([d for ds in coverage.values() for d in ds]).value_counts()
    assert set(per_district.index) == {f"D{j}" for j in range(1, 7)}  # every district covered
    assert per_district.max() >= 2  # some overlap
    district_of = city.transactions["district"].to_numpy()
    for agency, cover in coverage.items():
        mine = (city.truth["agency"] == agency).to_numpy()
        assert set(district_of[mine]) <= cover
    frames = []
    for agency in city.agencies:
        df = load_transactions(city_dir / f"transactions_{agency}.csv")
        assert list(df.columns) == SCHEMA + PROFILE  # no agency column
        assert len(df) == sizes[agency]
        frames.append(df)
    pooled = pd.concat(frames).sort_values("transaction_id").reset_index(drop=True)
    assert pooled["transaction_id"].is_unique and len(pooled) == len(city.transactions)
    assert city.metadata["counts"]["per_agency"] == sizes.to_dict()


@pytest.mark.parametrize("n_agencies", [1, 2, 5])
def test_other_agency_counts(n_agencies: int) -> None:
    c = make_city(CityConfig(n_agencies=n_agencies, n_transactions=2000))
    sizes = c.truth["agency"].value_counts()
    assert len(sizes) == n_agencies and (sizes > 0).all() and sizes.sum() == 2000


def test_too_few_transactions_for_agencies_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no transactions"):
        make_city(CityConfig(n_agencies=8, n_transactions=10))


# --------------------------------------------------------------------------- files and metadata


def test_every_file_loads_with_the_loaders(city: SyntheticCity, city_dir: Path) -> None:
    comm = load_communities(city_dir / "communities.csv")
    assert list(comm.columns) == [
        "community",
        "district",
        "lat",
        "lon",
        "poi_count",
        "pct_young",
        "income_index",
        "green_share",
        "transit_access",
        "population",
    ]
    mob = load_mobility(city_dir / "mobility.csv", comm)
    assert len(mob) == 480
    tx = load_transactions(city_dir / "transactions_all.csv")
    pd.testing.assert_frame_equal(tx, city.transactions)  # files are the in-memory truth


def test_metadata_contents(city: SyntheticCity, written: tuple) -> None:
    _, truth, meta = written
    assert meta["seed"] == 0 and meta["config"] == CityConfig().to_dict()
    assert meta["sigma"] == 0.12 and meta["rho"] == 0.8
    assert any("rho * mean(e_j for j in P(i))" in line for line in meta["model"])
    coef = meta["coefficients"]
    assert set(coef["district_level"]) == {f"D{j}" for j in range(1, 7)}
    assert len(coef["bumps"]) == 4 and len(coef["attribute_weights"]) == 5
    assert meta["counts"]["transactions"] == 12_000
    recomputed = bayes_floor(truth, meta["sigma"])
    assert meta["bayes_floor"]["mae_log"] == pytest.approx(recomputed["mae_log"], rel=1e-12)
    assert meta["bayes_floor"]["mae"] == pytest.approx(recomputed["mae"], rel=1e-12)
    assert CityConfig.from_dict(meta["config"]) == CityConfig()


# --------------------------------------------------------------------------- residual recursion


def recompute_priors(tx: pd.DataFrame, window_days: int = 180, k: int = 5) -> list[list[str]]:
    """P(i) by brute force: same community, strictly earlier date, within the window, the last
    ``k`` in (date, id) order."""
    priors: list[list[str]] = [[] for _ in range(len(tx))]
    day = (tx["date"] - tx["date"].min()).dt.days.to_numpy()
    ids = tx["transaction_id"].to_numpy()
    for _, idx in tx.groupby("community").indices.items():
        d, name = day[idx], ids[idx]
        for a, i in enumerate(idx):
            ok = (d < d[a]) & (d[a] - d <= window_days)
            cand = sorted(zip(d[ok], name[ok], strict=True))[-k:]
            priors[i] = [n for _, n in cand]
    return priors


def test_residual_recursion_matches_its_definition(written: tuple) -> None:
    tx, truth, meta = written
    assert (truth["transaction_id"] == tx["transaction_id"]).all()
    rho = meta["rho"]
    priors = recompute_priors(tx, meta["config"]["window_days"], meta["config"]["max_recent"])
    assert truth["prior_ids"].tolist() == [";".join(p) for p in priors]
    resid = dict(zip(truth["transaction_id"], truth["residual"], strict=True))
    prior_mean = np.array([np.mean([resid[j] for j in p]) if p else 0.0 for p in priors])
    np.testing.assert_allclose(
        truth["cond_mean_log"] - truth["structural_mean_log"], rho * prior_mean, atol=1e-12
    )
    np.testing.assert_allclose(
        truth["residual"], rho * prior_mean + truth["innovation"], atol=1e-12
    )
    # price = round(exp(m + e)): |log price - (m + e)| <= |log(1 +- 0.5/x)| ~ 0.5 / price
    gap = np.abs(np.log(tx["price"]) - truth["structural_mean_log"] - truth["residual"])
    assert np.all(gap <= 0.51 / tx["price"])
    n_with_history = (truth["n_prior"] > 0).mean()
    assert n_with_history > 0.9  # the dependence actually bites in the default city


def test_no_future_leakage_in_priors(written: tuple) -> None:
    tx, truth, _ = written
    date = dict(zip(tx["transaction_id"], tx["date"], strict=True))
    comm = dict(zip(tx["transaction_id"], tx["community"], strict=True))
    for tid, prior in zip(truth["transaction_id"], truth["prior_ids"], strict=True):
        ids = prior.split(";") if prior else []
        assert len(ids) <= 5
        for j in ids:
            assert date[j] < date[tid], (tid, j)
            assert (date[tid] - date[j]).days <= 180
            assert comm[j] == comm[tid]


def test_recursion_hand_built() -> None:
    # community 0: days 0, 0, 10, 200, 400; community 1: day 5
    comm = np.array([0, 0, 1, 0, 0, 0])
    day = np.array([0, 0, 5, 10, 200, 400])
    eps = np.array([1.0, 3.0, 7.0, 0.5, 0.25, 2.0])
    e, prior_mean, priors = _recursion(
        comm, day, eps, rho=0.5, max_recent=5, window_days=190, n_communities=2
    )
    assert priors == [[], [], [], [0, 1], [3], []]  # same day excluded; 200-0 > 190; 400-200 > 190
    np.testing.assert_allclose(e, [1.0, 3.0, 7.0, 0.5 + 0.5 * 2.0, 0.25 + 0.5 * 1.5, 2.0])
    np.testing.assert_allclose(prior_mean, [0, 0, 0, 2.0, 1.5, 0])
    _, _, capped = _recursion(
        np.zeros(7, int),
        np.arange(7),
        np.zeros(7),
        rho=0.5,
        max_recent=2,
        window_days=100,
        n_communities=1,
    )
    assert capped[6] == [4, 5]


@pytest.mark.statistical
def test_innovations_are_gaussian_with_sigma(written: tuple) -> None:
    tx, truth, meta = written
    eps = truth["innovation"].to_numpy()
    n, sigma = len(eps), meta["sigma"]
    # 5 standard errors: a false alarm has probability < 1e-6 under the model (seeded anyway)
    assert abs(eps.mean()) < 5 * sigma / math.sqrt(n)
    assert abs(eps.std() - sigma) < 5 * sigma / math.sqrt(2 * n)
    assert stats.kstest(eps / sigma, "norm").pvalue > 1e-3
    prior_part = truth["cond_mean_log"] - truth["structural_mean_log"]
    assert abs(np.corrcoef(eps, prior_part)[0, 1]) < 5 / math.sqrt(n)


# --------------------------------------------------------------------------- Bayes floor


@pytest.mark.statistical
@pytest.mark.parametrize("sigma", [0.12, 0.5])
def test_bayes_floor_factor_monte_carlo(sigma: float) -> None:
    rng = np.random.default_rng(20240501)
    eps = rng.normal(0.0, sigma, 4_000_000)
    v = np.abs(np.expm1(eps))
    se = v.std() / math.sqrt(len(v))
    # |error| < 5 SE: false-alarm probability < 1e-6 by the CLT; at sigma = 0.12 the naive
    # sigma*sqrt(2/pi) is ~10 SE away, so the check separates the two formulas.
    assert abs(v.mean() - bayes_floor_factor(sigma)) < 5 * se
    assert abs(bayes_floor_factor(sigma) - sigma * math.sqrt(2 / math.pi)) > 9 * se
    assert abs(np.abs(eps).mean() - sigma * math.sqrt(2 / math.pi)) < 5 * np.abs(eps).std() / 2000


@pytest.mark.statistical
def test_bayes_floor_on_the_city(written: tuple) -> None:
    tx, truth, meta = written
    sigma = meta["sigma"]
    mu = truth["cond_mean_log"].to_numpy()
    price = tx["price"].to_numpy()
    floor = bayes_floor(truth, sigma)
    assert floor["mae_log"] == pytest.approx(sigma * math.sqrt(2 / math.pi), rel=1e-12)
    # the generator's own draws: MAE of the oracle exp(mu) against the written prices
    err = np.abs(price - np.exp(mu))
    assert abs(err.mean() - floor["mae"]) < 5 * err.std() / math.sqrt(len(err))
    log_err = np.abs(np.log(price) - mu)
    assert abs(log_err.mean() - floor["mae_log"]) < 5 * log_err.std() / math.sqrt(len(err))
    # fresh seeded draws around the same mu
    rng = np.random.default_rng(7)
    sim = np.exp(mu + rng.normal(0.0, sigma, (20, len(mu))))
    sim_err = np.abs(sim - np.exp(mu)).mean(axis=1)
    assert abs(sim_err.mean() - floor["mae"]) < 5 * sim_err.std() / math.sqrt(20)
    # the exp(mu) median beats the mean exp(mu + sigma^2/2) for MAE
    assert np.abs(price - np.exp(mu + sigma**2 / 2)).mean() > err.mean()


def test_bayes_floor_on_a_subset(written: tuple) -> None:
    _, truth, meta = written
    test_ids = truth["transaction_id"].iloc[-2000:].tolist()
    sub = bayes_floor(truth, meta["sigma"], ids=test_ids)
    manual = np.exp(truth["cond_mean_log"].iloc[-2000:]).mean() * bayes_floor_factor(meta["sigma"])
    assert sub["mae"] == pytest.approx(manual, rel=1e-12)
    assert set(sub) == {"mae_log", "mae"}
    with pytest.raises(ConfigError, match="not in truth"):
        bayes_floor(truth, meta["sigma"], ids=["nope"])
    with pytest.raises(ConfigError, match="sigma"):
        bayes_floor(truth, 0.0)


# --------------------------------------------------------------------------- config and CLI


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rho": 1.0}, "rho"),
        ({"sigma": -0.1}, "sigma"),
        ({"n_transactions": 0}, "n_transactions"),
        ({"n_districts": 100}, "n_districts"),
        ({"agency_weights": (1.0, 2.0)}, "agency_weights"),
        ({"start_date": "yesterday-ish"}, "start_date"),
        ({"attribute_coef_mean": (1.0,)}, "attribute_coef_mean"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CityConfig(**kwargs)


def test_config_from_dict_and_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown CityConfig field"):
        CityConfig.from_dict({"sigmaa": 1})
    path = tmp_path / "city.toml"
    path.write_text("[city]\nseed = 4\nagency_weights = [2.0, 1.0, 1.0]\n")
    cfg = CityConfig.from_toml(path)
    assert cfg.seed == 4 and cfg.agency_weights == (2.0, 1.0, 1.0)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fedmugrep")
    synth.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_synth_command_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    assert (
        cli(
            [
                "synth",
                "--out",
                str(out),
                "--seed",
                "2",
                "--transactions",
                "1500",
                "--agencies",
                "2",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["seed"] == 2 and summary["counts"]["transactions"] == 1500
    assert set(summary["counts"]["per_agency"]) == {"agency1", "agency2"}
    assert set(summary["bayes_floor"]) == {"mae_log", "mae"}
    for p in summary["files"].values():
        assert Path(p).is_file()
    assert len(load_transactions(out / "transactions_all.csv")) == 1500


def test_synth_command_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["synth", "--out", str(tmp_path), "--transactions", "900"]) == 0
    text = capsys.readouterr().out
    assert "transactions_agency1.csv" in text and "Bayes floor" in text and "EUR" in text


def test_synth_help_has_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli(["synth", "--help"])
    assert "Example:" in capsys.readouterr().out

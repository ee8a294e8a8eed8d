"""assign_regions: nearest community centre, k-means fallbacks, determinism; geo helpers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedmugrep.data.geo import haversine_km, km_to_degrees, project_km
from fedmugrep.data.regions import assign_regions, default_n_communities
from fedmugrep.errors import ConfigError, DataValidationError

LAT0, LON0 = 48.85, 2.35


def frame(lat: np.ndarray, lon: np.ndarray) -> pd.DataFrame:
    n = len(lat)
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "date": pd.Timestamp("2021-01-01"),
            "lat": lat,
            "lon": lon,
            "price": 1.0,
        }
    )


def blobs(seed: int = 0, per: int = 50) -> tuple[pd.DataFrame, np.ndarray]:
    """Three tight blobs 8 km apart, west to east; returns the frame and true blob index."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-8.0, 0.0], [0.0, 1.0], [8.0, -1.0]])
    truth = np.repeat(np.arange(3), per)
    rng.shuffle(truth)
    xy = centres[truth] + rng.normal(0, 0.3, (len(truth), 2))
    lat, lon = km_to_degrees(xy[:, 0], xy[:, 1], LAT0, LON0)
    return frame(lat, lon), truth


def test_projection_matches_haversine_at_city_scale() -> None:
    rng = np.random.default_rng(1)
    lat = LAT0 + rng.uniform(-0.1, 0.1, 200)
    lon = LON0 + rng.uniform(-0.15, 0.15, 200)
    xy = project_km(lat, lon, LAT0, LON0)
    d_proj = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    d_hav = haversine_km(lat[:, None], lon[:, None], lat[None], lon[None])
    assert np.allclose(d_proj, d_hav, rtol=2e-3, atol=1e-6)
    back_lat, back_lon = km_to_degrees(xy[:, 0], xy[:, 1], LAT0, LON0)
    assert np.allclose(back_lat, lat) and np.allclose(back_lon, lon)
    # one degree of latitude is ~111.2 km
    assert haversine_km(0.0, 0.0, 1.0, 0.0) == pytest.approx(111.195, abs=1e-2)


def test_nearest_community_centre_hand_built() -> None:
    communities = pd.DataFrame(
        {
            "community": ["W", "E", "N"],
            "district": ["d1", "d2", "d2"],
            "lat": [48.85, 48.85, 48.95],
            "lon": [2.20, 2.50, 2.35],
        }
    )
    tx = frame(np.array([48.86, 48.84, 48.94, 48.88]), np.array([2.21, 2.49, 2.36, 2.40]))
    out = assign_regions(tx, communities)
    assert out["community"].tolist() == ["W", "E", "N", "E"]
    assert out["district"].tolist() == ["d1", "d2", "d2", "d2"]
    assert "community" not in tx.columns  # the input is not modified


def test_nearest_community_matches_brute_force_haversine() -> None:
    rng = np.random.default_rng(2)
    communities = pd.DataFrame(
        {
            "community": [f"c{i}" for i in range(40)],
            "lat": LAT0 + rng.uniform(-0.07, 0.07, 40),
            "lon": LON0 + rng.uniform(-0.13, 0.13, 40),
        }
    )
    tx = frame(LAT0 + rng.uniform(-0.07, 0.07, 500), LON0 + rng.uniform(-0.13, 0.13, 500))
    out = assign_regions(tx, communities)
    d = haversine_km(
        tx["lat"].to_numpy()[:, None],
        tx["lon"].to_numpy()[:, None],
        communities["lat"].to_numpy()[None],
        communities["lon"].to_numpy()[None],
    )
    best = np.sort(d, axis=1)
    chosen = d[np.arange(len(tx)), out["community"].str[1:].astype(int).to_numpy()]
    # the projection may only swap near-ties (distances within 0.2 %)
    assert np.all(chosen <= best[:, 0] * 1.002 + 1e-9)
    assert np.mean(chosen == best[:, 0]) > 0.99


def test_kmeans_recovers_blobs_and_names_west_to_east() -> None:
    tx, truth = blobs()
    out = assign_regions(tx, n_communities=3, n_districts=1)
    expected = np.array(["C001", "C002", "C003"])[truth]
    assert out["community"].tolist() == expected.tolist()
    assert set(out["district"]) == {"D1"}


def test_assign_regions_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(3)
    tx = frame(LAT0 + rng.uniform(-0.07, 0.07, 900), LON0 + rng.uniform(-0.13, 0.13, 900))
    a = assign_regions(tx, seed=7)
    b = assign_regions(tx, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert a["community"].nunique() == default_n_communities(900) == 6
    assert a["district"].nunique() == round(np.sqrt(6))


def test_default_n_communities_clipped() -> None:
    assert default_n_communities(10) == 2
    assert default_n_communities(1500) == 10
    assert default_n_communities(10**6) == 200


def test_districts_from_kmeans_over_community_centres() -> None:
    tx, truth = blobs(per=20)
    tx["community"] = [f"k{t}{i % 2}" for i, t in enumerate(truth)]  # two communities per blob
    out = assign_regions(tx, n_districts=3)
    by_comm = out.groupby("community")["district"].nunique()
    assert (by_comm == 1).all()  # a community lies in one district
    assert out.groupby("district")["community"].nunique().tolist() == [2, 2, 2]
    assert out["district"].tolist() == np.array(["D1", "D2", "D3"])[truth].tolist()


def test_existing_columns_are_kept() -> None:
    tx, _ = blobs(per=5)
    tx["community"] = "x"
    tx["district"] = "y"
    out = assign_regions(tx, n_communities=3)
    assert set(out["community"]) == {"x"} and set(out["district"]) == {"y"}


def test_community_missing_from_table_names_row() -> None:
    tx, _ = blobs(per=3)
    tx["community"] = ["A"] * 4 + ["Q"] + ["A"] * 4
    tx.attrs["source"] = "tx.csv"
    table = pd.DataFrame({"community": ["A"], "district": ["D"]})
    with pytest.raises(DataValidationError) as info:
        assign_regions(tx, table)
    err = info.value
    assert (err.file, err.row, err.column) == ("tx.csv", 5, "community")
    assert "'Q'" in str(err) and "Fix:" in str(err)


def test_table_without_centres_cannot_place_transactions() -> None:
    tx, _ = blobs(per=3)
    with pytest.raises(DataValidationError, match="no lat/lon"):
        assign_regions(tx, pd.DataFrame({"community": ["A"]}))


@pytest.mark.parametrize("bad", [0, -1, 10_000, 2.5, True])
def test_bad_n_communities(bad: object) -> None:
    tx, _ = blobs(per=5)
    with pytest.raises(ConfigError, match="n_communities"):
        assign_regions(tx, n_communities=bad)  # type: ignore[arg-type]

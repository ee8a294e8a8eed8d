"""FeatureEncoder / CommunityEncoder: known answers and exact JSON round trips."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedmugrep.data.features import UNKNOWN, CommunityEncoder, FeatureEncoder
from fedmugrep.errors import ConfigError, DataValidationError


def tx(**cols: object) -> pd.DataFrame:
    n = len(next(iter(cols.values())))  # type: ignore[arg-type]
    base = {
        "transaction_id": [f"t{i}" for i in range(n)],
        "date": pd.to_datetime(["2021-01-01", "2022-01-01", "2021-07-02"][:n]),
        "lat": 48.85,
        "lon": 2.35,
        "price": 1.0,
        "community": "C1",
    }
    return pd.DataFrame({**base, **cols})


def test_known_answer_numeric_categorical_and_time() -> None:
    df = tx(area=[1.0, 2.0, 3.0], const=[5, 5, 5], kind=["a", "b", "a"], ok=[True, False, True])
    enc = FeatureEncoder().fit(df)
    assert enc.feature_names == [
        "area",
        "const",
        "kind=a",
        "kind=b",
        f"kind={UNKNOWN}",
        "ok=False",
        "ok=True",
        f"ok={UNKNOWN}",
        "t_years",
    ]
    x = enc.transform(df)
    assert x.dtype == np.float32 and x.shape == (3, 9)
    s = np.sqrt(2 / 3)  # population std of 1, 2, 3
    np.testing.assert_allclose(x[:, 0], [-1 / s, 0, 1 / s], rtol=1e-6)
    np.testing.assert_array_equal(x[:, 1], [0, 0, 0])  # std 0 -> 1
    np.testing.assert_array_equal(x[:, 2:5], [[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(x[:, 5:8], [[0, 1, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_allclose(x[:, 8], [0, 365 / 365.25, 182 / 365.25], rtol=1e-6)
    assert enc.reference_date == pd.Timestamp("2021-01-01")


def test_unseen_category_missing_and_nan_numbers() -> None:
    enc = FeatureEncoder(columns=["area", "kind"]).fit(tx(area=[1.0, 3.0], kind=["a", "b"]))
    new = tx(area=[np.nan, 5.0], kind=["zzz", None])
    x = enc.transform(new)
    np.testing.assert_array_equal(x[:, 0], [0.0, 3.0])  # NaN -> mean; (5-2)/1
    np.testing.assert_array_equal(x[:, 1:4], [[0, 0, 1], [0, 0, 1]])  # unseen and <NA> -> unknown


def test_missing_category_seen_at_fit_gets_its_own_column() -> None:
    enc = FeatureEncoder(columns=["kind"], time_features=False).fit(tx(kind=["a", None, "a"]))
    assert enc.feature_names == ["kind=<NA>", "kind=a", f"kind={UNKNOWN}"]


def test_max_categories_keeps_most_frequent() -> None:
    enc = FeatureEncoder(columns=["k"], time_features=False, max_categories=2)
    enc.fit(pd.DataFrame({"k": ["x", "y", "y", "z", "z", "z"]}))
    assert enc.feature_names == ["k=y", "k=z", f"k={UNKNOWN}"]
    np.testing.assert_array_equal(enc.transform(pd.DataFrame({"k": ["x"]})), [[0, 0, 1]])


def test_seasonal_features() -> None:
    enc = FeatureEncoder(columns=[], seasonal=True, reference_date="2020-01-01")
    x = enc.fit_transform(tx(a=[0, 0, 0]))
    assert enc.feature_names == ["t_years", "season_sin", "season_cos"]
    np.testing.assert_allclose(
        x[0], [366 / 365.25, np.sin(2 * np.pi / 365.25), np.cos(2 * np.pi / 365.25)], rtol=1e-6
    )


def test_json_round_trip_is_exact() -> None:
    rng = np.random.default_rng(0)
    n = 200
    fit = pd.DataFrame(
        {
            "date": pd.Timestamp("2021-03-04") + pd.to_timedelta(rng.integers(0, 900, n), "D"),
            "area": rng.lognormal(4, 0.4, n),
            "rooms": rng.integers(1, 6, n),
            "kind": rng.choice(["apartment", "house", "studio"], n),
            "parking": rng.choice(["yes", "no"], n),
        }
    )
    enc = FeatureEncoder(seasonal=True).fit(fit)
    text = json.dumps(enc.state_dict())
    back = FeatureEncoder.from_state_dict(json.loads(text))
    other = fit.sample(50, random_state=1).reset_index(drop=True)
    other.loc[0, "kind"] = "castle"
    other.loc[1, "area"] = np.nan
    np.testing.assert_array_equal(back.transform(other), enc.transform(other))
    assert back.state_dict() == enc.state_dict()
    assert json.dumps(back.state_dict()) == text
    assert back == enc and repr(back) == repr(enc)
    assert back.feature_names == enc.feature_names


def test_repr() -> None:
    enc = FeatureEncoder(columns=["area", "kind"])
    assert repr(enc) == "FeatureEncoder(columns=['area', 'kind'], max_categories=50, unfitted)"
    enc.fit(tx(area=[1.0, 2.0, 3.0], kind=["a", "b", "a"]))
    assert repr(enc) == (
        "FeatureEncoder(numeric=['area'], categorical={'kind': 2}, time_features=True, "
        "seasonal=False, reference_date=2021-01-01, n_features=5)"
    )


def test_transform_errors() -> None:
    enc = FeatureEncoder(columns=["area"])
    with pytest.raises(ConfigError, match="not fitted"):
        enc.transform(tx(area=[1.0]))
    enc.fit(tx(area=[1.0, 2.0]))
    bad = tx(area=[1.0, 2.0]).drop(columns="area")
    bad.attrs["source"] = "new.csv"
    with pytest.raises(DataValidationError) as info:
        enc.transform(bad)
    assert info.value.column == "area" and info.value.file == "new.csv"
    with pytest.raises(DataValidationError) as info:
        enc.transform(tx(area=["1", "big"]))
    assert (info.value.row, info.value.column) == (2, "area")


def test_state_dict_of_wrong_kind_is_refused() -> None:
    enc = CommunityEncoder().fit(pd.DataFrame({"community": ["a", "b"], "x": [1.0, 2.0]}))
    with pytest.raises(ConfigError, match="FeatureEncoder"):
        FeatureEncoder.from_state_dict(enc.state_dict())
    state = enc.state_dict() | {"format_version": 99}
    with pytest.raises(ConfigError, match="format_version"):
        CommunityEncoder.from_state_dict(state)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ConfigError, match="max_categories"):
        FeatureEncoder(max_categories=0)
    with pytest.raises(ConfigError, match="columns"):
        FeatureEncoder(columns="area")
    with pytest.raises(ConfigError, match="reference_date"):
        FeatureEncoder(reference_date="not a date")


def test_community_encoder_defaults_and_round_trip() -> None:
    comm = pd.DataFrame(
        {
            "community": ["a", "b", "c", "d"],
            "district": ["D1", "D1", "D2", "D2"],
            "lat": [1.0, 2.0, 3.0, 4.0],
            "lon": [1.0, 2.0, 3.0, 4.0],
            "poi": [0.0, 10.0, 20.0, np.nan],
            "pop": [100.0, 100.0, 100.0, 100.0],
        }
    )
    enc = CommunityEncoder().fit(comm)
    assert enc.feature_names == ["poi", "pop"]
    x = enc.transform(comm)
    s = np.std([0.0, 10.0, 20.0])
    np.testing.assert_allclose(x[:, 0], [-10 / s, 0, 10 / s, 0], rtol=1e-6)
    np.testing.assert_array_equal(x[:, 1], 0)
    back = CommunityEncoder.from_state_dict(json.loads(json.dumps(enc.state_dict())))
    np.testing.assert_array_equal(back.transform(comm), x)
    assert repr(back) == "CommunityEncoder(numeric=['poi', 'pop'], categorical={}, n_features=2)"

"""Failures on private data say nothing about it; mocks say nothing about the private table.

* The vocabulary oracle: a request whose vocabulary lacks one community used to fail (uncharged)
  exactly when the agency had a sale there and succeed (charged) otherwise — one record's
  membership, for free. Now both datasites answer alike: the sale is left out, the release is
  noised and charged.
* Any other error while computing on private rows is one generic refusal; the detail goes to the
  owner's log only.
* A mock's size comes from the mock city, never from the private table.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedmugrep.data.synthetic import CityConfig, make_city
from fedmugrep.federation.artefacts import transaction_mock
from fedmugrep.federation.wire import encode_model_dict, parameter_shapes
from fedmugrep.federation.wire import public_from_constant as parse
from fedmugrep.models.mugrep import EventModel
from tests.security.conftest import City

pytestmark = pytest.mark.slow


def _without_community(public: dict, community: str) -> dict:
    crafted = json.loads(json.dumps(public))
    crafted["encoders"]["communities"] = [
        c for c in crafted["encoders"]["communities"] if c != community
    ]
    return crafted


def _theta(public: dict) -> str:
    pub, _, _ = parse(public)
    return encode_model_dict(
        EventModel(pub.model_config).state_dict(), parameter_shapes(pub.model_config)
    )


def test_the_vocabulary_oracle_answers_alike_with_and_without_the_sale(
    site_factory, small_city: City
) -> None:
    tx = small_city.transactions
    target = str(tx["community"].value_counts().index[-1])  # a community with few sales
    crafted = _without_community(small_city.public, target)
    with_sale = site_factory(name="with")
    without_sale = site_factory(name="without")
    without_sale.assets = {"data": tx[tx["community"].astype(str) != target].copy()}
    assert (with_sale.assets["data"]["community"].astype(str) == target).any()
    replies = []
    for site in (with_sale, without_sale):
        site.public = crafted
        out = site.call("release_intra", {"theta": _theta(crafted)})
        replies.append(out)
        assert out["ok"], out  # served, and so ...
        assert site.charged() == 1  # ... charged, in both worlds
    # the two replies have the same shape and kind: only noised values differ
    assert replies[0]["value"].keys() == replies[1]["value"].keys()


def test_an_error_on_private_rows_is_one_generic_refusal(site_factory, small_city: City) -> None:
    site = site_factory()
    bad = small_city.transactions.copy()
    secret = 123456.789
    bad["lat"] = bad["lat"].astype(object)
    bad.loc[bad.index[3], "lat"] = f"unparsable-{secret}"
    site.assets = {"data": bad}
    out = site.call("release_intra", {"theta": _theta(site.public)})
    assert out["ok"] is False
    assert out["error"] == "ReleaseRefusedError", out
    assert str(secret) not in out["message"] and "unparsable" not in out["message"]
    assert "nothing was released or charged" in out["message"]
    assert site.charged() == 0
    ref = out["message"].rsplit("reference ", 1)[1].strip()
    log = (site.home / "logs" / "refusals.log").read_text()
    assert ref in log and "unparsable" in log  # the owner sees the detail
    assert (site.home / "logs" / "refusals.log").stat().st_mode & 0o077 == 0


def test_a_mock_does_not_reveal_the_private_row_count(small_city: City) -> None:
    mock_city = make_city(CityConfig(seed=1000, n_transactions=600))
    private = small_city.transactions
    small, large = private.head(37), pd.concat([private, private], ignore_index=True)
    sizes = {len(transaction_mock(p, mock_city, "agency-a")) for p in (small, large, private)}
    assert len(sizes) == 1, sizes
    (size,) = sizes
    assert size not in (37, len(private), 2 * len(private))
    mock = transaction_mock(small, mock_city, "agency-a")
    assert list(mock.columns) == list(small.columns)
    # no private value is copied into the mock either
    assert not np.isin(mock["price"].to_numpy(), private["price"].to_numpy()).any()

"""Shared fixtures of the reliability suite: one small synthetic city and its public constant."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fedmugrep.cli import main
from fedmugrep.data.loading import (
    assign_regions,
    load_communities,
    load_mobility,
    load_transactions,
)
from fedmugrep.data.synthetic import CityConfig, make_city
from fedmugrep.federation.plan import FederationPlan, PrivacyPlan

#: A small private plan: the model is tiny so every remote call takes well under a second.
PLAN = FederationPlan(
    rounds=2,
    privacy=PrivacyPlan(epsilon=4.0),
    k=4,
    hidden=16,
    event_hidden=8,
    region_hidden=8,
    intra_dim=4,
    lr=0.01,
)
AGENCY = "agency1"
CALLER = "dana@uni.example"


@dataclass
class City:
    folder: Path
    communities: object
    mobility: object
    transactions: object  # AGENCY's validated transactions, regions assigned
    public: dict  # the pinned public constant (schema fedmugrep.federation-public/1)


@pytest.fixture(scope="session")
def one_torch_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_city(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> City:
    from fedmugrep.federation.artefacts import public_from_mocks, region_mocks, transaction_mock
    from fedmugrep.federation.wire import public_constant

    out = tmp_path_factory.mktemp("relcity")
    assert main(["synth", "--out", str(out), "--transactions", "600", "--seed", "4"]) == 0
    comms = load_communities(out / "communities.csv")
    mob = load_mobility(out / "mobility.csv", comms)
    tx = assign_regions(load_transactions(out / f"transactions_{AGENCY}.csv"), comms)
    mock_city = make_city(CityConfig(seed=1000, n_transactions=600))
    comms_mock, _ = region_mocks(comms, mob, mock_city)
    mocks = [transaction_mock(tx, mock_city, a) for a in mock_city.agencies]
    const = public_constant(public_from_mocks(comms_mock, mocks, PLAN), PLAN, run_id="run-rel")
    assert json.loads(json.dumps(const)) == const
    return City(out, comms, mob, tx, const)

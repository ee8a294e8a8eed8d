"""A data scientist's plan cannot set the noise: crafted plans, artefacts and contracts.

Each case is an attack that once worked: the noise was computed from the plan's ``k``,
``intra_dim``, ``intra_max_degree`` and ``region_hidden`` while the graph and the model were built
from separate fields nobody compared, and no field was type-checked. Every call below goes
through the very function a datasite runs (``transaction_call`` / ``region_call`` inside a bound
datasite call, on a real ledger); an attack now comes back as a refusal that names the field,
before any private row is read, and leaves the ledger untouched. An honest control call in the
same setting succeeds (so the tests can fail).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedmugrep.federation.admission import transaction_contract
from fedmugrep.federation.wire import (
    encode_model_dict,
    pack_array,
    parameter_shapes,
    public_from_constant,
    unpack_array,
)
from fedmugrep.models.mugrep import EventModel
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.pysyft.functions import review_lines
from tests.security.conftest import PLAN, City, Site

pytestmark = pytest.mark.slow


def _theta(public: dict) -> str:
    pub, _, _ = public_from_constant(public)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = EventModel(pub.model_config).state_dict()
    return encode_model_dict(state, parameter_shapes(pub.model_config))


def _z(public: dict, value: float = 0.1) -> str:
    pub, _, _ = public_from_constant(public)
    n = len(pub.encoders.vocab.communities)
    return pack_array(np.full((n, pub.model_config.z_dim), value, np.float32))


def _refused(site: Site, method: str, payload: dict, *words: str) -> str:
    before = Ledger(site.home).head()
    out = site.call(method, payload)
    assert out["ok"] is False, f"the attack was served: {out}"
    assert out["error"] in {"ConfigError", "PrivacyParameterError"}, out
    for word in words:
        assert word in out["message"], out["message"]
    assert Ledger(site.home).head() == before, "a refused call changed the ledger"
    return out["message"]


def _step(site: Site, honest_public: dict) -> dict:
    return {"round": 0, "theta": _theta(honest_public), "z": _z(honest_public), "previous": ""}


def test_the_honest_request_is_served(site_factory, small_city: City) -> None:
    site = site_factory()
    out = site.call("step", _step(site, small_city.public))
    assert out["ok"], out
    assert site.charged() == 1


@pytest.mark.parametrize(
    ("field", "value", "word"),
    [
        ("k", -0.4999999, "FederationPlan.k must be an integer"),
        ("k", 0, "FederationPlan.k must be in [1, 64]"),
        ("k", True, "FederationPlan.k must be an integer"),
        ("intra_dim", 1e-6, "FederationPlan.intra_dim must be an integer"),
        ("intra_max_degree", -0.9999999, "intra_max_degree must be an integer"),
        ("region_hidden", 1.0, "region_hidden must be an integer"),
        ("rounds", "30", "rounds must be an integer"),
    ],
)
def test_untyped_plan_fields_are_refused(
    site_factory, small_city: City, field: str, value, word: str
) -> None:
    site = site_factory()
    site.public["plan"][field] = value
    _refused(site, "step", _step(site, small_city.public), word)


@pytest.mark.parametrize(
    ("field", "value"),
    [("k", 2), ("intra_max_degree", 1), ("intra_dim", 2), ("region_hidden", 1), ("hidden", 8)],
)
def test_a_plan_that_disagrees_with_its_graph_or_model_is_refused(
    site_factory, small_city: City, field: str, value: int
) -> None:
    """Well-typed, in range, and smaller than what the graph and model really use (graph and
    model K = 4, width 8): the sensitivity would be computed from the smaller value."""
    site = site_factory()
    assert site.public["plan"][field] != value
    site.public["plan"][field] = value
    _refused(site, "step", _step(site, small_city.public), f"the plan's {field} is {value}")


def test_region_hidden_one_with_a_width_eight_model_is_refused_by_the_region(
    site_factory, small_city: City
) -> None:
    """The Laplace scale of z is ``2 H C / eps``: H = 1 would add an eighth of the noise."""
    site = site_factory("region")
    site.public["plan"]["region_hidden"] = 1
    n = len(small_city.public["encoders"]["communities"])
    width = small_city.public["model_config"]["intra_dim"] + 1
    pooled = pack_array(np.full((n, width), 0.1, np.float32))
    _refused(site, "forward", {"round": 0, "pooled": pooled}, "region_hidden")


@pytest.mark.parametrize(
    ("where", "field", "value", "word"),
    [
        ("graph_config", "rule", "greedy", "unbounded reach"),
        ("graph_config", "event_within_community", False, "event_within_community"),
        ("graph_config", "k", 5, "graph_config.k"),
        ("model_config", "k", 1, "model_config.k"),
        ("model_config", "bounded_z", False, "bounded_z"),
        ("graph_config", "k", 4.5, "GraphConfig.k must be an integer"),
    ],
)
def test_graph_and_model_options_with_more_reach_are_refused(
    site_factory, small_city: City, where: str, field: str, value, word: str
) -> None:
    site = site_factory()
    site.public[where][field] = value
    _refused(site, "step", _step(site, small_city.public), word)


def test_a_contract_that_claims_other_figures_is_refused(site_factory, small_city: City) -> None:
    site = site_factory()
    claimed = dict(site.contract)
    claimed["projected_epsilon"] = claimed["projected_epsilon"] / 2
    site.contract = claimed
    _refused(site, "step", _step(site, small_city.public), "projected_epsilon")


def test_the_unpinned_contract_of_another_plan_is_refused(site_factory, small_city: City) -> None:
    """A contract honestly derived from a *different* (cheaper-looking) plan."""
    from dataclasses import replace

    site = site_factory()
    site.contract = transaction_contract(replace(PLAN, rounds=PLAN.rounds + 5)).to_dict()
    _refused(site, "step", _step(site, small_city.public), "claims")


def test_run_id_cannot_escape_the_release_folder(site_factory, small_city: City) -> None:
    site = site_factory()
    site.public["run_id"] = ".."
    _refused(site, "step", _step(site, small_city.public), "run_id")
    assert not (site.home / "releases").exists() or not any(
        p.name.startswith(site.name) for p in (site.home / "releases").iterdir()
    )


def test_the_review_sheet_leads_with_the_sensitivities_the_datasite_computes(
    small_city: City,
) -> None:
    honest = transaction_contract(PLAN).to_dict()
    lines = review_lines(
        {"contract": honest, "public": small_city.public}, role="transaction", call_cap=7
    )
    text = "\n".join(lines[:12])
    assert lines[0].startswith("PRIVACY (computed by this datasite")
    k, clip = PLAN.k, PLAN.privacy.clip
    assert f"sensitivity {(1 + 2 * k) * clip:.4g} [(1+2K)·C = (1+2·{k})·{clip:g}]" in text
    assert f"2·m·(1+D) = 2·{PLAN.intra_dim}·(1+{PLAN.intra_max_degree})" in text
    assert "call cap: 7" in text
    assert f"over {PLAN.rounds} rounds" in text
    # a crafted plan: the sheet says the datasite refuses it, with the reason, first
    crafted = json.loads(json.dumps(small_city.public))
    crafted["plan"]["k"] = -0.4999999
    lines = review_lines({"contract": honest, "public": crafted}, role="transaction", call_cap=7)
    assert "REFUSES" in lines[0] and "FederationPlan.k must be an integer" in lines[1]


def test_a_refused_attack_leaves_the_party_serving_honest_calls(
    site_factory, small_city: City
) -> None:
    site = site_factory()
    site.public["plan"]["k"] = 2
    _refused(site, "step", _step(site, small_city.public), "k")
    site.public = json.loads(json.dumps(small_city.public))
    out = site.call("step", _step(site, small_city.public))
    assert out["ok"], out
    assert unpack_array(out["value"]["z_grad"]).shape[1] == PLAN.region_hidden + 1

"""Federated training on PySyft datasites: same party code and numbers as the local runtime.

The slow end-to-end tests share one small synthetic city (1,500 sales, 3 agencies). The unit
tests at the top call the datasite-side implementations directly (no PySyft), with a
hand-built :class:`RemoteContext`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("syft")

from fedmugrep.cli import main  # noqa: E402
from fedmugrep.data.loading import (  # noqa: E402
    assign_regions,
    load_communities,
    load_mobility,
    load_transactions,
)
from fedmugrep.data.synthetic import CityConfig, make_city  # noqa: E402
from fedmugrep.errors import BudgetExceededError, ConfigError  # noqa: E402
from fedmugrep.federation.local import run_local  # noqa: E402
from fedmugrep.federation.parties import RegionParty, TransactionParty  # noqa: E402
from fedmugrep.federation.plan import FederationPlan, PrivacyPlan  # noqa: E402
from fedmugrep.federation.wire import (  # noqa: E402
    decode_model_dict,
    encode_model_dict,
    pack_array,
    parameter_shapes,
    public_constant,
    public_from_constant,
    unpack_array,
)
from fedmugrep.models.mugrep import EventModel, ModelConfig  # noqa: E402
from fedmugrep.privacy.analysis.composition import compose_events  # noqa: E402
from fedmugrep.privacy.ledger import Ledger  # noqa: E402
from fedmugrep.pysyft.functions import (
    allow_exact_release,
    clear_party_cache,
    region_call_impl,
    transaction_call_impl,
)
from fedmugrep.pysyft.proxies import SyftRegionParty, SyftTransactionParty
from fedmugrep.pysyft.remote import RemoteContext
from fedmugrep.pysyft.run import (
    DEFAULT_DATA_SCIENTIST,
    planned_calls,
    public_from_mocks,
    region_mocks,
    run_syft,
    transaction_contract,
    transaction_mock,
)
from tests.conftest import package_snapshot  # noqa: E402

MOCK_CITY = make_city(CityConfig(seed=1000))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two intra-op threads on a shared 2-core machine make a round ~20x slower (they spin)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("syftcity")
    assert main(["synth", "--out", str(out), "--transactions", "1500", "--seed", "4"]) == 0
    return out


@pytest.fixture(scope="module")
def tables(city: Path) -> dict:
    comms = load_communities(city / "communities.csv")
    mob = load_mobility(city / "mobility.csv", comms)
    tx = assign_regions(load_transactions(city / "transactions_agency3.csv"), comms)
    return {"communities": comms, "mobility": mob, "agency3": tx}


def _public(tables: dict, plan: FederationPlan) -> dict:
    comms_mock, _ = region_mocks(tables["communities"], tables["mobility"], MOCK_CITY)
    mocks = [transaction_mock(tables["agency3"], MOCK_CITY, a) for a in MOCK_CITY.agencies]
    return public_constant(public_from_mocks(comms_mock, mocks, plan), plan, run_id="run-test")


def _ctx(home: Path, name: str, caller: str | None = "dana@uni.example") -> RemoteContext:
    # no pinned contract: these tests drive the implementations directly (the contract check
    # of a real call is in tests/security/test_plan_injection.py)
    return RemoteContext(home=home, datasite=name, caller=caller, contract=None)


# ================================================================================ unit tests
def test_public_constant_round_trips_and_is_json(tables: dict) -> None:
    plan = FederationPlan(rounds=3, privacy=PrivacyPlan(epsilon=2.0, clip=0.5), k=6)
    const = _public(tables, plan)
    assert json.loads(json.dumps(const)) == const  # what goes into the sy.Constant
    public, plan2, run_id = public_from_constant(const)
    assert plan2 == plan and run_id == "run-test"
    assert public.graph_config.k == 6
    assert public.model_config.attr_dim == 6  # the six numeric community attributes
    assert public.encoders.vocab.communities[:2] == ["C001", "C002"]
    assert public_constant(public, plan2, run_id=run_id) == const
    with pytest.raises(ConfigError, match="schema"):
        public_from_constant({**const, "schema": "other/1"})
    with pytest.raises(ConfigError, match="does not fit"):
        public_from_constant({**const, "plan": {**const["plan"], "bogus": 1}})


def test_mocks_never_copy_private_values(tables: dict) -> None:
    tx = tables["agency3"]
    mock = transaction_mock(tx, MOCK_CITY, "agency3")
    assert list(mock.columns) == list(tx.columns)
    assert (mock.dtypes == tx.dtypes).all()
    assert not set(mock["price"]) & set(tx["price"])
    comms_mock, mob_mock = region_mocks(tables["communities"], tables["mobility"], MOCK_CITY)
    comms = tables["communities"]
    assert list(comms_mock.columns) == list(comms.columns)
    # public geography is kept; every attribute comes from the mock city
    assert comms_mock["community"].tolist() == comms["community"].tolist()
    assert np.array_equal(comms_mock["lat"], comms["lat"])
    assert not np.isclose(comms_mock["income_index"], comms["income_index"]).all()
    assert list(mob_mock.columns) == list(tables["mobility"].columns)


def test_model_dicts_pack_in_the_public_order() -> None:
    cfg = ModelConfig(feature_dim=5, attr_dim=3, n_districts=2, hidden=8, intra_dim=4)
    cfg_orders = parameter_shapes(cfg)
    torch.manual_seed(1)
    model = EventModel(cfg)
    state = {n: v.detach().clone() for n, v in model.state_dict().items()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    for values, kind in ((state, "state"), (params, "params")):
        text = encode_model_dict(values, cfg_orders)
        assert text.startswith(f"{kind}:")
        back = decode_model_dict(text, cfg_orders)
        assert list(back) == list(values)
        assert all(torch.equal(back[n], values[n]) for n in values)
    with pytest.raises(ConfigError, match="neither"):
        encode_model_dict({"x": torch.zeros(2)}, cfg_orders)
    with pytest.raises(ConfigError, match="values"):
        decode_model_dict("params:" + pack_array(np.zeros(3, np.float32)), cfg_orders)


def test_region_party_reloads_its_state_after_a_restart(tables: dict, tmp_path: Path) -> None:
    plan = FederationPlan(rounds=2, privacy=None)
    const = _public(tables, plan)
    width = ModelConfig(**const["model_config"]).intra_width
    ctx = _ctx(tmp_path / "region", "region")
    comms, mob = tables["communities"], tables["mobility"]

    def call(method: str, **payload: object) -> dict:
        return region_call_impl(
            ctx, comms, mobility=mob, public=const, method=method, payload=json.dumps(payload)
        )

    with pytest.raises(ConfigError, match="allow_exact_release"):
        call("forward", round=0, pooled=pack_array(np.zeros((60, width), np.float32)))
    allow_exact_release(ctx.home, by="owner@region.example", reason="synthetic test city")
    pooled = np.random.default_rng(0).uniform(-1, 1, (60, width)).astype(np.float32)
    z0 = unpack_array(call("forward", round=0, pooled=pack_array(pooled))["z"])
    grad = np.ones_like(z0)
    call("backward", round=0, z_grad=pack_array(grad))
    z1 = unpack_array(call("forward", round=1, pooled=pack_array(pooled))["z"])
    assert not np.allclose(z0, z1)  # the model moved

    clear_party_cache(ctx.home)  # a restarted datasite process: nothing in memory
    z1_again = unpack_array(call("forward", round=1, pooled=pack_array(pooled))["z"])
    np.testing.assert_array_equal(z1_again, z1)  # model and optimiser reloaded from home
    clear_party_cache(ctx.home)
    call("backward", round=1, z_grad=pack_array(grad))  # pooled intra reloaded too
    call("restore", round=0)
    clear_party_cache(ctx.home)
    z_restored = unpack_array(call("forward", round=-1, pooled=pack_array(pooled))["z"])
    np.testing.assert_array_equal(z_restored, z1)  # round 0's snapshot, also after restart
    with pytest.raises(ConfigError, match="no region model snapshot"):
        call("restore", round=7)
    with pytest.raises(ConfigError, match="unknown method"):
        call("parameters", round=0)
    assert list((ctx.home / "fedmugrep_region" / "run-test").glob("*.pt"))


def test_transaction_datasite_refuses_what_its_owner_did_not_allow(
    tables: dict, tmp_path: Path
) -> None:
    plan = FederationPlan(rounds=1, privacy=None)
    const = _public(tables, plan)
    public, _, _ = public_from_constant(const)
    theta = encode_model_dict(
        EventModel(public.model_config).state_dict(), parameter_shapes(public.model_config)
    )
    home = tmp_path / "agency3"
    payload = json.dumps({"theta": theta})
    tx = tables["agency3"]
    with pytest.raises(ConfigError, match="without noise"):
        transaction_call_impl(
            _ctx(home, "agency3"), tx, public=const, method="release_intra", payload=payload
        )
    allow_exact_release(home, by="owner@agency3.example", reason="synthetic test city")
    with pytest.raises(ConfigError, match="cannot tell who is calling"):
        transaction_call_impl(
            _ctx(home, "agency3", None), tx, public=const, method="step", payload=payload
        )
    with pytest.raises(ConfigError, match="unknown method"):
        transaction_call_impl(
            _ctx(home, "agency3"), tx, public=const, method="frame", payload=payload
        )
    out = transaction_call_impl(
        _ctx(home, "agency3"), tx, public=const, method="release_intra", payload=payload
    )
    assert out["n"] > 0 and unpack_array(out["counts"]).shape == (60,)
    clear_party_cache(home)


def test_proxies_offer_every_method_of_the_parties() -> None:
    def public_methods(cls: type) -> set[str]:
        return {m for m in vars(cls) if not m.startswith("_") and callable(getattr(cls, m))}

    # appraisal goes through its own request and contract (federation.syft_valuation), not the
    # training request's proxy
    assert public_methods(TransactionParty) - {"appraise"} <= public_methods(SyftTransactionParty)
    assert public_methods(RegionParty) <= public_methods(SyftRegionParty)


def test_contract_plain_sum_bounds_the_accountant() -> None:
    plan = FederationPlan(rounds=3, privacy=PrivacyPlan(epsilon=4.0))
    c = transaction_contract(plan)
    # setup + rounds + calibration + the noised test evaluation
    assert c.rounds == plan.rounds + 2 + plan.evaluations == plan.rounds + 3
    assert c.projected_epsilon <= 4.0 + 1e-6
    assert c.projected_epsilon <= c.plain_sum_epsilon
    # a private run keeps its last round: no validation calls, no restore of a best round
    assert not plan.selects_best
    # region: the first forward, then one backward per round (each returns the next z)
    assert planned_calls(plan) == (1 + 3 + 1 + 1, 1 + 3)
    chosen = FederationPlan(rounds=3, privacy=PrivacyPlan(epsilon=4.0), select_best=True)
    # ... plus a restore of the best round and a forward of the restored state
    assert planned_calls(chosen) == (1 + 3 + 1 + 1 + 1, 1 + 3 + 1 + 1)


# ================================================================================ end to end
def _charged(home: Path) -> list:
    return [e for e in Ledger(home).entries() if e.status == "charged"]


@pytest.mark.slow
def test_private_syft_run_charges_each_ledger_as_the_local_run(
    city: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = FederationPlan(rounds=2, privacy=PrivacyPlan(epsilon=4.0), lr=0.01, upload_rate=0.5)
    res = run_syft(city, plan, tmp_path / "syft", progress=True)
    out = capsys.readouterr().out
    assert out.count("review ---") == 4 and out.count("approved ---") == 4
    assert "matches local fedmugrep: yes" in out and "constant 'public':" in out

    # "warnings" (present only when a metric's noise makes it meaningless) is a list of lines
    assert all(isinstance(w, str) for w in res.metrics.get("warnings", []))
    numbers = {
        k: v
        for k, v in res.metrics.items()
        if k not in ("mae", "warnings") and not isinstance(v, str)
    }
    assert all(math.isfinite(v) for v in numbers.values())
    assert math.isnan(res.metrics["mae"])  # euros are not released under privacy
    assert res.metrics["n"] > 0
    expected_events = plan.planned_events() + plan.round_events(res.noise_multiplier) * 2
    run_ids = set()
    for agency in ("agency1", "agency2", "agency3"):
        home = res.homes[agency]
        assert home == (tmp_path / "syft" / f"transactions_{agency}").resolve()
        charged = _charged(home)
        # 1 setup release, 1 per round, 1 district summary; all named after the real caller
        assert [e.mechanism for e in charged] == [
            "laplace:intra_region",
            "gaussian:theta+z_grad",
            "gaussian:theta+z_grad",
            "laplace:district_summary",
            "laplace:evaluation",
        ]
        assert {e.data_scientist for e in charged} == {DEFAULT_DATA_SCIENTIST}
        run_ids |= {e.request_id for e in charged}
        events = [ev for e in charged for ev in e.privacy_events()]
        spent = Ledger(home).spent(DEFAULT_DATA_SCIENTIST, agency)
        assert spent == pytest.approx(compose_events(events, delta=1e-5).epsilon, rel=1e-9)
        assert compose_events(expected_events, delta=1e-5).epsilon == pytest.approx(spent, rel=1e-3)
        assert spent <= 4.0 + 1e-6
        assert Ledger(home).verify().ok
    assert len(run_ids) == 1 and next(iter(run_ids)).startswith("run-")
    # the region party charges one noised z per model-2 state read: 2 rounds + the final one
    region = _charged(res.homes["region"])
    assert (
        [e.mechanism for e in region]
        == ["laplace:region_z"] * plan.region_releases
        == ["laplace:region_z"] * 3
    )
    region_spent = Ledger(res.homes["region"]).spent(DEFAULT_DATA_SCIENTIST, "region")
    assert region_spent <= plan.privacy.region_epsilon + 1e-6
    assert Ledger(res.homes["region"]).verify().ok

    # exactly the calls the owners approved: the call caps are tight
    calls_t, calls_r = planned_calls(plan)
    by_party = {p: [c for c in res.calls if c.party == p] for p in res.homes}
    assert {p: len(v) for p, v in by_party.items()} == {
        "region": calls_r,
        "agency1": calls_t,
        "agency2": calls_t,
        "agency3": calls_t,
    }
    # half the channels travel: compressed like the local runtime's round
    assert all(0 < b < 0.75 * res.history[0].bytes_dense for b in res.history[1].bytes_up.values())


@pytest.mark.slow
def test_nonprivate_syft_run_matches_the_local_run(
    city: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = FederationPlan(rounds=2, privacy=None, lr=0.01, upload_rate=0.5)
    local = run_local(city, plan, tmp_path / "local", progress=False)
    capsys.readouterr()
    syft = run_syft(city, plan, tmp_path / "syft", progress=False)
    assert capsys.readouterr() == ("", "")  # PySyft's console noise is silenced
    for key in ("mae", "mape", "mae_log", "coverage80"):
        assert syft.metrics[key] == pytest.approx(local.metrics[key], rel=1e-5, abs=1e-9), key
    assert syft.metrics["n"] == local.metrics["n"]
    for a, b in zip(local.history, syft.history, strict=True):
        assert a.bytes_up == b.bytes_up and a.bytes_dense == b.bytes_dense
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-5)
    assert all(b < 0.75 * r.bytes_dense for r in syft.history for b in r.bytes_up.values())
    assert syft.district_summary["sigma_scale"] == pytest.approx(
        local.district_summary["sigma_scale"], rel=1e-5
    )


@pytest.mark.slow
def test_without_a_region_datasite_the_syft_run_matches_the_local_run(
    city: Path, tmp_path: Path
) -> None:
    plan = FederationPlan(rounds=2, privacy=None, lr=0.01, pretrain_epochs=20)
    local = run_local(city, plan, tmp_path / "local", progress=False, region_datasite=False)
    syft = run_syft(city, plan, tmp_path / "syft", progress=False, region_datasite=False)
    # only the agencies' datasites ran; model 2 lived at the coordinator
    assert set(syft.homes) == {"agency1", "agency2", "agency3"}
    assert not (tmp_path / "syft" / "region").exists()
    assert (tmp_path / "syft" / "coordinator" / "region" / "region_model.pt").is_file()
    calls_t, _ = planned_calls(plan)
    assert syft.executions == {a: calls_t for a in syft.homes}
    for key in ("mae", "mape", "mae_log", "coverage80"):
        assert syft.metrics[key] == pytest.approx(local.metrics[key], rel=1e-5, abs=1e-9), key
    for a, b in zip(local.history, syft.history, strict=True):
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-5)


@pytest.mark.slow
def test_cap_too_small_is_refused_on_the_datasite_and_raised_to_the_data_scientist(
    city: Path, tmp_path: Path
) -> None:
    plan = FederationPlan(rounds=2, privacy=PrivacyPlan(epsilon=4.0), lr=0.01)
    with pytest.raises(BudgetExceededError, match="data-scientist@fedmugrep.example"):
        run_syft(city, plan, tmp_path, progress=False, cap_epsilon=0.01)
    entries = Ledger(tmp_path / "transactions_agency1").entries()
    assert [e.status for e in entries] == ["cap_set", "refused"]
    assert entries[1].data_scientist == DEFAULT_DATA_SCIENTIST
    assert entries[1].mechanism == "laplace:intra_region"
    assert Ledger(tmp_path / "transactions_agency1").spent(DEFAULT_DATA_SCIENTIST, "agency1") == 0


@pytest.mark.integration
@pytest.mark.slow
def test_http_datasites_one_private_round(city: Path, tmp_path: Path) -> None:
    snapshot = tmp_path / "pkg"
    package_snapshot(snapshot)
    plan = FederationPlan(rounds=1, privacy=PrivacyPlan(epsilon=4.0), lr=0.01)
    res = run_syft(city, plan, tmp_path / "h", mode="http", progress=False, pythonpath=[snapshot])
    assert all(math.isfinite(res.metrics[k]) for k in ("mape", "mae_log", "coverage80", "n"))
    for name, home in res.homes.items():
        assert not (home / "server.pid").exists(), name  # every server stopped
        # agencies: setup, 1 round, district summary, test evaluation; region: 2 z releases
        assert len(_charged(home)) == (2 if name == "region" else 4) and Ledger(home).verify().ok
    assert (res.homes["region"] / "fedmugrep_region").is_dir()  # model 2 stayed there

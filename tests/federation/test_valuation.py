"""Valuation (C7): the exported model, remote appraisal on a transaction datasite, PySyft."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedmugrep.data.loading import assign_regions, load_communities, load_transactions
from fedmugrep.data.synthetic import CityConfig, make_city, write_city
from fedmugrep.errors import (
    BudgetExceededError,
    ConfigError,
    DataValidationError,
    FedMugRepError,
    PrivacyParameterError,
)
from fedmugrep.federation.coordinator import FederationResult
from fedmugrep.federation.local import run_local
from fedmugrep.federation.parties import TransactionParty
from fedmugrep.federation.plan import FederationPlan, PrivacyPlan
from fedmugrep.federation.valuation import (
    VALUATION_SCHEMA,
    AppraisalBounds,
    PrivateAppraisal,
    ValuationModel,
    load_properties,
    max_influence,
)
from fedmugrep.privacy.events import LaplaceEvent
from fedmugrep.privacy.laplace import InsecureRandomnessWarning, SeededRandomSource
from fedmugrep.privacy.ledger import Ledger

PLAN = FederationPlan(rounds=2, pretrain_epochs=0, privacy=PrivacyPlan(epsilon=8.0))


@dataclass
class Trained:
    city: Path
    result: FederationResult
    comms: pd.DataFrame
    tx1: pd.DataFrame
    tx2: pd.DataFrame

    def split(self, tx: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(properties of the test period without price, earlier sales with prices)."""
        test = tx["date"] >= self.result.public.test_start
        return tx[test].drop(columns=["price"]).reset_index(drop=True), tx[~test]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("valuation")
    cfg = CityConfig(n_transactions=800, n_communities=12, n_districts=3, n_agencies=2, seed=3)
    write_city(make_city(cfg), root / "city")
    result = run_local(root / "city", PLAN, root / "home", progress=False)
    comms = load_communities(root / "city" / "communities.csv")
    tx = [
        assign_regions(load_transactions(root / "city" / f"transactions_agency{i}.csv"), comms)
        for i in (1, 2)
    ]
    return Trained(root / "city", result, comms, *tx)


@pytest.fixture(scope="module")
def model(trained: Trained) -> ValuationModel:
    return ValuationModel.from_result(trained.result, geography=trained.comms)


def _party(trained: Trained, home: Path, *, cap: float) -> TransactionParty:
    party = TransactionParty(
        "agency2", trained.tx2, home, trained.result.public, PLAN, request_id="appraise-test"
    )
    party.ledger.set_cap(party.data_scientist, "agency2", epsilon=cap, delta=1e-5)
    return party


# ============================================================================ exported model
def test_export_save_load_round_trip_gives_identical_predictions(
    trained: Trained, model: ValuationModel, tmp_path: Path
) -> None:
    props, hist = trained.split(trained.tx1)
    path = model.save(tmp_path / "model.pt")
    raw = torch.load(path, weights_only=True)  # plain data only: no pickled classes
    assert raw["schema"] == VALUATION_SCHEMA
    assert "log_sigma_offset" in raw["model_state"]
    loaded = ValuationModel.load(path)
    for history in (None, hist):
        a = model.appraise(props, history)
        b = loaded.appraise(props, history)
        pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == [
        "transaction_id",
        "pred_median",
        "pred_lo80",
        "pred_hi80",
        "sigma_log",
        "noise_scale_log",
        "n_neighbours",
    ]
    assert a["transaction_id"].tolist() == props["transaction_id"].tolist()
    # the exported model predicts like the federation's final model on the owner's side
    assert np.isfinite(a[["pred_median", "sigma_log"]].to_numpy()).all()


def test_load_rejects_other_files(model: ValuationModel, tmp_path: Path) -> None:
    data = model.to_dict()
    torch.save({**data, "schema": "fedmugrep.valuation-model/0"}, tmp_path / "old.pt")
    with pytest.raises(ConfigError, match="schema"):
        ValuationModel.load(tmp_path / "old.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="schema None"):
        ValuationModel.load(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a fedmugrep valuation model"):
        ValuationModel.load(tmp_path / "junk.pt")
    with pytest.raises(ConfigError, match="not found"):
        ValuationModel.load(tmp_path / "missing.pt")
    bad = {**data, "z": torch.zeros(2, 2)}
    with pytest.raises(ConfigError, match="z must be"):
        ValuationModel.from_dict(bad)


def test_from_result_needs_a_trained_model() -> None:
    with pytest.raises(ConfigError, match="no trained model"):
        ValuationModel.from_result(FederationResult())


def test_history_gives_neighbours_and_changes_only_those_predictions(
    trained: Trained, model: ValuationModel
) -> None:
    props, hist = trained.split(trained.tx1)
    alone = model.appraise(props)
    with_h = model.appraise(props, hist)
    k = trained.result.public.graph_config.k
    deg = with_h["n_neighbours"].to_numpy()
    assert (alone["n_neighbours"] == 0).all()
    assert deg.max() <= k and (deg > 0).mean() > 0.5
    changed = ~np.isclose(alone["pred_median"], with_h["pred_median"], rtol=1e-9)
    assert changed[deg > 0].all() and not changed[deg == 0].any()
    # sales on or after a property's date are never its neighbours: adding them changes nothing
    later = trained.tx1[trained.tx1["date"] >= trained.result.public.test_start].copy()
    later["transaction_id"] = "late-" + later["transaction_id"]
    both = model.appraise(props, pd.concat([hist, later.iloc[::2]], ignore_index=True))
    first = props["date"] == props["date"].min()
    np.testing.assert_allclose(
        both.loc[first, "pred_median"], with_h.loc[first, "pred_median"], rtol=1e-9
    )


def test_intervals_contain_the_median_and_regions_are_derived(
    trained: Trained, model: ValuationModel
) -> None:
    props, hist = trained.split(trained.tx1)
    derived = model.appraise(props.drop(columns=["community", "district"]), hist)
    given = model.appraise(props, hist)
    out = given
    assert (out["pred_lo80"] < out["pred_median"]).all()
    assert (out["pred_median"] < out["pred_hi80"]).all()
    assert (out["sigma_log"] > 0).all()
    # nearest public community centre: mostly the community the city assigned
    same = np.isclose(derived["pred_median"], given["pred_median"], rtol=1e-9).mean()
    assert same > 0.6


def test_max_influence_counts_the_queries_a_history_row_can_reach() -> None:
    assert max_influence(np.array([0, 0, 0, 1]), np.array([0.0, 3.0, 9.0, 1.0]), 5.0) == 2


# ============================================================================ bad input
def test_bad_properties_errors_name_row_and_column(
    trained: Trained, model: ValuationModel, tmp_path: Path
) -> None:
    props, _ = trained.split(trained.tx1)
    rows = props.head(5).copy()
    rows["date"] = rows["date"].dt.strftime("%Y-%m-%d")
    bad = rows.astype(object)
    bad.loc[2, "lat"] = "north"
    path = tmp_path / "props.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(DataValidationError) as info:
        load_properties(path)
    assert (info.value.row, info.value.column) == (3, "lat")
    assert str(path) in str(info.value)

    bad = rows.astype(object)
    bad.loc[1, "area_m2"] = "big"
    with pytest.raises(DataValidationError) as info:
        model.appraise(bad)
    assert (info.value.row, info.value.column) == (2, "area_m2")

    bad = rows.copy()
    bad.loc[3, "community"] = "Atlantis"
    with pytest.raises(DataValidationError, match="not in the model's vocabulary") as info:
        model.appraise(bad)
    assert (info.value.row, info.value.column) == (4, "community")

    with pytest.raises(DataValidationError, match="required column 'date'") as info:
        model.appraise(rows.drop(columns=["date"]))
    assert info.value.column == "date"
    with pytest.raises(DataValidationError, match="'area_m2' is missing") as info:
        model.appraise(rows.drop(columns=["area_m2"]))
    bad = rows.copy()
    bad.loc[4, "transaction_id"] = bad.loc[0, "transaction_id"]
    with pytest.raises(DataValidationError, match="duplicated") as info:
        model.appraise(bad)
    assert (info.value.row, info.value.column) == (5, "transaction_id")
    hist = trained.tx1.head(4).copy()
    hist.loc[1, "price"] = -5.0
    with pytest.raises(DataValidationError) as info:
        model.appraise(rows, hist)
    assert (info.value.row, info.value.column) == (2, "price")


# ============================================================================ remote appraisal
def test_remote_appraisal_charges_one_entry_per_call_and_refuses_past_the_cap(
    trained: Trained, tmp_path: Path
) -> None:
    props, _ = trained.split(trained.tx1)
    party = _party(trained, tmp_path / "agency2", cap=2.5)
    theta, z = trained.result.model_state, trained.result.z
    with pytest.raises(PrivacyParameterError, match="epsilon must be > 0"):
        party.appraise(theta, z, props, epsilon=0.0)
    with pytest.raises(PrivacyParameterError):
        party.appraise(theta, z, props, epsilon=float("nan"))
    first = party.appraise(theta, z, props.iloc[:30], epsilon=1.0)
    again = party.appraise(theta, z, props.iloc[:30], epsilon=1.0)  # a retry: same release
    pd.testing.assert_frame_equal(first, again)
    second = party.appraise(theta, z, props.iloc[30:60], epsilon=1.0)
    charged = [e for e in party.ledger.entries() if e.status == "charged"]
    assert [e.mechanism for e in charged] == ["laplace:appraisal"] * 2
    for entry, table, rows in ((charged[0], first, props.iloc[:30]), (charged[1], second, props.iloc[30:60])):  # fmt: skip
        job = PrivateAppraisal(trained.result.public, rows, epsilon=1.0)
        (event,) = entry.privacy_events()
        assert isinstance(event, LaplaceEvent)
        assert event.dimension == len(rows) == len(table)
        assert event.sensitivity == pytest.approx(job.influence * 2 * job.bounds.correction_clip)
        assert event.scale == pytest.approx(job.noise_scale)
        assert entry.epsilon == pytest.approx(1.0, abs=1e-9)
        assert table["noise_scale_log"].iloc[0] == pytest.approx(
            job.noise_scale * trained.result.public.encoders.y_scale
        )
    folder = party.home / "releases" / party._request_folder()
    finals = sorted(folder.glob("*appraise*.pt"))
    assert len(finals) == 2
    with pytest.raises(BudgetExceededError):
        party.appraise(theta, z, props.iloc[60:90], epsilon=1.0)
    # nothing released: no final release file (the uncharged value stays pending on the
    # datasite and is never handed out; a retry recomputes it with fresh noise)
    assert sorted(folder.glob("*appraise*.pt")) == finals
    statuses = [e.status for e in party.ledger.entries()]
    assert statuses == ["cap_set", "charged", "charged", "refused"]
    assert party.ledger.spent(party.data_scientist, "agency2") == pytest.approx(2.0, abs=1e-9)
    assert party.ledger.verify().ok


def test_remote_intervals_contain_the_median_and_widen_with_the_noise(
    trained: Trained, tmp_path: Path
) -> None:
    props, _ = trained.split(trained.tx1)
    party = _party(trained, tmp_path / "agency2", cap=1e4)
    theta, z = trained.result.model_state, trained.result.z
    rows = props.iloc[:40]
    tables = {eps: party.appraise(theta, z, rows, epsilon=eps) for eps in (0.5, 50.0, 5000.0)}
    for t in tables.values():
        assert (t["pred_lo80"] <= t["pred_median"]).all()
        assert (t["pred_median"] <= t["pred_hi80"]).all()
    width = {e: float(np.log(t["pred_hi80"] / t["pred_lo80"]).mean()) for e, t in tables.items()}
    # the noise variance term saturates at (2c)^2: the clamped correction is never further off
    assert width[0.5] >= width[50.0] > width[5000.0]
    noise = {e: float(t["noise_scale_log"].iloc[0]) for e, t in tables.items()}
    assert noise[0.5] == pytest.approx(100 * noise[50.0], rel=1e-6)
    # the interval is never narrower than the public (no-neighbour) model's
    public_sigma = ValuationModel.from_result(trained.result).appraise(rows)["sigma_log"]
    assert (tables[5000.0]["sigma_log"].to_numpy() >= public_sigma.to_numpy() - 1e-12).all()


def test_one_sale_changes_at_most_max_influence_corrections(
    trained: Trained, model: ValuationModel
) -> None:
    """The sensitivity argument, checked: removing one private sale changes the clipped
    corrections only of properties of its community dated up to max_days after it."""
    props = trained.tx1.drop(columns=["price"]).iloc[::3].reset_index(drop=True)
    job = PrivateAppraisal(trained.result.public, props, epsilon=1.0)
    hist = trained.tx2.reset_index(drop=True)
    _, base, _ = job.exact(model._model, model.z, hist)
    max_days = trained.result.public.graph_config.max_days
    rng = np.random.default_rng(0)
    hits = 0
    for r in rng.choice(len(hist), size=25, replace=False):
        _, d, _ = job.exact(model._model, model.z, hist.drop(index=r))
        changed = np.flatnonzero(~np.isclose(d, base, rtol=0, atol=1e-7))
        hits += len(changed)
        assert len(changed) <= job.influence
        lag = (props["date"].iloc[changed] - hist["date"].iloc[r]).dt.days
        assert (props["community"].iloc[changed] == hist["community"].iloc[r]).all()
        assert ((lag > 0) & (lag <= max_days)).all()
        assert np.abs(d - base).sum() <= job.sensitivity + 1e-9
    assert hits > 0  # the check is not vacuous


def test_released_noise_matches_the_laplace_scale(trained: Trained, tmp_path: Path) -> None:
    """Seeded: (released - exact) / b over ~800 corrections has the Laplace moments (with the
    snapping grid's rounding): E|d| = 1 and Var d = 2 + (g/b)^2/12, within ~3 standard errors."""
    props = pd.concat([trained.tx1, trained.tx2], ignore_index=True).drop(columns=["price"])
    bounds = AppraisalBounds(correction_clip=100.0, lo=-1e3, hi=1e3)  # no clamping in play
    public, theta, z = trained.result.public, trained.result.model_state, trained.result.z
    probe = PrivateAppraisal(public, props, epsilon=1.0, bounds=bounds)
    epsilon = probe.sensitivity  # b close to 1 (in standardised units)
    party = _party(trained, tmp_path / "agency2", cap=10 * epsilon)
    party._load(theta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRandomnessWarning)
        job = PrivateAppraisal(
            public, props, epsilon=epsilon, bounds=bounds, source=SeededRandomSource(11)
        )
        table, _, released = job.release(party.model, z, party.frame)
        via_party = party.appraise(
            theta, z, props, epsilon=epsilon, bounds=bounds, source=SeededRandomSource(11)
        )
    pd.testing.assert_frame_equal(table, via_party)
    _, exact, _ = job.exact(party.model, z, party.frame)
    b, g = job.noise_scale, job.mechanism.grid
    d = (np.asarray(released) - exact) / b
    assert len(d) == len(props) > 700
    assert 0.75 < b < 1.25
    assert abs(d.mean()) < 0.2
    assert np.mean(np.abs(d)) == pytest.approx(1.0, rel=0.12)
    assert np.var(d) == pytest.approx(2.0 + (g / b) ** 2 / 12, rel=0.25)


# ============================================================================ PySyft
def test_appraisal_through_a_pysyft_datasite(trained: Trained, tmp_path: Path) -> None:
    pytest.importorskip("syft")
    from fedmugrep.federation.artefacts import transaction_mock
    from fedmugrep.federation.wire import public_constant
    from fedmugrep.pysyft.functions import clear_party_cache
    from fedmugrep.pysyft.runtime import (
        DatasiteConfig,
        approve_request,
        describe_request,
        get_asset,
        launch_datasite,
        list_requests,
        register_data_scientist,
        upload_dataset,
    )
    from fedmugrep.pysyft.valuation import appraise_remote, submit_appraisal_request

    ds_email, ds_password = "val@uni.example", "val-secret-123"
    home = tmp_path / "agency2"
    config = DatasiteConfig(
        name="agency2", home=home, admin_email="owner@agency2.example", admin_password="pw-123456"
    )
    clear_party_cache(home)
    handle = launch_datasite(config, mode="inprocess", reset=True)
    try:
        admin = handle.login_admin()
        mock_city = make_city(CityConfig(n_transactions=300, n_agencies=2, seed=1000))
        upload_dataset(
            admin,
            name="transactions",
            private=trained.tx2,
            mock=transaction_mock(trained.tx2, mock_city, "agency2"),
            description="agency2 sales",
        )
        register_data_scientist(admin, email=ds_email, name="Val", password=ds_password)
        Ledger(home).set_cap(ds_email, "agency2", epsilon=2.5, delta=1e-5)
        ds = handle.login(ds_email, ds_password)
        asset = get_asset(ds, "transactions")
        constant = public_constant(trained.result.public, PLAN, run_id="run-val")
        name = submit_appraisal_request(ds, asset, constant, epsilon=1.0, max_calls=2)
        (request,) = list_requests(admin, status="pending", function_name=name)
        sheet = describe_request(request)
        assert "mechanisms        : laplace:appraisal" in sheet
        assert "CallCapPolicy(max_calls=2)" in sheet
        approve_request(request)

        props, _ = trained.split(trained.tx1)
        props = props.drop(columns=["community", "district"])  # derived from the public map
        theta, z = trained.result.model_state, trained.result.z
        first = appraise_remote(
            ds, name, props.iloc[:20], theta, z, asset=asset, geography=trained.comms
        )
        assert first["transaction_id"].tolist() == props["transaction_id"].iloc[:20].tolist()
        assert (first["pred_lo80"] <= first["pred_median"]).all()
        assert (first["pred_median"] <= first["pred_hi80"]).all()
        assert first.attrs["appraisal"]["mechanism"] == "laplace:appraisal"
        ledger = Ledger(home)
        charged = [e for e in ledger.entries() if e.status == "charged"]
        assert [(e.mechanism, e.request_id, e.data_scientist) for e in charged] == [
            ("laplace:appraisal", "run-val-appraisal", ds_email)
        ]
        appraise_remote(ds, name, props.iloc[20:40], theta, z, asset=asset, geography=trained.comms)
        assert len([e for e in Ledger(home).entries() if e.status == "charged"]) == 2
        with pytest.raises(FedMugRepError, match="used up"):
            appraise_remote(
                ds, name, props.iloc[40:60], theta, z, asset=asset, geography=trained.comms
            )
        assert len([e for e in Ledger(home).entries() if e.status == "charged"]) == 2
    finally:
        handle.stop()
        clear_party_cache(home)

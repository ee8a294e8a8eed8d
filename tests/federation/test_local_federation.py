"""Federated training through the local runtime (same party code as on PySyft datasites)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmugrep.cli import main
from fedmugrep.errors import BudgetExceededError, PrivacyParameterError
from fedmugrep.federation.local import run_local
from fedmugrep.federation.plan import FederationPlan, PrivacyPlan
from fedmugrep.privacy.analysis.composition import compose_events
from fedmugrep.privacy.ledger import Ledger


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    out = tmp_path_factory.mktemp("fedcity")
    assert main(["synth", "--out", str(out), "--transactions", "3000", "--seed", "4"]) == 0
    return out


def test_nonprivate_federation_learns(city, tmp_path):
    # from scratch (no mock pretraining), so the rounds have to do the learning
    short = run_local(
        city,
        FederationPlan(rounds=1, privacy=None, lr=0.01, pretrain_epochs=0),
        tmp_path / "a",
        progress=False,
    )
    longer = run_local(
        city,
        FederationPlan(rounds=25, privacy=None, lr=0.01, pretrain_epochs=0),
        tmp_path / "b",
        progress=False,
    )
    assert longer.metrics["mae_log"] < 0.6 * short.metrics["mae_log"]
    assert longer.history[-1].train_loss < longer.history[0].train_loss


def test_private_ledger_total_equals_accountant(city, tmp_path):
    plan = FederationPlan(rounds=3, privacy=PrivacyPlan(epsilon=4.0), lr=0.01)
    res = run_local(city, plan, tmp_path, progress=False)
    nm = res.noise_multiplier
    expected = plan.planned_events() + plan.round_events(nm) * plan.rounds
    # the accountant's epsilon for exactly what was released (snapping charges included)
    for folder in sorted(tmp_path.glob("transactions_agency*")):
        ledger = Ledger(folder)
        name = folder.name.removeprefix("transactions_")
        spent = ledger.spent("data-scientist", name)
        events = [
            e
            for entry in ledger.entries()
            if entry.status == "charged"
            for e in entry.privacy_events()
        ]
        # 4 setup Laplace events (intra sums, community levels, counts, target count), one
        # joint Gaussian per round, 3 for the district summary, 4 for the noised test metrics
        assert len(events) == len(plan.planned_events()) + plan.rounds == 4 + 3 + 4 + plan.rounds
        assert spent == pytest.approx(compose_events(events, delta=1e-5).epsilon, rel=1e-9)
        # and it is at most what the plan was calibrated for (the whole 3-round schedule)
        assert spent <= 4.0 + 1e-6
        assert compose_events(expected, delta=1e-5).epsilon == pytest.approx(spent, rel=1e-3)
        assert ledger.verify().ok


def test_cap_too_small_releases_nothing(city, tmp_path):
    plan = FederationPlan(rounds=3, privacy=PrivacyPlan(epsilon=4.0), lr=0.01)
    with pytest.raises(BudgetExceededError):
        run_local(city, plan, tmp_path, progress=False, cap_epsilon=0.01)
    ledger = Ledger(tmp_path / "transactions_agency1")
    statuses = [e.status for e in ledger.entries()]
    assert statuses == ["cap_set", "refused"]  # owner set the cap; the first release was refused
    assert ledger.spent("data-scientist", "agency1") == 0.0


def test_channel_selection_cuts_upload_bytes(city, tmp_path):
    full = run_local(city, FederationPlan(rounds=2, privacy=None), tmp_path / "f", progress=False)
    tenth = run_local(
        city,
        FederationPlan(rounds=2, privacy=None, upload_rate=0.1),
        tmp_path / "t",
        progress=False,
    )
    f = full.history[-1].bytes_up["agency1"]
    t = tenth.history[-1].bytes_up["agency1"]
    # the model-1 update shrinks to ~10 % of its channels; z's gradient (C x z_dim floats)
    # is always sent whole
    z_bytes = 60 * (FederationPlan().region_hidden + 1) * 4
    assert t - z_bytes < 0.2 * (f - z_bytes)
    assert t < 0.4 * f


def test_train_federated_cli_reports_epsilon_within_cap_and_audit_verifies(city, tmp_path, capsys):
    import json

    out = tmp_path / "fed.json"
    rc = main(
        [
            "train-federated",
            "--city",
            str(city),
            "--home",
            str(tmp_path / "h"),
            "--rounds",
            "2",
            "--epsilon",
            "3",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    # every phase that takes more than a moment shows its progress (on stderr)
    err = capsys.readouterr().err
    for phase in ("pretraining on the mocks", "set-up releases", "federated rounds"):
        assert f"{phase}: 100%" in err, phase
    rep = json.loads(out.read_text())
    assert set(rep["privacy"]) == {"agency1", "agency2", "agency3", "region"}
    for s in rep["privacy"].values():
        assert 0 < s["epsilon"] <= s["cap"] == 3.0 and s["ledger_ok"]
    assert {"mae", "mape", "mae_log", "coverage80"} <= set(rep["federated"])
    assert Path(rep["model_file"]).is_file()  # the exported model for `fedmugrep appraise`
    # a small city's test split: the released figures say they are noise, and what would help
    released = rep["federated_released"]
    assert released["useful_evaluation_epsilon"] > rep["plan"]["privacy"]["evaluation_epsilon"]
    assert any("too noisy" in w for w in released["warnings"])
    # the same post-run report as the demo, in the home: `fedmugrep report HOME` redraws it
    from fedmugrep.report.inputs import load_inputs

    home = tmp_path / "h"
    assert json.loads((home / "report.json").read_text()) == rep
    assert (home / "report" / "index.html").is_file() and (home / "predictions.csv").is_file()
    inputs = load_inputs(home)
    assert "epsilon" not in inputs.missing and "communities" not in inputs.missing
    assert set(inputs.epsilon_curves) == set(rep["privacy"])
    assert main(["report", str(home)]) == 0
    capsys.readouterr()
    assert main(["audit", "--home", str(tmp_path / "h" / "transactions_agency1"), "--verify"]) == 0
    assert "agency1" in capsys.readouterr().out


def test_a_retried_release_is_returned_again_and_never_charged_twice(city, tmp_path):
    """Idempotent releases: the same (run, round) step asked twice -> same noised reply, one charge."""
    import torch

    from fedmugrep.federation import run as run_mod

    captured = {}
    real_coordinator = run_mod.Coordinator

    class Capture(real_coordinator):  # keeps the parties the harness builds
        def run(self, *, progress=True):
            captured["c"] = self
            return super().run(progress=progress)

    run_mod.Coordinator = Capture
    try:
        plan = FederationPlan(rounds=1, privacy=PrivacyPlan(epsilon=4.0))
        run_local(city, plan, tmp_path, progress=False, run_id="run-1")
    finally:
        run_mod.Coordinator = real_coordinator
    c = captured["c"]
    party = c.agencies["agency1"]
    before = len(party.ledger.entries())
    again = party.step(0, c.theta(), torch.zeros_like(c.region.forward(0, c.pooled_intra)), None)
    first = party._replay("step-0")
    assert again.theta == first.theta and torch.equal(again.z_grad, first.z_grad)
    assert len(party.ledger.entries()) == before  # nothing charged for the retry
    # an interrupted charge: pending value whose charge is in the ledger is finalised, not recharged
    party._release_path("step-0").with_suffix(".pt").rename(
        party._release_path("step-0").with_suffix(".pending")
    )
    assert party._replay("step-0") is not None
    assert len(party.ledger.entries()) == before


def _inject(
    monkeypatch, *, party: str, from_round: int, exc: type[BaseException], times: int | None
):
    """Make `party`'s step fail from `from_round` on (`times` failures, or forever)."""
    from fedmugrep.federation.parties import TransactionParty

    real = TransactionParty.step
    left = {"n": times}

    def flaky(self, round_index, *args, **kwargs):
        if (
            self.name == party
            and round_index >= from_round
            and (left["n"] is None or left["n"] > 0)
        ):
            if left["n"] is not None:
                left["n"] -= 1
            raise exc(f"injected failure of {party} at round {round_index}")
        return real(self, round_index, *args, **kwargs)

    monkeypatch.setattr(TransactionParty, "step", flaky)


def test_crash_mid_training_then_resume_matches_uninterrupted_run(city, tmp_path, monkeypatch):
    plan = FederationPlan(rounds=4, privacy=None, lr=0.01)
    ref = run_local(city, plan, tmp_path / "ref", progress=False)
    _inject(monkeypatch, party="agency2", from_round=2, exc=RuntimeError, times=1)
    with pytest.raises(RuntimeError, match="injected"):
        run_local(city, plan, tmp_path / "crash", progress=False)
    monkeypatch.undo()
    resumed = run_local(city, plan, tmp_path / "crash", progress=False, resume=True)
    assert len(resumed.history) == 4
    for key in ("mae", "mape", "mae_log", "coverage80"):
        assert resumed.metrics[key] == pytest.approx(ref.metrics[key], rel=1e-6)


def test_private_resume_never_charges_a_release_twice(city, tmp_path, monkeypatch):
    plan = FederationPlan(rounds=3, privacy=PrivacyPlan(epsilon=4.0))
    _inject(monkeypatch, party="agency2", from_round=1, exc=RuntimeError, times=1)
    with pytest.raises(RuntimeError):
        run_local(city, plan, tmp_path, progress=False)
    monkeypatch.undo()
    run_local(city, plan, tmp_path, progress=False, resume=True)
    for folder in sorted(tmp_path.glob("transactions_agency*")):
        charged = [e for e in Ledger(folder).entries() if e.status == "charged"]
        # one setup release, one per round, one district summary, one noised test evaluation:
        # as if never interrupted
        assert [e.mechanism for e in charged] == (
            ["laplace:intra_region"]
            + ["gaussian:theta+z_grad"] * 3
            + ["laplace:district_summary", "laplace:evaluation"]
        )
        assert len({e.request_id for e in charged}) == 1


def test_unresponsive_datasite_is_retried_then_dropped_or_stops_the_run(
    city, tmp_path, monkeypatch
):
    # one transient failure: retried, the run completes with every datasite
    _inject(monkeypatch, party="agency3", from_round=1, exc=ConnectionError, times=1)
    plan = FederationPlan(rounds=2, privacy=None, retries=2, retry_backoff=0.01)
    ok = run_local(city, plan, tmp_path / "retry", progress=False)
    assert ok.dropped == [] and set(ok.per_agency) == {"agency1", "agency2", "agency3"}
    monkeypatch.undo()
    # a datasite that never answers again: dropped when configured, otherwise the run stops
    _inject(monkeypatch, party="agency3", from_round=1, exc=ConnectionError, times=None)
    drop = FederationPlan(
        rounds=2, privacy=None, retries=1, retry_backoff=0.01, on_unresponsive="drop"
    )
    res = run_local(city, drop, tmp_path / "drop", progress=False)
    assert res.dropped == ["agency3"] and set(res.per_agency) == {"agency1", "agency2"}
    stop = FederationPlan(rounds=2, privacy=None, retries=1, retry_backoff=0.01)
    with pytest.raises(ConnectionError):
        run_local(city, stop, tmp_path / "stop", progress=False)
    monkeypatch.undo()
    # a hung datasite (call timed out) is not retried: one failure stops the run although a
    # retry would have succeeded, and with "drop" it is dropped at once
    from fedmugrep.errors import DatasiteUnresponsiveError

    _inject(monkeypatch, party="agency3", from_round=1, exc=DatasiteUnresponsiveError, times=1)
    retrying = FederationPlan(rounds=2, privacy=None, retries=2, retry_backoff=0.01)
    with pytest.raises(DatasiteUnresponsiveError, match="agency3"):
        run_local(city, retrying, tmp_path / "hung", progress=False)
    monkeypatch.undo()
    _inject(monkeypatch, party="agency3", from_round=1, exc=DatasiteUnresponsiveError, times=1)
    dropping = FederationPlan(
        rounds=2, privacy=None, retries=2, retry_backoff=0.01, on_unresponsive="drop"
    )
    assert run_local(city, dropping, tmp_path / "hung-drop", progress=False).dropped == ["agency3"]


def test_private_evaluation_is_noised_for_the_data_scientist_and_exact_for_owners(city, tmp_path):
    plan = FederationPlan(rounds=2, privacy=PrivacyPlan(epsilon=4.0), pretrain_epochs=20)
    res = run_local(city, plan, tmp_path, progress=False)
    # owners: exact metrics and per-row predictions in their homes, never returned
    for folder in sorted(tmp_path.glob("transactions_agency*")):
        name = folder.name.removeprefix("transactions_")
        assert len(list(folder.glob(f"evaluations/*/{name}-test-predictions.csv"))) == 1
        charged = [e.mechanism for e in Ledger(folder).entries() if e.status == "charged"]
        assert charged[-1] == "laplace:evaluation"
    own, got = res.owner_metrics, res.metrics
    assert own["n"] == pytest.approx(got["n"], abs=200)  # the count is noised too
    # Laplace on ~200 test rows per agency: the data scientist's MAPE is off by ~0.07 (sd)
    assert got["mape"] != own["mape"] and abs(got["mape"] - own["mape"]) < 0.35
    assert got["mae"] != got["mae"]  # NaN: no error in euros is released under privacy
    assert 0.0 < own["mape"] < 1.0 and own["mae"] > 0


def test_without_a_region_datasite_model_2_runs_at_the_coordinator(city, tmp_path):
    plan = FederationPlan(rounds=3, privacy=PrivacyPlan(epsilon=4.0), pretrain_epochs=30)
    res = run_local(city, plan, tmp_path, progress=False, region_datasite=False)
    assert not (tmp_path / "region").exists()  # no region datasite, no region ledger
    assert (tmp_path / "coordinator" / "region" / "region_model.pt").is_file()
    for folder in sorted(tmp_path.glob("transactions_agency*")):
        name = folder.name.removeprefix("transactions_")
        assert 0 < Ledger(folder).spent("data-scientist", name) <= 4.0 + 1e-6
    # it still trains: far better than predicting the mean log-price (MAE log ~0.45 here)
    assert res.owner_metrics["mae_log"] < 0.3


def test_patent_literal_laplace_updates_are_charged_and_far_noisier(city, tmp_path):
    from fedmugrep.pysyft.run import transaction_contract

    plan = FederationPlan(
        rounds=2,
        privacy=PrivacyPlan(epsilon=4.0, update_mechanism="laplace"),
        pretrain_epochs=0,
    )
    run_local(city, plan, tmp_path, progress=False)
    for folder in sorted(tmp_path.glob("transactions_agency*")):
        name = folder.name.removeprefix("transactions_")
        led = Ledger(folder)
        charged = [e.mechanism for e in led.entries() if e.status == "charged"]
        assert charged.count("laplace:theta+z_grad") == 2 and "gaussian:theta+z_grad" not in charged
        assert 0 < led.spent("data-scientist", name) <= 4.0 + 1e-6 and led.verify().ok
    # its cost, shown in the contract: per-coordinate noise far above the Gaussian option's
    event = plan.laplace_update_event(3000)
    gauss = FederationPlan(rounds=2, privacy=PrivacyPlan(epsilon=4.0))
    assert event.scale * 2**0.5 > 10 * gauss.theta_noise_std(gauss.noise_multiplier())
    notes = transaction_contract(plan, n_coords=3000).notes
    assert "patent-literal Laplace" in notes and "the default Gaussian would add std" in notes
    with pytest.raises(PrivacyParameterError, match="joint_clip"):
        PrivacyPlan(update_mechanism="laplace", joint_clip=False)


def test_released_ratios_are_clamped_and_their_noise_sd_is_right():
    import warnings

    import numpy as np

    from fedmugrep.federation.coordinator import released_ranges
    from fedmugrep.privacy.laplace import LaplaceMechanism, SeededRandomSource

    plan = FederationPlan(rounds=2, privacy=PrivacyPlan.for_epsilon(8.0))
    rel = plan.evaluation_events()[0]
    # post-processing clamps each ratio to what its clipped terms allow
    out = released_ranges({"mape": -0.3, "mae_log": 0.9, "coverage80": 1.4, "n": 200.0}, plan, 3)
    assert (out["mape"], out["mae_log"], out["coverage80"]) == (0.0, 0.5, 1.0)
    # the stated sd is that of 3 parties' Laplace-noised sums over n (measured on the mechanism)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mech = LaplaceMechanism(
            sensitivity=rel.sensitivity, scale=rel.scale, bound=1e4,
            source=SeededRandomSource(11),
        )  # fmt: skip
        # 32 lies on the snapping grid, where the rounded noise stays symmetric (unbiased)
        draws = np.array([sum(mech.release(32.0) for _ in range(3)) / 200.0 for _ in range(6000)])
    measured = float(draws.std())
    assert out["mape_noise_sd"] == pytest.approx(measured, rel=0.05)
    assert abs(draws.mean() - 0.48) < 4 * measured / np.sqrt(len(draws))


def test_released_metrics_warn_when_too_noisy_and_name_the_evaluation_epsilon_that_helps():
    from dataclasses import replace

    from fedmugrep.federation.coordinator import USEFUL_NOISE_SD, released_ranges

    plan = FederationPlan(rounds=2, privacy=PrivacyPlan.for_epsilon(8.0))
    figures = {"mape": 0.2, "mae_log": 0.2, "coverage80": 0.8}
    # a ~130-sale test split (the notebooks' size): every ratio is noise
    small = released_ranges({**figures, "n": 130.0}, plan, 3)
    assert len(small["warnings"]) == 4 and "coverage80" in small["warnings"][2]
    need = small["useful_evaluation_epsilon"]
    assert need > plan.privacy.evaluation_epsilon
    assert f"evaluation_epsilon of {need:.3g}" in small["warnings"][-1]

    def at(eps: float, n: float) -> dict:
        return released_ranges({**figures, "n": n}, replace(plan, privacy=replace(
            plan.privacy, evaluation_epsilon=eps)), 3)  # fmt: skip

    # the offered epsilon is enough, and not far from the least that is
    fixed = at(need, 130.0)
    assert "warnings" not in fixed
    assert all(fixed[f"{k}_noise_sd"] <= USEFUL_NOISE_SD[k] for k in USEFUL_NOISE_SD)
    assert "warnings" in at(need * 0.8, 130.0)
    # a large split needs no warning at the plan's own evaluation epsilon
    assert "warnings" not in released_ranges({**figures, "n": 50_000.0}, plan, 3)

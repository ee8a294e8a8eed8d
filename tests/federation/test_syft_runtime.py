"""In-process PySyft datasites: upload, accounts, review, approve/deny, repeated calls, restart.

Private transactions have prices 100, 200, 300 (sum 600); the mock has 1, 2, 3 (sum 6). The toy
function returns ``round_no * sum(price) + sum(payload)``, so every expected number below tells
private data (600) from mock data (6).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("syft")

from fedmugrep.errors import ConfigError, FedMugRepError, RequestDeniedError  # noqa: E402
from fedmugrep.pysyft.quiet import quiet_syft  # noqa: E402
from fedmugrep.pysyft.runtime import (
    DatasiteConfig,
    DatasiteHandle,
    PrivacyContract,
    approve_request,
    call_remote,
    code_status,
    deny_request,
    describe_request,
    get_asset,
    launch_datasite,
    list_requests,
    make_remote_function,
    register_data_scientist,
    submit_request,
    upload_dataset,
)
from fedmugrep.pysyft.toy import toy_round  # noqa: E402

PRIVATE = pd.DataFrame({"price": [100.0, 200.0, 300.0], "area": [50.0, 70.0, 90.0]})
MOCK = pd.DataFrame({"price": [1.0, 2.0, 3.0], "area": [1.0, 1.0, 1.0]})
DS_EMAIL, DS_PASSWORD = "dana@uni.example", "dana-secret-12"
ARGS = {"round_no": int, "payload": list}


@dataclass
class Site:
    handle: DatasiteHandle
    admin: Any
    ds: Any
    asset: Any

    @property
    def home(self) -> Path:
        return self.handle.config.home


def _start_site(home: Path, name: str) -> Site:
    config = DatasiteConfig(
        name=name, home=home, admin_email=f"owner@{name}.example", admin_password="owner-secret-1"
    )
    handle = launch_datasite(config, mode="inprocess", reset=True)
    try:
        admin = handle.login_admin()
        upload_dataset(
            admin, name="transactions", private=PRIVATE, mock=MOCK, description="toy sales"
        )
        assert register_data_scientist(admin, email=DS_EMAIL, name="Dana", password=DS_PASSWORD)
        ds = handle.login(DS_EMAIL, DS_PASSWORD)
        return Site(handle, admin, ds, get_asset(ds, "transactions"))
    except BaseException:
        handle.stop()
        raise


def _contract(rounds: int = 3, **changes: Any) -> PrivacyContract:
    contract = PrivacyContract.for_installed(
        mechanisms=("laplace",),
        epsilon_per_release=0.1,
        rounds=rounds,
        projected_epsilon=0.1 * rounds,
        notes="toy test",
    )
    return contract if not changes else PrivacyContract(**{**contract.__dict__, **changes})


def _submit_and_approve(site: Site, name: str, contract: PrivacyContract | None = None) -> None:
    fn = make_remote_function(
        toy_round,
        client=site.ds,
        asset=site.asset,
        contract=contract or _contract(),
        args=ARGS,
        name=name,
    )
    submit_request(site.ds, fn)
    (request,) = list_requests(site.admin, status="pending", function_name=name)
    approve_request(request)


def _log_lines(site: Site) -> list[str]:
    log = site.home / "toy_calls.log"
    return log.read_text().split() if log.exists() else []


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = _start_site(tmp_path_factory.mktemp("agency-a"), "agency-a")
    yield s
    s.handle.stop()


def test_one_approval_serves_every_round_on_private_data(site: Site) -> None:
    fn = make_remote_function(
        toy_round, client=site.ds, asset=site.asset, contract=_contract(rounds=3), args=ARGS
    )
    submit_request(site.ds, fn)
    (request,) = list_requests(site.admin, status="pending", function_name="toy_round")
    sheet = describe_request(request)
    for expected in (
        "submitted by : Dana <dana@uni.example>",
        "function     : toy_round",
        "pinned data  : data -> dataset 'transactions', asset 'transactions'",
        "per-call args: round_no: int, payload: list",
        "output policy: CallCapPolicy(max_calls=3)",
        "mechanisms        : laplace",
        "per release       : epsilon 0.1, delta 0",
        "releases          : 3 rounds x 1 = 3",
        "projected total   : epsilon 0.3 at delta 0",
        "matches local fedmugrep: yes",
        "from fedmugrep.pysyft.toy import toy_round_impl",
        "output policy code: identical to this machine's fedmugrep CallCapPolicy",
    ):
        assert expected in sheet, expected
    assert sheet.index("projected total   :") < sheet.index("code:")  # the contract first
    assert "class CallCapPolicy(sy.CustomOutputPolicy)" in describe_request(request, full=True)
    assert code_status(site.ds, "toy_round") == "pending"
    with pytest.raises(FedMugRepError, match="waiting for the data owner's approval"):
        call_remote(site.ds, "toy_round", data=site.asset, round_no=1, payload=[0.0])

    approve_request(request)
    assert code_status(site.ds, "toy_round") == "approved"
    lines_before = len(_log_lines(site))
    results = [
        call_remote(site.ds, "toy_round", data=site.asset, round_no=r, payload=p)
        for r, p in ((1, [0.5]), (2, [0.25, 1.0]), (3, []))
    ]
    assert [r["value"] for r in results] == [600.5, 1201.25, 1800.0]
    assert {r["home"] for r in results} == {str(site.home)}
    assert {r["caller"] for r in results} == {DS_EMAIL}
    assert {r["pid"] for r in results} == {os.getpid()}  # in-process: runs in this process
    # exactly one private execution per call: PySyft's mock run is short-circuited
    assert _log_lines(site)[lines_before:] == ["1", "2", "3"]
    # the owner approved 3 calls; PySyft alone would allow any number (issue #9391)
    with pytest.raises(FedMugRepError, match="used up its approved number of calls"):
        call_remote(site.ds, "toy_round", data=site.asset, round_no=4, payload=[0.0])
    assert len(_log_lines(site)) == lines_before + 3


def test_denied_request_shows_the_owners_reason(site: Site) -> None:
    fn = make_remote_function(
        toy_round,
        client=site.ds,
        asset=site.asset,
        contract=_contract(epsilon_per_release=5.0, projected_epsilon=15.0),
        args=ARGS,
        name="toy_round_greedy",
    )
    submit_request(site.ds, fn)
    (request,) = list_requests(site.admin, status="pending", function_name="toy_round_greedy")
    assert "per release       : epsilon 5, delta 0" in describe_request(request)
    with pytest.raises(ConfigError, match="needs a reason"):
        deny_request(request, reason="  ")
    reason = "epsilon 5 per release is above my cap of 1; resubmit with at most 0.5"
    deny_request(request, reason=reason)
    assert code_status(site.ds, "toy_round_greedy") == f"denied: {reason}"
    with pytest.raises(RequestDeniedError) as info:
        call_remote(site.ds, "toy_round_greedy", data=site.asset, round_no=1, payload=[0.0])
    assert reason in str(info.value)
    assert list_requests(site.admin, status="rejected", function_name="toy_round_greedy")


def test_data_scientist_cannot_read_private_data(site: Site) -> None:
    with quiet_syft():
        direct = site.asset.data
        mock = site.asset.mock
        with pytest.raises(Exception, match="not found"):
            site.ds.api.services.action.get(uid=site.asset.action_id)
    assert direct is None
    assert mock["price"].tolist() == [1.0, 2.0, 3.0]


def test_signup_is_closed_and_a_name_derived_key_is_not_admin(site: Site) -> None:
    from nacl.signing import SigningKey
    from syft.client.client import PythonConnection
    from syft.server.credentials import SyftSigningKey

    with quiet_syft():
        guest = site.handle.server.get_guest_client(verbose=False)
        with pytest.raises(Exception, match="no permission to create an account"):
            guest.register(
                name="x", email="x@y.example", password="abcdefgh1", password_verify="abcdefgh1"
            )
        # sy.Datasite.named() would make sha256(name) the admin's signing key
        forged_key = SyftSigningKey(signing_key=SigningKey(hashlib.sha256(b"agency-a").digest()))
        conn = PythonConnection(server=site.handle.server)
        forged = conn.get_client_type().unwrap()(connection=conn, credentials=forged_key)
        with pytest.raises(AttributeError, match="permission"):
            forged.api.services.user.get_all()
        assert len(site.admin.api.services.user.get_all()) == 2


def test_errors_and_wrong_arguments_reach_the_data_scientist(site: Site) -> None:
    _submit_and_approve(site, "toy_round_errors", _contract(rounds=5))
    with pytest.raises(ConfigError, match=r"round_no must be >= 0 \(got -1\)"):
        call_remote(site.ds, "toy_round_errors", data=site.asset, round_no=-1, payload=[0.0])
    with pytest.raises(ConfigError, match="does not match the approved input policy"):
        call_remote(site.ds, "toy_round_errors", data=site.asset, round_no=1.0, payload=[0.0])
    import numpy as np

    value = call_remote(
        site.ds, "toy_round_errors", data=site.asset, round_no=1, payload=np.array([1.5, 2.5])
    )
    assert value["value"] == 604.0


def test_caller_cannot_override_the_pinned_contract(site: Site) -> None:
    _submit_and_approve(site, "toy_round_pinned", _contract(rounds=2))
    forged = _contract(rounds=2, epsilon_per_release=0.000001).to_dict()
    got = call_remote(
        site.ds, "toy_round_pinned", data=site.asset, contract=forged, round_no=1, payload=[]
    )
    assert got["epsilon_per_release"] == 0.1  # the approved constant, not the caller's


def test_contract_for_another_fedmugrep_build_is_refused_in_the_datasite(site: Site) -> None:
    stale = _contract(fedmugrep_code_hash="0" * 64)
    _submit_and_approve(site, "toy_round_stale", stale)
    before = len(_log_lines(site))
    with pytest.raises(ConfigError, match="submit a new request built against"):
        call_remote(site.ds, "toy_round_stale", data=site.asset, round_no=1, payload=[0.0])
    assert len(_log_lines(site)) == before  # refused before touching the data


def test_reusing_a_function_name_is_refused(site: Site) -> None:
    _submit_and_approve(site, "toy_round_once")
    again = make_remote_function(
        toy_round,
        client=site.ds,
        asset=site.asset,
        contract=_contract(),
        args=ARGS,
        name="toy_round_once",
    )
    with pytest.raises(ConfigError, match="already submitted a function named 'toy_round_once'"):
        submit_request(site.ds, again)


def test_signature_must_match_the_policy(site: Site) -> None:
    with pytest.raises(ConfigError, match=r"extra: \['payload'\]"):
        make_remote_function(
            toy_round,
            client=site.ds,
            asset=site.asset,
            contract=_contract(),
            args={"round_no": int},
        )
    with pytest.raises(ConfigError, match="accepts only"):
        make_remote_function(
            toy_round,
            client=site.ds,
            asset=site.asset,
            contract=_contract(),
            args={"round_no": int, "payload": bytes},
        )


def test_two_datasites_in_one_process_each_see_their_own_home(site: Site, tmp_path: Path) -> None:
    other = _start_site(tmp_path / "agency-b", "agency-b")
    try:
        _submit_and_approve(other, "toy_round_b")
        _submit_and_approve(site, "toy_round_a")
        got_b = call_remote(other.ds, "toy_round_b", data=other.asset, round_no=1, payload=[])
        got_a = call_remote(site.ds, "toy_round_a", data=site.asset, round_no=1, payload=[])
    finally:
        other.handle.stop()
    assert (got_a["home"], got_a["datasite"]) == (str(site.home), "agency-a")
    assert (got_b["home"], got_b["datasite"]) == (str(other.home), "agency-b")


def test_restart_keeps_users_datasets_and_approved_code(tmp_path: Path) -> None:
    s = _start_site(tmp_path / "agency-c", "agency-c")
    try:
        _submit_and_approve(s, "toy_round", _contract(rounds=3))
        first = call_remote(s.ds, "toy_round", data=s.asset, round_no=1, payload=[1.0])
        s.handle.restart()
        ds = s.handle.login(DS_EMAIL, DS_PASSWORD)
        asset = get_asset(ds, "transactions")
        assert code_status(ds, "toy_round") == "approved"
        second = call_remote(ds, "toy_round", data=asset, round_no=2, payload=[1.0])
        third = call_remote(ds, "toy_round", data=asset, round_no=3, payload=[1.0])
        # the call cap's count survived the restart: 3 approved, 3 used
        with pytest.raises(FedMugRepError, match="used up"):
            call_remote(ds, "toy_round", data=asset, round_no=4, payload=[1.0])
    finally:
        s.handle.stop()
    assert [first["value"], second["value"], third["value"]] == [601.0, 1201.0, 1801.0]
    assert not s.handle.running


def test_a_data_scientist_reads_their_own_budget_only(site: Site) -> None:
    from fedmugrep.privacy.events import LaplaceEvent
    from fedmugrep.privacy.ledger import Ledger
    from fedmugrep.pysyft.budget_api import _endpoint, my_budget, publish_budgets

    assert my_budget(site.ds) is None  # not published yet: "ask the owner", not an error
    assert publish_budgets(site.admin, site.home) is True
    assert publish_budgets(site.admin, site.home) is False  # once per datasite
    assert my_budget(site.ds) == []  # an account without a cap

    other = "eve@elsewhere.example"
    register_data_scientist(site.admin, email=other, name="Eve", password="eve-secret-123")
    ledger = Ledger(site.home)
    ledger.set_cap(DS_EMAIL, "transactions", epsilon=3.0, delta=1e-5)
    ledger.set_cap(other, "transactions", epsilon=0.5, delta=1e-5)
    ledger.charge(
        data_scientist=DS_EMAIL,
        request_id="r1",
        dataset="transactions",
        mechanism="laplace",
        events=[LaplaceEvent(1.0, 4.0, 1, bound=1e4)],
        payload="x",
    )
    (mine,) = my_budget(site.ds)
    assert mine["dataset"] == "transactions" and mine["cap_epsilon"] == 3.0
    assert mine["spent_epsilon"] == pytest.approx(0.25, rel=0.05)  # sensitivity 1 / scale 4
    assert mine["remaining_epsilon"] == pytest.approx(3.0 - mine["spent_epsilon"])
    (theirs,) = my_budget(site.handle.login(other, "eve-secret-123"))
    assert theirs["cap_epsilon"] == 0.5 and theirs["spent_epsilon"] == 0.0

    # only an admin adds endpoints: a data scientist cannot replace it with one of their own
    with quiet_syft(), pytest.raises(Exception, match="permission"):
        site.ds.custom_api.add(endpoint=_endpoint(site.home))

"""A real HTTP datasite in a separate process: serve, approve, call, restart, call again.

The server runs a snapshot copy of the fedmugrep package, so that edits to the working tree
during the test cannot change the code hash the approved privacy contract is bound to.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("syft")

from fedmugrep.errors import DatasiteUnresponsiveError, FedMugRepError  # noqa: E402
from fedmugrep.pysyft.proxies import _Remote  # noqa: E402
from fedmugrep.pysyft.runtime import (
    DatasiteConfig,
    DatasiteHandle,
    PrivacyContract,
    approve_request,
    call_remote,
    code_status,
    execution_outputs,
    get_asset,
    launch_datasite,
    list_requests,
    login,
    make_remote_function,
    register_data_scientist,
    submit_request,
    upload_dataset,
)
from fedmugrep.pysyft.server import pid_alive  # noqa: E402
from fedmugrep.pysyft.toy import toy_call, toy_round  # noqa: E402
from tests.conftest import package_snapshot  # noqa: E402

pytestmark = pytest.mark.integration

DS_EMAIL, DS_PASSWORD = "dana@uni.example", "dana-secret-12"


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    """A frozen copy of the fedmugrep package for the server to import."""
    root = tmp_path / "pkg"
    package_snapshot(root)
    return root


@pytest.fixture
def http_site(tmp_path: Path, snapshot: Path) -> Iterator[DatasiteHandle]:
    config = DatasiteConfig(
        name="agency-h",
        home=tmp_path / "agency-h",
        admin_email="owner@agency-h.example",
        admin_password="owner-secret-1",
    )
    handle = launch_datasite(config, mode="http", reset=True, pythonpath=[snapshot])
    try:
        yield handle
    finally:
        pid = handle.pid
        handle.stop()
        assert pid is None or not pid_alive(pid)


def test_http_datasite_survives_restart_with_data_users_and_approved_code(
    http_site: DatasiteHandle, snapshot: Path
) -> None:
    handle = http_site
    config = handle.config
    first_pid = handle.pid
    assert first_pid is not None and first_pid != os.getpid()
    assert config.pid_file.read_text().strip() == str(first_pid)
    assert handle.url == f"http://127.0.0.1:{config.port}"
    # a second server on the same home is refused before anything is spawned
    with pytest.raises(FedMugRepError, match="already runs as pid"):
        launch_datasite(config, mode="http")

    admin = handle.login_admin()
    upload_dataset(
        admin,
        name="transactions",
        private=pd.DataFrame({"price": [100.0, 200.0, 300.0]}),
        mock=pd.DataFrame({"price": [1.0, 2.0, 3.0]}),
        description="toy sales",
    )
    register_data_scientist(admin, email=DS_EMAIL, name="Dana", password=DS_PASSWORD)
    ds = login(handle.url, DS_EMAIL, DS_PASSWORD)  # type: ignore[arg-type]
    asset = get_asset(ds, "transactions")
    contract = PrivacyContract.for_installed(
        mechanisms=("laplace",),
        epsilon_per_release=0.1,
        rounds=4,
        projected_epsilon=0.4,
        package_dir=snapshot / "fedmugrep",
    )
    fn = make_remote_function(
        toy_round,
        client=ds,
        asset=asset,
        contract=contract,
        args={"round_no": int, "payload": list},
    )
    submit_request(ds, fn)
    # the (method, payload) shape of the federation's functions, for the calling proxy below
    submit_request(
        ds,
        make_remote_function(
            toy_call,
            client=ds,
            asset=asset,
            contract=contract,
            args={"method": str, "payload": str},
        ),
    )
    for name in ("toy_round", "toy_call"):
        (request,) = list_requests(admin, status="pending", function_name=name)
        approve_request(request)

    t0 = time.perf_counter()
    before = [call_remote(ds, "toy_round", data=asset, round_no=r, payload=[0.5]) for r in (1, 2)]
    per_call = (time.perf_counter() - t0) / 2
    assert [b["value"] for b in before] == [600.5, 1200.5]
    assert {b["pid"] for b in before} == {first_pid}  # ran inside the server process
    assert {b["home"] for b in before} == {str(config.home)}
    assert {b["caller"] for b in before} == {DS_EMAIL}

    handle.restart()
    assert handle.pid is not None and handle.pid != first_pid
    ds = login(handle.url, DS_EMAIL, DS_PASSWORD)  # type: ignore[arg-type]  # user survived
    asset = get_asset(ds, "transactions")  # dataset survived
    assert code_status(ds, "toy_round") == "approved"  # approval survived
    after = call_remote(ds, "toy_round", data=asset, round_no=3, payload=[0.25, 0.25])
    assert after["value"] == 1800.5  # private data survived
    assert after["pid"] == handle.pid
    assert (config.home / "toy_calls.log").read_text().split() == ["1", "2", "3"]
    print(f"\nHTTP startup {handle.startup_seconds:.1f} s, call {per_call:.3f} s")

    # a hung (not dead) server: SIGSTOP. PySyft's client would wait forever; the proxy gives
    # up after its call timeout, without retrying, and keeps the call's intent
    journal = config.home.parent / "journal"
    remote = _Remote(
        "agency-h",
        ds,
        "toy_call",
        {"data": asset},
        journal=journal,
        cacheable=frozenset({"run"}),
        retries=3,
        retry_backoff=0.1,
        call_timeout=3.0,
    )
    assert remote("run", {"round": 1})["value"] == 600.0
    pid = handle.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.perf_counter()
        with pytest.raises(DatasiteUnresponsiveError, match="agency-h.*no answer within 3 s"):
            remote("run", {"round": 2})
        waited = time.perf_counter() - t0
        assert 3.0 <= waited < 6.0  # one timeout: no retry (3 retries would take >= 12 s)
        assert (journal / "intent.json").is_file()
    finally:
        os.kill(pid, signal.SIGCONT)
    # once the server runs again, the abandoned call completes there; the next attempt finds
    # its output in the execution history instead of running it a second time
    deadline = time.monotonic() + 60
    while len(execution_outputs(ds, "toy_call")) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert remote("run", {"round": 2})["value"] == 1200.0
    assert remote.recovered == 1 and not (journal / "intent.json").exists()
    log = (config.home / "toy_proxy_calls.log").read_text()
    assert log.split() == ["1", "2"]  # ran once each

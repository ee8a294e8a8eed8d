"""A data owner's whole job from the CLI against one real HTTP datasite on 127.0.0.1.

One server for the module (each start costs seconds): ``fedmugrep datasite start`` launches it
detached and uploads the agency's sales with a mock; the tests then read its status, review
requests a data scientist submits over HTTP (list, show, approve, deny), set a budget, and stop
it. The fixture stops the server whatever happens.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("syft")

from fedmugrep.cli import main  # noqa: E402
from fedmugrep.commands.datasite import admin_login, server_pid  # noqa: E402
from fedmugrep.pysyft.config import DatasiteConfig, load_datasite_config  # noqa: E402
from fedmugrep.pysyft.runtime import (
    PrivacyContract,
    code_status,
    get_asset,
    login,
    make_remote_function,
    register_data_scientist,
    submit_request,
)
from fedmugrep.pysyft.server import pid_alive  # noqa: E402
from fedmugrep.pysyft.toy import toy_round  # noqa: E402

from .conftest import PASSWORD, PASSWORD_ENV, free_port, write_toml  # noqa: E402

pytestmark = pytest.mark.integration

Cli = Callable[..., tuple[int, str, str]]
DS_EMAIL, DS_PASSWORD = "dana@uni.example", "dana-secret-12"


@dataclass
class Site:
    toml: Path
    config: DatasiteConfig
    started: dict[str, Any]  # the JSON `datasite start` printed
    private_rows: int


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, city_dir: Path) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("owner")
    data = city_dir / "transactions_agency1.csv"
    toml = write_toml(folder, "agency-h", data={"transactions": data}, port=free_port())
    config = load_datasite_config(toml)
    saved = os.environ.get(PASSWORD_ENV)
    os.environ[PASSWORD_ENV] = PASSWORD
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = main(["datasite", "start", "--config", str(toml), "--json"])
        assert code == 0, out.getvalue()
        yield Site(toml, config, json.loads(out.getvalue()), len(pd.read_csv(data)))
    finally:
        pid = server_pid(config)
        if pid is not None:  # a test failed before `datasite stop`
            os.kill(pid, signal.SIGTERM)
        if saved is None:
            os.environ.pop(PASSWORD_ENV, None)
        else:
            os.environ[PASSWORD_ENV] = saved


def _ds_submits(site: Site, names: tuple[str, ...]) -> Any:
    """The owner opens an account for Dana (Python API); Dana submits one request per name."""
    admin = admin_login(site.config, site.started["url"], site.started["pid"])  # as the CLI
    register_data_scientist(admin, email=DS_EMAIL, name="Dana", password=DS_PASSWORD)
    ds = login(site.started["url"], DS_EMAIL, DS_PASSWORD)
    asset = get_asset(ds, "transactions")
    contract = PrivacyContract.for_installed(
        mechanisms=("laplace",), epsilon_per_release=0.1, rounds=3, projected_epsilon=0.3
    )
    for name in names:
        fn = make_remote_function(
            toy_round,
            client=ds,
            asset=asset,
            contract=contract,
            args={"round_no": int, "payload": list},
            name=name,
        )
        submit_request(ds, fn)
    return ds


def test_start_runs_detached_uploads_once_and_status_reports(site: Site, cli: Cli) -> None:
    started, config = site.started, site.config
    pid = started["pid"]
    assert started["already_running"] is False
    assert started["url"] == config.url and pid != os.getpid() and pid_alive(pid)
    assert config.pid_file.read_text().strip() == str(pid)
    (upload,) = started["uploaded"]
    assert upload["dataset"] == "transactions" and upload["rows"] == site.private_rows
    # the mock has the private table's columns but its own size (from the mock city): the
    # exact private row count is never published uncharged
    assert upload["mock_rows"] > 0 and upload["mock_rows"] != site.private_rows
    assert started["datasets"] == ["transactions"]

    # a second start finds it running and uploads nothing again
    code, out, _ = cli("datasite", "start", "--config", site.toml, "--json")
    again = json.loads(out)
    assert code == 0 and again["already_running"] is True and again["pid"] == pid
    assert again["uploaded"] == [] and again["datasets"] == ["transactions"]

    code, out, _ = cli("datasite", "status", "--config", site.toml, "--json")
    status = json.loads(out)
    assert code == 0
    assert status["running"] is True and status["pid"] == pid and status["url"] == config.url
    assert status["datasets"] == ["transactions"]
    assert status["pending_requests"] == 0 and status["budgets"] == []

    code, out, _ = cli("datasite", "status", "--config", site.toml)
    assert code == 0 and f"running on {config.url} (pid {pid})" in out
    assert "datasets : transactions" in out and "0 pending" in out


def test_owner_reviews_requests_and_sets_budget_from_the_cli(site: Site, cli: Cli) -> None:
    toml = site.toml
    ds = _ds_submits(site, ("toy_round", "toy_round_b"))

    code, out, _ = cli("requests", "list", "--config", toml, "--json")
    assert code == 0
    rows = json.loads(out)["requests"]
    assert [r["function"] for r in rows] == ["toy_round", "toy_round_b"]
    assert {r["status"] for r in rows} == {"pending"}
    assert {r["data_scientist"] for r in rows} == {DS_EMAIL}
    assert {r["projected_epsilon"] for r in rows} == {0.3}
    first, second = (r["id"] for r in rows)
    code, out, _ = cli("requests", "list", "--config", toml)
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith(first[:8]))
    assert line.split() == [first[:8], DS_EMAIL, "toy_round", "pending", "0.3"]

    code, out, _ = cli("requests", "show", "--config", toml, first[:8])
    assert code == 0
    assert f"Request {first}" in out.replace("-", "") or first[:8] in out
    assert "function     : toy_round" in out and "privacy contract:" in out
    assert "projected total   : epsilon 0.3" in out and "def toy_round(" in out
    assert out.index("projected total   :") < out.index("def toy_round(")  # contract first
    assert "class CallCapPolicy" not in out  # fedmugrep's own policy: by its digest
    code, full, _ = cli("requests", "show", "--config", toml, first[:8], "--full")
    assert code == 0 and "class CallCapPolicy(sy.CustomOutputPolicy)" in full
    assert "constant 'contract' in full (JSON):" in full and '"schema": "fedmugrep.privacy' in full
    code, out, _ = cli("requests", "show", "--config", toml, first[:8], "--json")
    shown = json.loads(out)
    assert code == 0 and shown["id"] == first and shown["contract"]["projected_epsilon"] == 0.3
    assert "privacy contract:" in shown["sheet"] and "def toy_round(" in shown["sheet"]

    code, _, err = cli("requests", "show", "--config", toml, "ffffffffzz")
    assert code == 2 and "no request 'ffffffffzz'" in err
    assert f"{first[:8]} (toy_round, pending)" in err and f"{second[:8]} (toy_round_b" in err

    code, _, err = cli("requests", "deny", "--config", toml, second[:8])
    assert code == 2 and "deny needs --reason" in err

    code, out, _ = cli("requests", "approve", "--config", toml, first[:8])
    assert code == 0 and f"approved request {first[:8]}: 'toy_round' by {DS_EMAIL}" in out
    assert f"{DS_EMAIL} has no budget cap" in out and "fedmugrep budget set" in out
    assert code_status(ds, "toy_round") == "approved"
    code, _, err = cli("requests", "approve", "--config", toml, first)
    assert code == 2 and "already approved" in err

    reason = "epsilon per release above 0.05; resubmit"
    code, out, _ = cli("requests", "deny", "--config", toml, second[:10], "--reason", reason)
    assert code == 0 and f"denied request {second[:8]}" in out
    assert code_status(ds, "toy_round_b") == f"denied: {reason}"

    assert cli("budget", "set", "--config", toml, "--data-scientist", DS_EMAIL)[0] == 0
    code, out, _ = cli("datasite", "status", "--config", toml, "--json")
    status = json.loads(out)
    assert status["requests"] == {"pending": 0, "approved": 1, "rejected": 1}
    (budget,) = status["budgets"]
    assert budget["data_scientist"] == DS_EMAIL and budget["dataset"] == "agency-h"
    assert budget["cap_epsilon"] == 5.0 and budget["spent_epsilon"] == 0.0


def test_budget_set_refuses_an_account_the_running_datasite_lacks(site: Site, cli: Cli) -> None:
    eve = "eve@uni.example"  # no account: the owner never ran `users add` for her
    code, _, err = cli("budget", "set", "--config", site.toml, "--data-scientist", eve)
    assert code == 2
    assert f"no account {eve} on datasite 'agency-h'" in err
    assert f"fedmugrep users add --config {site.toml} --email {eve}" in err
    code, out, _ = cli("budget", "show", "--config", site.toml, "--data-scientist", eve)
    assert code == 0 and f"no cap for {eve}" in out  # nothing was recorded
    code, _, err = cli("budget", "set", "--config", site.toml, "--data-scientist", DS_EMAIL)
    assert code == 0 and "warning" not in err  # Dana's account exists (checked, not assumed)


def test_stop_is_clean_and_commands_then_say_how_to_start(site: Site, cli: Cli) -> None:
    config = site.config
    pid = server_pid(config)
    assert pid is not None
    code, out, _ = cli("datasite", "stop", "--config", site.toml)
    assert code == 0 and f"stopped datasite 'agency-h' (pid {pid})" in out
    assert not pid_alive(pid) and not config.pid_file.exists()
    assert "fedmugrep datasite 'agency-h' stopped" in config.log_file.read_text()  # clean exit

    code, out, _ = cli("datasite", "status", "--config", site.toml, "--json")
    assert code == 0 and json.loads(out)["running"] is False
    code, _, err = cli("requests", "list", "--config", site.toml)
    assert code == 1
    assert f"not running; start it with: fedmugrep datasite start --config {site.toml}" in err

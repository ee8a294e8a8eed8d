"""Separate organisations, separate processes: the README's "your own data" flow end to end.

Three agencies and a region office each start their own datasite with ``fedmugrep datasite
start`` from their own TOML, on a table whose schema the synthetic generator never used (other
column names and units, other community names, no district, no mobility). Each owner creates
the data scientist's account and cap with ``fedmugrep users add`` and reviews the request with
``fedmugrep requests``. The data scientist is another process that has only the federation file
and their own password (no owner password in its environment) and works with ``fedmugrep
federation check|submit|status|train``; one owner first denies, and the data scientist sees
the reason. Every command is its own OS process, as on separate machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("syft")

from fedmugrep.data.public_datasets import write_foreign_city  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEDMUGREP = [sys.executable, "-m", "fedmugrep.cli"]
DS_EMAIL, DS_PASSWORD = "dana@uni.example", "dana-password-123"
OWNER_PASSWORD = "owner-password-123"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("FEDMUGREP_")
    }  # nothing of the other roles' secrets
    env.update(MPLBACKEND="Agg", **extra)
    return env


def owner(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """One data-owner command, in its own process, with only the owner's password."""
    return subprocess.run(
        [*FEDMUGREP, *map(str, args)],
        env=_env(FEDMUGREP_ADMIN_PASSWORD=OWNER_PASSWORD, FEDMUGREP_DS_PASSWORD=DS_PASSWORD),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def scientist(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """One data-scientist command: their own password only."""
    return subprocess.run(
        [*FEDMUGREP, *map(str, args)],
        env=_env(FEDMUGREP_DS_PASSWORD=DS_PASSWORD),
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("orgs")
    data = root / "data"
    write_foreign_city(data, seed=4, transactions=1500, agencies=3)
    public = (data / "public.toml").read_text(encoding="utf-8")
    agencies = sorted(f.stem.removeprefix("transactions_") for f in data.glob("transactions_*.csv"))
    sites = {}
    for name in [*agencies, "region"]:
        org = root / name  # each organisation's own folder (their machine)
        org.mkdir()
        port = _free_port()
        if name == "region":
            files = f'communities = "{data / "communities.csv"}"\n'
            role = "region"
        else:
            files = (
                f'transactions = "{data / f"transactions_{name}.csv"}"\n'
                f'communities = "{data / "communities.csv"}"\n'
            )
            role = "transactions"
        toml = org / f"{name}.toml"
        toml.write_text(
            f'[datasite]\nname = "{name}"\nhome = "home"\nhost = "127.0.0.1"\nport = {port}\n'
            f'role = "{role}"\n\n[admin]\nemail = "owner@{name}.example"\n'
            f'password_env = "FEDMUGREP_ADMIN_PASSWORD"\n\n[data]\n{files}\n'
            f"[budget]\nepsilon_cap = 8.0\ndelta_cap = 1e-5\n\n{public}",
            encoding="utf-8",
        )
        sites[name] = {"toml": toml, "url": f"http://127.0.0.1:{port}", "role": role}
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:  # the owners start at the same time
            starts = dict(
                zip(
                    sites,
                    pool.map(
                        lambda s: owner("datasite", "start", "--config", s["toml"], "--json"),
                        sites.values(),
                    ),
                    strict=True,
                )
            )
        for name, proc in starts.items():
            sites[name]["started"] = json.loads(_ok(proc))
        ds_dir = root / "dana"  # the data scientist's machine: the federation file only
        ds_dir.mkdir()
        fed = ds_dir / "federation.toml"
        lines = [
            "[data_scientist]",
            f'email = "{DS_EMAIL}"',
            'password_env = "FEDMUGREP_DS_PASSWORD"',
            "",
            "[training]",
            'home = "run"',
            "rounds = 3",
            "epsilon = 8.0",
            "pretrain_epochs = 20",
        ]
        for name, s in sites.items():
            lines += ["", "[[datasite]]", f'name = "{name}"', f'url = "{s["url"]}"']
            lines.append(f'role = "{s["role"]}"')
        fed.write_text("\n".join(lines) + "\n", encoding="utf-8")
        yield {"sites": sites, "file": fed, "data": data, "ds_dir": ds_dir}
    finally:
        with ThreadPoolExecutor(max_workers=len(sites)) as pool:
            list(
                pool.map(lambda s: owner("datasite", "stop", "--config", s["toml"]), sites.values())
            )


def _pending(toml: Path) -> list[str]:
    """The ids of the datasite's pending requests, oldest first."""
    out = _ok(owner("requests", "list", "--config", toml, "--status", "pending", "--json"))
    rows = sorted(json.loads(out)["requests"], key=lambda r: r["submitted"])
    assert all(r["data_scientist"] == DS_EMAIL for r in rows)
    return [str(r["id"]) for r in rows]


def test_owners_and_a_data_scientist_train_across_organisations(federation: dict) -> None:
    sites, fed = federation["sites"], federation["file"]
    # the owners' uploads: mocks drawn from the declaration, never the private size
    for name, s in sites.items():
        for up in s["started"]["uploaded"]:
            assert "dates:" in up["mock_source"], up  # drawn from the declaration
            if name != "region":
                assert up["mock_rows"] != up["rows"] and up["notes"] == [], up

    # without an account the data scientist cannot even log in
    denied_login = scientist("federation", "check", "--file", fed)
    assert denied_login.returncode == 1 and "login to datasite" in denied_login.stderr

    # each owner opens Dana's account with a cap, in their own shell
    for out in _each(
        sites,
        lambda s: owner(
            "users", "add", "--config", s["toml"], "--email", DS_EMAIL, "--epsilon", "8"
        ),
    ):
        assert DS_EMAIL in out and "epsilon 8" in out

    check = _ok(scientist("federation", "check", "--file", fed))
    # Dana sees her own remaining budget on every datasite, and that the plan fits in it
    assert check.count("remaining epsilon 8 of 8 (spent 0); enough for this plan") == len(sites)
    tx = next(n for n, s in sites.items() if s["role"] == "transactions")
    assert f"datasite '{tx}'" in check and "request: not submitted" in check
    private_cols = pd.read_csv(federation["data"] / f"transactions_{tx}.csv", nrows=1).columns
    for col in private_cols:  # the mock's schema is the owner's own columns
        assert col in check

    first = json.loads(_ok(scientist("federation", "submit", "--file", fed, "--json")))
    first_ids = first["request_ids"]
    status = _ok(scientist("federation", "status", "--file", fed))
    assert status.count(": pending") == len(sites)
    for name in sites:  # the id the data scientist gives each owner is the one they review
        assert f"{name}: pending (request {first_ids[name][:8]})" in status
    early = scientist("federation", "train", "--file", fed)
    assert early.returncode == 1 and "have not reviewed" in early.stderr

    # one owner denies with a reason; the data scientist sees it
    reason = "pretraining epochs too many for our review; resubmit"
    assert _pending(sites[tx]["toml"]) == [first_ids[tx]]
    _ok(
        owner(
            "requests", "deny", "--config", sites[tx]["toml"], first_ids[tx][:8], "--reason", reason
        )
    )
    assert f"{tx}: denied: {reason}" in _ok(scientist("federation", "status", "--file", fed))
    refused = scientist("federation", "train", "--file", fed)
    assert refused.returncode == 1 and reason in refused.stderr

    # resubmitted; every owner approves the newest request in their own shell, which denies
    # the older pending one as superseded; Dana trains
    second = json.loads(_ok(scientist("federation", "submit", "--file", fed, "--json")))
    new_ids = second["request_ids"]

    def approve_newest(s: dict) -> str:
        name = next(n for n, v in sites.items() if v is s)
        out = _ok(owner("requests", "approve", "--config", s["toml"], new_ids[name][:8], "--json"))
        # the older pending request is denied as superseded (the denied one is left as it is)
        stale = [] if name == tx else [first_ids[name][:8]]
        assert sorted(json.loads(out)["superseded"]) == stale, out
        return out

    assert len(_each(sites, approve_newest, check=False)) == len(sites)
    assert _ok(scientist("federation", "status", "--file", fed)).count(": approved") == len(sites)
    out = _ok(scientist("federation", "train", "--file", fed, "--quiet"))
    assert "trained 3 rounds" in out
    home = federation["ds_dir"] / "run"
    report = json.loads((home / "report.json").read_text())
    assert 0 < report["released"]["mape"] < 10 and "mape_noise_sd" in report["released"]
    # the page of Dana's home: what was released; each ledger is named on its datasite, never
    # marked verified from here
    page = json.loads(_ok(scientist("report", home, "--json")))
    text = Path(page["html"]).read_text(encoding="utf-8")
    assert "✔" not in text and text.count("on the datasite: not checked here") == len(sites)
    assert "released to the data scientist" in text

    # the exported model values properties on Dana's machine, at no privacy cost
    listings = federation["ds_dir"] / "listings.csv"
    pd.read_csv(federation["data"] / f"transactions_{tx}.csv").head(20).drop(
        columns=["price"]
    ).to_csv(listings, index=False)
    appraised = scientist("appraise", "--model", home / "model.pt", "--properties", listings)
    _ok(appraised)

    # every owner's ledger verifies and stays within the cap
    for name, s in sites.items():
        audit = _ok(owner("audit", "--home", s["toml"].parent / "home", "--verify", "--json"))
        assert DS_EMAIL in audit, name


def _each(sites: dict, command, *, check: bool = True) -> list:  # noqa: ANN001
    """Run one owner command per datasite, the owners at the same time (as on their own
    machines); the outputs in the sites' order."""
    with ThreadPoolExecutor(max_workers=len(sites)) as pool:
        results = list(pool.map(command, sites.values()))
    return [_ok(r) for r in results] if check else results


def test_a_datasite_that_does_not_answer_is_named(federation: dict, tmp_path: Path) -> None:
    raw = tomllib.loads(federation["file"].read_text())
    raw["datasite"][0]["url"] = f"http://127.0.0.1:{_free_port()}"
    lines = [
        "[data_scientist]",
        f'email = "{DS_EMAIL}"',
        "[training]",
        f'home = "{tmp_path / "run"}"',
    ]
    for s in raw["datasite"]:
        lines += ["[[datasite]]", *(f'{k} = "{v}"' for k, v in s.items())]
    bad = tmp_path / "federation.toml"
    bad.write_text("\n".join(lines) + "\n")
    proc = scientist("federation", "check", "--file", bad)
    site = raw["datasite"][0]
    assert proc.returncode == 1, proc.stderr
    assert f"datasite '{site['name']}' ({site['url']})" in proc.stderr
    assert "cannot reach" in proc.stderr

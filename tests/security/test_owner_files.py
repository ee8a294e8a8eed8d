"""A data owner's datasite home is private: folders 0700, files 0600, repaired at every start.

PySyft keeps every account's signing key in ``home/syft/db/syft.db``; a world-readable home lets
any local user act as the admin. The tests start real datasites (in-process, and over HTTP the
way a data owner does: ``launch_datasite`` / ``fedmugrep datasite start``), make them write
(upload, accounts, an approved call charging the privacy ledger) and check every path under the
home; then they loosen the modes as an older install left them and check that the next start
repairs them and says so. The attack itself is replayed as another local user (``nobody``)
where the tests run as root.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fedmugrep.cli import main
from fedmugrep.errors import FedMugRepError
from fedmugrep.pysyft.owner_files import (
    enforce_private_home,
    make_private,
    private_umask,
    repair_message,
    secure_home,
)

PASSWORD = "owner-secret-123"
DS_EMAIL, DS_PASSWORD = "dana@uni.example", "dana-secret-12"
PRIVATE = pd.DataFrame({"price": [100.0, 200.0, 300.0], "area_m2": [50.0, 70.0, 90.0]})
MOCK = pd.DataFrame({"price": [1.0, 2.0, 3.0], "area_m2": [1.0, 1.0, 1.0]})
NOBODY = 65534


# =============================================================================== helpers
def _modes(home: Path) -> dict[str, int]:
    """Permission bits of the home and of every path below it (symlinks excluded)."""
    found = {".": stat.S_IMODE(home.lstat().st_mode)}
    for folder, dirs, files in os.walk(home):
        for name in (*dirs, *files):
            path = Path(folder) / name
            st = path.lstat()
            if not stat.S_ISLNK(st.st_mode):
                found[str(path.relative_to(home))] = stat.S_IMODE(st.st_mode)
    return found


def _assert_private(home: Path) -> dict[str, int]:
    modes = _modes(home)
    wrong = {}
    for rel, mode in modes.items():
        want = 0o700 if (home / rel).is_dir() else 0o600
        if mode != want:
            wrong[rel] = oct(mode)
    assert not wrong, f"not private under {home}: {wrong}"
    for rel in modes:
        assert os.stat(home / rel).st_mode & 0o077 == 0
    return modes


def _loosen(home: Path) -> int:
    """What an older fedmugrep (umask 022) left: folders 0755, files 0644."""
    n = 0
    for rel in _modes(home):
        path = home / rel
        path.chmod(0o755 if path.is_dir() else 0o644)
        n += 1
    return n


def _as_nobody_can_read(path: Path) -> bool:
    """Whether the unprivileged user ``nobody`` can read ``path`` (needs root to switch)."""
    result = subprocess.run(  # noqa: S603 - fixed argv
        ["/bin/cat", str(path)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
        timeout=30,
    )
    return result.returncode == 0


def _can_switch_user() -> bool:
    return os.geteuid() == 0 and Path("/bin/cat").exists()


# =============================================================================== the module itself
def test_secure_home_repairs_what_others_can_access_and_never_leaves_the_home(
    tmp_path: Path,
) -> None:
    home = tmp_path / "agency-x"
    (home / "syft" / "db").mkdir(parents=True)
    (home / "evaluations" / "req1").mkdir(parents=True)
    db = home / "syft" / "db" / "syft.db"
    preds = home / "evaluations" / "req1" / "agency-x-test-predictions.csv"
    key = home / "syft" / "identity.json"
    backup = home / "ledger.bak"
    for path in (db, preds, key, backup):
        path.write_text("secret")
    for folder in (home, home / "syft", home / "syft" / "db", home / "evaluations"):
        folder.chmod(0o755)
    (home / "evaluations" / "req1").chmod(0o700)  # already private: left alone
    db.chmod(0o644)
    preds.chmod(0o640)  # group-readable is not private either
    key.chmod(0o600)
    backup.chmod(0o400)  # private and read-only: stays read-only
    outside = tmp_path / "outside.txt"
    outside.write_text("not the owner's")
    outside.chmod(0o644)
    (home / "link-out").symlink_to(outside)
    (tmp_path / "outside-dir").mkdir()
    (tmp_path / "outside-dir").chmod(0o755)
    (home / "link-dir").symlink_to(tmp_path / "outside-dir", target_is_directory=True)

    repaired = secure_home(home)

    assert set(repaired) == {
        home,
        home / "syft",
        home / "syft" / "db",
        home / "evaluations",
        db,
        preds,
    }
    assert repaired[0] == home
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(preds.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "syft").stat().st_mode) == 0o700
    assert stat.S_IMODE(backup.stat().st_mode) == 0o400
    # links are not followed: their targets outside the home keep their modes
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "outside-dir").stat().st_mode) == 0o755
    assert secure_home(home) == []  # idempotent
    assert secure_home(tmp_path / "missing") == []


def test_enforce_private_home_warns_naming_the_repaired_paths(tmp_path: Path) -> None:
    home = tmp_path / "agency-w"
    (home / "syft" / "db").mkdir(parents=True)
    db = home / "syft" / "db" / "syft.db"
    db.write_text("keys")
    db.chmod(0o644)
    home.chmod(0o700)
    (home / "syft").chmod(0o700)
    (home / "syft" / "db").chmod(0o700)
    out = io.StringIO()

    assert enforce_private_home(home, stream=out) == [db]

    text = out.getvalue()
    assert text.startswith(f"warning: repaired permissions of 1 files under {home}: ")
    assert "syft/db/syft.db" in text and "0600" in text
    assert enforce_private_home(home, stream=out) == [] and out.getvalue() == text
    assert repair_message(home, []) == ""


def test_make_private_and_private_umask(tmp_path: Path) -> None:
    loose = tmp_path / "loose.csv"
    loose.write_text("price\n1\n")
    loose.chmod(0o666)
    assert make_private(loose) is True
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    assert make_private(loose) is False  # nothing to do
    assert make_private(tmp_path / "missing") is False

    before = os.umask(0o022)
    try:
        with private_umask():
            with private_umask():  # nested: still private
                (tmp_path / "inner").write_text("x")
            (tmp_path / "made").mkdir()
            (tmp_path / "made" / "f.txt").write_text("x")
        assert stat.S_IMODE((tmp_path / "inner").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "made").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "made" / "f.txt").stat().st_mode) == 0o600
        (tmp_path / "after").write_text("x")  # the previous umask is back
        assert stat.S_IMODE((tmp_path / "after").stat().st_mode) == 0o644
    finally:
        os.umask(before)


def test_a_home_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "home").symlink_to(real, target_is_directory=True)
    with pytest.raises(FedMugRepError, match="is a symbolic link"):
        secure_home(tmp_path / "home")


# =============================================================================== in-process datasite
pytest.importorskip("syft")

from fedmugrep.privacy.ledger import Ledger  # noqa: E402
from fedmugrep.pysyft.config import DatasiteConfig, load_datasite_config  # noqa: E402
from fedmugrep.pysyft.runtime import (  # noqa: E402
    PrivacyContract,
    approve_request,
    call_remote,
    get_asset,
    launch_datasite,
    list_requests,
    make_remote_function,
    register_data_scientist,
    submit_request,
    upload_dataset,
)
from fedmugrep.pysyft.toy import toy_charge, toy_round  # noqa: E402
from tests.conftest import package_snapshot  # noqa: E402


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most users have (022): privacy must not depend on the caller's umask."""
    saved = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(saved)


@pytest.mark.integration
@pytest.mark.usefixtures("usual_umask")
def test_inprocess_datasite_home_is_private_and_repaired_at_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = DatasiteConfig(
        name="agency-p",
        home=tmp_path / "agency-p",
        admin_email="o@p.example",
        admin_password=PASSWORD,
    )
    handle = launch_datasite(config, mode="inprocess", reset=True)
    try:
        admin = handle.login_admin()
        upload_dataset(admin, name="transactions", private=PRIVATE, mock=MOCK, description="toy")
        register_data_scientist(admin, email=DS_EMAIL, name="Dana", password=DS_PASSWORD)
        ds = handle.login(DS_EMAIL, DS_PASSWORD)
        asset = get_asset(ds, "transactions")
        contract = PrivacyContract.for_installed(
            mechanisms=("laplace",), epsilon_per_release=0.1, rounds=1, projected_epsilon=0.1
        )
        submit_request(
            ds,
            make_remote_function(
                toy_round,
                client=ds,
                asset=asset,
                contract=contract,
                args={"round_no": int, "payload": list},
            ),
        )
        (request,) = list_requests(admin, status="pending")
        approve_request(request)
        got = call_remote(ds, "toy_round", data=asset, round_no=1, payload=[0.0])
        assert got["value"] == 600.0
        # while it runs: the database (WAL mode) and what the approved code wrote
        modes = _assert_private(config.home)
        assert {"syft/db/syft.db", "syft/db/syft.db-wal", "syft/identity.json"} <= set(modes)
        assert "toy_calls.log" in modes  # written inside the call, in this process
    finally:
        handle.stop()
    _assert_private(config.home)

    loosened = _loosen(config.home)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fedmugrep.federation"):
        handle = launch_datasite(config, mode="inprocess")
        handle.stop()
    warnings = [r.getMessage() for r in caplog.records if "repaired permissions" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert f"repaired permissions of {loosened} files under {config.home}: " in warnings[0]
    assert "syft/db/syft.db" in warnings[0]
    _assert_private(config.home)


# =============================================================================== HTTP datasite
@dataclass
class Served:
    base: Path
    toml: Path
    config: DatasiteConfig
    handle: Any


def _write_toml(base: Path, port: int) -> Path:
    toml = base / "agency-s.toml"
    toml.write_text(
        "\n".join(
            [
                "[datasite]",
                'name = "agency-s"',
                f'home = "{base / "agency-s"}"',
                'host = "127.0.0.1"',
                f"port = {port}",
                "",
                "[admin]",
                'email = "owner@agency-s.example"',
                f'password = "{PASSWORD}"',
                "",
                "[budget]",
                "epsilon_cap = 5.0",
                "delta_cap = 1e-5",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return toml


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """An HTTP datasite whose home lies in a folder every local user can enter (as a shared
    host's /srv would be), with data, an account, a budget set from the CLI and one approved
    call that charged the ledger inside the server process."""
    base = Path(tempfile.mkdtemp(prefix="fedmugrep-owner-"))
    base.chmod(0o755)
    try:
        toml = _write_toml(base, _free_port())
        config = load_datasite_config(toml)
        snap = package_snapshot(base / "pkg")  # the server runs a frozen copy of fedmugrep
        handle = launch_datasite(config, mode="http", reset=True, pythonpath=[snap])
        try:
            admin = handle.login_admin()
            upload_dataset(
                admin, name="transactions", private=PRIVATE, mock=MOCK, description="toy"
            )
            register_data_scientist(admin, email=DS_EMAIL, name="Dana", password=DS_PASSWORD)
            code, _, err = _cli("budget", "set", "--config", toml, "--data-scientist", DS_EMAIL)
            assert code == 0, err
            ds = handle.login(DS_EMAIL, DS_PASSWORD)
            asset = get_asset(ds, "transactions")
            contract = PrivacyContract.for_installed(
                mechanisms=("laplace",),
                epsilon_per_release=0.5,
                rounds=1,
                projected_epsilon=0.5,
                package_dir=snap / "fedmugrep",
            )
            submit_request(
                ds,
                make_remote_function(
                    toy_charge, client=ds, asset=asset, contract=contract, args={"label": str}
                ),
            )
            (request,) = list_requests(admin, status="pending")
            approve_request(request)
            assert call_remote(ds, "toy_charge", data=asset, label="r1")["label"] == "r1"
            yield Served(base, toml, config, handle)
        finally:
            handle.stop()
            _cli("datasite", "stop", "--config", toml)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.usefixtures("usual_umask")
def test_every_path_under_a_served_home_is_private(served: Served) -> None:
    home = served.config.home
    modes = _assert_private(home)
    for rel in (
        "syft/db/syft.db",
        "syft/db/syft.db-wal",
        "syft/db/syft.db-shm",
        "syft/identity.json",
        "privacy_ledger.sqlite",
        "server.log",
        "server.pid",
        "datasite.toml",
    ):
        assert rel in modes, f"{rel} missing; the datasite wrote {sorted(modes)}"
    assert modes["syft/blob"] == 0o700  # the blob store (objects over 1 MB)
    assert (
        Ledger(home, create=False).spent(DS_EMAIL, "agency-s") > 0
    )  # the server charged the ledger


@pytest.mark.integration
def test_another_local_user_cannot_read_the_signing_keys(served: Served) -> None:
    home = served.config.home
    db = home / "syft" / "db" / "syft.db"
    for path in (db, home / "privacy_ledger.sqlite", home / "syft" / "identity.json"):
        assert os.stat(path).st_mode & 0o077 == 0
    assert os.stat(home).st_mode & 0o077 == 0
    if not _can_switch_user():
        pytest.skip("replaying the attack needs root (to run as user 'nobody'); modes checked")
    # the harness can tell: nobody reads a world-readable file next to the home
    control = served.base / "public.txt"
    control.write_text("anyone may read this")
    control.chmod(0o644)
    assert _as_nobody_can_read(control)
    assert not _as_nobody_can_read(db)
    # even with the folders opened for traversal, the database itself stays closed
    folders = [home, home / "syft", home / "syft" / "db"]
    try:
        for folder in folders:
            folder.chmod(0o711)
        assert not _as_nobody_can_read(db)
        assert not _as_nobody_can_read(home / "privacy_ledger.sqlite")
        db.chmod(0o644)  # what the attack read before the fix
        assert _as_nobody_can_read(db)
    finally:
        db.chmod(0o600)
        for folder in folders:
            folder.chmod(0o700)


@pytest.mark.integration
@pytest.mark.usefixtures("usual_umask")
def test_cli_start_repairs_a_loosened_home_and_says_so(served: Served) -> None:
    served.handle.stop()
    home = served.config.home
    loosened = _loosen(home)
    assert stat.S_IMODE((home / "syft" / "db" / "syft.db").stat().st_mode) == 0o644

    code, out, err = _cli("datasite", "start", "--config", served.toml, "--json")
    try:
        assert code == 0, err
        started = json.loads(out)
        assert started["already_running"] is False
        assert f"warning: repaired permissions of {loosened} files under {home}: " in err
        assert "syft/db/syft.db" in err
        repaired = set(started["permissions_repaired"])
        for rel in ("syft/db/syft.db", "privacy_ledger.sqlite", "syft/identity.json", "."):
            assert str(home / rel if rel != "." else home) in repaired
        _assert_private(home)  # including what the restarted server wrote since
    finally:
        code, _, err = _cli("datasite", "stop", "--config", served.toml)
        assert code == 0, err

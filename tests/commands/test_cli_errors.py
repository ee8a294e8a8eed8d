"""Bad input and stopped datasites: exit codes and messages that say what to do next.

No server is started here; ``fedmugrep datasite start`` is only run where it must refuse before
launching anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fedmugrep.cli import build_parser
from fedmugrep.pysyft.config import load_datasite_config

from .conftest import PASSWORD, PASSWORD_ENV, write_toml

Cli = Callable[..., tuple[int, str, str]]

COMMANDS = (
    ("datasite", "start"),
    ("datasite", "stop"),
    ("datasite", "status"),
    ("requests", "list"),
    ("requests", "show", "abcd"),
    ("requests", "approve", "abcd"),
    ("requests", "deny", "abcd", "--reason", "no"),
    ("budget", "set", "--data-scientist", "dana@uni.example"),
    ("budget", "show"),
)


@pytest.fixture
def toml(tmp_path: Path, city_dir: Path) -> Path:
    return write_toml(
        tmp_path, "agency-z", data={"transactions": city_dir / "transactions_agency1.csv"}
    )


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_missing_config_exits_2_naming_the_file(
    cli: Cli, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    missing = tmp_path / "nowhere" / "agency-x.toml"
    code, _, err = cli(*argv, "--config", missing)
    assert code == 2
    assert f"datasite config {missing} does not exist" in err


@pytest.mark.parametrize(
    "argv",
    [
        ("datasite",),
        ("datasite", "start"),
        ("datasite", "stop"),
        ("datasite", "status"),
        ("requests",),
        ("requests", "list"),
        ("requests", "show"),
        ("requests", "approve"),
        ("requests", "deny"),
        ("budget",),
        ("budget", "set"),
        ("budget", "show"),
    ],
    ids=" ".join,
)
def test_every_command_has_help_with_an_example(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "Example" in out and "fedmugrep " + argv[0] in out.split("Example", 1)[1]


def test_requests_on_a_stopped_datasite_exit_1_with_the_start_command(cli: Cli, toml: Path) -> None:
    for argv in (("list",), ("show", "abcd"), ("approve", "abcd")):
        code, _, err = cli("requests", *argv, "--config", toml)
        assert code == 1
        assert (
            f"datasite 'agency-z' is not running; start it with: fedmugrep datasite start "
            f"--config {toml}" in err
        )


def test_deny_without_reason_exits_2(cli: Cli, toml: Path) -> None:
    for extra in ((), ("--reason", "  ")):
        code, _, err = cli("requests", "deny", "--config", toml, "abcd", *extra)
        assert code == 2 and "deny needs --reason TEXT" in err


def test_status_and_stop_of_a_stopped_datasite(cli: Cli, toml: Path) -> None:
    code, out, _ = cli("datasite", "status", "--config", toml, "--json")
    report = json.loads(out)
    assert code == 0 and report["running"] is False and report["pid"] is None
    assert report["note"] == f"not running; start it with: fedmugrep datasite start --config {toml}"
    code, out, _ = cli("datasite", "stop", "--config", toml)
    assert code == 0 and "is not running; nothing to stop" in out


def test_stop_never_signals_a_process_that_is_not_a_datasite(cli: Cli, toml: Path) -> None:
    config = load_datasite_config(toml)
    config.home.mkdir(parents=True)
    config.pid_file.write_text(f"{os.getpid()}\n")  # a stale pid file naming this test process
    code, out, _ = cli("datasite", "status", "--config", toml, "--json")
    assert code == 0 and json.loads(out)["running"] is False
    code, _, err = cli("datasite", "stop", "--config", toml)
    assert code == 1 and "is not a fedmugrep datasite server" in err
    assert f"delete {config.pid_file}" in err


def test_start_refuses_before_launching_without_password_or_data(
    cli: Cli, toml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    code, _, err = cli("datasite", "start", "--config", toml)
    assert code == 2 and f"set the environment variable {PASSWORD_ENV}" in err

    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    missing = tmp_path / "data" / "transactions_agency9.csv"
    no_data = write_toml(tmp_path, "agency-y", data={"transactions": missing})
    code, _, err = cli("datasite", "start", "--config", no_data)
    assert code == 2
    assert f"[data] transactions = {missing} does not exist" in err
    assert "fedmugrep synth --out datasites/data" in err

    typo = write_toml(tmp_path, "agency-w", data={"transaction": missing})
    code, _, err = cli("datasite", "start", "--config", typo)
    assert code == 2 and "[data] key(s) ['transaction'] are not known" in err
    for name in ("agency-y", "agency-w"):
        assert not (tmp_path / name / "server.pid").exists()

"""A newcomer's mistakes exit 2 with a message naming the option or file they typed; help texts
read as printed; train-federated's defaults and options match the README and the plan.

No server is started: ``budget set``'s account check is run against a stubbed running datasite
(the real one is covered in ``test_datasite_http.py``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fedmugrep.cli import EXIT_USAGE, build_parser, main
from fedmugrep.commands import budget as budget_cmd
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.pysyft.config import load_datasite_config

from .conftest import write_toml

Cli = Callable[..., tuple[int, str, str]]
DANA = "dana@uni.example"


def exit_code_and_err(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    """``fedmugrep ARGV`` in this process: ``(exit code, stderr)``, whether main returns the
    code or argparse exits with it."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


# =============================================================================== bad input: exit 2
def test_appraise_missing_model_file_exits_2_naming_option_and_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "MISSING.pt"
    props = tmp_path / "props.csv"
    props.write_text("transaction_id,date,lat,lon\n", encoding="utf-8")
    code, err = exit_code_and_err(capsys, "appraise", "--model", missing, "--properties", props)
    assert code == EXIT_USAGE
    assert f"--model: model file {missing} does not exist" in err
    assert "ValuationModel.save" in err


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_audit_home_without_a_ledger_exits_2_naming_option_and_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make: str
) -> None:
    home = tmp_path / "MISSING"
    if make == "empty":
        home.mkdir()
    code, err = exit_code_and_err(capsys, "audit", "--home", home)
    assert code == EXIT_USAGE
    assert (
        f"--home {home}" in err and f"no privacy ledger at {home / 'privacy_ledger.sqlite'}" in err
    )
    assert "pass the datasite's home folder" in err
    assert home.exists() == (make == "empty")  # nothing created


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--rounds", "0", "--rounds must be >= 1 (got 0)"),
        ("--rounds", "-3", "--rounds must be >= 1 (got -3)"),
        ("--epsilon", "0", "--epsilon must be > 0 (got 0)"),
        ("--epsilon", "-1", "--epsilon must be > 0 (got -1)"),
        ("--epsilon", "nan", "--epsilon must be > 0 (got nan)"),
        ("--delta", "0", "--delta must be in (0, 1) (got 0)"),
        ("--delta", "1", "--delta must be in (0, 1) (got 1)"),
        ("--clip", "0", "--clip must be > 0 (got 0)"),
        ("--clip", "-0.5", "--clip must be > 0 (got -0.5)"),
    ],
)
def test_train_federated_bad_values_exit_2_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, option: str, value: str, message: str
) -> None:
    home = tmp_path / "home"
    code, err = exit_code_and_err(
        capsys, "train-federated", "--city", tmp_path / "city", "--home", home, option, value
    )
    assert code == EXIT_USAGE
    assert message in err
    assert "steps must be" not in err
    assert not home.exists()


def test_train_federated_rounds_0_exits_2_as_a_subprocess(tmp_path: Path) -> None:
    """The real entry point (``python -m fedmugrep.cli``), as a newcomer types it."""
    proc = subprocess.run(
        [sys.executable, "-m", "fedmugrep.cli", "train-federated", "--city", str(tmp_path),
         "--home", str(tmp_path / "h"), "--rounds", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == EXIT_USAGE
    assert "--rounds must be >= 1 (got 0)" in proc.stderr


def test_synth_missing_config_exits_2_naming_option_and_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    typo = tmp_path / "cty.toml"  # the user meant city.toml
    (tmp_path / "city.toml").write_text("[city]\nseed = 1\n", encoding="utf-8")
    code, err = exit_code_and_err(capsys, "synth", "--out", tmp_path / "out", "--config", typo)
    assert code == EXIT_USAGE
    assert f"--config: city config {typo} does not exist" in err
    assert not (tmp_path / "out").exists()


def test_synth_config_with_a_typo_d_key_exits_2_naming_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    city = tmp_path / "city.toml"
    city.write_text("[city]\nn_transaction = 900\n", encoding="utf-8")
    code, err = exit_code_and_err(capsys, "synth", "--out", tmp_path / "out", "--config", city)
    assert code == EXIT_USAGE
    assert f"{city}: unknown CityConfig field(s) ['n_transaction']" in err
    assert not (tmp_path / "out").exists()


def test_synth_flag_that_does_not_apply_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    city = tmp_path / "city.toml"
    city.write_text("[city]\nseed = 1\n", encoding="utf-8")
    code, err = exit_code_and_err(
        capsys, "synth", "--out", tmp_path / "out", "--dataset", "foreign", "--config", city
    )
    assert code == EXIT_USAGE
    assert "--config applies to --dataset synthetic only" in err


# =============================================================================== help texts
def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_no_help_text_prints_a_doubled_percent_sign() -> None:
    parsers = list(_parsers(build_parser()))
    assert len(parsers) > 12  # every command and action
    for parser in parsers:
        assert "%%" not in parser.format_help(), parser.prog


@pytest.mark.parametrize(
    ("command", "text"),
    [("train-central", "latest 20% of dates"), ("appraise", "median and 80% interval")],
)
def test_descriptions_print_single_percent_signs(
    capsys: pytest.CaptureFixture[str], command: str, text: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert text in " ".join(capsys.readouterr().out.split())


def test_every_train_central_and_train_federated_option_has_help() -> None:
    for parser in _parsers(build_parser()):
        if parser.prog.split()[-1] not in ("train-central", "train-federated"):
            continue
        for action in parser._actions:
            assert action.help, f"{parser.prog} {action.option_strings} has no help"
    central = next(p for p in _parsers(build_parser()) if p.prog.endswith("train-central"))
    helps = {a.dest: a.help for a in central._actions}
    assert "epochs" in helps["epochs"] and "(default 400)" in helps["epochs"]
    assert "seed" in helps["seed"] and "(default 0)" in helps["seed"]


# =============================================================================== train-federated
def test_train_federated_defaults_to_30_rounds_like_the_readme_and_demo() -> None:
    args = build_parser().parse_args(["train-federated", "--city", "c", "--home", "h"])
    assert args.rounds == 30 and args.seed == 0 and args.delta == 1e-5 and args.clip == 0.3
    demo = build_parser().parse_args(["demo"])
    assert demo.rounds == args.rounds
    federated = next(p for p in _parsers(build_parser()) if p.prog.endswith("train-federated"))
    text = federated.format_help()
    assert "federated rounds (default 30)" in " ".join(text.split())
    assert "--rounds 30 --epsilon 8" in text and "--rounds 60" not in text
    readme = Path(__file__).resolve().parents[2] / "README.md"
    assert "fedmugrep train-federated --city city/ --home runs/fed --rounds 30" in readme.read_text(
        encoding="utf-8"
    )


def test_train_federated_wires_seed_delta_and_clip_into_the_plan(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import fedmugrep.federation.local as local

    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_run_local(city: Path, plan: Any, home: Path, **_: Any) -> Any:
        seen["plan"] = plan
        raise Stop

    monkeypatch.setattr(local, "run_local", fake_run_local)
    argv = ["train-federated", "--city", str(tmp_path), "--home", str(tmp_path / "h"),
            "--seed", "7", "--delta", "1e-6", "--clip", "0.5", "--epsilon", "4"]  # fmt: skip
    with pytest.raises(Stop):
        main(argv)
    plan = seen["plan"]
    assert plan.rounds == 30 and plan.seed == 7
    assert plan.privacy.epsilon == 4 and plan.privacy.delta == 1e-6 and plan.privacy.clip == 0.5


# =============================================================================== budget set
@pytest.fixture
def toml(tmp_path: Path) -> Path:
    return write_toml(tmp_path, "agency-u", data={"transactions": tmp_path / "t.csv"})


def _running_with(monkeypatch: pytest.MonkeyPatch, emails: list[str]) -> None:
    """Make the datasite look running, with these accounts (no server, no login)."""
    monkeypatch.setattr(budget_cmd, "server_pid", lambda config: 4242)
    monkeypatch.setattr(budget_cmd, "running_url", lambda config: "http://127.0.0.1:1")
    monkeypatch.setattr(budget_cmd, "admin_login", lambda config, url, pid: object())
    monkeypatch.setattr(
        budget_cmd,
        "accounts",
        lambda admin: [{"email": e, "name": "x", "role": "data_scientist"} for e in emails],
    )


def test_budget_set_for_an_unknown_account_exits_2_and_says_how_to_create_it(
    cli: Cli, toml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _running_with(monkeypatch, ["owner@agency-u.example", "eve@uni.example"])
    code, _, err = cli("budget", "set", "--config", toml, "--data-scientist", DANA)
    assert code == EXIT_USAGE
    assert f"no account {DANA} on datasite 'agency-u'" in err
    assert f"fedmugrep users add --config {toml} --email {DANA}" in err
    home = load_datasite_config(toml).home
    assert (
        not (home / "privacy_ledger.sqlite").exists() or Ledger(home).cap(DANA, "agency-u") is None
    )


def test_budget_set_for_a_known_account_sets_the_cap(
    cli: Cli, toml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _running_with(monkeypatch, ["Dana@Uni.example"])
    code, out, err = cli("budget", "set", "--config", toml, "--data-scientist", DANA)
    assert code == 0, err
    assert "warning" not in err and f"cap for {DANA}" in out


def test_budget_set_on_a_stopped_datasite_sets_the_cap_with_a_warning(cli: Cli, toml: Path) -> None:
    code, out, err = cli("budget", "set", "--config", toml, "--data-scientist", DANA)
    assert code == 0 and f"cap for {DANA}" in out
    assert f"warning: could not check that {DANA} has an account" in err
    assert "is not running" in err
    assert f"fedmugrep users add --config {toml} --email {DANA}" in err
    assert Ledger(load_datasite_config(toml).home).cap(DANA, "agency-u") == (5.0, 1e-5)

"""``fedmugrep budget set|show`` on a datasite's real privacy ledger (no server needed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fedmugrep.errors import BudgetExceededError
from fedmugrep.privacy.events import LaplaceEvent
from fedmugrep.privacy.ledger import LEDGER_FILENAME, Ledger
from fedmugrep.pysyft.config import load_datasite_config

from .conftest import write_toml

Cli = Callable[..., tuple[int, str, str]]
DANA, EVE = "dana@uni.example", "eve@lab.example"


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    return write_toml(tmp_path, "agency-q", data={"transactions": tmp_path / "t.csv"})


def test_set_applies_the_toml_caps_and_show_reports_spent_and_remaining(
    cli: Cli, toml: Path
) -> None:
    code, out, _ = cli("budget", "set", "--config", toml, "--data-scientist", DANA)
    assert code == 0
    assert f"cap for {DANA} on datasite 'agency-q'" in out and "epsilon 5, delta 1e-05" in out
    home = load_datasite_config(toml).home
    ledger = Ledger(home, create=False)
    assert ledger.cap(DANA, "agency-q") == (5.0, 1e-5)
    # a release charged by the datasite (dataset = datasite name) shows up as spent
    ledger.charge(
        data_scientist=DANA,
        request_id="r1",
        dataset="agency-q",
        mechanism="laplace",
        events=[LaplaceEvent(1.0, 2.0)],  # epsilon 0.5
        payload="noised",
    )
    code, out, _ = cli("budget", "show", "--config", toml)
    assert code == 0
    (row,) = [line for line in out.splitlines() if line.startswith(DANA)]
    assert row.split() == [DANA, "agency-q", "5.0000", "1e-05", "0.5000", "4.5000", "0"]

    code, out, _ = cli("budget", "show", "--config", toml, "--data-scientist", DANA, "--json")
    assert code == 0
    (budget,) = json.loads(out)["budgets"]
    assert budget["cap_epsilon"] == 5.0 and budget["spent_epsilon"] == pytest.approx(0.5)
    assert budget["remaining_epsilon"] == pytest.approx(4.5)
    assert budget["releases"] == {"laplace": 1}


def test_set_with_explicit_caps_per_data_scientist_and_lowering_below_spent(
    cli: Cli, toml: Path
) -> None:
    assert cli("budget", "set", "--config", toml, "--data-scientist", DANA)[0] == 0
    code, out, _ = cli(
        "budget", "set", "--config", toml, "--data-scientist", EVE, "--epsilon", "1.5",
        "--delta", "1e-6", "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["cap_epsilon"] == 1.5 and json.loads(out)["cap_delta"] == 1e-6
    ledger = Ledger(load_datasite_config(toml).home)
    ledger.charge(
        data_scientist=EVE, request_id="r", dataset="agency-q", mechanism="laplace",
        events=[LaplaceEvent(1.0, 1.0)], payload="x",
    )  # fmt: skip
    code, out, _ = cli(
        "budget", "set", "--config", toml, "--data-scientist", EVE, "--epsilon", "0.5"
    )
    assert code == 0 and "below what eve@lab.example already spent" in out
    with pytest.raises(BudgetExceededError):
        ledger.charge(
            data_scientist=EVE, request_id="r2", dataset="agency-q", mechanism="laplace",
            events=[LaplaceEvent(1.0, 100.0)], payload="y",
        )  # fmt: skip
    code, out, _ = cli("budget", "show", "--config", toml, "--json")
    rows = {r["data_scientist"]: r for r in json.loads(out)["budgets"]}
    assert set(rows) == {DANA, EVE}
    assert rows[EVE]["cap_epsilon"] == 0.5 and rows[EVE]["refusals"] == 1
    assert rows[DANA]["cap_epsilon"] == 5.0


def test_show_on_a_fresh_datasite_creates_nothing(cli: Cli, toml: Path) -> None:
    code, out, _ = cli("budget", "show", "--config", toml, "--data-scientist", DANA)
    assert code == 0 and f"no cap for {DANA}" in out and "fedmugrep budget set" in out
    code, out, _ = cli("budget", "show", "--config", toml, "--json")
    assert code == 0 and json.loads(out) == {"datasite": "agency-q", "budgets": []}
    assert not (load_datasite_config(toml).home / LEDGER_FILENAME).exists()


def test_bad_input_exits_2_and_says_what_to_do(cli: Cli, tmp_path: Path, toml: Path) -> None:
    code, _, err = cli(
        "budget", "set", "--config", toml, "--data-scientist", DANA, "--epsilon", "-1"
    )
    assert code == 2 and "epsilon must be >= 0 (got -1.0)" in err
    code, _, err = cli("budget", "set", "--config", toml, "--data-scientist", "dana")
    assert code == 2 and "account e-mail" in err
    bare = write_toml(tmp_path, "bare", data={}, budget=False)
    code, _, err = cli("budget", "set", "--config", bare, "--data-scientist", DANA)
    assert code == 2
    assert (
        "--epsilon VALUE --delta VALUE" in err
        and f"[budget] epsilon_cap and delta_cap in {bare}" in err
    )
    code, _, err = cli("budget", "show", "--config", tmp_path / "missing.toml")
    assert code == 2 and "missing.toml does not exist" in err

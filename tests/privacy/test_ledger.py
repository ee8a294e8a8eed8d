"""The privacy ledger: filter semantics, concurrency, restarts, tamper evidence."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from fedmugrep.errors import BudgetExceededError, ConfigError
from fedmugrep.privacy.analysis.composition import compose_events
from fedmugrep.privacy.events import LaplaceEvent, SubsampledGaussianEvent, UnsupportedEventError
from fedmugrep.privacy.ledger import (
    GENESIS_HASH,
    LEDGER_FILENAME,
    Ledger,
    LedgerEntry,
    LedgerHead,
    payload_digest,
)
from tests.privacy._ledger_workers import charge_many, die_inside_transaction

DELTA = 1e-5
LAP = LaplaceEvent(1.0, 2.0, 1, bound=1000.0)  # ε ≈ 0.5 per release


def charge(ledger: Ledger, i: int, events=(LAP,), ds: str = "alice", dataset: str = "sales"):
    return ledger.charge(
        data_scientist=ds,
        request_id=f"r{i}",
        dataset=dataset,
        mechanism="laplace" if isinstance(events[0], LaplaceEvent) else "dp_sgd",
        events=list(events),
        payload=f"payload {i}".encode(),
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "site")
    led.set_cap("alice", "sales", epsilon=2.0, delta=DELTA)
    return led


def filled(ledger: Ledger, n: int = 6) -> Ledger:
    """n charged entries after the cap (entries 2..n+1)."""
    ledger.set_cap("alice", "sales", epsilon=100.0, delta=DELTA)
    for i in range(n):
        charge(ledger, i)
    return ledger


# -- filter semantics ---------------------------------------------------------------------


def test_charge_records_and_refuses_beyond_the_cap(ledger: Ledger) -> None:
    # 4 releases of ε≈0.5 cost 1.99 by RDP (the plain sum would say 2.0000000000x > 2); 5 do not fit
    assert compose_events([LAP] * 4, delta=DELTA).epsilon < 2.0
    assert compose_events([LAP] * 5, delta=DELTA).epsilon > 2.0
    entries = [charge(ledger, i) for i in range(4)]
    assert [e.status for e in entries] == ["charged"] * 4
    assert entries[0].prev_hash == ledger.entries()[0].entry_hash  # follows the cap entry
    assert entries[0].epsilon == pytest.approx(0.5, rel=1e-9)
    assert entries[2].payload_sha256 == payload_digest(b"payload 2")
    assert entries[2].sensitivity == 1.0 and entries[2].scale == 2.0
    with pytest.raises(BudgetExceededError) as err:
        charge(ledger, 4)
    msg = str(err.value)
    assert "cap 2" in msg and "Nothing was released" in msg and "raise the cap" in msg
    last = ledger.entries()[-1]
    assert last.status == "refused" and last.payload_sha256 is None and last.request_id == "r4"
    assert ledger.spent("alice", "sales") == compose_events([LAP] * 4, delta=DELTA).epsilon


def test_no_cap_means_refusal(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    with pytest.raises(BudgetExceededError, match="no privacy budget cap is set"):
        charge(led, 0)
    assert led.entries()[-1].status == "refused"
    with pytest.raises(ConfigError, match="no cap set"):
        led.spent("alice", "sales")


def test_caps_are_per_pair_and_can_change(ledger: Ledger) -> None:
    ledger.set_cap("bob", "sales", epsilon=0.4, delta=DELTA)
    with pytest.raises(BudgetExceededError):
        charge(ledger, 0, ds="bob")  # 0.5 > 0.4
    charge(ledger, 1)  # alice unaffected
    ledger.set_cap("bob", "sales", epsilon=1.0, delta=DELTA)
    charge(ledger, 2, ds="bob")
    assert ledger.cap("bob", "sales") == (1.0, DELTA)
    status = {(b.data_scientist, b.dataset): b for b in ledger.budgets()}
    assert status[("bob", "sales")].refusals == 1
    assert status[("bob", "sales")].releases == {"laplace": 1}
    assert status[("alice", "sales")].remaining == pytest.approx(1.5, rel=1e-9)


def test_accountant_composition_is_used(ledger: Ledger) -> None:
    """Spending is the RDP/plain-sum total, not a naive sum of ε."""
    ledger.set_cap("alice", "sales", epsilon=8.0, delta=DELTA)
    sgd = SubsampledGaussianEvent(1.1, 0.01, 1000)
    charge(ledger, 0, events=(sgd,))
    charge(ledger, 1, events=(LaplaceEvent(1.0, 10.0, 20, bound=100.0),))
    expected = compose_events([sgd, LaplaceEvent(1.0, 10.0, 20, bound=100.0)], delta=DELTA)
    assert ledger.spent("alice", "sales") == expected.epsilon
    assert expected.epsilon < 3.0  # the plain sum would be 1.71 + 2.0
    e = ledger.entries()[-2]
    assert (e.noise_multiplier, e.sample_rate, e.steps) == (1.1, 0.01, 1000)


def test_unsupported_event_records_nothing(ledger: Ledger) -> None:
    n = len(ledger.entries())
    with pytest.raises(UnsupportedEventError):
        ledger.charge(
            data_scientist="alice",
            request_id="x",
            dataset="sales",
            mechanism="laplace",
            events=["not an event"],  # type: ignore[list-item]
            payload=b"",
        )
    assert len(ledger.entries()) == n


def test_charge_then_releases_only_after_a_successful_charge(ledger: Ledger, tmp_path) -> None:
    calls = []

    def compute() -> bytes:
        calls.append(1)
        return b"noised"

    common = dict(data_scientist="alice", dataset="sales", mechanism="laplace")
    out = ledger.charge_then(compute, request_id="ok", events=[LAP], **common)
    assert out == b"noised" and ledger.entries()[-1].payload_sha256 == payload_digest(b"noised")
    # does not fit: compute never runs
    with pytest.raises(BudgetExceededError):
        ledger.charge_then(compute, request_id="big", events=[LaplaceEvent(1.0, 0.1)], **common)
    assert len(calls) == 1
    # fits at the pre-check, but another process spends the budget while computing
    other = Ledger(tmp_path / "site")

    def racing_compute() -> bytes:
        calls.append(2)
        other.charge(request_id="race", events=[LaplaceEvent(1.0, 0.8)], payload=b"", **common)
        return b"must never be returned"

    with pytest.raises(BudgetExceededError):
        ledger.charge_then(racing_compute, request_id="late", events=[LAP], **common)
    assert calls == [1, 2]
    assert ledger.entries()[-1].status == "refused" and ledger.entries()[-1].request_id == "late"


def test_entries_are_immutable_and_triggers_block_updates(ledger: Ledger) -> None:
    e = charge(ledger, 0)
    with pytest.raises(AttributeError):
        e.epsilon = 0.0  # type: ignore[misc]
    conn = sqlite3.connect(ledger.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE entries SET epsilon = 0")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM entries")
    conn.close()


def test_payload_digest_types() -> None:
    np = pytest.importorskip("numpy")
    assert payload_digest(b"a") == payload_digest("a")
    a = np.arange(3.0)
    assert payload_digest(a) == payload_digest(a.copy())
    assert payload_digest(a) != payload_digest(a.astype(np.float32))
    assert payload_digest({"x": [1, 2]}) == payload_digest({"x": [1, 2]})
    assert payload_digest(1.5) != payload_digest(1.25)


# -- concurrency and restarts -------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_processes_never_overspend(tmp_path: Path) -> None:
    home = tmp_path / "site"
    led = Ledger(home)
    cap = 5.0
    led.set_cap("alice", "sales", epsilon=cap, delta=DELTA)
    # how many releases fit, computed serially with the same composition
    fit = 0
    while compose_events([LAP] * (fit + 1), delta=DELTA).epsilon <= cap:
        fit += 1
    assert 9 <= fit <= 40  # RDP lets more than the plain sum's 9 fit
    n_workers, attempts = 24, 3
    assert n_workers * attempts > fit
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n_workers), ctx.Queue()
    procs = [
        ctx.Process(target=charge_many, args=(str(home), w, attempts, barrier, results))
        for w in range(n_workers)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    charged = sum(o.count("charged") for _, o in outcomes)
    refused = sum(o.count("refused") for _, o in outcomes)
    assert charged == fit  # no overspend, and no lost update either
    assert refused == n_workers * attempts - fit
    assert led.spent("alice", "sales") <= cap
    status = led.budget("alice", "sales")
    assert status.releases == {"laplace": fit} and status.refusals == refused
    report = led.verify()
    assert report.ok, report
    assert report.entries == 1 + n_workers * attempts


def test_restart_keeps_totals_and_a_crash_mid_write_leaves_no_trace(tmp_path: Path) -> None:
    home = tmp_path / "site"
    led = filled(Ledger(home), 4)
    before = (led.spent("alice", "sales"), led.head(), led.entries())
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=die_inside_transaction, args=(str(home),))
    p.start()
    p.join(timeout=60)
    assert p.exitcode == 3
    reopened = Ledger(home)  # "restart": a fresh object / process opens the same file
    assert (reopened.spent("alice", "sales"), reopened.head(), reopened.entries()) == before
    assert reopened.verify().ok
    charge(reopened, 99)  # the lock was released
    assert Ledger(home).budget("alice", "sales").releases == {"laplace": 5}


def test_missing_ledger_is_not_created_for_auditors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no privacy ledger at"):
        Ledger(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()


# -- tamper evidence ----------------------------------------------------------------------


def tamper(ledger: Ledger, *sql: str, params=()) -> None:
    conn = sqlite3.connect(ledger.path, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS entries_no_update")
    conn.execute("DROP TRIGGER IF EXISTS entries_no_delete")
    for stmt in sql:
        conn.execute(stmt, params)
    conn.close()


def forge(ledger: Ledger, template: LedgerEntry, *, seq: int, prev_hash: str, **changes) -> None:
    """Write a well-formed entry (valid own hash) as an attacker without the ledger's API would."""
    fields = {**template.__dict__, **changes, "seq": seq, "prev_hash": prev_hash, "entry_hash": ""}
    draft = LedgerEntry(**fields)
    entry = LedgerEntry(**{**draft.__dict__, "entry_hash": draft.computed_hash()})
    cols = list(entry.__dict__)
    conn = sqlite3.connect(ledger.path, isolation_level=None)
    conn.execute(
        f"INSERT INTO entries ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        tuple(entry.__dict__.values()),
    )
    conn.close()


def test_clean_ledger_verifies(ledger: Ledger) -> None:
    filled(ledger)
    report = ledger.verify()
    assert report.ok and report.problems == () and report.entries == 8
    assert report.head == ledger.head()
    assert "ledger OK: 8 entries" in str(report)
    assert ledger.verify(expected_head=str(ledger.head())).ok


def test_detects_edit(ledger: Ledger) -> None:
    filled(ledger)
    tamper(ledger, "UPDATE entries SET epsilon = 0.0001 WHERE seq = 4")
    report = ledger.verify()
    assert not report.ok and report.kinds() == {"edited"}
    assert report.problems[0].seqs == (4,)
    assert "entry 4" in report.problems[0].message


def test_detects_edit_that_recomputes_the_hash(ledger: Ledger) -> None:
    filled(ledger)
    victim = ledger.entries()[3]  # seq 4
    tamper(ledger, "DELETE FROM entries WHERE seq = 4")
    forge(ledger, victim, seq=4, prev_hash=victim.prev_hash, epsilon=0.0001)
    report = ledger.verify()
    assert report.kinds() == {"edited"}
    assert report.problems[0].seqs == (4, 5)
    assert "entry 4 was altered and re-hashed" in report.problems[0].message


def test_detects_deletion(ledger: Ledger) -> None:
    filled(ledger)
    tamper(ledger, "DELETE FROM entries WHERE seq = 5")
    report = ledger.verify()
    assert report.kinds() == {"deleted"}
    assert report.problems[0].seqs == (5,)
    assert "entry 5 was deleted" in report.problems[0].message


def test_detects_deletion_of_the_first_entry(ledger: Ledger) -> None:
    filled(ledger)
    tamper(ledger, "DELETE FROM entries WHERE seq = 1")
    report = ledger.verify()
    assert report.kinds() == {"deleted"} and report.problems[0].seqs == (1,)


def test_detects_insertion_in_the_middle(ledger: Ledger) -> None:
    filled(ledger)
    entries = ledger.entries()
    # a fake refund-like entry claiming to follow entry 3, stored at the end
    forge(
        ledger, entries[3], seq=len(entries) + 1, prev_hash=entries[2].entry_hash, request_id="fake"
    )
    report = ledger.verify()
    assert report.kinds() == {"inserted"}
    assert report.problems[0].seqs == (len(entries) + 1,)
    assert "claims to follow entry 3" in report.problems[0].message


def test_detects_insertion_at_the_end_without_the_head(ledger: Ledger) -> None:
    filled(ledger)
    entries = ledger.entries()
    forge(ledger, entries[-1], seq=len(entries) + 1, prev_hash=entries[-1].entry_hash)
    report = ledger.verify()
    assert report.kinds() == {"inserted"} and report.problems[0].seqs == (len(entries) + 1,)


def test_detects_reordering(ledger: Ledger) -> None:
    filled(ledger)
    tamper(
        ledger,
        "UPDATE entries SET seq = -1 WHERE seq = 3",
        "UPDATE entries SET seq = 3 WHERE seq = 4",
        "UPDATE entries SET seq = 4 WHERE seq = -1",
    )
    report = ledger.verify()
    assert report.kinds() == {"reordered"}
    assert report.problems[0].seqs == (3, 4)


def test_detects_truncation(ledger: Ledger) -> None:
    filled(ledger)
    tamper(ledger, "DELETE FROM entries WHERE seq > 5")
    report = ledger.verify()
    assert report.kinds() == {"truncated"}
    assert report.problems[0].seqs == (6, 7, 8)
    assert "the last 3 entries were removed" in report.problems[0].message


def test_whole_chain_rewrite_needs_the_recorded_head(ledger: Ledger) -> None:
    """The documented limit: a consistent rewrite (head included) passes plain verify()."""
    filled(ledger)
    recorded = ledger.head()
    tamper(ledger, "DELETE FROM entries WHERE seq > 5")
    last = ledger.entries()[-1]
    tamper(ledger, "UPDATE head SET count = ?, last_hash = ?", params=(5, last.entry_hash))
    assert ledger.verify().ok  # consistent: indistinguishable without an outside reference
    report = ledger.verify(expected_head=recorded)
    assert report.kinds() == {"expected_head"}
    assert "not in the ledger" in report.problems[0].message
    # an older recorded head that is still a prefix is fine
    assert ledger.verify(expected_head=LedgerHead(5, last.entry_hash)).ok


def test_head_parsing() -> None:
    h = LedgerHead(3, "a" * 64)
    assert LedgerHead.parse(str(h)) == h
    assert LedgerHead.parse("b" * 64) == LedgerHead(-1, "b" * 64)
    with pytest.raises(ConfigError, match="64 hex digits"):
        LedgerHead.parse("3:xyz")
    assert LedgerHead(0, GENESIS_HASH).count == 0


def test_ledger_file_lives_in_the_home_folder(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "a" / "b")
    assert led.path == tmp_path / "a" / "b" / LEDGER_FILENAME and led.path.exists()
    mode = sqlite3.connect(led.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_ledger_and_laplace_do_not_import_torch() -> None:
    """Datasite processes that only charge Laplace releases must not pay torch's import."""
    import subprocess
    import sys

    code = (
        "import sys, fedmugrep.privacy, fedmugrep.privacy.ledger, fedmugrep.privacy.laplace, "
        "fedmugrep.privacy.audit; "
        "assert 'torch' not in sys.modules and 'opacus' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

"""The :class:`Ledger`: SQLite storage, caps, charges and budgets of one datasite's ledger.

The records it stores are in :mod:`~fedmugrep.privacy.ledger.entries`; :meth:`Ledger.verify`
reads the rows and hands them to :func:`~fedmugrep.privacy.ledger.verify.verify_chain`.

Totals are computed by the accountant registered with Opacus under :data:`LEDGER_ACCOUNTANT`,
created through Opacus's registry (:func:`fedmugrep.privacy.accountant.create_accountant`):
a fresh one per computation composes the pair's charged events and reports ε at the cap's δ.
A process that has not imported opacus has no registry yet; there the ledger computes what
the accountant fedmugrep registers would report (:class:`_OpacusFreeAccountant`), so that
processes charging only Laplace releases import neither opacus nor torch.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fedmugrep.errors import BudgetExceededError, ConfigError, PrivacyParameterError
from fedmugrep.privacy.analysis.composition import PrivacySpent, compose_events
from fedmugrep.privacy.events import (
    GaussianEvent,
    LaplaceEvent,
    PrivacyEvent,
    SubsampledGaussianEvent,
    UnsupportedEventError,
    event_from_dict,
)
from fedmugrep.privacy.ledger.entries import (
    COLUMNS,
    GENESIS_HASH,
    LEDGER_FILENAME,
    SCHEMA_VERSION,
    STATUS_CAP,
    STATUS_CHARGED,
    STATUS_REFUSED,
    BudgetStatus,
    LedgerEntry,
    LedgerHead,
    VerificationReport,
    canonical_json,
    payload_digest,
)
from fedmugrep.privacy.ledger.verify import verify_chain

__all__ = ["LEDGER_ACCOUNTANT", "Ledger"]

T = TypeVar("T")

#: Name, in Opacus's accountant registry, of the accountant the ledger composes with.
LEDGER_ACCOUNTANT = "fedmugrep_rdp"
#: The module holding Opacus's accountant registry.
_OPACUS_REGISTRY = "opacus.accountants.registry"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    status TEXT NOT NULL,
    data_scientist TEXT NOT NULL,
    request_id TEXT NOT NULL,
    dataset TEXT NOT NULL,
    mechanism TEXT NOT NULL,
    sensitivity REAL,
    scale REAL,
    noise_multiplier REAL,
    sample_rate REAL,
    steps INTEGER,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    total_epsilon REAL NOT NULL,
    cap_epsilon REAL,
    events TEXT NOT NULL,
    payload_sha256 TEXT,
    note TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    entry_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_budget ON entries (data_scientist, dataset, status);
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    count INTEGER NOT NULL,
    last_hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _finite(x: float) -> float:
    """JSON has no infinity: an infinite ε (e.g. Gaussian events at δ = 0) is stored as the
    largest double."""
    return float(x) if math.isfinite(x) else sys.float_info.max


def _check_name(name: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string (got {value!r}); pass an identifier")
    return value


def _summary(events: Sequence[PrivacyEvent]) -> dict[str, Any]:
    """Sensitivity/scale/σ/q/steps columns: set when all events of that kind agree."""

    def common(values: list[float]) -> float | None:
        return float(values[0]) if values and all(v == values[0] for v in values) else None

    lap = [e for e in events if isinstance(e, LaplaceEvent)]
    sg = [e for e in events if isinstance(e, SubsampledGaussianEvent)]
    gauss = [e for e in events if isinstance(e, GaussianEvent)]
    sigmas = [e.noise_multiplier for e in sg] + [e.noise_multiplier for e in gauss]
    return {
        "sensitivity": common([e.sensitivity for e in lap]),
        "scale": common([e.scale for e in lap]),
        "noise_multiplier": common(sigmas),
        "sample_rate": common([e.sample_rate for e in sg]),
        "steps": int(sum(e.steps for e in sg)) if sg else None,
    }


class _Accountant(Protocol):
    """What the ledger needs of an accountant (as
    :class:`~fedmugrep.privacy.accountant.FedMugRepAccountant` provides it)."""

    def compose(self, event: PrivacyEvent) -> None: ...

    def get_privacy_spent(self, *, delta: float) -> PrivacySpent: ...


class _OpacusFreeAccountant:
    """The registered accountant's result, for a process that has not imported opacus.

    Opacus's registry lives in opacus: while opacus is not imported nothing is registered in
    it, and importing :mod:`fedmugrep.privacy.accountant` registers
    :class:`~fedmugrep.privacy.accountant.FedMugRepAccountant` under
    :data:`LEDGER_ACCOUNTANT`. That accountant reports
    :func:`~fedmugrep.privacy.analysis.composition.compose_events` of the events in the order
    composed, which is what this one computes, without importing opacus (and torch).
    """

    def __init__(self) -> None:
        self.events: list[PrivacyEvent] = []

    def compose(self, event: PrivacyEvent) -> None:
        self.events.append(event)

    def get_privacy_spent(self, *, delta: float) -> PrivacySpent:
        return compose_events(self.events, delta=delta)


def _accountant() -> _Accountant:
    """A fresh :data:`LEDGER_ACCOUNTANT`, created by Opacus's accountant registry.

    In a process that has not imported opacus, an :class:`_OpacusFreeAccountant` (the same
    numbers): the registry does not exist yet, so it can hold nothing else.

    Raises:
        ConfigError: the class registered under the name is not a fedmugrep accountant.
    """
    if _OPACUS_REGISTRY not in sys.modules:
        return _OpacusFreeAccountant()
    from fedmugrep.privacy.accountant import create_accountant  # deferred: loads torch

    return create_accountant(LEDGER_ACCOUNTANT)


def _spent(events: Sequence[PrivacyEvent], delta: float) -> PrivacySpent:
    """Cost of ``events`` at ``delta``, as the registered accountant reports it."""
    accountant = _accountant()
    for event in events:
        accountant.compose(event)
    return accountant.get_privacy_spent(delta=delta)


def _before_after(
    prior: Sequence[PrivacyEvent], events: Sequence[PrivacyEvent], delta: float
) -> tuple[float, float]:
    """ε at ``delta`` of ``prior``, then of ``prior`` and ``events``, from one accountant."""
    accountant = _accountant()
    for event in prior:
        accountant.compose(event)
    before = accountant.get_privacy_spent(delta=delta).epsilon
    for event in events:
        accountant.compose(event)
    return before, accountant.get_privacy_spent(delta=delta).epsilon


def _refusal(
    entry: LedgerEntry, cap_eps: float | None, before: float, after: float
) -> BudgetExceededError:
    """The error for the refusal recorded as ``entry``."""
    who, dataset = entry.data_scientist, entry.dataset
    if cap_eps is None:
        return BudgetExceededError(
            f"no privacy budget cap is set for data scientist {who!r} on "
            f"dataset {dataset!r}; nothing was released (refusal recorded as entry "
            f"{entry.seq}). Ask the data owner to set one: Ledger.set_cap(...)"
        )
    return BudgetExceededError(
        f"request {entry.request_id!r} needs epsilon {after - before:.12g} more, but "
        f"{who!r} has spent {before:.12g} of the cap {cap_eps:g} "
        f"(delta={entry.delta:g}) on dataset {dataset!r}; the total would be {after:.12g}. "
        f"Nothing was released (refusal recorded as entry {entry.seq}). Use more noise "
        "or fewer releases, or ask the data owner to raise the cap"
    )


class Ledger:
    """The privacy ledger of one datasite (see :mod:`fedmugrep.privacy.ledger`).

    Args:
        home: the datasite's home folder; the ledger is ``home / "privacy_ledger.sqlite"``.
        create: create the folder and an empty ledger if missing (``False`` for auditors:
            a missing ledger is then an error, never silently created).
        timeout: seconds to wait for another process's write lock.

    Raises:
        ConfigError: ``create`` is false and there is no ledger, or the accountant registered
            under :data:`LEDGER_ACCOUNTANT` is not a fedmugrep accountant.

    Example:
        >>> ledger = Ledger(home)
        >>> ledger.set_cap("alice", "sales", epsilon=8.0, delta=1e-5)
        >>> noised = mechanism.release(stat)                 # not yet released
        >>> ledger.charge(data_scientist="alice", request_id="r1", dataset="sales",
        ...               mechanism="laplace", events=[mechanism.event()], payload=noised)
        >>> send(noised)                                      # only after charge returned
    """

    def __init__(self, home: str | Path, *, create: bool = True, timeout: float = 60.0) -> None:
        self.home = Path(home)
        self.path = self.home / LEDGER_FILENAME
        self.timeout = float(timeout)
        _accountant()  # resolve it now: a misregistered accountant fails here, not in a charge
        if not self.path.exists():
            if not create:
                raise ConfigError(
                    f"no privacy ledger at {self.path}; pass the datasite's home folder "
                    "(the one holding privacy_ledger.sqlite)"
                )
            self.home.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            if create:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (SCHEMA_VERSION,),
                )
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('created', ?)", (_now(),)
                )
                conn.execute(
                    "INSERT OR IGNORE INTO head (id, count, last_hash) VALUES (1, 0, ?)",
                    (GENESIS_HASH,),
                )
                conn.execute("COMMIT")
            # owner-only: the ledger names data scientists and what they received
            for suffix in ("", "-wal", "-shm"):
                with suppress(OSError):
                    os.chmod(f"{self.path}{suffix}", 0o600)

    def __repr__(self) -> str:
        return f"Ledger(path={str(self.path)!r})"

    # -- connection handling --------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            conn.execute("PRAGMA synchronous=FULL")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    @staticmethod
    def _row_to_entry(row: Sequence[Any]) -> LedgerEntry:
        return LedgerEntry(*row)

    def _select(
        self, conn: sqlite3.Connection, where: str = "", args: tuple = ()
    ) -> list[LedgerEntry]:
        sql = f"SELECT {', '.join(COLUMNS)} FROM entries {where} ORDER BY seq"
        return [self._row_to_entry(r) for r in conn.execute(sql, args)]

    # -- reading --------------------------------------------------------------------------
    def entries(self) -> list[LedgerEntry]:
        """All entries in ledger order."""
        with self._connect() as conn:
            return self._select(conn)

    def head(self) -> LedgerHead:
        """The stored head (entry count, last hash). Record it after a clean :meth:`verify`."""
        with self._connect() as conn:
            row = conn.execute("SELECT count, last_hash FROM head WHERE id = 1").fetchone()
        if row is None:
            return LedgerHead(0, GENESIS_HASH)
        return LedgerHead(int(row[0]), str(row[1]))

    def _cap(self, conn: sqlite3.Connection, ds: str, dataset: str) -> LedgerEntry | None:
        rows = self._select(
            conn,
            "WHERE status = ? AND data_scientist = ? AND dataset = ?",
            (STATUS_CAP, ds, dataset),
        )
        return rows[-1] if rows else None

    def _charged_events(
        self, conn: sqlite3.Connection, ds: str, dataset: str
    ) -> list[PrivacyEvent]:
        out: list[PrivacyEvent] = []
        sql = (
            "SELECT events FROM entries WHERE status = ? AND data_scientist = ? AND dataset = ? "
            "ORDER BY seq"
        )
        for (events_json,) in conn.execute(sql, (STATUS_CHARGED, ds, dataset)):
            out.extend(event_from_dict(e) for e in json.loads(events_json))
        return out

    def pairs(self) -> list[tuple[str, str]]:
        """Every (data scientist, dataset) pair that has a cap or an entry, sorted."""
        with self._connect() as conn:
            rows = conn.execute("SELECT DISTINCT data_scientist, dataset FROM entries").fetchall()
        return sorted((str(a), str(b)) for a, b in rows)

    def cap(self, data_scientist: str, dataset: str) -> tuple[float, float] | None:
        """The cap ``(epsilon, delta)`` in force for the pair, or ``None``."""
        with self._connect() as conn:
            entry = self._cap(conn, data_scientist, dataset)
        return None if entry is None else (float(entry.cap_epsilon or 0.0), entry.delta)

    def spent(self, data_scientist: str, dataset: str, delta: float | None = None) -> float:
        """ε spent by the pair, recomputed from the charged events at ``delta``.

        ``delta`` defaults to the cap's δ.

        Raises:
            ConfigError: no ``delta`` given and no cap set for the pair.
        """
        with self._connect() as conn:
            if delta is None:
                cap = self._cap(conn, data_scientist, dataset)
                if cap is None:
                    raise ConfigError(
                        f"no cap set for ({data_scientist!r}, {dataset!r}), so no default delta; "
                        "pass delta=..."
                    )
                delta = cap.delta
            events = self._charged_events(conn, data_scientist, dataset)
        return _spent(events, delta).epsilon

    def budget(self, data_scientist: str, dataset: str) -> BudgetStatus:
        """Cap, spent, remaining and release counts of one pair."""
        with self._connect() as conn:
            conn.execute("BEGIN")
            try:
                cap = self._cap(conn, data_scientist, dataset)
                rows = self._select(
                    conn, "WHERE data_scientist = ? AND dataset = ?", (data_scientist, dataset)
                )
            finally:
                conn.execute("COMMIT")
        return self._status(data_scientist, dataset, cap, rows)

    def budgets(self) -> list[BudgetStatus]:
        """:meth:`budget` for every pair, from one consistent snapshot."""
        with self._connect() as conn:
            conn.execute("BEGIN")
            try:
                rows = self._select(conn)
            finally:
                conn.execute("COMMIT")
        by_pair: dict[tuple[str, str], list[LedgerEntry]] = defaultdict(list)
        for r in rows:
            by_pair[(r.data_scientist, r.dataset)].append(r)
        out = []
        for (ds, dataset), pair_rows in sorted(by_pair.items()):
            caps = [r for r in pair_rows if r.status == STATUS_CAP]
            out.append(self._status(ds, dataset, caps[-1] if caps else None, pair_rows))
        return out

    @staticmethod
    def _status(
        ds: str, dataset: str, cap: LedgerEntry | None, rows: list[LedgerEntry]
    ) -> BudgetStatus:
        delta = cap.delta if cap is not None else 0.0
        charged = [r for r in rows if r.status == STATUS_CHARGED]
        events = [e for r in charged for e in r.privacy_events()]
        spent = _spent(events, delta)
        cap_eps = None if cap is None else float(cap.cap_epsilon or 0.0)
        return BudgetStatus(
            data_scientist=ds,
            dataset=dataset,
            cap_epsilon=cap_eps,
            cap_delta=None if cap is None else cap.delta,
            spent=spent,
            remaining=None if cap_eps is None else cap_eps - spent.epsilon,
            releases=dict(sorted(Counter(r.mechanism for r in charged).items())),
            refusals=sum(1 for r in rows if r.status == STATUS_REFUSED),
        )

    # -- writing --------------------------------------------------------------------------
    def _append(self, conn: sqlite3.Connection, **values: Any) -> LedgerEntry:
        head = conn.execute("SELECT count, last_hash FROM head WHERE id = 1").fetchone()
        count, prev_hash = (0, GENESIS_HASH) if head is None else (int(head[0]), str(head[1]))
        draft = LedgerEntry(
            seq=count + 1, time=_now(), prev_hash=prev_hash, entry_hash="", **values
        )
        entry = LedgerEntry(**{**asdict(draft), "entry_hash": draft.computed_hash()})
        conn.execute(
            f"INSERT INTO entries ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            tuple(getattr(entry, c) for c in COLUMNS),
        )
        conn.execute(
            "INSERT OR REPLACE INTO head (id, count, last_hash) VALUES (1, ?, ?)",
            (entry.seq, entry.entry_hash),
        )
        return entry

    def set_cap(
        self, data_scientist: str, dataset: str, *, epsilon: float, delta: float, note: str = ""
    ) -> LedgerEntry:
        """Set (or change) the pair's cap; recorded as a ``cap_set`` entry in the chain.

        Lowering a cap below what was spent is allowed: further charges are then refused.
        """
        _check_name("data_scientist", data_scientist)
        _check_name("dataset", dataset)
        if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon >= 0):
            raise PrivacyParameterError(
                f"cap epsilon must be >= 0 (got {epsilon}); pass the budget, e.g. epsilon=8.0"
            )
        if not (isinstance(delta, (int, float)) and 0 <= delta < 1):
            raise PrivacyParameterError(
                f"cap delta must be in [0, 1) (got {delta}); pass e.g. delta=1e-5"
            )
        with self._write() as conn:
            spent = _spent(
                self._charged_events(conn, data_scientist, dataset), float(delta)
            ).epsilon
            return self._append(
                conn,
                status=STATUS_CAP,
                data_scientist=data_scientist,
                request_id="",
                dataset=dataset,
                mechanism="cap",
                sensitivity=None,
                scale=None,
                noise_multiplier=None,
                sample_rate=None,
                steps=None,
                epsilon=0.0,
                delta=float(delta),
                total_epsilon=float(spent),
                cap_epsilon=float(epsilon),
                events="[]",
                payload_sha256=None,
                note=str(note),
            )

    def _validate_events(self, events: Sequence[PrivacyEvent]) -> list[PrivacyEvent]:
        events = list(events)
        if not events:
            raise ConfigError("events must list at least one privacy event; pass mechanism.event()")
        for e in events:
            if not isinstance(e, (LaplaceEvent, GaussianEvent, SubsampledGaussianEvent)):
                raise UnsupportedEventError(
                    f"the ledger cannot account for {type(e).__name__}; use LaplaceEvent, "
                    "GaussianEvent or SubsampledGaussianEvent from fedmugrep.privacy.events"
                )
        return events

    def _charge(
        self,
        *,
        data_scientist: str,
        request_id: str,
        dataset: str,
        mechanism: str,
        events: Sequence[PrivacyEvent],
        payload: Any,
        note: str,
        record_success: bool,
    ) -> LedgerEntry | None:
        for name, value in (
            ("data_scientist", data_scientist),
            ("request_id", request_id),
            ("dataset", dataset),
            ("mechanism", mechanism),
        ):
            _check_name(name, value)
        events = self._validate_events(events)
        digest = payload_digest(payload) if record_success else None
        events_json = canonical_json([e.to_dict() for e in events])
        with self._write() as conn:
            cap = self._cap(conn, data_scientist, dataset)
            prior = self._charged_events(conn, data_scientist, dataset)
            delta = cap.delta if cap is not None else 0.0
            before, after = _before_after(prior, events, delta)
            cap_eps = None if cap is None else float(cap.cap_epsilon or 0.0)
            refused = cap_eps is None or not (after <= cap_eps)
            if not refused and not record_success:
                return None
            entry = self._append(
                conn,
                status=STATUS_REFUSED if refused else STATUS_CHARGED,
                data_scientist=data_scientist,
                request_id=request_id,
                dataset=dataset,
                mechanism=mechanism,
                **_summary(events),
                epsilon=_finite(after - before),
                delta=float(delta),
                total_epsilon=_finite(after),
                cap_epsilon=cap_eps,
                events=events_json,
                payload_sha256=None if refused else digest,
                note=str(note),
            )
        if refused:
            raise _refusal(entry, cap_eps, before, after)
        return entry

    def charge(
        self,
        *,
        data_scientist: str,
        request_id: str,
        dataset: str,
        mechanism: str,
        events: Sequence[PrivacyEvent],
        payload: Any,
        note: str = "",
    ) -> LedgerEntry:
        """Atomically check the pair's cap and record the release, or refuse it.

        In one exclusive transaction: recompute the pair's total with ``events`` added (at the
        cap's δ); if it stays within the cap, append a ``charged`` entry with the payload's
        hash and return it; otherwise append a ``refused`` entry and raise. The caller must
        release ``payload`` only after this returns (see :meth:`charge_then`).

        Args:
            data_scientist: who asked.
            request_id: the request (e.g. the PySyft request id).
            dataset: which private asset.
            mechanism: name of the release mechanism (e.g. ``"laplace"``, ``"dp_sgd"``).
            events: the privacy events the release consists of.
            payload: the noised value about to be released (only its hash is stored).
            note: free text.

        Returns:
            The recorded entry.

        Raises:
            BudgetExceededError: no cap is set or the cap would be exceeded; the refusal is
                recorded and nothing may be released.
            UnsupportedEventError: an event is not a fedmugrep event; nothing is recorded.
        """
        entry = self._charge(
            data_scientist=data_scientist,
            request_id=request_id,
            dataset=dataset,
            mechanism=mechanism,
            events=events,
            payload=payload,
            note=note,
            record_success=True,
        )
        assert entry is not None
        return entry

    def charge_then(
        self,
        compute: Callable[[], T],
        *,
        data_scientist: str,
        request_id: str,
        dataset: str,
        mechanism: str,
        events: Sequence[PrivacyEvent],
        note: str = "",
    ) -> T:
        """Check the budget, compute the noised value, charge it, and only then return it.

        1. If the events would not fit, record a refusal and raise — ``compute`` never runs.
        2. ``value = compute()`` — it must only compute (noise included), never send anything.
        3. :meth:`charge` with ``payload=value``; if another process spent the budget in the
           meantime this raises and ``value`` is dropped, never returned.
        4. Return ``value``: the caller may now release it.

        Raises:
            BudgetExceededError: as :meth:`charge`; nothing is released.
        """
        common = dict(
            data_scientist=data_scientist,
            request_id=request_id,
            dataset=dataset,
            mechanism=mechanism,
            events=events,
            note=note,
        )
        self._charge(**common, payload=None, record_success=False)  # type: ignore[arg-type]
        value = compute()
        self._charge(**common, payload=value, record_success=True)  # type: ignore[arg-type]
        return value

    # -- verification ---------------------------------------------------------------------
    def verify(self, expected_head: LedgerHead | str | None = None) -> VerificationReport:
        """Check every hash and link; name edited, deleted, inserted, reordered, truncated entries.

        Args:
            expected_head: a head recorded earlier (:meth:`head`, or its ``"COUNT:HASH"`` text);
                the ledger must still contain that entry at that position. This is what catches
                a consistent rewrite of the whole chain.

        Returns:
            A :class:`VerificationReport` (``ok`` is false when anything was found).
        """
        if isinstance(expected_head, str):
            expected_head = LedgerHead.parse(expected_head)
        with self._connect() as conn:
            conn.execute("BEGIN")
            try:
                rows = self._select(conn)
                head_row = conn.execute("SELECT count, last_hash FROM head WHERE id = 1").fetchone()
            finally:
                conn.execute("COMMIT")
        return verify_chain(rows, head_row, expected_head)

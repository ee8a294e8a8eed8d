"""The per-datasite privacy ledger (C9): an append-only, hash-chained budget filter in SQLite.

One ledger per datasite, at ``<home>/privacy_ledger.sqlite``. Every entry is an immutable
record — time, data scientist, request id, dataset, mechanism, sensitivity, scale or noise
multiplier, sample rate, steps, ε and δ charged, the SHA-256 of the released payload — plus
the hash of the previous entry, so the entries form a chain.

**A filter, not a log.** :meth:`Ledger.charge` runs in one ``BEGIN IMMEDIATE`` transaction:
it recomputes the total that the (data scientist, dataset) pair would reach with the new
events (with the accountant's composition,
:func:`~fedmugrep.privacy.analysis.composition.compose_events`, at the cap's δ), and either
records the release or records a refusal and raises
:class:`~fedmugrep.errors.BudgetExceededError`. SQLite's write lock serialises concurrent
processes, so no interleaving can overspend; WAL journaling with ``synchronous=FULL`` makes
every committed entry survive a crash or restart, and an uncommitted one vanish entirely.
Callers compute the noised value, charge it, and release it only if ``charge`` returned —
:meth:`Ledger.charge_then` does exactly that.

**Tamper evidence.** ``entry_hash = sha256(canonical JSON of every field except seq and
entry_hash)``; the JSON includes ``prev_hash``, so the chain fixes the order. A ``head``
row (entry count and last hash) is updated in the same transaction. :meth:`Ledger.verify`
recomputes every hash and walks the chain, naming edited, deleted, inserted and reordered
entries and a truncated tail. *Limit:* there is no secret key, so someone with write access
who rewrites the whole chain consistently (and the head) is caught only against a head
recorded elsewhere earlier: auditors keep :meth:`Ledger.head` and pass it to
``verify(expected_head=...)``. Triggers reject UPDATE and DELETE on entries to stop accidents,
not attackers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import sqlite3
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

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

__all__ = [
    "GENESIS_HASH",
    "LEDGER_FILENAME",
    "BudgetStatus",
    "Ledger",
    "LedgerEntry",
    "LedgerHead",
    "LedgerProblem",
    "VerificationReport",
    "canonical_json",
    "payload_digest",
]

T = TypeVar("T")

LEDGER_FILENAME = "privacy_ledger.sqlite"
GENESIS_HASH = "0" * 64
SCHEMA_VERSION = "1"
STATUS_CHARGED, STATUS_REFUSED, STATUS_CAP = "charged", "refused", "cap_set"

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


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, shortest float repr, no NaN)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def payload_digest(payload: Any) -> str:
    """SHA-256 (hex) of a released payload, recomputable by an auditor holding the payload.

    bytes → the bytes; str → UTF-8; NumPy array / torch tensor → ``dtype|shape|`` header plus
    the C-order bytes; numbers → their ``repr``; JSON-able containers → canonical JSON;
    anything else → its pickle (protocol 5).
    """
    h = hashlib.sha256()
    if isinstance(payload, (bytes, bytearray, memoryview)):
        h.update(bytes(payload))
    elif isinstance(payload, str):
        h.update(payload.encode("utf-8"))
    elif type(payload).__module__.split(".")[0] == "torch":
        arr = payload.detach().to("cpu").numpy()  # type: ignore[attr-defined]
        return payload_digest(np.ascontiguousarray(arr))
    elif isinstance(payload, np.ndarray):
        arr = np.ascontiguousarray(payload)
        h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    elif isinstance(payload, (bool, int, float, np.integer, np.floating)):
        h.update(repr(payload.item() if hasattr(payload, "item") else payload).encode())
    else:
        try:
            h.update(canonical_json(payload).encode("utf-8"))
        except (TypeError, ValueError):
            h.update(pickle.dumps(payload, protocol=5))
    return h.hexdigest()


@dataclass(frozen=True)
class LedgerEntry:
    """One immutable ledger record.

    Attributes:
        seq: position in the ledger (1-based; not hashed — the chain fixes the order).
        time: UTC ISO-8601 time of recording.
        status: ``"charged"`` (released), ``"refused"`` (budget exceeded, nothing released)
            or ``"cap_set"`` (the data owner set a cap).
        data_scientist, request_id, dataset, mechanism: who, which request, what, how.
        sensitivity, scale: of the Laplace release (``None`` if not one Laplace setting).
        noise_multiplier, sample_rate, steps: of DP-SGD or Gaussian releases.
        epsilon: increase of the pair's total ε at ``delta`` (for a refusal: the increase
            requested; for a cap: 0).
        delta: δ the totals are computed at (the cap's δ).
        total_epsilon: the pair's total after this entry (for a refusal: the total it would
            have reached).
        cap_epsilon: the cap in force (the new cap for ``cap_set``).
        events: canonical JSON list of the events charged.
        payload_sha256: SHA-256 of the released payload (``None`` unless charged).
        note: free text.
        prev_hash: ``entry_hash`` of the previous entry (:data:`GENESIS_HASH` for the first).
        entry_hash: SHA-256 of the canonical JSON of all other fields but ``seq``.
    """

    seq: int
    time: str
    status: str
    data_scientist: str
    request_id: str
    dataset: str
    mechanism: str
    sensitivity: float | None
    scale: float | None
    noise_multiplier: float | None
    sample_rate: float | None
    steps: int | None
    epsilon: float
    delta: float
    total_epsilon: float
    cap_epsilon: float | None
    events: str
    payload_sha256: str | None
    note: str
    prev_hash: str
    entry_hash: str

    def content(self) -> dict[str, Any]:
        """The hashed fields (everything but ``seq`` and ``entry_hash``)."""
        data = asdict(self)
        data.pop("seq")
        data.pop("entry_hash")
        return data

    def computed_hash(self) -> str:
        """Hash recomputed from the fields (equals ``entry_hash`` unless tampered)."""
        return hashlib.sha256(canonical_json(self.content()).encode("utf-8")).hexdigest()

    def privacy_events(self) -> list[PrivacyEvent]:
        """The events charged, as event records."""
        return [event_from_dict(e) for e in json.loads(self.events)]


_COLUMNS = tuple(f.name for f in fields(LedgerEntry))


@dataclass(frozen=True)
class LedgerHead:
    """Number of entries and the last entry's hash: what an auditor records to detect rewrites."""

    count: int
    last_hash: str

    def __str__(self) -> str:
        return f"{self.count}:{self.last_hash}"

    @classmethod
    def parse(cls, text: str) -> LedgerHead:
        """Parse ``"COUNT:HASH"`` (as printed by ``str(head)``) or a bare ``HASH`` (count -1)."""
        text = text.strip()
        count_s, sep, last_hash = text.partition(":")
        if not sep:
            count_s, last_hash = "-1", text
        try:
            count = int(count_s)
        except ValueError:
            raise ConfigError(
                f"expected head must look like COUNT:HASH (got {text!r}); copy it from "
                "`fedmugrep audit --home DIR`"
            ) from None
        if len(last_hash) != 64 or any(c not in "0123456789abcdef" for c in last_hash.lower()):
            raise ConfigError(
                f"expected head hash must be 64 hex digits (got {last_hash!r}); copy it from "
                "`fedmugrep audit --home DIR`"
            )
        return cls(count, last_hash.lower())


@dataclass(frozen=True)
class LedgerProblem:
    """One finding of :meth:`Ledger.verify`.

    Attributes:
        kind: ``"edited"``, ``"deleted"``, ``"inserted"``, ``"reordered"``, ``"truncated"``,
            ``"head"`` (the head record disagrees) or ``"expected_head"`` (the ledger
            disagrees with the head an auditor recorded).
        seqs: the entries concerned (``seq`` values; for deletions, the missing ones if known).
        message: a sentence saying what was found.
    """

    kind: str
    seqs: tuple[int, ...]
    message: str


@dataclass(frozen=True)
class VerificationReport:
    """Result of :meth:`Ledger.verify`.

    Attributes:
        ok: no problem found.
        entries: number of entries read.
        head: count and last hash of the chain as found (record it to detect later rewrites).
        problems: what was found, in ledger order.
    """

    ok: bool
    entries: int
    head: LedgerHead
    problems: tuple[LedgerProblem, ...] = field(default_factory=tuple)

    def kinds(self) -> set[str]:
        """The kinds of problems found."""
        return {p.kind for p in self.problems}

    def __str__(self) -> str:
        if self.ok:
            return f"ledger OK: {self.entries} entries, head {self.head}"
        lines = [f"ledger FAILED verification ({len(self.problems)} problem(s)):"]
        lines += [f"  - [{p.kind}] {p.message}" for p in self.problems]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head": str(self.head),
            "problems": [asdict(p) for p in self.problems],
        }


@dataclass(frozen=True)
class BudgetStatus:
    """Budget of one (data scientist, dataset) pair.

    Attributes:
        data_scientist, dataset: the pair.
        cap_epsilon, cap_delta: the data owner's cap (``None`` if never set).
        spent: recomputed cost of every charged event at the cap's δ.
        remaining: ``cap_epsilon - spent.epsilon`` (``None`` without cap).
        releases: number of charged releases per mechanism.
        refusals: number of refused requests.
    """

    data_scientist: str
    dataset: str
    cap_epsilon: float | None
    cap_delta: float | None
    spent: PrivacySpent
    remaining: float | None
    releases: dict[str, int]
    refusals: int


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


class Ledger:
    """The privacy ledger of one datasite (see the module docstring).

    Args:
        home: the datasite's home folder; the ledger is ``home / "privacy_ledger.sqlite"``.
        create: create the folder and an empty ledger if missing (``False`` for auditors:
            a missing ledger is then an error, never silently created).
        timeout: seconds to wait for another process's write lock.

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
        sql = f"SELECT {', '.join(_COLUMNS)} FROM entries {where} ORDER BY seq"
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
        return compose_events(events, delta=delta).epsilon

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
        spent = compose_events(events, delta=delta)
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
            f"INSERT INTO entries ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            tuple(getattr(entry, c) for c in _COLUMNS),
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
            spent = compose_events(
                self._charged_events(conn, data_scientist, dataset), delta=float(delta)
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
            before = compose_events(prior, delta=delta).epsilon
            after = compose_events(prior + events, delta=delta).epsilon
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
            if cap_eps is None:
                raise BudgetExceededError(
                    f"no privacy budget cap is set for data scientist {data_scientist!r} on "
                    f"dataset {dataset!r}; nothing was released (refusal recorded as entry "
                    f"{entry.seq}). Ask the data owner to set one: Ledger.set_cap(...)"
                )
            raise BudgetExceededError(
                f"request {request_id!r} needs epsilon {after - before:.12g} more, but "
                f"{data_scientist!r} has spent {before:.12g} of the cap {cap_eps:g} "
                f"(delta={delta:g}) on dataset {dataset!r}; the total would be {after:.12g}. "
                f"Nothing was released (refusal recorded as entry {entry.seq}). Use more noise "
                "or fewer releases, or ask the data owner to raise the cap"
            )
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
        return _verify(rows, head_row, expected_head)


def _verify(
    rows: list[LedgerEntry],
    head_row: tuple[int, str] | None,
    expected_head: LedgerHead | None,
) -> VerificationReport:
    problems: list[LedgerProblem] = []

    def label(e: LedgerEntry) -> str:
        what = f"{e.status} {e.mechanism}" + (f", request {e.request_id}" if e.request_id else "")
        return f"entry {e.seq} ({what}, {e.data_scientist}/{e.dataset})"

    # 1. contents
    for e in rows:
        if e.computed_hash() != e.entry_hash:
            problems.append(
                LedgerProblem(
                    "edited", (e.seq,), f"{label(e)}: its fields no longer match its hash"
                )
            )

    by_prev: dict[str, list[LedgerEntry]] = defaultdict(list)
    for e in rows:
        by_prev[e.prev_hash].append(e)
    hashes = {e.entry_hash for e in rows}
    stored_head_hash = str(head_row[1]) if head_row is not None else None
    head_count = int(head_row[0]) if head_row is not None else None
    present_seqs = {e.seq for e in rows}

    def run_length(start: LedgerEntry) -> int:
        n, cur, seen = 0, start, set()
        while cur is not None and cur.seq not in seen:
            seen.add(cur.seq)
            n += 1
            nxt = by_prev.get(cur.entry_hash, [])
            cur = nxt[0] if nxt else None
        return n

    # 2. walk the chain from the genesis hash
    chain: list[LedgerEntry] = []
    placed: set[int] = set()
    inserted: list[LedgerEntry] = []
    inserted_seqs: set[int] = set()
    cur_hash = GENESIS_HASH
    while True:
        cands = [
            e
            for e in by_prev.get(cur_hash, [])
            if e.seq not in placed and e.seq not in inserted_seqs
        ]
        if cands:
            best = cands[0]
            if len(cands) > 1:  # a fork: the branch that carries the chain on is the original
                best = max(
                    cands, key=lambda e: (run_length(e), e.entry_hash == stored_head_hash, -e.seq)
                )
            for other in cands:
                if other is not best:
                    inserted.append(other)
                    inserted_seqs.add(other.seq)
                    prev = chain[-1].seq if chain else None
                    where = f"entry {prev}" if prev is not None else "the start of the ledger"
                    problems.append(
                        LedgerProblem(
                            "inserted",
                            (other.seq,),
                            f"{label(other)} was inserted: it claims to follow {where}, "
                            f"which is already followed by entry {best.seq}",
                        )
                    )
            chain.append(best)
            placed.add(best.seq)
            cur_hash = best.entry_hash
            continue
        rest = [e for e in rows if e.seq not in placed and e.seq not in inserted_seqs]
        if not rest:
            break
        orphans = [e for e in rest if e.prev_hash not in hashes and e.prev_hash != GENESIS_HASH]
        if not orphans:
            for e in rest:  # linked only to entries that already have a successor, or a cycle
                inserted_seqs.add(e.seq)
                problems.append(
                    LedgerProblem("inserted", (e.seq,), f"{label(e)} is not part of the hash chain")
                )
            break
        nxt = orphans[0]
        prev_e = chain[-1] if chain else None
        lo = prev_e.seq if prev_e is not None else 0
        missing = tuple(s for s in range(lo + 1, nxt.seq) if s not in present_seqs)
        if missing:
            problems.append(
                LedgerProblem(
                    "deleted",
                    missing,
                    f"entr{'y' if len(missing) == 1 else 'ies'} {_fmt_seqs(missing)} "
                    f"{'was' if len(missing) == 1 else 'were'} deleted: {label(nxt)} records a "
                    f"predecessor hash {nxt.prev_hash[:12]}… that is no longer in the ledger",
                )
            )
        else:
            after = f"entry {prev_e.seq}" if prev_e is not None else "the start"
            fewer = head_count is not None and head_count > len(rows)
            kind = "deleted" if fewer else "edited"
            why = (
                "an entry before it was deleted and later entries renumbered"
                if fewer
                else f"entry {prev_e.seq if prev_e else '?'} was altered and re-hashed"
            )
            problems.append(
                LedgerProblem(
                    kind,
                    (nxt.seq,) if prev_e is None else (prev_e.seq, nxt.seq),
                    f"the hash chain is broken between {after} and {label(nxt)}: {why}",
                )
            )
        chain.append(nxt)
        placed.add(nxt.seq)
        cur_hash = nxt.entry_hash

    # 3. order: the chain's order must be the seq order
    chain_seqs = [e.seq for e in chain]
    sorted_seqs = sorted(chain_seqs)
    moved = tuple(s for s, t in zip(chain_seqs, sorted_seqs, strict=True) if s != t)
    if moved:
        problems.append(
            LedgerProblem(
                "reordered",
                tuple(sorted(moved)),
                f"entries {_fmt_seqs(sorted(moved))} are out of order: the hash chain puts them "
                f"in the order {', '.join(str(s) for s in moved)}",
            )
        )

    # 4. the tail against the stored head
    last = chain[-1] if chain else None
    found_head = LedgerHead(len(chain), last.entry_hash if last else GENESIS_HASH)
    if head_row is None:
        problems.append(LedgerProblem("head", (), "the head record is missing"))
    else:
        positions = {e.entry_hash: i for i, e in enumerate(chain)}
        pos = positions.get(stored_head_hash or "")
        if stored_head_hash == GENESIS_HASH and head_count == 0:
            pos = -1
        if pos is None:
            if head_count is not None and head_count > len(rows):
                problems.append(
                    LedgerProblem(
                        "truncated",
                        tuple(range(len(rows) + 1, head_count + 1)),
                        f"the ledger ends after {len(rows)} entries but its head records "
                        f"{head_count} entries ending in {stored_head_hash[:12]}…: the last "
                        f"{head_count - len(rows)} entr{'y was' if head_count - len(rows) == 1 else 'ies were'} removed",
                    )
                )
            else:
                problems.append(
                    LedgerProblem(
                        "head",
                        (),
                        f"the head records last hash {str(stored_head_hash)[:12]}…, which is not "
                        "in the ledger",
                    )
                )
        elif pos < len(chain) - 1:
            extra = tuple(e.seq for e in chain[pos + 1 :])
            problems.append(
                LedgerProblem(
                    "inserted",
                    extra,
                    f"entr{'y' if len(extra) == 1 else 'ies'} {_fmt_seqs(extra)} "
                    f"{'was' if len(extra) == 1 else 'were'} appended without going through the "
                    "ledger (the head does not cover them)",
                )
            )
        elif head_count != len(rows) and not any(
            p.kind in {"deleted", "inserted", "truncated"} for p in problems
        ):
            problems.append(
                LedgerProblem(
                    "head",
                    (),
                    f"the head records {head_count} entries but the ledger holds {len(rows)}",
                )
            )

    # 5. against a head recorded by an auditor
    if expected_head is not None and not (
        expected_head.count == 0 and expected_head.last_hash == GENESIS_HASH
    ):
        positions = {e.entry_hash: i + 1 for i, e in enumerate(chain)}
        at = positions.get(expected_head.last_hash)
        if at is None:
            problems.append(
                LedgerProblem(
                    "expected_head",
                    (),
                    f"the entry you recorded as head ({expected_head}) is not in the ledger: the "
                    "ledger was rewritten or truncated since you recorded it",
                )
            )
        elif expected_head.count >= 0 and at != expected_head.count:
            problems.append(
                LedgerProblem(
                    "expected_head",
                    (chain[at - 1].seq,),
                    f"the entry you recorded as head number {expected_head.count} is now number "
                    f"{at}: entries before it were inserted or deleted",
                )
            )

    problems.sort(key=lambda p: min(p.seqs) if p.seqs else 10**18)
    return VerificationReport(not problems, len(rows), found_head, tuple(problems))


def _fmt_seqs(seqs: Sequence[int]) -> str:
    seqs = list(seqs)
    if len(seqs) > 2 and seqs == list(range(seqs[0], seqs[-1] + 1)):
        return f"{seqs[0]}–{seqs[-1]}"
    return ", ".join(str(s) for s in seqs)

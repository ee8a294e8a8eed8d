"""The per-datasite privacy ledger (C9): an append-only, hash-chained budget filter in SQLite.

One ledger per datasite, at ``<home>/privacy_ledger.sqlite``. Every entry is an immutable
record — time, data scientist, request id, dataset, mechanism, sensitivity, scale or noise
multiplier, sample rate, steps, ε and δ charged, the SHA-256 of the released payload — plus
the hash of the previous entry, so the entries form a chain.

**A filter, not a log.** :meth:`Ledger.charge` runs in one ``BEGIN IMMEDIATE`` transaction:
it recomputes the total that the (data scientist, dataset) pair would reach with the new
events (with the accountant registered with Opacus under
:data:`~fedmugrep.privacy.ledger.store.LEDGER_ACCOUNTANT`, created through Opacus's registry,
at the cap's δ), and either records the release or records a refusal and raises
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

Layout (records apart from bookkeeping):

* :mod:`~fedmugrep.privacy.ledger.entries` — the immutable records (:class:`LedgerEntry`,
  :class:`LedgerHead`, :class:`VerificationReport`, :class:`BudgetStatus`, ...), canonical
  JSON, payload digests and the constants.
* :mod:`~fedmugrep.privacy.ledger.store` — :class:`Ledger`: the SQLite schema, connections,
  caps, charges and budgets.
* :mod:`~fedmugrep.privacy.ledger.verify` — the hash-chain verifier behind
  :meth:`Ledger.verify`.

The ledger imports neither opacus nor torch itself: where opacus is loaded it takes its
accountant from Opacus's registry, elsewhere it computes the same numbers without it (see
:mod:`~fedmugrep.privacy.ledger.store`).
"""

from __future__ import annotations

from fedmugrep.privacy.ledger.entries import (
    GENESIS_HASH,
    LEDGER_FILENAME,
    SCHEMA_VERSION,
    STATUS_CAP,
    STATUS_CHARGED,
    STATUS_REFUSED,
    BudgetStatus,
    LedgerEntry,
    LedgerHead,
    LedgerProblem,
    VerificationReport,
    canonical_json,
    payload_digest,
)
from fedmugrep.privacy.ledger.store import LEDGER_ACCOUNTANT, Ledger
from fedmugrep.privacy.ledger.verify import verify_chain

__all__ = [
    "GENESIS_HASH",
    "LEDGER_ACCOUNTANT",
    "LEDGER_FILENAME",
    "SCHEMA_VERSION",
    "STATUS_CAP",
    "STATUS_CHARGED",
    "STATUS_REFUSED",
    "BudgetStatus",
    "Ledger",
    "LedgerEntry",
    "LedgerHead",
    "LedgerProblem",
    "VerificationReport",
    "canonical_json",
    "payload_digest",
    "verify_chain",
]

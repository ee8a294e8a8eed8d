"""The ledger's immutable records, their canonical hashing, and the ledger's constants.

Nothing here touches SQLite: :mod:`~fedmugrep.privacy.ledger.store` writes and reads these
records, :mod:`~fedmugrep.privacy.ledger.verify` checks their hash chain.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from fedmugrep.errors import ConfigError
from fedmugrep.privacy.analysis.composition import PrivacySpent
from fedmugrep.privacy.events import PrivacyEvent, event_from_dict

__all__ = [
    "COLUMNS",
    "GENESIS_HASH",
    "LEDGER_FILENAME",
    "SCHEMA_VERSION",
    "STATUS_CAP",
    "STATUS_CHARGED",
    "STATUS_REFUSED",
    "BudgetStatus",
    "LedgerEntry",
    "LedgerHead",
    "LedgerProblem",
    "VerificationReport",
    "canonical_json",
    "payload_digest",
]

#: File name of a datasite's ledger inside its home folder.
LEDGER_FILENAME = "privacy_ledger.sqlite"
#: ``prev_hash`` of the first entry (and ``last_hash`` of an empty ledger's head).
GENESIS_HASH = "0" * 64
#: Value of ``schema_version`` in the ledger's ``meta`` table.
SCHEMA_VERSION = "1"
#: Entry statuses: a release charged, a request refused, a cap set by the data owner.
STATUS_CHARGED, STATUS_REFUSED, STATUS_CAP = "charged", "refused", "cap_set"


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


#: The ``entries`` table's columns, in :class:`LedgerEntry` field order.
COLUMNS = tuple(f.name for f in fields(LedgerEntry))


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
    """One finding of :meth:`~fedmugrep.privacy.ledger.Ledger.verify`.

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
    """Result of :meth:`~fedmugrep.privacy.ledger.Ledger.verify`.

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

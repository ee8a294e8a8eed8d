"""Verification of the ledger's hash chain (what :meth:`Ledger.verify
<fedmugrep.privacy.ledger.Ledger.verify>` reports).

:func:`verify_chain` runs five steps over the entries as stored (in ``seq`` order) and the
stored head row:

1. **contents** — every entry's hash is recomputed from its fields (``edited``);
2. **links** — the chain is walked from :data:`~fedmugrep.privacy.ledger.GENESIS_HASH`, each
   entry followed by the one naming its hash as ``prev_hash``; forks are ``inserted``
   entries, gaps are ``deleted`` (or ``edited`` and re-hashed) entries;
3. **order** — the chain's order must be the ``seq`` order (``reordered``);
4. **tail** — the chain must end at the stored head (``truncated``, ``inserted``, ``head``);
5. **auditor's head** — a head recorded earlier must still be in the chain at the same
   position (``expected_head``).

Pure functions of the rows: no SQLite here (:mod:`~fedmugrep.privacy.ledger.store` reads them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from fedmugrep.privacy.ledger.entries import (
    GENESIS_HASH,
    LedgerEntry,
    LedgerHead,
    LedgerProblem,
    VerificationReport,
)

__all__ = ["verify_chain"]

#: Sort key of problems that name no entry (they go last).
_NO_SEQ = 10**18


@dataclass(frozen=True)
class _Index:
    """Lookups over the stored rows and head, shared by the steps.

    Attributes:
        rows: the entries in ``seq`` order.
        by_prev: entries by the ``prev_hash`` they claim.
        hashes: every stored ``entry_hash``.
        present_seqs: every stored ``seq``.
        head_count, head_hash: the stored head row (``None`` when it is missing).
    """

    rows: list[LedgerEntry]
    by_prev: dict[str, list[LedgerEntry]]
    hashes: set[str]
    present_seqs: set[int]
    head_count: int | None
    head_hash: str | None


@dataclass
class _Walk:
    """Bookkeeping of step 2: the chain found so far and the entries set aside."""

    chain: list[LedgerEntry] = field(default_factory=list)
    placed: set[int] = field(default_factory=set)
    inserted: set[int] = field(default_factory=set)
    problems: list[LedgerProblem] = field(default_factory=list)

    def place(self, entry: LedgerEntry) -> None:
        self.chain.append(entry)
        self.placed.add(entry.seq)

    def is_free(self, entry: LedgerEntry) -> bool:
        return entry.seq not in self.placed and entry.seq not in self.inserted


def verify_chain(
    rows: list[LedgerEntry],
    head_row: tuple[int, str] | None,
    expected_head: LedgerHead | None,
) -> VerificationReport:
    """Check the entries' hashes and links, and the chain's end against the head(s).

    Args:
        rows: every stored entry, in ``seq`` order.
        head_row: the stored head ``(count, last_hash)``, or ``None`` when it is missing.
        expected_head: a head an auditor recorded earlier, or ``None``.

    Returns:
        The report; its problems are sorted by the first entry they name.
    """
    index = _index(rows, head_row)
    problems = _edited(rows)
    walk = _walk_chain(index)
    problems += walk.problems
    problems += _reordered(walk.chain)
    problems += _tail_problems(index, walk.chain, problems)
    problems += _expected_head_problems(walk.chain, expected_head)
    problems.sort(key=lambda p: min(p.seqs) if p.seqs else _NO_SEQ)
    last = walk.chain[-1] if walk.chain else None
    found_head = LedgerHead(len(walk.chain), last.entry_hash if last else GENESIS_HASH)
    return VerificationReport(not problems, len(rows), found_head, tuple(problems))


def _index(rows: list[LedgerEntry], head_row: tuple[int, str] | None) -> _Index:
    by_prev: dict[str, list[LedgerEntry]] = defaultdict(list)
    for e in rows:
        by_prev[e.prev_hash].append(e)
    return _Index(
        rows=rows,
        by_prev=by_prev,
        hashes={e.entry_hash for e in rows},
        present_seqs={e.seq for e in rows},
        head_count=int(head_row[0]) if head_row is not None else None,
        head_hash=str(head_row[1]) if head_row is not None else None,
    )


def _label(e: LedgerEntry) -> str:
    what = f"{e.status} {e.mechanism}" + (f", request {e.request_id}" if e.request_id else "")
    return f"entry {e.seq} ({what}, {e.data_scientist}/{e.dataset})"


def _fmt_seqs(seqs: Sequence[int]) -> str:
    seqs = list(seqs)
    if len(seqs) > 2 and seqs == list(range(seqs[0], seqs[-1] + 1)):
        return f"{seqs[0]}–{seqs[-1]}"
    return ", ".join(str(s) for s in seqs)


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


# -- step 1: contents -----------------------------------------------------------------------
def _edited(rows: list[LedgerEntry]) -> list[LedgerProblem]:
    """Entries whose fields no longer hash to their ``entry_hash``."""
    return [
        LedgerProblem("edited", (e.seq,), f"{_label(e)}: its fields no longer match its hash")
        for e in rows
        if e.computed_hash() != e.entry_hash
    ]


# -- step 2: links --------------------------------------------------------------------------
def _walk_chain(index: _Index) -> _Walk:
    """Follow the links from the genesis hash, bridging gaps and setting forks aside."""
    walk = _Walk()
    cur_hash = GENESIS_HASH
    while True:
        candidates = [e for e in index.by_prev.get(cur_hash, []) if walk.is_free(e)]
        if candidates:
            nxt: LedgerEntry | None = _take_successor(index, walk, candidates)
        else:
            rest = [e for e in index.rows if walk.is_free(e)]
            if not rest:
                break
            nxt = _bridge_gap(index, walk, rest)
            if nxt is None:
                break
        walk.place(nxt)
        cur_hash = nxt.entry_hash
    return walk


def _run_length(start: LedgerEntry, by_prev: dict[str, list[LedgerEntry]]) -> int:
    """Number of entries reachable by following first successors from ``start``."""
    n, cur, seen = 0, start, set()
    while cur is not None and cur.seq not in seen:
        seen.add(cur.seq)
        n += 1
        nxt = by_prev.get(cur.entry_hash, [])
        cur = nxt[0] if nxt else None
    return n


def _take_successor(index: _Index, walk: _Walk, candidates: list[LedgerEntry]) -> LedgerEntry:
    """The successor that carries the chain on; the other candidates were inserted."""
    best = candidates[0]
    if len(candidates) > 1:  # a fork: the branch that carries the chain on is the original
        best = max(
            candidates,
            key=lambda e: (_run_length(e, index.by_prev), e.entry_hash == index.head_hash, -e.seq),
        )
    for other in candidates:
        if other is best:
            continue
        walk.inserted.add(other.seq)
        prev = walk.chain[-1].seq if walk.chain else None
        where = f"entry {prev}" if prev is not None else "the start of the ledger"
        walk.problems.append(
            LedgerProblem(
                "inserted",
                (other.seq,),
                f"{_label(other)} was inserted: it claims to follow {where}, "
                f"which is already followed by entry {best.seq}",
            )
        )
    return best


def _bridge_gap(index: _Index, walk: _Walk, rest: list[LedgerEntry]) -> LedgerEntry | None:
    """Where the links stop: resume at the first entry whose predecessor is gone.

    Returns:
        That entry, or ``None`` when every unplaced entry links to a placed one (those are
        reported as inserted and the walk ends).
    """
    orphans = [e for e in rest if e.prev_hash not in index.hashes and e.prev_hash != GENESIS_HASH]
    if not orphans:
        for e in rest:  # linked only to entries that already have a successor, or a cycle
            walk.inserted.add(e.seq)
            walk.problems.append(
                LedgerProblem("inserted", (e.seq,), f"{_label(e)} is not part of the hash chain")
            )
        return None
    nxt = orphans[0]
    walk.problems.append(_break_problem(index, walk.chain[-1] if walk.chain else None, nxt))
    return nxt


def _break_problem(index: _Index, prev_e: LedgerEntry | None, nxt: LedgerEntry) -> LedgerProblem:
    """Why the chain breaks between ``prev_e`` and ``nxt``: a deletion or a re-hashed edit."""
    lo = prev_e.seq if prev_e is not None else 0
    missing = tuple(s for s in range(lo + 1, nxt.seq) if s not in index.present_seqs)
    if missing:
        n = len(missing)
        return LedgerProblem(
            "deleted",
            missing,
            f"entr{_plural(n, 'y', 'ies')} {_fmt_seqs(missing)} {_plural(n, 'was', 'were')} "
            f"deleted: {_label(nxt)} records a predecessor hash {nxt.prev_hash[:12]}… that is "
            "no longer in the ledger",
        )
    after = f"entry {prev_e.seq}" if prev_e is not None else "the start"
    fewer = index.head_count is not None and index.head_count > len(index.rows)
    why = (
        "an entry before it was deleted and later entries renumbered"
        if fewer
        else f"entry {prev_e.seq if prev_e else '?'} was altered and re-hashed"
    )
    return LedgerProblem(
        "deleted" if fewer else "edited",
        (nxt.seq,) if prev_e is None else (prev_e.seq, nxt.seq),
        f"the hash chain is broken between {after} and {_label(nxt)}: {why}",
    )


# -- step 3: order --------------------------------------------------------------------------
def _reordered(chain: list[LedgerEntry]) -> list[LedgerProblem]:
    """The entries whose chain position differs from their ``seq`` position."""
    chain_seqs = [e.seq for e in chain]
    moved = tuple(s for s, t in zip(chain_seqs, sorted(chain_seqs), strict=True) if s != t)
    if not moved:
        return []
    return [
        LedgerProblem(
            "reordered",
            tuple(sorted(moved)),
            f"entries {_fmt_seqs(sorted(moved))} are out of order: the hash chain puts them "
            f"in the order {', '.join(str(s) for s in moved)}",
        )
    ]


# -- step 4: tail ---------------------------------------------------------------------------
def _tail_problems(
    index: _Index, chain: list[LedgerEntry], found: list[LedgerProblem]
) -> list[LedgerProblem]:
    """The chain's end against the stored head (``found``: the problems of steps 1–3)."""
    if index.head_count is None or index.head_hash is None:
        return [LedgerProblem("head", (), "the head record is missing")]
    positions = {e.entry_hash: i for i, e in enumerate(chain)}
    pos = positions.get(index.head_hash)
    if index.head_hash == GENESIS_HASH and index.head_count == 0:
        pos = -1
    if pos is None:
        return [_head_not_in_chain(index)]
    if pos < len(chain) - 1:
        extra = tuple(e.seq for e in chain[pos + 1 :])
        n = len(extra)
        return [
            LedgerProblem(
                "inserted",
                extra,
                f"entr{_plural(n, 'y', 'ies')} {_fmt_seqs(extra)} {_plural(n, 'was', 'were')} "
                "appended without going through the ledger (the head does not cover them)",
            )
        ]
    explained = any(p.kind in {"deleted", "inserted", "truncated"} for p in found)
    if index.head_count != len(index.rows) and not explained:
        return [
            LedgerProblem(
                "head",
                (),
                f"the head records {index.head_count} entries but the ledger holds "
                f"{len(index.rows)}",
            )
        ]
    return []


def _head_not_in_chain(index: _Index) -> LedgerProblem:
    """The stored head names a hash the chain lacks: a truncated tail, or a foreign head."""
    count, last_hash, stored = index.head_count, str(index.head_hash), len(index.rows)
    if count is not None and count > stored:
        gone = count - stored
        return LedgerProblem(
            "truncated",
            tuple(range(stored + 1, count + 1)),
            f"the ledger ends after {stored} entries but its head records {count} entries "
            f"ending in {last_hash[:12]}…: the last {gone} "
            f"entr{_plural(gone, 'y was', 'ies were')} removed",
        )
    return LedgerProblem(
        "head",
        (),
        f"the head records last hash {last_hash[:12]}…, which is not in the ledger",
    )


# -- step 5: auditor's head -----------------------------------------------------------------
def _expected_head_problems(
    chain: list[LedgerEntry], expected_head: LedgerHead | None
) -> list[LedgerProblem]:
    """A head recorded earlier must still be in the chain, at the same position."""
    if expected_head is None or (
        expected_head.count == 0 and expected_head.last_hash == GENESIS_HASH
    ):
        return []
    positions = {e.entry_hash: i + 1 for i, e in enumerate(chain)}
    at = positions.get(expected_head.last_hash)
    if at is None:
        return [
            LedgerProblem(
                "expected_head",
                (),
                f"the entry you recorded as head ({expected_head}) is not in the ledger: the "
                "ledger was rewritten or truncated since you recorded it",
            )
        ]
    if expected_head.count >= 0 and at != expected_head.count:
        return [
            LedgerProblem(
                "expected_head",
                (chain[at - 1].seq,),
                f"the entry you recorded as head number {expected_head.count} is now number "
                f"{at}: entries before it were inserted or deleted",
            )
        ]
    return []

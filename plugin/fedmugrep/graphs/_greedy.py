"""The degree-bounded greedy linker behind the event graph and the query edges.

Pure bookkeeping, no torch. :func:`greedy_link` implements the choice rule documented in
:mod:`fedmugrep.graphs.event`; ``tests/graphs/test_event_graph.py`` checks it against a plain
O(n^2) transcription of that rule.

How it stays fast without changing the rule:

* Targets are processed in increasing ``(time, index)`` order, in chunks. For each chunk a
  KD-tree is built over the sources that can still be chosen by some target of the chunk:
  time in ``[t_first - max_days, t_last)``, allowed as a source, and out-degree ``< k``
  (a saturated source can never be chosen again, so dropping it changes nothing).
* The tree lives in scaled coordinates ``p = (R*u/max_km, t/max_days, GAP*group)``, with
  ``u`` the unit vector of the point (see :mod:`fedmugrep.graphs.geo`). For a pair in the
  same group the Euclidean tree distance ``e`` satisfies ``e <= chord/max_km + dt/max_days
  <= score``. So if the tree's ``Q`` nearest neighbours of a target reach distance ``e_Q``,
  every candidate with ``score < e_Q`` was returned: the returned candidates with
  ``score < e_Q`` (minus a rounding tolerance) are an exact prefix of the full ranked list.
* The greedy pass walks that prefix, skipping saturated sources; only when the prefix runs
  out before ``k`` are taken (and more candidates may exist) is the target re-queried
  with a larger ``Q`` — at that moment, so the out-degrees it sees are the current ones.
* Chunk sizes and the first ``Q`` adapt to the data (sparse data: bigger chunks; tied
  dates: chunks end at a date boundary; many misses: deeper first queries). None of this
  changes the result: every choice is made from a proven-complete prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from fedmugrep.graphs.geo import EARTH_RADIUS_KM, chord_to_km

# Distance in the tree between two different groups: > sqrt(2) (the largest eligible
# distance) so other groups are never within the query bound.
_GROUP_GAP = 4.0
# Query bound: eligible pairs have e <= sqrt(1 + 1) = 1.414...
_BOUND = 1.5
# widening: fetch this many times more neighbours, for this many rows at once
_WIDEN = 4
_WIDEN_ROWS = 16
# targets per primary KD-tree query
_BATCH = 256


@dataclass(frozen=True)
class Points:
    """Points in the scaled search space.

    Shapes:
        u ``[n, 3]`` unit vectors; t ``[n]`` days; group ``[n]`` int codes or ``None``;
        allowed ``[n]`` bool (may be a source) or ``None`` (all may).
    """

    u: np.ndarray
    t: np.ndarray
    group: np.ndarray | None = None
    allowed: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.t.shape[0])


@dataclass(frozen=True)
class Links:
    """Chosen edges, sorted by target index then by rank (closest first).

    Shapes:
        src, tgt ``[E]`` int64; days, km ``[E]`` float64.
    """

    src: np.ndarray
    tgt: np.ndarray
    days: np.ndarray
    km: np.ndarray


@dataclass
class _Candidates:
    """Ranked candidate prefixes for a batch of targets in CSR form."""

    ptr: list[int]
    src: list[int]
    days: np.ndarray
    km: np.ndarray
    complete: list[bool]


class _Space:
    """Scaled coordinates of sources and targets and the rounding tolerance."""

    def __init__(self, src: Points, tgt: Points, *, max_km: float, max_days: float) -> None:
        self.src, self.tgt = src, tgt
        self.max_km, self.max_days = max_km, max_days
        t0 = float(np.min(src.t))
        space_scale = EARTH_RADIUS_KM / max_km
        self.p_src = self._scaled(src, t0, space_scale, max_days)
        self.p_tgt = self.p_src if tgt is src else self._scaled(tgt, t0, space_scale, max_days)
        mag = float(np.max(np.abs(self.p_src), initial=0.0))
        mag = max(mag, float(np.max(np.abs(self.p_tgt), initial=0.0)))
        # absolute rounding slack on tree distances and scores (scaled units): far above the
        # float64 error of differences of coordinates of magnitude ``mag``
        self.tol = 1024.0 * np.finfo(np.float64).eps * (mag + 1.0)

    @staticmethod
    def _scaled(pts: Points, t0: float, space_scale: float, max_days: float) -> np.ndarray:
        cols = [pts.u * space_scale, ((pts.t - t0) / max_days)[:, None]]
        if pts.group is not None:
            cols.append((pts.group * _GROUP_GAP)[:, None].astype(np.float64))
        return np.concatenate(cols, axis=1)


class _Searcher:
    """KD-tree over one chunk's live sources, answering ranked-prefix queries."""

    def __init__(self, space: _Space, alive: np.ndarray, *, workers: int) -> None:
        self.space, self.alive, self.workers = space, alive, workers
        self.m = int(alive.shape[0])
        self.tree = (
            cKDTree(space.p_src[alive], balanced_tree=False, compact_nodes=False)
            if self.m
            else None
        )

    def query(self, rows: np.ndarray, q: int) -> _Candidates:
        """Ranked eligible candidates of targets ``rows`` (a proven-complete prefix each)."""
        sp = self.space
        b = int(rows.shape[0])
        if self.tree is None or b == 0:
            return _Candidates([0] * (b + 1), [], np.zeros(0), np.zeros(0), [True] * b)
        qq = min(q, self.m)
        dist, nb = self.tree.query(
            sp.p_tgt[rows], k=qq, distance_upper_bound=_BOUND, workers=self.workers
        )
        dist = dist.reshape(b, qq)
        nb = nb.reshape(b, qq)
        valid = nb < self.m
        # complete: every point within the bound came back (or the whole tree did)
        complete = ~valid[:, -1] | (qq == self.m)
        threshold = np.where(complete, np.inf, dist[:, -1] - sp.tol)
        src = self.alive[np.where(valid, nb, 0)]
        tgt = rows[:, None]
        days = sp.tgt.t[tgt] - sp.src.t[src]
        diff = sp.src.u[src] - sp.tgt.u[tgt]
        km = chord_to_km(np.sqrt(diff[..., 0] ** 2 + diff[..., 1] ** 2 + diff[..., 2] ** 2))
        score = km / sp.max_km + days / sp.max_days
        ok = valid & (days > 0) & (days <= sp.max_days) & (km <= sp.max_km)
        ok &= score < threshold[:, None]
        if sp.src.group is not None:
            ok &= sp.src.group[src] == sp.tgt.group[tgt]
        score = np.where(ok, score, np.inf)
        take = np.take_along_axis
        order = np.argsort(score, axis=1)
        s_sorted = take(score, order, axis=1)
        tie = (s_sorted[:, 1:] == s_sorted[:, :-1]) & np.isfinite(s_sorted[:, 1:])
        tied_rows = np.nonzero(tie.any(axis=1))[0]
        if tied_rows.size:  # equal scores: lower source index first
            order[tied_rows] = np.lexsort((src[tied_rows], score[tied_rows]), axis=-1)
        ok_sorted = take(ok, order, axis=1)
        ptr = np.zeros(b + 1, dtype=np.int64)
        np.cumsum(ok_sorted.sum(axis=1), out=ptr[1:])
        return _Candidates(
            ptr.tolist(),
            take(src, order, axis=1)[ok_sorted].tolist(),
            take(days, order, axis=1)[ok_sorted],
            take(km, order, axis=1)[ok_sorted],
            complete.tolist(),
        )


def _link_batch(
    searcher: _Searcher, rows: np.ndarray, q: int, od: list[int], k: int
) -> tuple[Links, int]:
    """Run the greedy rule for ``rows`` (in order), updating out-degrees ``od`` in place.

    Returns the batch's edges (grouped by target, closest first) and the number of rows
    whose first candidate list ran out (the caller adapts ``q`` to it).
    """
    cand = searcher.query(rows, q)
    ptr, csrc, complete = cand.ptr, cand.src, cand.complete
    taken: list[int] = []  # positions in ``cand`` (fast path)
    counts: list[int] = []  # edges per row taken on the fast path
    extra: list[tuple[int, int, float, float]] = []  # (src, tgt, days, km) of widened rows
    misses = 0
    # rows [over_lo, over_hi) use a deeper candidate list fetched on the first miss
    over, over_lo, over_hi, over_q = cand, 0, 0, q
    for r in range(rows.shape[0]):
        if r >= over_hi:
            c = 0
            for pos in range(ptr[r], ptr[r + 1]):
                j = csrc[pos]
                if od[j] < k:
                    od[j] += 1
                    taken.append(pos)
                    c += 1
                    if c == k:
                        break
            if c == k or complete[r]:
                counts.append(c)
                continue
            # the proven prefix ran out and more candidates may exist: undo this row and
            # fetch deeper lists for it and the next few (misses cluster: targets close
            # in time compete for the same sources)
            for pos in taken[len(taken) - c :]:
                od[csrc[pos]] -= 1
            del taken[len(taken) - c :]
            misses += 1
            over_q = q * _WIDEN
            over = searcher.query(rows[r : r + _WIDEN_ROWS], over_q)
            over_lo, over_hi = r, min(rows.shape[0], r + _WIDEN_ROWS)
        counts.append(0)
        lst, rr, qq = over, r - over_lo, over_q
        while True:
            lo_p, hi_p = lst.ptr[rr], lst.ptr[rr + 1]
            sel = [p for p in range(lo_p, hi_p) if od[lst.src[p]] < k][:k]
            if len(sel) == k or lst.complete[rr]:
                break
            qq *= _WIDEN
            lst, rr = searcher.query(rows[r : r + 1], qq), 0
        i = int(rows[r])
        for p in sel:
            j = lst.src[p]
            od[j] += 1
            extra.append((j, i, float(lst.days[p]), float(lst.km[p])))
    pos_arr = np.asarray(taken, dtype=np.int64)
    src = np.asarray(csrc, dtype=np.int64)[pos_arr]
    tgt = np.repeat(rows, np.asarray(counts, dtype=np.int64))
    days, km = cand.days[pos_arr], cand.km[pos_arr]
    if extra:
        xs, xt, xd, xk = (np.asarray(v) for v in zip(*extra, strict=True))
        src = np.concatenate([src, xs.astype(np.int64)])
        tgt = np.concatenate([tgt, xt.astype(np.int64)])
        days = np.concatenate([days, xd.astype(np.float64)])
        km = np.concatenate([km, xk.astype(np.float64)])
    return Links(src, tgt, days, km), misses


def greedy_link(
    src: Points,
    tgt: Points,
    *,
    k: int,
    max_km: float,
    max_days: float,
    chunk: int = 512,
    first_q: int | None = None,
) -> Links:
    """Link every target to at most ``k`` earlier sources; no source feeds more than ``k``.

    The rule (see :mod:`fedmugrep.graphs.event`): targets in increasing ``(t, index)``
    order; each ranks its eligible sources by ``km/max_km + days/max_days`` (ties: lower
    source index first) and takes them greedily, skipping sources whose out-degree has
    reached ``k``, until ``k`` are taken. Eligible: same group, ``0 < t_tgt - t_src <=
    max_days``, ``km <= max_km``, allowed as a source.

    Args:
        src: candidate sources. For the event graph pass the same object as ``tgt``.
        tgt: targets.
        k: degree bound (in and out).
        max_km: distance bound (great-circle km).
        max_days: time-window bound (days).
        chunk: targets per KD-tree rebuild, at least; grows to ``live/8`` when many
            sources stay unsaturated (sparse data) so rebuilds stay amortised.
        first_q: neighbours fetched per target before widening (default ``4k + 16``);
            small values only exercise the widening path in tests.

    Returns:
        The edges, sorted by target index, closest first within a target.
    """
    ns, nt = len(src), len(tgt)
    if ns == 0 or nt == 0:
        return Links(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    space = _Space(src, tgt, max_km=max_km, max_days=max_days)
    src_order = np.lexsort((np.arange(ns), src.t))
    src_t_sorted = src.t[src_order]
    allowed = np.ones(ns, dtype=bool) if src.allowed is None else src.allowed
    tgt_order = np.lexsort((np.arange(nt), tgt.t))
    od: list[int] = [0] * ns  # out-degree so far (a list: the greedy pass is plain Python)
    q0 = 4 * k + 16 if first_q is None else max(1, first_q)
    q = q0
    live = np.zeros(0, dtype=np.int64)  # sources that may still be chosen
    next_src = 0  # position in src_order of the first source not yet added to ``live``
    parts: list[Links] = []

    a = 0
    while a < nt:
        # -- the next chunk of targets and one KD-tree over the live sources for it --
        rows = tgt_order[a : a + max(chunk, live.size // 8)]
        t_first = float(tgt.t[rows[0]])
        # Sources timed inside the chunk are in the tree but useless to the chunk's early
        # targets. With heavily tied dates (e.g. monthly) they can crowd out every real
        # candidate, so end the chunk before more than ``cap`` of them join.
        cap = max(chunk, live.size // 4)
        lo_first = int(np.searchsorted(src_t_sorted, t_first, side="left"))
        if lo_first + cap < ns:
            t_cut = float(src_t_sorted[lo_first + cap])
            rows = rows[: int(np.searchsorted(tgt.t[rows], t_cut, side="right"))]
        a += rows.shape[0]
        t_last = float(tgt.t[rows[-1]])
        hi = int(np.searchsorted(src_t_sorted, t_last, side="left"))  # t_src < t_last
        if hi > next_src:
            fresh = src_order[next_src:hi]
            live = np.concatenate([live, fresh[allowed[fresh]]])
            next_src = hi
        if live.size:
            # drop saturated sources and those too old for every later target
            slack = 1e-9 * (1.0 + abs(t_first) + max_days)
            od_live = np.fromiter((od[j] for j in live.tolist()), dtype=np.int64, count=live.size)
            live = live[(od_live < k) & (src.t[live] >= t_first - max_days - slack)]
        # threads only pay off for big batches (and cores are often shared)
        searcher = _Searcher(space, live, workers=-1 if rows.shape[0] >= 8192 else 1)
        for b in range(0, rows.shape[0], _BATCH):
            batch = rows[b : b + _BATCH]
            links, misses = _link_batch(searcher, batch, q, od, k)
            parts.append(links)
            # adapt the depth of the first query to how often rows ran out of candidates
            if misses * 32 > batch.shape[0]:
                q = min(2 * q, 2 * q0)
            elif misses * 256 < batch.shape[0]:
                q = max(q0, q // 2)

    s = np.concatenate([p.src for p in parts])
    t = np.concatenate([p.tgt for p in parts])
    d = np.concatenate([p.days for p in parts])
    km = np.concatenate([p.km for p in parts])
    # sort by target; each target's edges were emitted together, closest first: keep that
    order = np.argsort(t, kind="stable")
    return Links(s[order], t[order], d[order], km[order])

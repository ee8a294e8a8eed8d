"""The cascade-free "recent window" event rule (see :mod:`fedmugrep.graphs.event`)."""

from __future__ import annotations

import numpy as np

from fedmugrep.graphs.geo import haversine_km


def recent_window_links(
    lat: np.ndarray,
    lon: np.ndarray,
    t: np.ndarray,
    group: np.ndarray | None,
    source_mask: np.ndarray | None,
    *,
    k: int,
    max_km: float,
    max_days: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``j -> i`` where ``j`` is among the ``k`` rows right before ``i`` in its group's
    ``(t, row)`` order, with ``t_j < t_i`` strictly and within ``max_days`` and ``max_km``.

    Returns ``(src, dst, attr[E, 2])`` sorted by target, most recent source first. ``O(n k)``
    after one ``O(n log n)`` sort.
    """
    n = t.shape[0]
    g = np.zeros(n, dtype=np.int64) if group is None else np.asarray(group)
    order = np.lexsort((np.arange(n), t, g))
    gs, ts = g[order], t[order]
    src_l, dst_l = [], []
    for o in range(1, k + 1):
        tgt = np.arange(o, n)
        src = tgt - o
        ok = (gs[src] == gs[tgt]) & (ts[src] < ts[tgt]) & (ts[tgt] - ts[src] <= max_days)
        src_l.append(order[src[ok]])
        dst_l.append(order[tgt[ok]])
    src = np.concatenate(src_l) if src_l else np.zeros(0, dtype=np.int64)
    dst = np.concatenate(dst_l) if dst_l else np.zeros(0, dtype=np.int64)
    if source_mask is not None:
        keep = np.asarray(source_mask, dtype=bool)[src]
        src, dst = src[keep], dst[keep]
    days = t[dst] - t[src]
    km = haversine_km(lat[src], lon[src], lat[dst], lon[dst])
    keep = km <= max_km
    src, dst, days, km = src[keep], dst[keep], days[keep], km[keep]
    # sort by target, then most recent first (ties: later row first, matching the window order)
    srt = np.lexsort((-src, days, dst))
    attr = np.stack([days[srt], km[srt]], axis=1) if src.size else np.zeros((0, 2))
    return src[srt], dst[srt], attr


def recent_query_links(
    hlat: np.ndarray,
    hlon: np.ndarray,
    ht: np.ndarray,
    qlat: np.ndarray,
    qlon: np.ndarray,
    qt: np.ndarray,
    hg: np.ndarray | None,
    qg: np.ndarray | None,
    *,
    k: int,
    max_km: float,
    max_days: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``"recent"`` rule for queries: each query's window is the ``k`` history rows of its
    group immediately before it in ``(t, row)`` order among rows strictly earlier than the
    query; then rows beyond ``max_days`` or ``max_km`` are dropped (window first, then filter,
    as :func:`recent_window_links` does; sales of the query's own date never take a slot).

    Each query's neighbours depend only on the history and on that query (never on the other
    queries), so removing one history row ``r`` changes the neighbours of exactly the queries
    whose window holds ``r``: of ``r``'s group and dated in ``(t_r, t_r + max_days]``.

    Returns ``(src, dst, attr[E, 2])`` (history index, query index) sorted by query, most
    recent first.
    """
    nh, nq = ht.shape[0], qt.shape[0]
    if nh == 0 or nq == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2))
    hg = np.zeros(nh, np.int64) if hg is None else np.asarray(hg, np.int64)
    qg = np.zeros(nq, np.int64) if qg is None else np.asarray(qg, np.int64)
    order = np.lexsort((np.arange(nh), ht, hg))
    gs, ts = hg[order], ht[order]
    # one sortable key per (group, time): group-major, time-minor
    t0 = min(ht.min(), qt.min())
    span = max(ht.max(), qt.max()) - t0 + 2.0
    key_h = gs * span + (ts - t0)
    key_q = qg * span + (qt - t0)
    first = np.searchsorted(key_h, key_q, side="left")  # rows strictly earlier come before
    src_l, dst_l = [], []
    for o in range(1, k + 1):
        pos = first - o
        ok = pos >= 0
        pos_c = np.where(ok, pos, 0)
        ok &= gs[pos_c] == qg
        q_idx = np.flatnonzero(ok)
        src_l.append(order[pos_c[q_idx]])
        dst_l.append(q_idx)
    src, dst = np.concatenate(src_l), np.concatenate(dst_l)
    days = qt[dst] - ht[src]
    km = haversine_km(hlat[src], hlon[src], qlat[dst], qlon[dst])
    keep = (days <= max_days) & (km <= max_km)
    src, dst, days, km = src[keep], dst[keep], days[keep], km[keep]
    srt = np.lexsort((-src, days, dst))
    return src[srt], dst[srt], np.stack([days[srt], km[srt]], axis=1)

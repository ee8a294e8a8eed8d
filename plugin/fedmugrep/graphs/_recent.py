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

"""Exact k-nearest-neighbour helpers with a deterministic tie rule (lower index first).

Pure numpy/scipy, no torch. Two flavours:

* :func:`dense_knn` for small sets (communities): distances in row blocks, exact top-k
  per row via ``np.partition`` plus an index-ordered fill of ties at the k-th value.
* :func:`grouped_geo_knn` for large sets (transactions): a KD-tree over
  ``(R * unit_vector, GAP * group)``; a row is accepted only when its ``k`` winners are
  proven (every point not returned by the tree is strictly farther), otherwise it is
  re-queried with more neighbours.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree

from fedmugrep.graphs.geo import EARTH_RADIUS_KM

_BLOCK_ELEMENTS = 4_000_000  # distance-matrix entries per block (32 MB of float64)


def topk_rows(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` smallest finite entries of ``d`` (ties: lower column first).

    Shapes:
        d ``[b, m]`` (``inf`` = not a candidate) -> ``(row [E], col [E])``, rows ascending,
        within a row by ``(d, col)``.
    """
    b, m = d.shape
    kk = min(k, m)
    if b == 0 or kk == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    kth = np.partition(d, kk - 1, axis=1)[:, kk - 1 : kk]
    lt = d < kth
    eq = (d == kth) & np.isfinite(d)
    need = kk - lt.sum(axis=1, keepdims=True)
    keep = lt | (eq & (np.cumsum(eq, axis=1) <= need))
    row, col = np.nonzero(keep)
    order = np.lexsort((col, d[row, col], row))
    return row[order].astype(np.int64), col[order].astype(np.int64)


def dense_knn(
    n: int, k: int, dist_block: Callable[[np.ndarray], np.ndarray], *, width: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN (no self) from a block distance function.

    Args:
        n: number of points.
        k: neighbours per point.
        dist_block: ``rows -> [len(rows), n]`` distances.
        width: floats ``dist_block`` holds per entry while computing (sizes the blocks).

    Shapes:
        -> ``(i [E], j [E])``: ``j`` is one of the ``k`` nearest of ``i``.
    """
    if n == 0 or k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    step = max(1, _BLOCK_ELEMENTS // (n * max(width, 1)))
    out_i, out_j = [], []
    for a in range(0, n, step):
        rows = np.arange(a, min(n, a + step))
        d = np.array(dist_block(rows), dtype=np.float64, copy=True)
        d[np.arange(rows.shape[0]), rows] = np.inf
        r, c = topk_rows(d, k)
        out_i.append(rows[r])
        out_j.append(c)
    return np.concatenate(out_i), np.concatenate(out_j)


def grouped_geo_knn(u: np.ndarray, group: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN by great-circle distance within groups (no self; ties: lower index).

    Ranking is by chord length between unit vectors, which orders pairs exactly as the
    great-circle distance does.

    Shapes:
        u ``[n, 3]`` unit vectors, group ``[n]`` int codes -> ``(i [E], j [E])``.
    """
    n = int(u.shape[0])
    if n == 0 or k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    gap = 4.0 * EARTH_RADIUS_KM  # > the largest chord (2R): groups never mix
    pts = np.concatenate([u * EARTH_RADIUS_KM, (group * gap)[:, None].astype(np.float64)], 1)
    mag = float(np.max(np.abs(pts)))
    tol = 1024.0 * np.finfo(np.float64).eps * (mag + 1.0)
    bound = 2.5 * EARTH_RADIUS_KM
    tree = cKDTree(pts)
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    rows = np.arange(n)
    q = 2 * k + 2  # self + k winners + at least one farther point to prove them
    while rows.size:
        qq = min(q, n)
        dist, nb = tree.query(pts[rows], k=qq, distance_upper_bound=bound)
        dist, nb = dist.reshape(-1, qq), nb.reshape(-1, qq)
        valid = nb < n
        complete = ~valid[:, -1] | (qq == n)
        threshold = np.where(complete, np.inf, dist[:, -1] - tol)
        j = np.where(valid, nb, 0)
        diff = u[j] - u[rows][:, None, :]
        chord = np.sqrt(diff[..., 0] ** 2 + diff[..., 1] ** 2 + diff[..., 2] ** 2)
        ok = valid & (j != rows[:, None]) & (group[j] == group[rows][:, None])
        ok &= chord * EARTH_RADIUS_KM < threshold[:, None]
        # proven rows: complete, or at least k proven candidates
        done = complete | (ok.sum(axis=1) >= k)
        # rank proven candidates by (chord, index): put them in a dense [b, n]-free form
        cand = np.where(ok, chord, np.inf)
        order = np.lexsort((j, cand), axis=-1)[:, :k]
        sel_j = np.take_along_axis(j, order, axis=1)
        sel_ok = np.take_along_axis(ok, order, axis=1) & done[:, None]
        r_idx, c_idx = np.nonzero(sel_ok)
        out_i.append(rows[r_idx])
        out_j.append(sel_j[r_idx, c_idx])
        rows = rows[~done]
        q *= 4
    i_all, j_all = np.concatenate(out_i), np.concatenate(out_j)
    return i_all.astype(np.int64), j_all.astype(np.int64)


def symmetric(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Union of ``i->j`` and ``j->i``, without duplicates or self loops, sorted by (row, col).

    Shapes:
        ``[E]`` each -> ``[2, E']`` int64.
    """
    a = np.concatenate([i, j]).astype(np.int64)
    b = np.concatenate([j, i]).astype(np.int64)
    keep = a != b
    a, b = a[keep], b[keep]
    if a.size == 0:
        return np.zeros((2, 0), np.int64)
    width = int(max(a.max(), b.max())) + 1
    key = np.unique(a * width + b)
    return np.stack([key // width, key % width]).astype(np.int64)

"""Query edges (C7): history -> properties being valued, same rule as the event graph."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmugrep.errors import ConfigError
from fedmugrep.graphs.event import build_query_edges
from fedmugrep.graphs.geo import EARTH_RADIUS_KM, haversine_km

LAT0, LON0 = 48.85, 2.35
KM_PER_DEG = math.pi * EARTH_RADIUS_KM / 180.0


def at(x_km, y_km):
    x, y = np.asarray(x_km, float), np.asarray(y_km, float)
    return LAT0 + y / KM_PER_DEG, LON0 + x / (KM_PER_DEG * math.cos(math.radians(LAT0)))


def pairs(ei: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in ei.t().tolist()}


def reference(hlat, hlon, ht, qlat, qlon, qt, *, k, max_km, max_days, hg=None, qg=None):
    km = haversine_km(hlat[:, None], hlon[:, None], qlat[None, :], qlon[None, :])
    out_deg = [0] * len(ht)
    chosen = set()
    for i in sorted(range(len(qt)), key=lambda i: (qt[i], i)):
        cands = []
        for j in range(len(ht)):
            days = qt[i] - ht[j]
            if days > 0 and days <= max_days and km[j, i] <= max_km:
                if hg is None or str(hg[j]) == str(qg[i]):
                    cands.append((km[j, i] / max_km + days / max_days, j))
        taken = 0
        for _, j in sorted(cands):
            if taken == k:
                break
            if out_deg[j] < k:
                chosen.add((j, i))
                out_deg[j] += 1
                taken += 1
    return chosen


def test_closest_by_score_not_by_recency():
    # history: 0 very close but old, 1 recent but far, 2 in between; query at the origin
    hlat, hlon = at([0.05, 0.9, 0.4], [0.0, 0.0, 0.0])
    ht = np.array([10.0, 99.0, 80.0])
    qlat, qlon = at([0.0], [0.0])
    args = (hlat, hlon, ht, qlat, qlon, np.array([100.0]))
    # scores: 0 -> 0.05 + 0.90 = 0.95; 1 -> 0.90 + 0.01 = 0.91; 2 -> 0.40 + 0.20 = 0.60
    ei, ea = build_query_edges(*args, k=1, max_km=1.0, max_days=100.0)
    assert ei.tolist() == [[2], [0]]
    ei, ea = build_query_edges(*args, k=3, max_km=1.0, max_days=100.0)
    assert ei.tolist() == [[2, 1, 0], [0, 0, 0]]
    np.testing.assert_allclose(ea[:, 0].numpy(), [20.0, 1.0, 90.0])
    np.testing.assert_allclose(ea[:, 1].numpy(), [0.4, 0.9, 0.05], atol=1e-3)
    assert ea.dtype == torch.float32


def test_only_strictly_earlier_history():
    hlat, hlon = at([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    qlat, qlon = at([0.1], [0.0])
    ei, _ = build_query_edges(
        hlat, hlon, np.array([4.0, 5.0, 6.0]), qlat, qlon, np.array([5.0]),
        k=5, max_km=1.0, max_days=10.0,
    )  # fmt: skip
    assert pairs(ei) == {(0, 0)}


def test_history_row_feeds_at_most_k_queries_per_batch():
    # one history sale near five queries; queries are served in date order
    hlat, hlon = at([0.0], [0.0])
    qlat, qlon = at([0.1, 0.2, 0.1, 0.0, 0.3], [0.0, 0.0, 0.1, 0.1, 0.0])
    qt = np.array([5.0, 3.0, 4.0, 9.0, 1.0])
    ei, _ = build_query_edges(
        hlat, hlon, np.array([0.0]), qlat, qlon, qt, k=2, max_km=1.0, max_days=30.0
    )
    assert pairs(ei) == {(0, 4), (0, 1)}
    # a second batch may use the same row again (the bound is per call)
    ei2, _ = build_query_edges(
        hlat, hlon, np.array([0.0]), qlat[[0]], qlon[[0]], qt[[0]], k=2, max_km=1.0, max_days=30.0
    )
    assert pairs(ei2) == {(0, 0)}


def test_groups_and_errors():
    hlat, hlon = at([0.0, 0.0], [0.0, 0.0])
    qlat, qlon = at([0.1, 0.1], [0.0, 0.0])
    ht, qt = np.array([0.0, 0.0]), np.array([1.0, 1.0])
    ei, _ = build_query_edges(
        hlat, hlon, ht, qlat, qlon, qt, k=2, max_km=1.0, max_days=5.0,
        hist_group=np.array([7, 8]), q_group=np.array(["8", "9"]),
    )  # fmt: skip
    assert pairs(ei) == {(1, 0)}  # labels compared as strings; group "9" has no history
    with pytest.raises(ConfigError, match="must be given together"):
        build_query_edges(
            hlat, hlon, ht, qlat, qlon, qt, k=2, max_km=1.0, max_days=5.0, hist_group=[1, 2]
        )
    with pytest.raises(ConfigError, match="one label per row"):
        build_query_edges(
            hlat, hlon, ht, qlat, qlon, qt, k=2, max_km=1.0, max_days=5.0,
            hist_group=[1], q_group=[1, 2],
        )  # fmt: skip
    with pytest.raises(ConfigError, match="q_t must have the same length"):
        build_query_edges(hlat, hlon, ht, qlat, qlon, qt[:1], k=2, max_km=1.0, max_days=5.0)


def test_empty_sides():
    e = np.zeros(0)
    ei, ea = build_query_edges(e, e, e, [48.0], [2.0], [1.0], k=2, max_km=1.0, max_days=5.0)
    assert tuple(ei.shape) == (2, 0) and tuple(ea.shape) == (0, 2)
    ei, ea = build_query_edges([48.0], [2.0], [0.0], e, e, e, k=2, max_km=1.0, max_days=5.0)
    assert tuple(ei.shape) == (2, 0) and tuple(ea.shape) == (0, 2)


def test_recent_rule_takes_the_k_latest_earlier_sales_of_the_group():
    # history: community 0 at days 1..6, community 1 at day 5; queries at day 5 and 10 in c0
    ht = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 5.0])
    hg = np.array([0, 0, 0, 0, 0, 0, 1])
    lat = np.full(7, 48.85)
    ei, ea = build_query_edges(
        lat, np.full(7, 2.35), ht, np.full(2, 48.85), np.full(2, 2.35), np.array([5.0, 10.0]),
        k=3, max_km=1.0, max_days=5.0, hist_group=hg, q_group=np.array([0, 0]), rule="recent",
    )  # fmt: skip
    pairs = sorted(zip(ei[1].tolist(), ei[0].tolist(), strict=True))
    # query 0 (day 5): rows of days 4, 3, 2 (strictly earlier); query 1 (day 10): the window
    # holds days 6, 5, 4 and day 4 is beyond max_days
    assert pairs == [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5)]
    assert ea[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    # unlike greedy, a history row may feed more than k queries (each query's window is its own)
    many = build_query_edges(
        [48.85], [2.35], [0.0], np.full(5, 48.85), np.full(5, 2.35), np.arange(1.0, 6.0),
        k=1, max_km=1.0, max_days=9.0, rule="recent",
    )[0]  # fmt: skip
    assert many[0].tolist() == [0] * 5 and many[1].tolist() == [0, 1, 2, 3, 4]
    e = np.zeros(0)
    ei, ea = build_query_edges(e, e, e, [48.0], [2.0], [1.0], k=2, max_km=1.0, max_days=5.0,
                               rule="recent")  # fmt: skip
    assert tuple(ei.shape) == (2, 0) and tuple(ea.shape) == (0, 2)
    with pytest.raises(ConfigError, match="rule must be"):
        build_query_edges(e, e, e, e, e, e, k=2, max_km=1.0, max_days=5.0, rule="nearest")


def test_matches_bruteforce_reference():
    rng = np.random.default_rng(99)
    for _ in range(200):
        nh, nq = int(rng.integers(0, 30)), int(rng.integers(0, 15))
        hlat, hlon = at(rng.integers(0, 10, nh) * 0.3, rng.integers(0, 6, nh) * 0.3)
        qlat, qlon = at(rng.integers(0, 10, nq) * 0.3, rng.integers(0, 6, nq) * 0.3)
        ht = rng.integers(0, 50, nh).astype(float)
        qt = rng.integers(0, 60, nq).astype(float)
        k = int(rng.integers(1, 4))
        max_km, max_days = float(rng.choice([0.5, 1.0, 3.0])), float(rng.choice([5.0, 20.0]))
        hg = qg = None
        if rng.random() < 0.4:
            hg, qg = rng.integers(0, 3, nh), rng.integers(0, 3, nq)
        ei, ea = build_query_edges(
            hlat, hlon, ht, qlat, qlon, qt, k=k, max_km=max_km, max_days=max_days,
            hist_group=hg, q_group=qg,
        )  # fmt: skip
        want = reference(
            hlat, hlon, ht, qlat, qlon, qt, k=k, max_km=max_km, max_days=max_days, hg=hg, qg=qg
        )
        assert pairs(ei) == want and ei.shape[1] == len(want)
        if ei.numel():
            assert bool((torch.as_tensor(ht)[ei[0]] < torch.as_tensor(qt)[ei[1]]).all())
            assert int(torch.bincount(ei[0]).max()) <= k and int(torch.bincount(ei[1]).max()) <= k

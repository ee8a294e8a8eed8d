"""Event graph (C1): hand-built cases with known edges and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmugrep.errors import ConfigError, PrivacyParameterError
from fedmugrep.graphs import _greedy
from fedmugrep.graphs._checks import labels
from fedmugrep.graphs.event import EventGraph, build_event_graph
from fedmugrep.graphs.geo import EARTH_RADIUS_KM, haversine_km, unit_vectors

LAT0, LON0 = 48.85, 2.35
KM_PER_DEG = math.pi * EARTH_RADIUS_KM / 180.0


def at(x_km: list[float], y_km: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Lat/lon of points ``x`` km east and ``y`` km north of a Paris origin (approx.)."""
    x, y = np.asarray(x_km, float), np.asarray(y_km, float)
    return LAT0 + y / KM_PER_DEG, LON0 + x / (KM_PER_DEG * math.cos(math.radians(LAT0)))


def edges(g: EventGraph) -> set[tuple[int, int]]:
    return {(int(s), int(t)) for s, t in g.edge_index.t().tolist()}


def reference(lat, lon, t, *, k, max_km, max_days, group=None, mask=None):
    """The choice rule of fedmugrep.graphs.event, written plainly in O(n^2)."""
    n = len(t)
    km = haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])  # km[j, i]
    out_deg = [0] * n
    chosen = set()
    for i in sorted(range(n), key=lambda i: (t[i], i)):
        cands = []
        for j in range(n):
            days = t[i] - t[j]
            if not (days > 0 and days <= max_days and km[j, i] <= max_km):
                continue
            if group is not None and group[j] != group[i]:
                continue
            if mask is not None and not mask[j]:
                continue
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


# --- hand-built cases ---------------------------------------------------------------


def test_links_only_earlier_and_closest_first():
    # 0 at origin day 0; 1 and 2 both on day 10 (same day: never linked to each other);
    # 3 is 5 km away (beyond max_km); 4 on day 30 picks its two closest of {0, 1, 2}.
    lat, lon = at([0.0, 0.10, 0.30, 5.0, 0.12], [0.0, 0.0, 0.0, 0.0, 0.0])
    t = np.array([0.0, 10.0, 10.0, 20.0, 30.0])
    g = build_event_graph(lat, lon, t, k=2, max_km=1.0, max_days=100.0)
    # scores for 4: from 1: 0.02 + 0.2; from 2: 0.18 + 0.2; from 0: 0.12 + 0.3
    assert edges(g) == {(0, 1), (0, 2), (1, 4), (2, 4)}
    assert g.edge_index.dtype == torch.long and g.edge_attr.dtype == torch.float32
    # edges sorted by target, closest first: (0->1), (0->2), (1->4), (2->4)
    assert g.edge_index.tolist() == [[0, 0, 1, 2], [1, 2, 4, 4]]
    np.testing.assert_allclose(g.edge_attr[:, 0].numpy(), [10, 10, 20, 20])
    np.testing.assert_allclose(g.edge_attr[:, 1].numpy(), [0.10, 0.30, 0.02, 0.18], atol=1e-3)


def test_same_day_and_future_never_linked():
    lat, lon = at([0.0, 0.01, 0.02], [0.0, 0.0, 0.0])
    g = build_event_graph(lat, lon, np.array([5.0, 5.0, 5.0]), k=3, max_km=1.0, max_days=10.0)
    assert g.num_edges == 0
    # unsorted times: edges follow time, not index order
    g = build_event_graph(lat, lon, np.array([9.0, 1.0, 5.0]), k=3, max_km=1.0, max_days=10.0)
    assert edges(g) == {(1, 2), (1, 0), (2, 0)}


def test_out_degree_bound_hub_feeds_exactly_k():
    # A hub at the centre of a 0.5 km circle is the only source within max_km = 0.55 of
    # five later targets (neighbouring targets are 0.588 km apart): it feeds the first k.
    ang = np.radians(np.arange(5) * 72.0)
    x = np.concatenate([[0.0], 0.5 * np.cos(ang)])
    y = np.concatenate([[0.0], 0.5 * np.sin(ang)])
    lat, lon = at(list(x), list(y))
    t = np.arange(6, dtype=float)  # hub on day 0, targets on days 1..5
    g = build_event_graph(lat, lon, t, k=3, max_km=0.55, max_days=30.0)
    assert edges(g) == {(0, 1), (0, 2), (0, 3)}
    assert g.out_degree().tolist() == [3, 0, 0, 0, 0, 0]
    assert g.in_degree().tolist() == [0, 1, 1, 1, 0, 0]
    # with a larger bound the same hub feeds all five
    g_big = build_event_graph(lat, lon, t, k=5, max_km=0.55, max_days=30.0)
    assert int(g_big.out_degree()[0]) == 5


def test_saturated_source_is_skipped_for_next_closest():
    # A and B identical (same spot, same day: an exact tie, A has the lower index);
    # four later targets, more than max_km from each other.
    ang = np.radians(np.arange(4) * 90.0)
    x = np.concatenate([[0.0, 0.0], 0.5 * np.cos(ang)])
    y = np.concatenate([[0.0, 0.0], 0.5 * np.sin(ang)])
    lat, lon = at(list(x), list(y))
    t = np.array([0.0, 0.0, 2.0, 3.0, 4.0, 5.0])
    g = build_event_graph(lat, lon, t, k=1, max_km=0.6, max_days=30.0)
    # target 2 takes A; target 3 skips the saturated A and takes B; 4 and 5 get none
    assert edges(g) == {(0, 2), (1, 3)}
    assert g.in_degree().tolist() == [0, 0, 1, 1, 0, 0]


def test_ties_broken_by_lower_index():
    # 0 and 1 identical (place and day): exact tie for target 2; k=1 takes index 0.
    lat, lon = at([0.0, 0.0, 0.1], [0.0, 0.0, 0.0])
    t = np.array([0.0, 0.0, 1.0])
    assert edges(build_event_graph(lat, lon, t, k=1, max_km=1.0, max_days=5.0)) == {(0, 2)}
    # same data listed in the other order: still the lower index
    lat2, lon2, t2 = lat[[1, 0, 2]], lon[[1, 0, 2]], t[[1, 0, 2]]
    assert edges(build_event_graph(lat2, lon2, t2, k=1, max_km=1.0, max_days=5.0)) == {(0, 2)}


def test_group_restriction():
    lat, lon = at([0.0, 0.01, 0.02, 0.03], [0.0, 0.0, 0.0, 0.0])
    t = np.array([0.0, 1.0, 2.0, 3.0])
    group = np.array(["a", "b", "a", "b"])
    g = build_event_graph(lat, lon, t, k=4, max_km=1.0, max_days=10.0, group=group)
    assert edges(g) == {(0, 2), (1, 3)}
    g_all = build_event_graph(lat, lon, t, k=4, max_km=1.0, max_days=10.0)
    assert len(edges(g_all)) == 6


def test_max_km_and_max_days_respected_boundaries_included():
    # sources at 0.95 km and 1.05 km (max_km = 1); at exactly 100 days and 100.5 days
    lat, lon = at([0.95, 1.05, 0.0, 0.0, 0.0], [0.0, 0.0, 0.1, 0.1, 0.0])
    t = np.array([150.0, 150.0, 100.0, 99.5, 200.0])
    g = build_event_graph(lat, lon, t, k=8, max_km=1.0, max_days=100.0)
    assert {s for s, tt in edges(g) if tt == 4} == {0, 2}
    assert float(g.edge_attr[:, 0].max()) <= 100.0
    assert float(g.edge_attr[:, 1].max()) <= 1.0


def test_source_mask_rows_receive_but_never_send():
    lat, lon = at([0.0, 0.1, 0.2], [0.0, 0.0, 0.0])
    t = np.array([0.0, 1.0, 2.0])
    mask = np.array([True, False, True])
    g = build_event_graph(lat, lon, t, k=2, max_km=1.0, max_days=10.0, source_mask=mask)
    assert edges(g) == {(0, 1), (0, 2)}


def test_empty_and_single_point():
    g0 = build_event_graph([], [], [], k=3, max_km=1.0, max_days=1.0)
    assert g0.num_nodes == 0 and tuple(g0.edge_index.shape) == (2, 0)
    assert tuple(g0.edge_attr.shape) == (0, 2) and g0.in_degree().numel() == 0
    g1 = build_event_graph([48.0], [2.0], [10.0], k=3, max_km=1.0, max_days=1.0)
    assert g1.num_nodes == 1 and g1.num_edges == 0 and g1.in_degree().tolist() == [0]


def test_repr():
    lat, lon = at([0.0, 0.1], [0.0, 0.0])
    g = build_event_graph(lat, lon, [0.0, 1.0], k=8, max_km=1.5, max_days=365)
    assert repr(g) == "EventGraph(num_nodes=2, num_edges=1, k=8, max_km=1.5, max_days=365.0)"


def test_event_graph_rejects_degree_above_k_and_self_loops():
    ei = torch.tensor([[0, 0], [1, 2]])
    ea = torch.zeros(2, 2)
    with pytest.raises(ConfigError, match="out-degree 2 exceeds k=1"):
        EventGraph(ei, ea, 3, 1)
    with pytest.raises(ConfigError, match="self loop"):
        EventGraph(torch.tensor([[1], [1]]), torch.zeros(1, 2), 3, 1)
    with pytest.raises(ConfigError, match="outside"):
        EventGraph(torch.tensor([[0], [5]]), torch.zeros(1, 2), 3, 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, PrivacyParameterError, "k must be an integer >= 1"),
        ({"k": 2.5}, PrivacyParameterError, "k must be an integer >= 1"),
        ({"max_km": -1.0}, ConfigError, "max_km must be > 0"),
        ({"max_days": float("nan")}, ConfigError, "max_days must be > 0"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    params = {"k": 2, "max_km": 1.0, "max_days": 1.0} | kwargs
    with pytest.raises(error, match=match):
        build_event_graph([0.0], [0.0], [0.0], **params)


def test_bad_arrays():
    with pytest.raises(ConfigError, match=r"lat must be finite \(got nan at index 1\)"):
        build_event_graph([0.0, np.nan], [0.0, 0.0], [0, 1], k=1, max_km=1, max_days=1)
    with pytest.raises(ConfigError, match="t_days must have the same length"):
        build_event_graph([0.0, 0.0], [0.0, 0.0], [0], k=1, max_km=1, max_days=1)
    with pytest.raises(ConfigError, match=r"lat must be in \[-90, 90\]"):
        build_event_graph([95.0], [0.0], [0], k=1, max_km=1, max_days=1)
    with pytest.raises(ConfigError, match="source_mask must be a 1-D bool"):
        build_event_graph([0.0], [0.0], [0], k=1, max_km=1, max_days=1, source_mask=[1])


# --- the same rule, checked against the plain O(n^2) transcription ----------------------


def _random_case(rng: np.random.Generator):
    n = int(rng.integers(0, 40))
    # a coarse grid and integer days make exact ties (same place, same day) common
    x = rng.integers(0, 12, n) * 0.25
    y = rng.integers(0, 8, n) * 0.25
    lat, lon = at(list(x), list(y))
    t = rng.integers(0, 60, n).astype(float)
    if rng.random() < 0.3:
        t = t + rng.random(n)  # also continuous times
    k = int(rng.integers(1, 5))
    max_km = float(rng.choice([0.3, 0.8, 1.5, 5.0]))
    max_days = float(rng.choice([3.0, 10.0, 30.0, 100.0]))
    group = rng.integers(0, 3, n) if rng.random() < 0.3 else None
    mask = rng.random(n) < 0.8 if rng.random() < 0.3 else None
    return lat, lon, t, k, max_km, max_days, group, mask


def test_matches_bruteforce_reference_public_api():
    rng = np.random.default_rng(20240611)
    for _ in range(250):
        lat, lon, t, k, max_km, max_days, group, mask = _random_case(rng)
        g = build_event_graph(
            lat, lon, t, k=k, max_km=max_km, max_days=max_days, group=group, source_mask=mask
        )
        want = reference(lat, lon, t, k=k, max_km=max_km, max_days=max_days, group=group, mask=mask)
        assert edges(g) == want
        assert g.num_edges == len(want)


def test_matches_bruteforce_reference_small_chunks_and_widening():
    """Chunk size 1..3 and a tiny first query exercise the rebuild and widening paths."""
    rng = np.random.default_rng(7)
    for case in range(250):
        lat, lon, t, k, max_km, max_days, group, mask = _random_case(rng)
        n = t.shape[0]
        codes = None if group is None else labels("group", group, n)
        pts = _greedy.Points(unit_vectors(lat, lon).reshape(n, 3), t, codes, mask)
        links = _greedy.greedy_link(
            pts,
            pts,
            k=k,
            max_km=max_km,
            max_days=max_days,
            chunk=1 + case % 3,
            first_q=1 + case % 2,
        )
        got = set(zip(links.src.tolist(), links.tgt.tolist(), strict=True))
        want = reference(lat, lon, t, k=k, max_km=max_km, max_days=max_days, group=group, mask=mask)
        assert got == want
        # attributes belong to their edge
        np.testing.assert_array_equal(links.days, t[links.tgt] - t[links.src])


def test_invariants_on_a_dense_random_city():
    rng = np.random.default_rng(3)
    n = 3000
    lat, lon = at(list(rng.uniform(0, 5, n)), list(rng.uniform(0, 4, n)))
    t = np.floor(rng.uniform(0, 720, n))
    g = build_event_graph(lat, lon, t, k=5, max_km=0.8, max_days=180.0)
    src, dst = g.edge_index
    assert bool((torch.as_tensor(t)[src] < torch.as_tensor(t)[dst]).all())
    assert int(g.in_degree().max()) == 5 and int(g.out_degree().max()) == 5
    assert float(g.edge_attr[:, 0].min()) > 0 and float(g.edge_attr[:, 0].max()) <= 180
    assert float(g.edge_attr[:, 1].max()) <= 0.8
    # attributes recomputed from the inputs
    km = haversine_km(lat[src.numpy()], lon[src.numpy()], lat[dst.numpy()], lon[dst.numpy()])
    np.testing.assert_allclose(g.edge_attr[:, 1].numpy(), km, rtol=1e-6)
    # sorted by target; within a target non-decreasing score
    assert bool((dst[1:] >= dst[:-1]).all())
    score = g.edge_attr[:, 1] / 0.8 + g.edge_attr[:, 0] / 180.0
    same = dst[1:] == dst[:-1]
    assert bool((score[1:][same] >= score[:-1][same] - 1e-6).all())


# --- the cascade-free "recent" rule -------------------------------------------------------


def _recent_reference(lat, lon, t, group, k, max_km, max_days):
    """Plain O(n^2) statement of the rule: the k rows right before i in its group's
    (t, row) order, kept when strictly earlier and within the windows."""
    from fedmugrep.graphs.geo import haversine_km

    n = len(t)
    edges = set()
    for i in range(n):
        before = [j for j in range(n) if group[j] == group[i] and (t[j], j) < (t[i], i)]
        before.sort(key=lambda j: (t[j], j))
        for j in before[-k:]:
            km = float(
                haversine_km(
                    np.array([lat[j]]), np.array([lon[j]]), np.array([lat[i]]), np.array([lon[i]])
                )[0]
            )
            if t[j] < t[i] and t[i] - t[j] <= max_days and km <= max_km:
                edges.add((j, i))
    return edges


def test_recent_rule_matches_reference_and_is_cascade_free():
    rng = np.random.default_rng(7)
    for _ in range(150):
        n = int(rng.integers(1, 30))
        k = int(rng.integers(1, 5))
        lat = 48.85 + rng.uniform(0, 0.02, n)
        lon = 2.35 + rng.uniform(0, 0.02, n)
        t = rng.integers(0, 40, n).astype(float)  # many same-day ties
        group = rng.integers(0, 3, n)
        g = build_event_graph(lat, lon, t, k=k, max_km=1.5, max_days=15, group=group, rule="recent")
        got = set(map(tuple, g.edge_index.t().tolist()))
        assert got == _recent_reference(lat, lon, t, group, k, 1.5, 15)
        if g.num_edges:
            assert int(g.out_degree().max()) <= k and int(g.in_degree().max()) <= k
        assert all(t[j] < t[i] for j, i in got)
        # removing one record changes the neighbour sets of at most k other targets
        if n > 1:
            r = int(rng.integers(0, n))
            keep = np.array([i for i in range(n) if i != r])
            g2 = build_event_graph(
                lat[keep],
                lon[keep],
                t[keep],
                k=k,
                max_km=1.5,
                max_days=15,
                group=group[keep],
                rule="recent",
            )
            before = {i: {j for j, d in got if d == i} for i in keep}
            after = {int(keep[i]): set() for i in range(len(keep))}
            for j, i in g2.edge_index.t().tolist():
                after[int(keep[i])].add(int(keep[j]))
            changed = [i for i in keep if before[i] - {r} != after[int(i)] or r in before[i]]
            assert len(changed) <= k


def test_recent_rule_rejects_unknown_rule():
    with pytest.raises(ConfigError, match="rule must be"):
        build_event_graph([0.0], [0.0], [0.0], k=1, max_km=1, max_days=1, rule="nearest")

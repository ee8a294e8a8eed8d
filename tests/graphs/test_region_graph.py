"""Region graphs: intra-community kNN (C3) and the heterogeneous community graph (C5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmugrep.errors import ConfigError, PrivacyParameterError
from fedmugrep.graphs.geo import EARTH_RADIUS_KM, haversine_km
from fedmugrep.graphs.region import (
    RELATIONS,
    build_community_graph,
    build_intra_region_graph,
    community_index,
)

LAT0, LON0 = 48.85, 2.35
KM_PER_DEG = math.pi * EARTH_RADIUS_KM / 180.0
GEO, SIMILAR, MOBILITY = RELATIONS


def at(x_km, y_km):
    x, y = np.asarray(x_km, float), np.asarray(y_km, float)
    return LAT0 + y / KM_PER_DEG, LON0 + x / (KM_PER_DEG * math.cos(math.radians(LAT0)))


def pairs(ei: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in ei.t().tolist()}


def undirected(*edges: tuple[int, int]) -> set[tuple[int, int]]:
    return {(a, b) for a, b in edges} | {(b, a) for a, b in edges}


def is_symmetric(ei: torch.Tensor) -> bool:
    p = pairs(ei)
    return p == {(b, a) for a, b in p}


# --- community_index -------------------------------------------------------------------


def test_community_index_codes_and_names():
    codes, names = community_index(np.array(["b", "a", "b", "c"]))
    assert names == ["a", "b", "c"]
    assert codes.dtype == torch.long and codes.tolist() == [1, 0, 1, 2]
    codes, names = community_index(np.array([7, "7", 3], dtype=object))
    assert names == ["3", "7"] and codes.tolist() == [1, 1, 0]
    codes, names = community_index(np.array([], dtype=str))
    assert names == [] and codes.numel() == 0


# --- intra-region graph ----------------------------------------------------------------


def test_intra_region_hand_case_k1_and_k2():
    # community a on a line at 0, 0.1, 0.3, 1.0 km; community b at 0.05 and 2.0 km:
    # b's first point is the spatial nearest of a's first two, but never linked to them.
    lat, lon = at([0.0, 0.1, 0.3, 1.0, 0.05, 2.0], [0.0] * 6)
    comm = np.array(["a", "a", "a", "a", "b", "b"])
    ei = build_intra_region_graph(comm, lat, lon, k=1)
    assert ei.dtype == torch.long
    assert pairs(ei) == undirected((0, 1), (1, 2), (2, 3), (4, 5))
    ei2 = build_intra_region_graph(comm, lat, lon, k=2)
    # 0->{1,2}; 1->{0,2}; 2->{1,0}; 3->{2,1}; b has only two members
    assert pairs(ei2) == undirected((0, 1), (0, 2), (1, 2), (2, 3), (1, 3), (4, 5))
    assert is_symmetric(ei2)
    # sorted by (row, col), no duplicates
    flat = ei2[0] * 10 + ei2[1]
    assert bool((flat[1:] > flat[:-1]).all())


def test_intra_region_degree_cap_keeps_closest_pairs():
    # a centre with four spokes (N 0.1, E 0.2, S 0.3, W 0.4 km): every spoke's nearest is
    # the centre, so plain 1-NN gives the centre degree 4; a cap of 2 keeps N and E.
    lat, lon = at([0.0, 0.0, 0.2, 0.0, -0.4], [0.0, 0.1, 0.0, -0.3, 0.0])
    comm = np.zeros(5, dtype=int)
    plain = build_intra_region_graph(comm, lat, lon, k=1)
    assert pairs(plain) == undirected((0, 1), (0, 2), (0, 3), (0, 4))
    capped = build_intra_region_graph(comm, lat, lon, k=1, max_degree=2)
    assert pairs(capped) == undirected((0, 1), (0, 2))


def test_intra_region_duplicates_ties_by_index_and_tiny_inputs():
    # three identical points: with k=1 point 0 picks 1, and 1 and 2 pick 0
    lat, lon = at([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    ei = build_intra_region_graph(np.array([1, 1, 1]), lat, lon, k=1)
    assert pairs(ei) == undirected((0, 1), (0, 2))
    assert tuple(build_intra_region_graph(np.array([]), [], [], k=3).shape) == (2, 0)
    assert tuple(build_intra_region_graph(np.array(["x"]), [1.0], [2.0], k=3).shape) == (2, 0)
    # singleton communities get no edges
    ei = build_intra_region_graph(np.array(["x", "y"]), lat[:2], lon[:2], k=3)
    assert ei.shape[1] == 0


def test_intra_region_bad_arguments():
    with pytest.raises(PrivacyParameterError, match="k must be an integer >= 1"):
        build_intra_region_graph(np.array(["a"]), [0.0], [0.0], k=0)
    with pytest.raises(PrivacyParameterError, match="max_degree must be an integer >= 1"):
        build_intra_region_graph(np.array(["a"]), [0.0], [0.0], k=1, max_degree=0)
    with pytest.raises(ConfigError, match="community must be 1-D with one entry per point"):
        build_intra_region_graph(np.array(["a", "b"]), [0.0], [0.0], k=1)


def _reference_knn(comm, lat, lon, k):
    n = len(comm)
    km = haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    chosen = set()
    for i in range(n):
        cands = sorted((km[i, j], j) for j in range(n) if j != i and comm[j] == comm[i])
        for _, j in cands[:k]:
            chosen |= {(i, j), (j, i)}
    return chosen


def test_intra_region_matches_bruteforce_reference():
    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(0, 40))
        x, y = rng.uniform(0, 3, n), rng.uniform(0, 2, n)
        if n > 3:  # some exact duplicates
            x[: n // 4] = x[n // 4 : 2 * (n // 4)]
            y[: n // 4] = y[n // 4 : 2 * (n // 4)]
        lat, lon = at(x, y)
        comm = rng.integers(0, 4, n)
        k = int(rng.integers(1, 6))
        ei = build_intra_region_graph(comm, lat, lon, k=k)
        assert pairs(ei) == _reference_knn(comm, lat, lon, k)
        cap = int(rng.integers(1, 4))
        capped = build_intra_region_graph(comm, lat, lon, k=k, max_degree=cap)
        assert is_symmetric(capped) and pairs(capped) <= pairs(ei)
        deg = torch.bincount(capped[0], minlength=n)
        assert n == 0 or int(deg.max()) <= cap
        if capped.numel():
            assert bool((capped[0] != capped[1]).all())
            assert bool(
                (torch.as_tensor(comm)[capped[0]] == torch.as_tensor(comm)[capped[1]]).all()
            )


# --- community graph -------------------------------------------------------------------


def test_geo_relation_hand_case():
    # centres on a line at 0, 1, 3, 7 km: 1-NN: 0->1, 1->0, 2->1, 3->2
    lat, lon = at([0.0, 1.0, 3.0, 7.0], [0.0] * 4)
    d = build_community_graph(list("abcd"), lat, lon, np.zeros((4, 1)), geo_k=1, attr_k=0)
    assert pairs(d[GEO].edge_index) == undirected((0, 1), (1, 2), (2, 3))
    d2 = build_community_graph(list("abcd"), lat, lon, np.zeros((4, 1)), geo_k=2, attr_k=0)
    # 0->{1,2}; 1->{0,2}; 2->{1,0}; 3->{2,1}
    assert pairs(d2[GEO].edge_index) == undirected((0, 1), (0, 2), (1, 2), (2, 3), (1, 3))
    # ties: 1 and 2 share a centre; 0 and 3 each take the lower index, 1 and 2 each other
    lat, lon = at([0.0, 1.0, 1.0, 3.0], [0.0] * 4)
    d3 = build_community_graph(list("abcd"), lat, lon, np.zeros((4, 1)), geo_k=1, attr_k=0)
    assert pairs(d3[GEO].edge_index) == undirected((0, 1), (1, 2), (3, 1))
    # identical attribute rows tie the same way
    attrs = np.array([[0.0], [1.0], [1.0], [3.0]])
    d4 = build_community_graph(list("abcd"), lat[[0, 0, 0, 0]], lon[[0, 0, 0, 0]], attrs, attr_k=1)
    assert pairs(d4[SIMILAR].edge_index) == undirected((0, 1), (1, 2), (3, 1))


def test_similar_relation_hand_case_euclidean_and_cosine():
    # one informative column (positive scaling by standardisation keeps the order)
    attrs = np.array([[0.0, 5.0], [1.0, 5.0], [10.0, 5.0], [12.0, 5.0]])
    lat, lon = at([0.0, 1.0, 2.0, 3.0], [0.0] * 4)
    d = build_community_graph(list("abcd"), lat, lon, attrs, geo_k=0, attr_k=1)
    assert pairs(d[SIMILAR].edge_index) == undirected((0, 1), (2, 3))
    # each column has mean 0 and the same variance (4.5), so standardising is a uniform
    # scaling. P=(1,0) and Q=(4,0.2) point almost the same way; R=(1,0.9) is near P.
    s = math.sqrt(18.0 - 0.04 - 0.81)
    pts = np.array([[1, 0], [4, 0.2], [1, 0.9], [0, s]], dtype=float)
    attrs2 = np.concatenate([pts, -pts])  # P Q R S p q r s
    lat8, lon8 = at(np.arange(8.0), np.zeros(8))
    eu = build_community_graph(list("PQRSpqrs"), lat8, lon8, attrs2, geo_k=0, attr_k=1)
    co = build_community_graph(
        list("PQRSpqrs"), lat8, lon8, attrs2, geo_k=0, attr_k=1, attr_metric="cosine"
    )
    # euclidean 1-NN: P->R, Q->P, R->P, S->R (and the mirror images)
    assert pairs(eu[SIMILAR].edge_index) == undirected(
        (0, 2), (1, 0), (3, 2), (4, 6), (5, 4), (7, 6)
    )
    # cosine 1-NN: P->Q, Q->P, R->Q (42 deg vs Q's 3 deg), S->R (and the mirror images)
    assert pairs(co[SIMILAR].edge_index) == undirected(
        (0, 1), (2, 1), (3, 2), (4, 5), (6, 5), (7, 6)
    )


def test_mobility_top_k_and_normalisation():
    src = np.array([0, 0, 0, 0, 1, 1, 2, 0])
    dst = np.array([1, 2, 3, 0, 0, 2, 3, 1])
    flow = np.array([5.0, 3.0, 2.0, 100.0, 4.0, 4.0, 0.0, 5.0])
    # 0: {1: 5+5, 2: 3, 3: 2} (self flow dropped), sum 15; 1: {0: 4, 2: 4}; 2: zero flow
    lat, lon = at([0.0, 1.0, 2.0, 3.0], [0.0] * 4)
    d = build_community_graph(
        list("abcd"), lat, lon, np.eye(4), mobility=(src, dst, flow), mobility_k=2
    )
    assert d[MOBILITY].edge_index.tolist() == [[0, 0, 1, 1], [1, 2, 0, 2]]
    np.testing.assert_allclose(d[MOBILITY].edge_weight.numpy(), [10 / 15, 3 / 15, 0.5, 0.5])
    assert d[MOBILITY].edge_weight.dtype == torch.float32
    d1 = build_community_graph(
        list("abcd"), lat, lon, np.eye(4), mobility=(src, dst, flow), mobility_k=1
    )
    # tie 1->0 vs 1->2 (both 4): the lower destination index wins
    assert d1[MOBILITY].edge_index.tolist() == [[0, 1], [1, 0]]
    np.testing.assert_allclose(d1[MOBILITY].edge_weight.numpy(), [10 / 15, 0.5])


def test_empty_mobility_relation_present_and_shapes():
    lat, lon = at([0.0, 1.0, 2.0], [0.0] * 3)
    attrs = np.array([[1.0, 2.0], [2.0, 0.0], [3.0, 1.0]])
    for mob in (None, (np.array([0]), np.array([0]), np.array([3.0]))):
        d = build_community_graph(["x", "y", "z"], lat, lon, attrs, mobility=mob)
        for rel in RELATIONS:
            assert rel in d.edge_types
            assert d[rel].edge_index.dtype == torch.long and d[rel].edge_index.shape[0] == 2
        assert tuple(d[MOBILITY].edge_index.shape) == (2, 0)
        assert tuple(d[MOBILITY].edge_weight.shape) == (0,)
    node = d["community"]
    assert node.x.dtype == torch.float32 and tuple(node.x.shape) == (3, 2)
    assert tuple(node.pos.shape) == (3, 2) and node.names == ["x", "y", "z"]
    # geo_k larger than C - 1: everyone linked to everyone, no self loops
    assert pairs(d[GEO].edge_index) == undirected((0, 1), (0, 2), (1, 2))
    d.validate(raise_on_error=True)


def test_community_graph_without_attribute_columns_has_empty_similar():
    lat, lon = at([0.0, 1.0], [0.0, 0.0])
    d = build_community_graph(["x", "y"], lat, lon, np.zeros((2, 0)))
    assert tuple(d[SIMILAR].edge_index.shape) == (2, 0)
    assert pairs(d[GEO].edge_index) == undirected((0, 1))


def test_community_graph_random_invariants():
    rng = np.random.default_rng(5)
    for _ in range(30):
        c = int(rng.integers(1, 25))
        lat, lon = at(rng.uniform(0, 10, c), rng.uniform(0, 10, c))
        attrs = rng.normal(size=(c, 3))
        m = int(rng.integers(0, 60))
        mob = (rng.integers(0, c, m), rng.integers(0, c, m), rng.uniform(0, 10, m))
        d = build_community_graph([f"c{i}" for i in range(c)], lat, lon, attrs, mobility=mob)
        assert pairs(d[GEO].edge_index) == _reference_knn(np.zeros(c), lat, lon, 4)
        for rel in (GEO, SIMILAR):
            ei = d[rel].edge_index
            assert is_symmetric(ei) and bool((ei[0] != ei[1]).all())
            # every node has at least min(4, c-1) neighbours
            deg = torch.bincount(ei[0], minlength=c)
            assert int(deg.min()) >= min(4, c - 1)
        mi, mw = d[MOBILITY].edge_index, d[MOBILITY].edge_weight
        assert bool((mi[0] != mi[1]).all()) and int(torch.bincount(mi[0], minlength=c).max()) <= 4
        sums = torch.zeros(c).index_add_(0, mi[0], mw)
        assert bool((sums <= 1 + 1e-6).all()) and bool((mw > 0).all())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"names": ["a", "a"]}, "names must be unique"),
        ({"attrs": np.array([[1.0], [np.nan]])}, "attrs must be finite"),
        ({"attrs": np.zeros((3, 1))}, r"attrs must be \[C, a\] with C=2"),
        ({"geo_k": -1}, "geo_k must be an integer >= 0"),
        ({"attr_metric": "manhattan"}, r"attr_metric must be one of \['euclidean', 'cosine'\]"),
        ({"mobility": (np.array([0]), np.array([2]), np.array([1.0]))}, r"must be in \[0, 2\)"),
        ({"mobility": (np.array([0]), np.array([1]), np.array([-1.0]))}, "flow must be >= 0"),
    ],
)
def test_community_graph_bad_arguments(kwargs, match):
    lat, lon = at([0.0, 1.0], [0.0, 0.0])
    args = {"names": ["a", "b"], "attrs": np.zeros((2, 1))} | kwargs
    names, attrs = args.pop("names"), args.pop("attrs")
    with pytest.raises(ConfigError, match=match):
        build_community_graph(names, lat, lon, attrs, **args)

"""Region graphs: intra-community transaction graphs (C3) and the community graph (C5).

* :func:`build_intra_region_graph` — the *first region graph*: inside each community, a
  symmetric k-nearest-neighbour graph over its transactions (great-circle distance, ties:
  lower index first). Communities never connect to each other; no self loops. With
  ``max_degree`` the graph is degree-capped by a deterministic greedy rule (below).
* :func:`build_community_graph` — the *second region graph*: a heterogeneous graph over
  communities with three relations: ``geo`` (kNN by distance, symmetric), ``similar``
  (kNN on standardised attributes, symmetric) and ``mobility`` (top-k outgoing flows per
  source, weighted by the share of the source's outgoing flow). A relation with no edges
  is still present with an empty ``[2, 0]`` index so models never branch.

Privacy note (C3). A plain symmetric kNN graph bounds each node's *own* choices by ``k``
but not its degree: a transaction can be among the nearest of many others. The intra-region
release's sensitivity grows with the maximum degree, so pass ``max_degree`` when its
output leaves the datasite. The cap keeps the closest pairs first: all candidate pairs
``{i, j}`` (``j`` among the ``k`` nearest of ``i`` or vice versa) are visited in increasing
``(distance, min(i, j), max(i, j))`` and kept while both endpoints have degree
``< max_degree``. As with the event graph, one added/removed record can change other
pairs' selection (a cascade), so the degree bound holds in every graph but a sensitivity
proof must not assume the rest of the graph is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import HeteroData

from fedmugrep.errors import ConfigError
from fedmugrep.graphs import _checks
from fedmugrep.graphs._knn import dense_knn, grouped_geo_knn, symmetric
from fedmugrep.graphs.geo import unit_vectors

__all__ = [
    "NODE_TYPE",
    "RELATIONS",
    "build_community_graph",
    "build_intra_region_graph",
    "community_index",
]

NODE_TYPE = "community"
RELATIONS: tuple[tuple[str, str, str], ...] = (
    (NODE_TYPE, "geo", NODE_TYPE),
    (NODE_TYPE, "similar", NODE_TYPE),
    (NODE_TYPE, "mobility", NODE_TYPE),
)
ATTR_METRICS: tuple[str, ...] = ("euclidean", "cosine")


def community_index(community: np.ndarray) -> tuple[torch.Tensor, list[str]]:
    """Integer codes for community labels.

    Labels are compared as strings (``7`` and ``"7"`` are the same community); ``names``
    is sorted, and ``names[codes[i]] == str(community[i])``.

    Shapes:
        community ``[n]`` -> codes ``[n]`` long, names ``[C]``.

    Example:
        >>> codes, names = community_index(["b", "a", "b"])
        >>> codes.tolist(), names
        ([1, 0, 1], ['a', 'b'])
    """
    arr = np.asarray(community)
    if arr.ndim != 1:
        raise ConfigError(
            f"community must be 1-D (got shape {tuple(arr.shape)}); pass one label per row"
        )
    names, codes = np.unique(arr.astype(str), return_inverse=True)
    return torch.from_numpy(codes.reshape(-1).astype(np.int64)), [str(s) for s in names]


def _capped(u: np.ndarray, i: np.ndarray, j: np.ndarray, max_degree: int) -> np.ndarray:
    """Greedy degree cap over candidate pairs (closest first); returns ``[2, E]`` symmetric."""
    pairs = symmetric(i, j)
    lo_hi = pairs[:, pairs[0] < pairs[1]]
    a, b = lo_hi
    diff = u[a] - u[b]
    chord = np.sqrt(diff[:, 0] ** 2 + diff[:, 1] ** 2 + diff[:, 2] ** 2)
    order = np.lexsort((b, a, chord))
    deg = [0] * u.shape[0]
    keep: list[int] = []
    for e, x, y in zip(order.tolist(), a[order].tolist(), b[order].tolist(), strict=True):
        if deg[x] < max_degree and deg[y] < max_degree:
            deg[x] += 1
            deg[y] += 1
            keep.append(e)
    kept = np.asarray(keep, dtype=np.int64)
    return symmetric(a[kept], b[kept])


def build_intra_region_graph(
    community: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    k: int,
    max_degree: int | None = None,
) -> torch.Tensor:
    """Symmetric kNN graph among the transactions of each community (the first region graph).

    Args:
        community: community label of each transaction (any dtype; compared as strings).
        lat: latitudes, WGS84 degrees.
        lon: longitudes, WGS84 degrees.
        k: neighbours each transaction picks within its community (``>= 1``).
        max_degree: optional cap on every node's degree (greedy, closest pairs first; see
            the module docstring). ``None``: plain symmetric kNN, degree unbounded.

    Returns:
        ``edge_index`` with both directions of every edge, sorted by (row, col).

    Shapes:
        community, lat, lon ``[n]`` -> ``[2, E]`` long.
    """
    k = _checks.degree_bound("k", k)
    if max_degree is not None:
        max_degree = _checks.degree_bound("max_degree", max_degree)
    la, lo = _checks.lat_lon(lat, lon)
    n = la.shape[0]
    codes = _checks.labels("community", np.asarray(community).astype(str), n)
    u = unit_vectors(la, lo).reshape(n, 3)
    i, j = grouped_geo_knn(u, codes, k)
    ei = symmetric(i, j) if max_degree is None else _capped(u, i, j, max_degree)
    return torch.from_numpy(ei)


def _standardise(attrs: np.ndarray) -> np.ndarray:
    mean = attrs.mean(axis=0, keepdims=True)
    std = attrs.std(axis=0, keepdims=True)
    return (attrs - mean) / np.where(std > 0, std, 1.0)


def _mobility(
    mobility: tuple[np.ndarray, np.ndarray, np.ndarray] | None, c: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k outgoing flows per source and their share of the source's outgoing flow."""
    empty = np.zeros((2, 0), np.int64), np.zeros(0, np.float64)
    if mobility is None or k == 0:
        return empty
    if len(mobility) != 3:
        raise ConfigError(
            f"mobility must be (src_idx, dst_idx, flow) (got {len(mobility)} items); "
            "pass three equal-length arrays"
        )
    src = np.asarray(mobility[0])
    dst = np.asarray(mobility[1])
    flow = _checks.float_array("mobility flow", mobility[2])
    m = flow.shape[0]
    for name, arr in (("mobility src_idx", src), ("mobility dst_idx", dst)):
        if arr.shape != (m,) or (m and not np.issubdtype(arr.dtype, np.integer)):
            raise ConfigError(
                f"{name} must be a 1-D integer array of length {m} (got {arr.dtype} "
                f"{tuple(arr.shape)}); pass community indices into names"
            )
        if m and (arr.min() < 0 or arr.max() >= c):
            raise ConfigError(
                f"{name} must be in [0, {c}) (got {int(arr.min())}..{int(arr.max())}); "
                "pass indices into names"
            )
    if m and flow.min() < 0:
        raise ConfigError(
            f"mobility flow must be >= 0 (got {flow.min()}); pass non-negative flow counts"
        )
    keep = (src != dst) & (flow > 0)
    src, dst, flow = src[keep].astype(np.int64), dst[keep].astype(np.int64), flow[keep]
    if src.size == 0:
        return empty
    # aggregate duplicate (src, dst) rows
    key = src * c + dst
    uniq, inv = np.unique(key, return_inverse=True)
    total = np.bincount(inv.reshape(-1), weights=flow)
    src, dst = uniq // c, uniq % c
    out_sum = np.bincount(src, weights=total, minlength=c)
    order = np.lexsort((dst, -total, src))
    src, dst, total = src[order], dst[order], total[order]
    first = np.searchsorted(src, src, side="left")
    rank = np.arange(src.shape[0]) - first
    top = rank < k
    src, dst, total = src[top], dst[top], total[top]
    return np.stack([src, dst]), total / out_sum[src]


def build_community_graph(
    names: list[str],
    lat: np.ndarray,
    lon: np.ndarray,
    attrs: np.ndarray,
    *,
    geo_k: int = 4,
    attr_k: int = 4,
    mobility: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    mobility_k: int = 4,
    attr_metric: str = "euclidean",
) -> HeteroData:
    """The heterogeneous community graph (the second region graph, C5).

    Relations (all without self loops):

    * ``("community", "geo", "community")``: each community and its ``geo_k`` nearest
      communities by great-circle distance between centres, symmetrised.
    * ``("community", "similar", "community")``: each community and its ``attr_k``
      nearest by ``attr_metric`` distance on per-column standardised attributes
      (z-scores; constant columns become 0), symmetrised. Empty when ``attrs`` has no
      columns. ``"cosine"`` uses ``1 - cos``; an all-zero row has cosine 0 to all.
    * ``("community", "mobility", "community")``: for each source, its ``mobility_k``
      largest outgoing flows (ties: lower destination index), directed source ->
      destination, with ``edge_weight = flow / (sum of the source's outgoing flows)``.
      Self flows and zero flows are dropped (and excluded from the sum); duplicate
      ``(src, dst)`` rows are summed. No mobility: the relation is present and empty.

    Ties in ``geo``/``similar`` are broken by lower index.

    Args:
        names: community names, one per row (unique).
        lat, lon: community centres, WGS84 degrees.
        attrs: community attributes (third feature set), finite.
        geo_k, attr_k, mobility_k: neighbours per relation (``0``: empty relation).
        mobility: optional ``(src_idx, dst_idx, flow)``; indices into ``names``.
        attr_metric: ``"euclidean"`` or ``"cosine"``.

    Returns:
        ``HeteroData`` with ``data["community"].x`` (float32 ``[C, a]``), ``.pos``
        (float32 ``[C, 2]``, lat/lon), ``.names``; each relation's ``edge_index``; and the
        mobility relation's ``edge_weight`` (float32 ``[E_m]``).

    Shapes:
        names ``[C]``, lat, lon ``[C]``, attrs ``[C, a]`` -> edge indices ``[2, E_r]``.
    """
    names = [str(s) for s in names]
    c = len(names)
    if len(set(names)) != c:
        dup = next(s for s in names if names.count(s) > 1)
        raise ConfigError(f"names must be unique (got '{dup}' twice); pass one row per community")
    la, lo = _checks.lat_lon(lat, lon)
    if la.shape[0] != c:
        raise ConfigError(
            f"lat/lon must have one entry per community ({c}) (got {la.shape[0]}); "
            "pass the centre of each community in names order"
        )
    a = np.asarray(attrs, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != c:
        raise ConfigError(
            f"attrs must be [C, a] with C={c} (got shape {tuple(a.shape)}); "
            "pass one attribute row per community"
        )
    if not np.isfinite(a).all():
        r, col = np.argwhere(~np.isfinite(a))[0]
        raise ConfigError(
            f"attrs must be finite (got {a[r, col]} at row {r}, column {col}); "
            "impute missing attributes first"
        )
    geo_k = _checks.count("geo_k", geo_k)
    attr_k = _checks.count("attr_k", attr_k)
    mobility_k = _checks.count("mobility_k", mobility_k)
    if attr_metric not in ATTR_METRICS:
        raise ConfigError(
            f"attr_metric must be one of {list(ATTR_METRICS)} (got {attr_metric!r}); "
            "pass 'euclidean' or 'cosine'"
        )

    u = unit_vectors(la, lo).reshape(c, 3)

    def geo_block(rows: np.ndarray) -> np.ndarray:
        diff = u[rows][:, None, :] - u[None, :, :]
        return np.sqrt((diff**2).sum(axis=-1))

    geo = symmetric(*dense_knn(c, geo_k, geo_block, width=3))

    similar = np.zeros((2, 0), np.int64)
    if a.shape[1] > 0:
        z = _standardise(a)
        if attr_metric == "cosine":
            norm = np.linalg.norm(z, axis=1, keepdims=True)
            z = z / np.where(norm > 0, norm, 1.0)

            def attr_block(rows: np.ndarray) -> np.ndarray:
                return 1.0 - z[rows] @ z.T

        else:

            def attr_block(rows: np.ndarray) -> np.ndarray:
                diff = z[rows][:, None, :] - z[None, :, :]
                return np.sqrt((diff**2).sum(axis=-1))

        similar = symmetric(*dense_knn(c, attr_k, attr_block, width=a.shape[1]))

    mob_index, mob_weight = _mobility(mobility, c, mobility_k)

    data = HeteroData()
    data[NODE_TYPE].x = torch.from_numpy(a.astype(np.float32))
    data[NODE_TYPE].pos = torch.from_numpy(np.stack([la, lo], axis=1).astype(np.float32))
    data[NODE_TYPE].names = names
    data[NODE_TYPE].num_nodes = c
    for rel, ei in zip(RELATIONS, (geo, similar, mob_index), strict=True):
        data[rel].edge_index = torch.from_numpy(ei.astype(np.int64)).reshape(2, -1)
    data[RELATIONS[2]].edge_weight = torch.from_numpy(mob_weight.astype(np.float32))
    return data

"""The transaction event graph (capability C1) and the query edges used for valuation.

A *target* transaction ``i`` receives messages from at most ``K`` *earlier* transactions
``j`` that are close to it in space and time. Edges point ``j -> i`` (row 0 of
``edge_index`` is the source ``j``, row 1 the target ``i``); ``edge_attr`` holds
``(delta_days, distance_km)`` with ``delta_days = t_i - t_j > 0``.

Choice rule (part of the privacy argument; deterministic)
----------------------------------------------------------
1. ``j`` is *eligible* for ``i`` iff ``t_j < t_i`` (strictly: never the same day, never
   the future), ``t_i - t_j <= max_days``, ``haversine_km(j, i) <= max_km``, both are in
   the same ``group`` (when groups are given) and ``j`` may be a source (``source_mask``).
2. Targets are processed in increasing ``(t_i, i)`` order.
3. Each target ranks its eligible sources by
   ``score = km / max_km + days / max_days`` (closest first; ties: lower index first) and
   walks down that list, **skipping any source whose out-degree already reached K**, taking
   sources until ``K`` are taken or the list ends.

Consequences: in-degree ``<= K`` (step 3 stops at ``K``) and out-degree ``<= K`` (step 3
skips saturated sources) for every node, in every graph this function builds — these are
the ``K`` bounds of ARCHITECTURE §3. Distances are great-circle km
(:func:`fedmugrep.graphs.geo.haversine_km`).

Privacy note for the sensitivity argument (add/remove one transaction ``r``). Within one
graph, ``r`` sends at most ``K`` messages and receives at most ``K``. The graphs built on two
neighbouring datasets, however, can differ in more than ``r``'s own ``<= 2K`` edges:
removing ``r`` frees the slots it used, so its targets pick replacement sources, which
then saturate earlier and deflect later targets (a cascade). Measured on uniform random
cities with ``K = 8``: removing one record changed the in-neighbour sets of 9-88 other
targets (n = 10k) and 17-598 (n = 100k). The degree bounds hold in both graphs, but an
argument that "only ``r`` and its ``<= K`` targets change" is not valid for this rule
unless the graph structure is treated as fixed (public) or the loss of every target is
clipped and counted as affected wherever its neighbourhood may change.

Cascade-free alternative: ``rule="recent"``
-------------------------------------------
Order each group's rows by ``(t, row)``. Target ``i``'s sources are the rows among the ``K``
*immediately preceding* ``i`` in that order that are strictly earlier in time and within
``max_days`` / ``max_km`` (so same-day sales are never linked, and a target may get fewer than
``K``). A row ``r`` can only feed the ``K`` rows right after it, so out-degree ``<= K`` holds by
construction, and removing ``r`` shifts exactly those ``K`` windows by one position: at most
``K`` other targets' neighbour sets change, and nothing else does. With per-target L2
clipping at ``C`` the sum of per-target gradients therefore has L2 sensitivity
``(1 + 2K) C`` under add/remove of one record. The federation uses this rule;
``rule="greedy"`` (the default above) links by proximity but lacks this property.

Complexity (greedy): targets are processed in time chunks; a KD-tree over the live sources of each
chunk answers ranked-prefix queries (details in :mod:`fedmugrep.graphs._greedy`). Roughly
``O(n log n + n K)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedmugrep.errors import ConfigError
from fedmugrep.graphs import _checks
from fedmugrep.graphs._greedy import Links, Points, greedy_link
from fedmugrep.graphs._recent import recent_query_links, recent_window_links
from fedmugrep.graphs.geo import unit_vectors

__all__ = ["EventGraph", "build_event_graph", "build_query_edges"]

EDGE_ATTR_NAMES: tuple[str, str] = ("delta_days", "distance_km")


@dataclass(frozen=True, eq=False)
class EventGraph:
    """A degree-bounded event graph: earlier transactions -> later transactions.

    Construction checks the invariants (shapes, index range, no self loops, in- and
    out-degree ``<= k``) so a graph that breaks the privacy bound cannot exist.

    Args:
        edge_index: ``[2, E]`` long; row 0 = source (earlier), row 1 = target (later).
        edge_attr: ``[E, 2]`` float32; ``(delta_days, distance_km)``.
        num_nodes: number of transactions ``N``.
        k: the degree bound ``K``.
        max_km: distance bound the graph was built with (``None`` if unknown).
        max_days: time-window bound the graph was built with (``None`` if unknown).

    Shapes:
        edge_index ``[2, E]``, edge_attr ``[E, 2]``; ``in_degree()``/``out_degree()`` ``[N]``.
    """

    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    num_nodes: int
    k: int
    max_km: float | None = None
    max_days: float | None = None

    def __post_init__(self) -> None:
        ei, ea = self.edge_index, self.edge_attr
        if ei.dtype != torch.long or ei.dim() != 2 or ei.shape[0] != 2:
            raise ConfigError(
                f"edge_index must be a [2, E] long tensor (got {ei.dtype} {tuple(ei.shape)}); "
                "build it with build_event_graph"
            )
        if ea.dtype != torch.float32 or ea.shape != (ei.shape[1], 2):
            raise ConfigError(
                f"edge_attr must be a [E, 2] float32 tensor with E={ei.shape[1]} "
                f"(got {ea.dtype} {tuple(ea.shape)}); build it with build_event_graph"
            )
        _checks.degree_bound("k", self.k)
        if self.num_nodes < 0:
            raise ConfigError(f"num_nodes must be >= 0 (got {self.num_nodes}); pass len(lat)")
        if ei.numel():
            if int(ei.min()) < 0 or int(ei.max()) >= self.num_nodes:
                raise ConfigError(
                    f"edge_index has node ids outside [0, {self.num_nodes}); "
                    "pass num_nodes = number of transactions"
                )
            if bool((ei[0] == ei[1]).any()):
                raise ConfigError("edge_index has a self loop; a target must not see its own label")
            for name, deg in (("in", self.in_degree()), ("out", self.out_degree())):
                if int(deg.max()) > self.k:
                    raise ConfigError(
                        f"{name}-degree {int(deg.max())} exceeds k={self.k}; "
                        "the privacy bound needs degree <= k, build with build_event_graph"
                    )

    @property
    def num_edges(self) -> int:
        """Number of edges ``E``."""
        return int(self.edge_index.shape[1])

    def in_degree(self) -> torch.Tensor:
        """Messages each node receives (``<= k``). Shapes: ``[N]`` long."""
        return torch.bincount(self.edge_index[1], minlength=self.num_nodes)

    def out_degree(self) -> torch.Tensor:
        """Later targets each node feeds (``<= k``). Shapes: ``[N]`` long."""
        return torch.bincount(self.edge_index[0], minlength=self.num_nodes)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
            f"k={self.k}, max_km={self.max_km}, max_days={self.max_days})"
        )


def _to_tensors(links: Links) -> tuple[torch.Tensor, torch.Tensor]:
    edge_index = torch.from_numpy(np.stack([links.src, links.tgt]).astype(np.int64))
    edge_attr = torch.from_numpy(np.stack([links.days, links.km], axis=1).astype(np.float32))
    return edge_index.reshape(2, -1), edge_attr.reshape(-1, 2)


def _window(k: object, max_km: object, max_days: object) -> tuple[int, float, float]:
    return (
        _checks.degree_bound("k", k),
        _checks.positive("max_km", max_km),
        _checks.positive("max_days", max_days),
    )


def build_event_graph(
    lat: np.ndarray,
    lon: np.ndarray,
    t_days: np.ndarray,
    *,
    k: int,
    max_km: float,
    max_days: float,
    group: np.ndarray | None = None,
    source_mask: np.ndarray | None = None,
    rule: str = "greedy",
) -> EventGraph:
    """Build the event graph of C1 with the choice rule in the module docstring.

    Args:
        lat: latitudes, WGS84 degrees.
        lon: longitudes, WGS84 degrees.
        t_days: time of each transaction in days since any fixed epoch (unsorted is fine).
        k: degree bound ``K`` (in- and out-degree ``<= k``); a privacy parameter.
        max_km: only sources within this great-circle distance (km).
        max_days: only sources at most this many days earlier.
        group: optional labels (e.g. community ids); links only within a group.
        source_mask: optional bool mask; rows with ``False`` (e.g. price unknown) are
            never sources but still receive edges, so they do not waste a target's slots.
        rule: ``"greedy"`` (closest eligible sources, skipping saturated ones) or
            ``"recent"`` (cascade-free window rule; see the module docstring).

    Returns:
        The graph; edges sorted by target, closest first within a target.

    Shapes:
        lat, lon, t_days, group, source_mask ``[N]`` -> edge_index ``[2, E]``,
        edge_attr ``[E, 2]`` with ``E <= N * k``.

    Example:
        >>> g = build_event_graph([0.0, 0.0], [0.0, 0.001], [0.0, 1.0], k=1, max_km=1, max_days=9)
        >>> g.edge_index.tolist()
        [[0], [1]]
    """
    k, max_km, max_days = _window(k, max_km, max_days)
    la, lo = _checks.lat_lon(lat, lon)
    n = la.shape[0]
    t = _checks.float_array("t_days", t_days, n)
    codes = None if group is None else _checks.labels("group", group, n)
    allowed = None if source_mask is None else _checks.bool_mask("source_mask", source_mask, n)
    if rule == "recent":
        src, dst, attr = recent_window_links(
            la, lo, t, codes, allowed, k=k, max_km=max_km, max_days=max_days
        )
        edge_index = torch.from_numpy(np.stack([src, dst]).astype(np.int64)).reshape(2, -1)
        edge_attr = torch.from_numpy(attr.astype(np.float32)).reshape(-1, 2)
        return EventGraph(edge_index, edge_attr, n, k, max_km, max_days)
    if rule != "greedy":
        raise ConfigError(f"rule must be 'greedy' or 'recent' (got {rule!r})")
    pts = Points(unit_vectors(la, lo).reshape(n, 3), t, codes, allowed)
    links = greedy_link(pts, pts, k=k, max_km=max_km, max_days=max_days)
    edge_index, edge_attr = _to_tensors(links)
    return EventGraph(edge_index, edge_attr, n, k, max_km, max_days)


def build_query_edges(
    hist_lat: np.ndarray,
    hist_lon: np.ndarray,
    hist_t: np.ndarray,
    q_lat: np.ndarray,
    q_lon: np.ndarray,
    q_t: np.ndarray,
    *,
    k: int,
    max_km: float,
    max_days: float,
    hist_group: np.ndarray | None = None,
    q_group: np.ndarray | None = None,
    rule: str = "greedy",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges from history transactions to properties being valued (C7).

    ``rule="greedy"``: the rule of :func:`build_event_graph` with the history as the only
    sources and the queries as the only targets: each query gets ``<= k`` history neighbours
    strictly earlier than its date, and within this batch no history row feeds more than
    ``k`` queries (queries processed in ``(q_t, index)`` order). The out-degree bound is per
    call: two batches may each use a history row ``k`` times.

    ``rule="recent"``: the training graph's window rule (:func:`._recent.recent_query_links`):
    the ``k`` history rows of the query's group right before it in ``(t, row)`` order, strictly
    earlier, then filtered by ``max_days``/``max_km``. A query's neighbours never depend on the
    other queries, so one history row reaches only the queries of its group dated in
    ``(t_r, t_r + max_days]`` (what the remote appraisal's sensitivity uses).

    Args:
        hist_lat, hist_lon, hist_t: the history (sources), degrees and days.
        q_lat, q_lon, q_t: the queries (targets), degrees and days.
        k: degree bound; max_km, max_days: as in :func:`build_event_graph`.
        hist_group, q_group: optional labels (both or neither); links only within a label.
        rule: ``"greedy"`` or ``"recent"``.

    Returns:
        ``(edge_index, edge_attr)``: row 0 = history index, row 1 = query index;
        ``(delta_days, distance_km)`` float32. Sorted by query, closest first (``"recent"``:
        most recent first).

    Shapes:
        history ``[H]``, queries ``[Q]`` -> edge_index ``[2, E]``, edge_attr ``[E, 2]``.
    """
    k, max_km, max_days = _window(k, max_km, max_days)
    hla, hlo = _checks.lat_lon(hist_lat, hist_lon, prefix="hist_")
    qla, qlo = _checks.lat_lon(q_lat, q_lon, prefix="q_")
    nh, nq = hla.shape[0], qla.shape[0]
    ht = _checks.float_array("hist_t", hist_t, nh)
    qt = _checks.float_array("q_t", q_t, nq)
    if (hist_group is None) != (q_group is None):
        raise ConfigError(
            "hist_group and q_group must be given together (got only one); "
            "pass both to restrict links to a group, or neither"
        )
    hg = qg = None
    if hist_group is not None and q_group is not None:
        h_arr, q_arr = np.asarray(hist_group), np.asarray(q_group)
        if h_arr.shape != (nh,) or q_arr.shape != (nq,):
            raise ConfigError(
                f"hist_group and q_group must have one label per row ({nh} and {nq}) "
                f"(got shapes {tuple(h_arr.shape)} and {tuple(q_arr.shape)}); "
                "pass one label per row"
            )
        # compare labels as strings so 7 and "7" are the same community
        codes = _checks.labels(
            "group", np.concatenate([h_arr.astype(str), q_arr.astype(str)]), nh + nq
        )
        hg, qg = codes[:nh], codes[nh:]
    if rule == "recent":
        s, d, attr = recent_query_links(
            hla, hlo, ht, qla, qlo, qt, hg, qg, k=k, max_km=max_km, max_days=max_days
        )
        edge_index = torch.from_numpy(np.stack([s, d]).astype(np.int64)).reshape(2, -1)
        return edge_index, torch.from_numpy(attr.astype(np.float32)).reshape(-1, 2)
    if rule != "greedy":
        raise ConfigError(f"rule must be 'greedy' or 'recent' (got {rule!r})")
    src = Points(unit_vectors(hla, hlo).reshape(nh, 3), ht, hg)
    tgt = Points(unit_vectors(qla, qlo).reshape(nq, 3), qt, qg)
    links = greedy_link(src, tgt, k=k, max_km=max_km, max_days=max_days)
    return _to_tensors(links)

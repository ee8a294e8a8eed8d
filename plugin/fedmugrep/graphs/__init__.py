"""Graph layer: the event graph (C1), intra-community graphs (C3), the community graph (C5).

Everything here works on plain numpy arrays and returns torch / PyG objects. Distances are
great-circle km (:func:`fedmugrep.graphs.geo.haversine_km`); every rule is deterministic
(ties: lower index first).
"""

from __future__ import annotations

from fedmugrep.graphs.event import EventGraph, build_event_graph, build_query_edges
from fedmugrep.graphs.geo import EARTH_RADIUS_KM, haversine_km
from fedmugrep.graphs.region import (
    RELATIONS,
    build_community_graph,
    build_intra_region_graph,
    community_index,
)

__all__ = [
    "EARTH_RADIUS_KM",
    "RELATIONS",
    "EventGraph",
    "build_community_graph",
    "build_event_graph",
    "build_intra_region_graph",
    "build_query_edges",
    "community_index",
    "haversine_km",
]

"""Graph layer: the event graph (C1), intra-community graphs (C3), the community graph (C5).

Everything here works on plain numpy arrays and returns torch / PyG objects. Distances are
great-circle km (:func:`fedmugrep.graphs.geo.haversine_km`); every rule is deterministic
(ties: lower index first).
"""

# Names load on first use (PEP 562): importing one submodule (say the light geometry
# helpers) does not pull in torch and PyTorch Geometric through this package.

from __future__ import annotations

from fedmugrep._lazy import lazy_getattr

_EXPORTS = {
    "EARTH_RADIUS_KM": "geo",
    "EventGraph": "event",
    "RELATIONS": "region",
    "build_community_graph": "region",
    "build_event_graph": "event",
    "build_intra_region_graph": "region",
    "build_query_edges": "event",
    "community_index": "region",
    "haversine_km": "geo",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr("fedmugrep.graphs", _EXPORTS)

"""fedmugrep.data: input schema and validation, CSV/Parquet loading, feature encoding, and the
built-in synthetic city with ground truth (ARCHITECTURE §6)."""

# Names load on first use (PEP 562): importing one submodule (say the light geometry
# helpers) does not pull in torch and PyTorch Geometric through this package.

from __future__ import annotations

from fedmugrep._lazy import lazy_getattr

_EXPORTS = {
    "CityConfig": "synthetic",
    "CommunityEncoder": "features",
    "FeatureEncoder": "features",
    "Problem": "loading",
    "SyntheticCity": "synthetic",
    "assign_regions": "regions",
    "bayes_floor": "synthetic",
    "bayes_floor_factor": "synthetic",
    "community_attribute_columns": "schema",
    "haversine_km": "geo",
    "km_to_degrees": "geo",
    "load_communities": "loading",
    "load_mobility": "loading",
    "load_transactions": "loading",
    "make_city": "synthetic",
    "profile_columns": "schema",
    "project_km": "geo",
    "write_city": "synthetic",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr("fedmugrep.data", _EXPORTS)

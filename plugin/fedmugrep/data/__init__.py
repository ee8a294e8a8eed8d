"""fedmugrep.data: input schema and validation, CSV/Parquet loading, feature encoding, and the
built-in synthetic city with ground truth (ARCHITECTURE §6)."""

from __future__ import annotations

from fedmugrep.data.features import CommunityEncoder, FeatureEncoder
from fedmugrep.data.geo import haversine_km, km_to_degrees, project_km
from fedmugrep.data.loading import Problem, load_communities, load_mobility, load_transactions
from fedmugrep.data.regions import assign_regions
from fedmugrep.data.schema import community_attribute_columns, profile_columns
from fedmugrep.data.synthetic import (
    CityConfig,
    SyntheticCity,
    bayes_floor,
    bayes_floor_factor,
    make_city,
    write_city,
)

__all__ = [
    "CityConfig",
    "CommunityEncoder",
    "FeatureEncoder",
    "Problem",
    "SyntheticCity",
    "assign_regions",
    "bayes_floor",
    "bayes_floor_factor",
    "community_attribute_columns",
    "haversine_km",
    "km_to_degrees",
    "load_communities",
    "load_mobility",
    "load_transactions",
    "make_city",
    "profile_columns",
    "project_km",
    "write_city",
]

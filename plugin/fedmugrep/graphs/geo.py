"""Great-circle distances and the 3-D embedding the graph builders search in.

Every distance in :mod:`fedmugrep.graphs` is the great-circle (haversine) distance on a
sphere of radius :data:`EARTH_RADIUS_KM`, computed through the chord between unit vectors:

.. math::

    d(a, b) = 2R \\arcsin\\left(\\tfrac{1}{2}\\lVert u_a - u_b \\rVert_2\\right),
    \\qquad u = (\\cos\\varphi\\cos\\lambda,\\ \\cos\\varphi\\sin\\lambda,\\ \\sin\\varphi),

which equals the haversine formula exactly (in real arithmetic) and stays accurate for the
short distances that matter here. Because the chord never exceeds the arc, a Euclidean
KD-tree over ``R * u`` can prune candidates without missing any (the graph builders rely
on that bound).
"""

from __future__ import annotations

import numpy as np

__all__ = ["EARTH_RADIUS_KM", "haversine_km", "unit_vectors"]

EARTH_RADIUS_KM: float = 6371.0088
"""Mean Earth radius (IUGG), in km."""


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Unit vectors on the sphere for WGS84 degrees.

    Shapes:
        lat ``[n]``, lon ``[n]`` -> ``[n, 3]`` (float64).
    """
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    lam = np.radians(np.asarray(lon, dtype=np.float64))
    cphi = np.cos(phi)
    return np.stack([cphi * np.cos(lam), cphi * np.sin(lam), np.sin(phi)], axis=-1)


def chord_to_km(chord: np.ndarray) -> np.ndarray:
    """Great-circle km from the chord length between unit vectors (monotone increasing)."""
    half = np.minimum(np.asarray(chord, dtype=np.float64) * 0.5, 1.0)
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(half)


def arc_km(u_a: np.ndarray, u_b: np.ndarray) -> np.ndarray:
    """Great-circle km between unit vectors (broadcasting over leading axes).

    Shapes:
        u_a ``[..., 3]``, u_b ``[..., 3]`` -> ``[...]``.
    """
    diff = u_a - u_b
    chord = np.sqrt(diff[..., 0] ** 2 + diff[..., 1] ** 2 + diff[..., 2] ** 2)
    return chord_to_km(chord)


def haversine_km(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    """Great-circle distance in km between WGS84 points (elementwise, broadcasting).

    This is the distance every builder in :mod:`fedmugrep.graphs` uses, bit for bit.

    Shapes:
        ``[...]`` each (broadcastable) -> ``[...]`` (float64).

    Example:
        >>> round(float(haversine_km(0.0, 0.0, 1.0, 0.0)), 3)
        111.195
    """
    return arc_km(unit_vectors(lat1, lon1), unit_vectors(lat2, lon2))

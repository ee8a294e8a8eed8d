"""Derive the ``community`` and ``district`` of each transaction when a file lacks them.

Rules (applied only to a missing column; a column already present is kept as is):

* ``community`` — with a communities table that has centres (``lat``/``lon``): the nearest
  community centre, by Euclidean distance in the local equirectangular projection
  (:func:`fedmugrep.data.geo.project_km`, centred on the mean of the community centres).
  Without a table: k-means (scikit-learn, ``n_init=4``, ``random_state=seed``) on the projected
  transaction coordinates with ``k = n_communities`` or by default ``round(n / 150)`` clipped to
  ``[2, 200]`` (and to the number of distinct locations). Derived communities are named
  ``C001``, ``C002``, ... in order of their centres (west to east, then south to north).
* ``district`` — from the table's ``district`` column when the table has one (every community of
  the transactions must then be in the table). Otherwise k-means on the community centres (table
  centre when the community is in a table with coordinates, else the mean location of its
  transactions) with ``k = n_districts`` or by default ``round(sqrt(number of communities))``
  (at least 1); named ``D1``, ``D2``, ... in the same centre order.

Deterministic for a given ``seed`` and input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from fedmugrep.data.geo import project_km
from fedmugrep.errors import ConfigError, DataValidationError

__all__ = ["assign_regions", "default_n_communities", "default_n_districts"]


def default_n_communities(n_transactions: int) -> int:
    """``round(n / 150)`` clipped to ``[2, 200]``."""
    return int(np.clip(round(n_transactions / 150), 2, 200))


def default_n_districts(n_communities: int) -> int:
    """``round(sqrt(n_communities))``, at least 1."""
    return max(1, int(round(np.sqrt(n_communities))))


def _kmeans(xy: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``[n]`` and centres ``[k, 2]``, clusters renumbered by (x, y) of their centres."""
    from sklearn.cluster import KMeans  # deferred: scikit-learn costs ~0.6 s to import

    km = KMeans(n_clusters=k, n_init=4, random_state=seed, algorithm="lloyd").fit(xy)
    centres = km.cluster_centers_
    order = np.lexsort((np.round(centres[:, 1], 9), np.round(centres[:, 0], 9)))
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[km.labels_], centres[order]


def _check_k(name: str, k: int | None, n_points: int, n_distinct: int) -> int | None:
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"{name} must be a positive integer (got {k!r}); pass e.g. {name}=10")
    if k > n_distinct:
        raise ConfigError(
            f"{name} must be <= the number of distinct locations ({n_distinct}) (got {k}); "
            f"pass a smaller {name}"
        )
    return int(k)


def _names(prefix: str, labels: np.ndarray, k: int, width: int) -> np.ndarray:
    table = np.array([f"{prefix}{j + 1:0{width}d}" for j in range(k)], dtype=object)
    return table[labels]


def assign_regions(
    transactions: pd.DataFrame,
    communities: pd.DataFrame | None = None,
    *,
    n_communities: int | None = None,
    n_districts: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Fill in ``community`` and ``district`` where the transactions frame lacks them.

    See the module docstring for the exact rules.

    Args:
        transactions: a validated transactions frame (``lat``, ``lon`` present).
        communities: optional communities frame (``community``, optional ``district``,
            ``lat``, ``lon``).
        n_communities: number of k-means communities (only when they are derived by k-means).
        n_districts: number of k-means districts (only when they are derived by k-means).
        seed: k-means seed.

    Returns:
        A copy of ``transactions`` with ``community`` and ``district`` (``str``) filled.

    Raises:
        ConfigError: bad ``n_communities``/``n_districts``/``communities`` argument.
        DataValidationError: the communities table lacks what the derivation needs, or a
            transaction's community is not in it (names the first such row).
    """
    if not isinstance(transactions, pd.DataFrame):
        raise ConfigError("transactions must be a DataFrame; pass the frame from load_transactions")
    for c in ("lat", "lon"):
        if c not in transactions.columns:
            raise ConfigError(
                f"transactions has no '{c}' column; pass the frame from load_transactions"
            )
    if communities is not None and (
        not isinstance(communities, pd.DataFrame) or "community" not in communities.columns
    ):
        raise ConfigError(
            "communities must be a DataFrame with a 'community' column; pass the frame "
            "returned by load_communities"
        )
    df = transactions.copy()
    file = str(df.attrs.get("source", "<transactions>"))
    cfile = str(communities.attrs.get("source", "<communities>")) if communities is not None else ""
    lat = df["lat"].to_numpy(dtype=float)
    lon = df["lon"].to_numpy(dtype=float)
    has_centres = communities is not None and {"lat", "lon"} <= set(communities.columns)

    if "community" not in df.columns:
        if communities is not None:
            if not has_centres:
                raise DataValidationError(
                    file=cfile,
                    column="lat",
                    problem="the communities table has no lat/lon, so transactions cannot be "
                    "assigned to their nearest community centre",
                    fix="add lat and lon (community centres) to the communities file, or add a "
                    "'community' column to the transactions file",
                )
            clat = communities["lat"].to_numpy(dtype=float)
            clon = communities["lon"].to_numpy(dtype=float)
            if not (np.isfinite(clat).all() and np.isfinite(clon).all()):
                raise ConfigError(
                    "communities lat/lon contain NaN; load the table with load_communities"
                )
            lat0, lon0 = float(clat.mean()), float(clon.mean())
            tree = cKDTree(project_km(clat, clon, lat0, lon0))
            _, idx = tree.query(project_km(lat, lon, lat0, lon0), k=1)
            names = communities["community"].astype(str).to_numpy(dtype=object)
            df["community"] = names[np.asarray(idx, dtype=np.int64)]
        else:
            xy = project_km(lat, lon, float(lat.mean()), float(lon.mean()))
            n_distinct = len(np.unique(np.round(xy, 9), axis=0))
            k = _check_k("n_communities", n_communities, len(df), n_distinct)
            if k is None:
                k = min(default_n_communities(len(df)), n_distinct)
            labels, _ = _kmeans(xy, k, seed)
            df["community"] = _names("C", labels, k, max(3, len(str(k))))
    df["community"] = df["community"].astype(str).to_numpy(dtype=object)

    if "district" not in df.columns:
        comm = df["community"].to_numpy(dtype=object)
        if communities is not None and "district" in communities.columns:
            lookup = dict(
                zip(
                    communities["community"].astype(str),
                    communities["district"].astype(str),
                    strict=True,
                )
            )
            mapped = pd.Series(comm).map(lookup)
            if mapped.isna().any():
                i = int(np.flatnonzero(mapped.isna().to_numpy())[0])
                raise DataValidationError(
                    file=file,
                    row=i + 1,
                    column="community",
                    problem=f"community {comm[i]!r} is not in the communities table "
                    f"({cfile}), so its district is unknown",
                    fix="add the community (with its district) to the communities file, or add "
                    "a 'district' column to the transactions file",
                )
            df["district"] = mapped.to_numpy(dtype=object)
        else:
            uniq = np.array(sorted(set(comm)), dtype=object)
            means = (
                pd.DataFrame({"c": comm, "lat": lat, "lon": lon})
                .groupby("c")[["lat", "lon"]]
                .mean()
            )
            clat = means.loc[uniq, "lat"].to_numpy(dtype=float)
            clon = means.loc[uniq, "lon"].to_numpy(dtype=float)
            if has_centres:
                table = communities.assign(_c=communities["community"].astype(str)).set_index("_c")
                known = np.array([u in table.index for u in uniq])
                if known.any():
                    clat[known] = table.loc[uniq[known], "lat"].to_numpy(dtype=float)
                    clon[known] = table.loc[uniq[known], "lon"].to_numpy(dtype=float)
            xy = project_km(clat, clon, float(clat.mean()), float(clon.mean()))
            n_distinct = len(np.unique(np.round(xy, 9), axis=0))
            k = _check_k("n_districts", n_districts, len(uniq), n_distinct)
            if k is None:
                k = min(default_n_districts(len(uniq)), n_distinct)
            labels, _ = _kmeans(xy, k, seed)
            by_comm = dict(zip(uniq, _names("D", labels, k, 1), strict=True))
            df["district"] = pd.Series(comm).map(by_comm).to_numpy(dtype=object)
    df["district"] = df["district"].astype(str).to_numpy(dtype=object)
    return df

"""From validated frames to model tensors: encoders, splits and graphs.

Used identically by centralized training and by each transaction datasite in the
federation (there, the frame holds only that datasite's transactions and the encoders
are the public, pre-agreed ones shipped with the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from fedmugrep.checks import check_bool, check_choice, check_float, check_int
from fedmugrep.data.features import CommunityEncoder, FeatureEncoder
from fedmugrep.graphs.event import build_event_graph
from fedmugrep.graphs.region import build_community_graph, build_intra_region_graph
from fedmugrep.models.mugrep import CommunityGraph, TransactionGraph
from fedmugrep.models.region_encoder import RELATIONS

EPOCH = pd.Timestamp("2000-01-01")


@dataclass(frozen=True)
class GraphConfig:
    """How graphs are built. ``k`` bounds in- and out-degree of the event graph."""

    k: int = 10
    rule: str = "recent"  # cascade-free: one record changes at most k other targets' inputs
    max_km: float = 3.0
    max_days: float = 180.0
    event_within_community: bool = True
    intra_k: int = 4
    intra_max_degree: int = 8  # caps the intra-region graph's degree (sensitivity of r~)
    geo_k: int = 4
    attr_k: int = 4
    mobility_k: int = 4

    def __post_init__(self) -> None:
        check_int(self, "k", 1, 64)
        check_choice(self, "rule", ("recent", "greedy"))
        check_float(self, "max_km", 0.0, 1e5)
        check_float(self, "max_days", 0.0, 1e6)
        check_bool(self, "event_within_community")
        for name in ("intra_k", "intra_max_degree"):
            check_int(self, name, 1, 1024)
        for name in ("geo_k", "attr_k", "mobility_k"):
            check_int(self, name, 0, 1024)


@dataclass(frozen=True)
class Split:
    """Temporal split: boolean masks over rows."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_start: pd.Timestamp
    test_start: pd.Timestamp


def temporal_split(dates: pd.Series, *, test_frac: float = 0.2, val_frac: float = 0.1) -> Split:
    """Test = the latest ``test_frac`` of dates, validation = the ``val_frac`` before it.

    Cut points are date quantiles of the rows; every row of one date falls in one part. When
    the sales span so few days that a quantile would leave a part empty (a week of sales, or
    most sales on one day), the cut points move to the nearest days that give every part at
    least one day.
    """
    # nanosecond resolution whatever came in (PySyft hands back datetime64[us])
    d = pd.to_datetime(dates).to_numpy().astype("datetime64[ns]")
    test_start = pd.Timestamp(np.quantile(d.astype("int64"), 1 - test_frac)).normalize()
    val_start = pd.Timestamp(np.quantile(d.astype("int64"), 1 - test_frac - val_frac)).normalize()
    days = pd.DatetimeIndex(np.unique(d)).normalize().unique().sort_values()
    if len(days) >= 3:  # train keeps the first day, validation and test at least one each
        test_start = min(max(test_start, days[2]), days[-1])
        val_start = min(max(val_start, days[1]), days[days < test_start][-1])
    test = d >= test_start.to_datetime64()
    val = (d >= val_start.to_datetime64()) & ~test
    return Split(~(test | val), val, test, val_start, test_start)


@dataclass
class Vocab:
    """Public identifiers: district and community names (order defines the codes)."""

    districts: list[str]
    communities: list[str]

    def district_codes(self, values: pd.Series) -> np.ndarray:
        lut = {n: i for i, n in enumerate(self.districts)}
        return values.astype(str).map(lut).fillna(-1).astype(int).to_numpy()

    def community_codes(self, values: pd.Series) -> np.ndarray:
        lut = {n: i for i, n in enumerate(self.communities)}
        return values.astype(str).map(lut).fillna(-1).astype(int).to_numpy()


@dataclass
class Encoders:
    """Everything fitted once and shipped with the model (public after fitting)."""

    features: FeatureEncoder
    vocab: Vocab
    y_center: float
    y_scale: float
    lat_center: float
    lon_center: float
    coord_scale: float
    extra: dict = field(default_factory=dict)

    def encode_x(self, df: pd.DataFrame) -> np.ndarray:
        base = self.features.transform(df)
        lat = (df["lat"].to_numpy() - self.lat_center) / self.coord_scale
        lon = (df["lon"].to_numpy() - self.lon_center) / self.coord_scale
        return np.concatenate([base, lat[:, None], lon[:, None]], axis=1).astype(np.float32)

    def encode_y(self, price: np.ndarray) -> np.ndarray:
        return ((np.log(price) - self.y_center) / self.y_scale).astype(np.float32)

    def state_dict(self) -> dict:
        return {
            "features": self.features.state_dict(),
            "districts": self.vocab.districts,
            "communities": self.vocab.communities,
            "y_center": self.y_center,
            "y_scale": self.y_scale,
            "lat_center": self.lat_center,
            "lon_center": self.lon_center,
            "coord_scale": self.coord_scale,
            "extra": self.extra,
        }

    @classmethod
    def from_state_dict(cls, d: dict) -> Encoders:
        return cls(
            FeatureEncoder.from_state_dict(d["features"]),
            Vocab(list(d["districts"]), list(d["communities"])),
            float(d["y_center"]),
            float(d["y_scale"]),
            float(d["lat_center"]),
            float(d["lon_center"]),
            float(d["coord_scale"]),
            dict(d.get("extra", {})),
        )


def fit_encoders(train: pd.DataFrame, communities: pd.DataFrame | None) -> Encoders:
    """Fit feature encoder, vocabularies and target scaling on training rows."""
    districts = set(train["district"].astype(str))
    comms = set(train["community"].astype(str))
    if communities is not None:
        comms |= set(communities["community"].astype(str))
        if "district" in communities:
            districts |= set(communities["district"].astype(str))
    y = np.log(train["price"].to_numpy())
    return Encoders(
        FeatureEncoder().fit(train),
        Vocab(sorted(districts), sorted(comms)),
        float(y.mean()),
        float(y.std() or 1.0),
        float(train["lat"].mean()),
        float(train["lon"].mean()),
        float(max(train["lat"].std(), train["lon"].std(), 1e-6)),
    )


def days_since_epoch(dates: pd.Series) -> np.ndarray:
    return ((pd.to_datetime(dates) - EPOCH) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64)


def transaction_graph(
    df: pd.DataFrame,
    enc: Encoders,
    gcfg: GraphConfig,
    *,
    known: np.ndarray,
    intra_mask: np.ndarray,
) -> TransactionGraph:
    """Tensors and graphs for one party's transactions.

    Args:
        df: validated transactions with ``district`` and ``community``.
        known: rows whose price may be used as an event-graph neighbour (sales that
            happened; for queries the row is unknown).
        intra_mask: rows that contribute to intra-region representations.
    """
    n = len(df)
    district = enc.vocab.district_codes(df["district"])
    community = enc.vocab.community_codes(df["community"])
    if (district < 0).any() or (community < 0).any():
        bad = int(np.argmax((district < 0) | (community < 0)))
        raise ValueError(
            f"row {bad + 1}: district '{df['district'].iloc[bad]}' / community "
            f"'{df['community'].iloc[bad]}' is not in the model's vocabulary; "
            "use the communities table the model was trained with"
        )
    t = days_since_epoch(df["date"])
    lat, lon = df["lat"].to_numpy(np.float64), df["lon"].to_numpy(np.float64)
    price = df["price"].to_numpy(np.float64) if "price" in df else np.ones(n)
    y = np.where(known | intra_mask, enc.encode_y(np.where(known | intra_mask, price, 1.0)), 0.0)
    # event graph: only rows with known prices can be sources; every row can be a target
    eg = build_event_graph(
        lat,
        lon,
        t,
        k=gcfg.k,
        max_km=gcfg.max_km,
        max_days=gcfg.max_days,
        group=community if gcfg.event_within_community else None,
        source_mask=known,
        rule=gcfg.rule,
    )
    ei, ea = eg.edge_index, eg.edge_attr
    idx = np.nonzero(intra_mask)[0]
    intra_local = build_intra_region_graph(
        community[idx], lat[idx], lon[idx], k=gcfg.intra_k, max_degree=gcfg.intra_max_degree
    )
    intra_index = torch.as_tensor(idx)[intra_local] if intra_local.numel() else intra_local
    return TransactionGraph(
        x=torch.as_tensor(enc.encode_x(df)),
        y=torch.as_tensor(y, dtype=torch.float32),
        known=torch.as_tensor(known),
        intra_mask=torch.as_tensor(intra_mask),
        district=torch.as_tensor(district, dtype=torch.long),
        community=torch.as_tensor(community, dtype=torch.long),
        event_index=ei,
        event_attr=ea,
        intra_index=intra_index,
    )


def community_graph(
    enc: Encoders,
    gcfg: GraphConfig,
    communities: pd.DataFrame | None,
    mobility: pd.DataFrame | None,
    transactions: pd.DataFrame | None = None,
) -> CommunityGraph:
    """The heterogeneous community graph over the vocabulary's communities.

    With a communities table, attributes are its numeric columns (standardised) and
    positions its coordinates. Without one, positions are the public centroids shipped in
    ``enc.extra['centroids']`` (or computed from ``transactions`` for centralized runs)
    and the attributes are empty (width 0 is replaced by the standardised position).
    """
    names = enc.vocab.communities
    if communities is not None:
        table = communities.copy()
        table["community"] = table["community"].astype(str)
        table = table.set_index("community").reindex(names)
        cenc = enc.extra.get("community_encoder")
        if cenc is None:
            cenc_obj = CommunityEncoder().fit(table.reset_index())
            enc.extra["community_encoder"] = cenc_obj.state_dict()
        else:
            cenc_obj = CommunityEncoder.from_state_dict(cenc)
        attrs = cenc_obj.transform(table.reset_index())
        lat, lon = table["lat"].to_numpy(np.float64), table["lon"].to_numpy(np.float64)
    else:
        cent = enc.extra.get("centroids")
        if cent is None:
            assert transactions is not None, "need transactions or shipped centroids"
            g = transactions.groupby(transactions["community"].astype(str))[["lat", "lon"]].mean()
            g = g.reindex(names)
            cent = {
                "lat": g["lat"].fillna(enc.lat_center).tolist(),
                "lon": g["lon"].fillna(enc.lon_center).tolist(),
            }
            enc.extra["centroids"] = cent
        lat, lon = np.asarray(cent["lat"]), np.asarray(cent["lon"])
        attrs = np.stack(
            [(lat - enc.lat_center) / enc.coord_scale, (lon - enc.lon_center) / enc.coord_scale],
            axis=1,
        )
    attrs = np.nan_to_num(np.asarray(attrs, dtype=np.float32))
    mob = None
    if mobility is not None and len(mobility):
        lut = {n: i for i, n in enumerate(names)}
        s = mobility["src"].astype(str).map(lut)
        d = mobility["dst"].astype(str).map(lut)
        ok = s.notna() & d.notna()
        mob = (
            s[ok].astype(int).to_numpy(),
            d[ok].astype(int).to_numpy(),
            mobility["flow"][ok].to_numpy(np.float64),
        )
    hd = build_community_graph(
        names,
        lat,
        lon,
        attrs,
        geo_k=gcfg.geo_k,
        attr_k=gcfg.attr_k,
        mobility=mob,
        mobility_k=gcfg.mobility_k,
    )
    eid = {rel: hd[rel].edge_index for rel in RELATIONS}
    ew = {}
    store = hd[RELATIONS[2]]
    if "edge_weight" in store:
        ew[RELATIONS[2]] = store.edge_weight.float()
    return CommunityGraph(torch.as_tensor(attrs), eid, ew)

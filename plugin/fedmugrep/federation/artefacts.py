"""The public artefacts of a run, and the mocks they are fitted on.

Encoders, vocabularies, split dates and configurations agreed before any private data is
touched (:class:`~fedmugrep.federation.parties.PublicArtefacts`). They are fitted on *public*
information only: the public geography of the communities (:data:`PUBLIC_GEOGRAPHY`) and the
datasites' mocks, which come from a synthetic city and carry the private tables' column names
and types, never their rows or sizes. Both runtimes use these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from fedmugrep.data.features import CommunityEncoder, FeatureEncoder
from fedmugrep.data.synthetic import SyntheticCity
from fedmugrep.errors import ConfigError
from fedmugrep.federation.parties import PublicArtefacts
from fedmugrep.federation.plan import FederationPlan
from fedmugrep.federation.wire import as_nanosecond_dates, strip_mock_marker
from fedmugrep.models.mugrep import ModelConfig
from fedmugrep.training.prepare import Encoders, GraphConfig, Vocab, temporal_split

__all__ = [
    "PUBLIC_GEOGRAPHY",
    "public_artefacts",
    "public_from_mocks",
    "public_geography",
    "region_mocks",
    "transaction_mock",
]

PUBLIC_GEOGRAPHY = ("community", "district", "lat", "lon")


def public_geography(communities: pd.DataFrame) -> pd.DataFrame:
    """The public columns of a communities table (:data:`PUBLIC_GEOGRAPHY` that it has)."""
    return communities[[c for c in PUBLIC_GEOGRAPHY if c in communities.columns]]


def public_artefacts(
    communities: pd.DataFrame, mock: pd.DataFrame, plan: FederationPlan, gcfg: GraphConfig
) -> PublicArtefacts:
    """Encoders from the mock transactions; vocabulary and coordinates from the public map
    (community names, districts and centres); split dates from the mock's date range."""
    split = temporal_split(mock["date"])
    train = mock[split.train]
    y = np.log(train["price"].to_numpy())
    enc = Encoders(
        FeatureEncoder().fit(train),
        Vocab(
            sorted(communities["district"].astype(str).unique()),
            sorted(communities["community"].astype(str)),
        ),
        float(y.mean()),
        float(y.std()),
        float(communities["lat"].mean()),
        float(communities["lon"].mean()),
        float(max(communities["lat"].std(), communities["lon"].std())),
    )
    cfg = ModelConfig(
        feature_dim=enc.features.n_features + 2,
        attr_dim=0,  # set by the region party's table below
        n_districts=len(enc.vocab.districts),
        k=gcfg.k,
        max_days=gcfg.max_days,
        max_km=gcfg.max_km,
        intra_dim=plan.intra_dim,
        hidden=plan.hidden,
        event_hidden=plan.event_hidden,
        region_hidden=plan.region_hidden,
        target_channel=plan.target_channel,
    )
    return PublicArtefacts(enc, cfg, gcfg, split.val_start, split.test_start)


def _like(mock: pd.DataFrame, private: pd.DataFrame) -> pd.DataFrame:
    """``mock`` with ``private``'s columns, order and (where castable) dtypes."""
    missing = [c for c in private.columns if c not in mock.columns]
    if missing:
        raise ConfigError(
            f"the mock city has no columns {missing}; the private table's extra columns need "
            "a synthetic counterpart before they can be uploaded with a mock"
        )
    out = mock[list(private.columns)].reset_index(drop=True).copy()
    for col, dtype in private.dtypes.items():
        try:
            out[col] = out[col].astype(dtype)
        except (TypeError, ValueError):
            pass
    return out


def transaction_mock(private: pd.DataFrame, mock_city: SyntheticCity, agency: str) -> pd.DataFrame:
    """An agency's mock: the mock city's rows for the same agency name (or, for a name the mock
    city lacks, as many of its first rows in (date, id) order as an average agency of the mock
    city has), shaped like the private frame's columns.

    Nothing but the private frame's column names and types reaches the mock: its row count in
    particular comes from the mock city, never from the private table (an exact count would
    undo the noised count release).
    """
    if agency in mock_city.agencies:
        rows = mock_city.agency_transactions(agency)
    else:
        per_agency = len(mock_city.transactions) // max(len(mock_city.agencies), 1)
        rows = mock_city.transactions.head(max(per_agency, 1))
    return _like(rows, private)


def region_mocks(
    communities: pd.DataFrame, mobility: pd.DataFrame, mock_city: SyntheticCity
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The region datasite's mocks.

    Communities: the public geography (:data:`PUBLIC_GEOGRAPHY` columns, copied) and the mock
    city's attributes (row ``i`` takes mock row ``i mod n``). Mobility: the mock city's flows.
    """
    attrs = mock_city.communities.reset_index(drop=True)
    idx = [i % len(attrs) for i in range(len(communities))]
    synthetic = attrs.iloc[idx].reset_index(drop=True)
    geo = [c for c in PUBLIC_GEOGRAPHY if c in communities.columns]
    for col in geo:
        synthetic[col] = communities[col].reset_index(drop=True).to_numpy()
    return _like(synthetic, communities), _like(mock_city.mobility, mobility)


def public_from_mocks(
    region_mock: pd.DataFrame, transaction_mocks: Sequence[pd.DataFrame], plan: FederationPlan
) -> PublicArtefacts:
    """The data scientist's public artefacts, from the datasites' mocks only.

    Same function as the local runtime (:func:`~fedmugrep.federation.artefacts.public_artefacts`)
    on the union of the agencies' mocks in (date, id) order; ``attr_dim`` is the width of the
    community attributes of the region mock (same columns as the private table).
    """
    mock = (
        pd.concat(
            [as_nanosecond_dates(strip_mock_marker(m)) for m in transaction_mocks],
            ignore_index=True,
        )
        .sort_values(["date", "transaction_id"], kind="stable")
        .reset_index(drop=True)
    )
    comms = strip_mock_marker(region_mock)
    gcfg = GraphConfig(k=plan.k, intra_max_degree=plan.intra_max_degree)
    public = public_artefacts(comms, mock, plan, gcfg)
    table = comms.copy()
    table["community"] = table["community"].astype(str)
    table = table.set_index("community").reindex(public.encoders.vocab.communities).reset_index()
    # the community attributes' standardisation is public too: fitted on the region mock and
    # shipped, so the region party and mock pretraining encode attributes the same way
    cenc = CommunityEncoder().fit(table)
    public.encoders.extra["community_encoder"] = cenc.state_dict()
    public.model_config = replace(public.model_config, attr_dim=int(cenc.n_features))
    return public

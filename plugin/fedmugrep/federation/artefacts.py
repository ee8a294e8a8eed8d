"""The public artefacts of a run, and the mocks they are fitted on.

Encoders, vocabularies, split dates and configurations agreed before any private data is
touched (:class:`~fedmugrep.federation.parties.PublicArtefacts`). They are fitted on *public*
information only: the public geography of the communities (:data:`PUBLIC_GEOGRAPHY`) and the
datasites' mocks, which come from a synthetic city and carry the private tables' column names
and types, never their rows or sizes. Both runtimes use these functions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from fedmugrep.data.features import CommunityEncoder, FeatureEncoder
from fedmugrep.data.loading import load_transactions
from fedmugrep.data.schema import community_attribute_columns, profile_columns
from fedmugrep.data.synthetic import CityConfig, SyntheticCity, make_city
from fedmugrep.errors import ConfigError, DataValidationError
from fedmugrep.federation.mocks import (
    MockDeclaration,
    declared_region_mocks,
    declared_transaction_mock,
    described_columns,
)
from fedmugrep.federation.parties import PublicArtefacts
from fedmugrep.federation.plan import FederationPlan
from fedmugrep.federation.wire import as_nanosecond_dates, strip_mock_marker
from fedmugrep.models.mugrep import ModelConfig
from fedmugrep.training.prepare import Encoders, GraphConfig, Vocab, temporal_split

__all__ = [
    "PUBLIC_GEOGRAPHY",
    "agency_mock",
    "region_mock_pair",
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
    (community names, districts and centres); split dates from the mock's date range.

    The feature encoder uses the profile columns the mock describes
    (:func:`~fedmugrep.federation.mocks.described_columns`): a column a declared mock leaves
    neutral is not used by the model.

    Raises:
        ConfigError: the mock has no dates or no prices (its datasite declared no date or price
            range), so the split dates or the price scale cannot come from public information.
    """
    for column, key, needs in (
        ("date", "dates", "the split dates"),
        ("price", "price", "the price scale"),
    ):
        if column not in mock.columns or mock[column].isna().all():
            raise ConfigError(
                f"the datasites' mocks have no {column}s: their owners declared no {column} "
                f"range ([mock] {key} = [...] in the datasite TOML, or public.toml), so {needs} "
                "cannot be chosen from public information; ask the owners to declare it"
            )
    mock = mock.dropna(subset=["date", "price"])
    split = temporal_split(mock["date"])
    train = mock[split.train]
    y = np.log(train["price"].to_numpy())
    districts = communities["district"] if "district" in communities.columns else pd.Series(["D1"])
    enc = Encoders(
        FeatureEncoder(columns=described_columns(train, profile_columns(train))).fit(train),
        Vocab(
            sorted(districts.astype(str).unique()),
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
            f"the synthetic city has no columns {missing}: it can only mock tables with its own "
            "schema; declare the table's public schema instead ([mock] in the datasite TOML, "
            "or public.toml in the city folder)"
        )
    return _cast(mock, private)


def _cast(mock: pd.DataFrame, private: pd.DataFrame) -> pd.DataFrame:
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


@functools.lru_cache(maxsize=2)
def _mock_city(seed: int) -> SyntheticCity:
    return make_city(CityConfig(seed=seed))


def agency_mock(
    private: pd.DataFrame,
    decl: MockDeclaration,
    geography: pd.DataFrame | None,
    name: str,
) -> pd.DataFrame:
    """The mock a transaction datasite uploads with ``private``, as ``decl`` says: drawn from
    the declaration and the public ``geography``
    (:func:`~fedmugrep.federation.mocks.declared_transaction_mock`), read from the owner's
    mock file, or the built-in synthetic city's rows (:func:`transaction_mock`). Only
    ``private``'s column names and types are read.

    Raises:
        DataValidationError: the owner's mock file does not load, or lacks a column of the
            private table.
    """
    if decl.kind == "synthetic":
        return transaction_mock(private, _mock_city(decl.seed), name)
    if decl.kind == "file":
        assert decl.file is not None
        mock = load_transactions(decl.file)
        missing = [c for c in private.columns if c not in mock.columns]
        if missing and not set(missing) <= {"community", "district"}:
            raise DataValidationError(
                file=str(decl.file),
                column=missing[0],
                problem=f"the mock file has no column '{missing[0]}' but the private table has",
                fix="give the mock file the private table's columns (made-up values)",
            )
        for c in missing:  # assigned on the datasite: neutral in the mock
            mock[c] = None
        return _cast(mock, private)
    return declared_transaction_mock(private, decl, geography, name)


def region_mock_pair(
    communities: pd.DataFrame, mobility: pd.DataFrame | None, decl: MockDeclaration
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The region datasite's communities and mobility mocks, as ``decl`` says (a mock file is
    for transaction tables: a region with ``kind == "file"`` draws from the declaration)."""
    if decl.kind == "synthetic":
        mob = mobility if mobility is not None else pd.DataFrame(columns=["src", "dst", "flow"])
        return region_mocks(communities, mob, _mock_city(decl.seed))
    return declared_region_mocks(communities, mobility, decl)


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
    cenc = CommunityEncoder(
        columns=described_columns(table, community_attribute_columns(table))
    ).fit(table)
    public.encoders.extra["community_encoder"] = cenc.state_dict()
    public.model_config = replace(public.model_config, attr_dim=int(cenc.n_features))
    return public

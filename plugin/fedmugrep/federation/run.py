"""The run both runtimes share: public artefacts from the mocks, then the coordinator's rounds.

A runtime only decides *where* the parties live (this process, PySyft datasites launched here,
or datasites other organisations run, reached by URL) and hands them to :func:`train`; what
the data scientist derives before touching anything private is :func:`prepare_public`, on the
datasites' mocks alone. The city-folder helpers (:func:`load_city_geography`,
:func:`city_mocks`) are what a runtime playing every owner of a city folder needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from fedmugrep.data.loading import (
    assign_regions,
    load_communities,
    load_mobility,
    load_transactions,
)
from fedmugrep.errors import ConfigError
from fedmugrep.federation.artefacts import (
    agency_mock,
    public_from_mocks,
    public_geography,
    region_mock_pair,
)
from fedmugrep.federation.coordinator import Coordinator, FederationResult
from fedmugrep.federation.interfaces import RegionSite, TransactionSite
from fedmugrep.federation.mocks import (
    MockDeclaration,
    check_declaration,
    load_declaration,
    with_public_districts,
)
from fedmugrep.federation.owners import agency_files
from fedmugrep.federation.parties import PublicArtefacts
from fedmugrep.federation.plan import FederationPlan
from fedmugrep.federation.pretrain import pretrain_on_mocks
from fedmugrep.federation.wire import as_nanosecond_dates, strip_mock_marker

__all__ = [
    "PUBLIC_DECLARATION",
    "CityTables",
    "check_same_schema",
    "city_declaration",
    "load_city",
    "prepare_public",
    "train",
]

#: The owners' public declaration in a city folder (the ``[mock]`` section of a datasite TOML).
PUBLIC_DECLARATION = "public.toml"


def check_same_schema(mocks: Mapping[str, pd.DataFrame]) -> None:
    """The transaction datasites' mocks must have the same columns: one model reads them all.

    Raises:
        ConfigError: naming the first datasite and column that differ from the first one's.
    """
    if not mocks:
        raise ConfigError("no transaction datasite: a federation needs at least one agency")
    (first, ref), *rest = mocks.items()
    want = list(strip_mock_marker(ref).columns)
    for name, mock in rest:
        cols = list(strip_mock_marker(mock).columns)
        extra = [c for c in cols if c not in want]
        missing = [c for c in want if c not in cols]
        if extra or missing:
            what = (
                f"has column '{extra[0]}' that '{first}' lacks"
                if extra
                else f"lacks column '{missing[0]}' that '{first}' has"
            )
            raise ConfigError(
                f"the transaction datasites' schemas disagree: datasite '{name}' {what}; the "
                "owners must agree on one set of column names (rename or drop columns)"
            )


def prepare_public(
    region_mock: pd.DataFrame,
    mobility_mock: pd.DataFrame | None,
    transaction_mocks: Mapping[str, pd.DataFrame],
    plan: FederationPlan,
    *,
    progress: bool = False,
) -> PublicArtefacts:
    """The data scientist's public artefacts and, with ``plan.pretrain_epochs``, their public
    starting weights: fitted and pretrained on the datasites' mocks only (no privacy cost).

    Args:
        region_mock: the region datasite's communities mock (or the public geography when
            model 2 runs at the coordinator).
        mobility_mock: its mobility mock, or ``None``.
        transaction_mocks: each agency datasite's mock, by datasite name.
        plan: the federation plan.
        progress: show the pretraining's progress bar.

    Raises:
        ConfigError: the agencies' schemas disagree, or the mocks declare no dates or prices.
    """
    check_same_schema(transaction_mocks)
    public = public_from_mocks(region_mock, list(transaction_mocks.values()), plan)
    if plan.pretrain_epochs:
        pooled = pd.concat(
            [as_nanosecond_dates(strip_mock_marker(m)) for m in transaction_mocks.values()],
            ignore_index=True,
        ).dropna(subset=["date", "price"])
        public.init_state = pretrain_on_mocks(
            public,
            pooled,
            strip_mock_marker(region_mock),
            None if mobility_mock is None else strip_mock_marker(mobility_mock),
            epochs=plan.pretrain_epochs,
            seed=plan.seed,
            progress=progress,
        )
    return public


def train(
    plan: FederationPlan,
    public: PublicArtefacts,
    agencies: Mapping[str, TransactionSite],
    region: RegionSite,
    checkpoint: Path,
    *,
    parallel: bool = False,
    progress: bool = True,
) -> FederationResult:
    """The coordinator's run over ``agencies`` and ``region``, whatever runtime holds them
    (checkpointed every round in ``checkpoint``)."""
    coordinator = Coordinator(
        plan, public, dict(agencies), region, checkpoint=checkpoint, parallel=parallel
    )
    return coordinator.run(progress=progress)


# ============================================================================ city folders
def city_declaration(city_dir: Path, mock: MockDeclaration | str | None) -> MockDeclaration:
    """What the mocks of a city folder are drawn from: ``mock`` when a declaration, else
    ``"synthetic"`` (the built-in synthetic city), ``"declared"`` (the folder's
    :data:`PUBLIC_DECLARATION`; schema-only without one) or ``None`` (``"declared"`` when the
    folder has a :data:`PUBLIC_DECLARATION`, else ``"synthetic"``)."""
    if isinstance(mock, MockDeclaration):
        return mock
    path = Path(city_dir) / PUBLIC_DECLARATION
    if mock is None:
        mock = "declared" if path.is_file() else "synthetic"
    if mock == "synthetic":
        return MockDeclaration(kind="synthetic", source="the built-in synthetic city")
    if mock == "declared":
        return load_declaration(path) if path.is_file() else MockDeclaration(source=str(path))
    raise ConfigError(f"mock must be 'synthetic' or 'declared' (got {mock!r})")


class CityTables:
    """The private tables of a city folder and the mocks their owners would upload.

    A city folder holds one ``transactions_<agency>.csv`` per agency, ``communities.csv`` and
    an optional ``mobility.csv`` (and optionally :data:`PUBLIC_DECLARATION`). Communities
    without districts get districts from their public centres
    (:func:`~fedmugrep.federation.mocks.with_public_districts`), the same for every party.

    Attributes:
        communities: the communities table (private attributes included).
        mobility: the flows, or ``None`` when the folder has no ``mobility.csv``.
        geography: the communities' public geography.
        agencies: each agency's private sales, assigned to communities.
        declaration: what the mocks are drawn from.
    """

    def __init__(self, city_dir: str | Path, declaration: MockDeclaration) -> None:
        city_dir = Path(city_dir)
        self.communities = with_public_districts(load_communities(city_dir / "communities.csv"))
        mob_file = city_dir / "mobility.csv"
        self.mobility = load_mobility(mob_file, self.communities) if mob_file.is_file() else None
        self.geography = public_geography(self.communities)
        self.declaration = declaration
        self.files = agency_files(city_dir)
        self.agencies: dict[str, pd.DataFrame] = {}
        for name, f in self.files.items():
            df = assign_regions(load_transactions(f), self.communities)
            if declaration.kind == "declared":
                check_declaration(df, declaration, file=str(f))
            self.agencies[name] = df

    def agency_mock(self, name: str) -> pd.DataFrame:
        """The mock agency ``name``'s owner uploads with its table."""
        return agency_mock(self.agencies[name], self.declaration, self.geography, name)

    def region_mocks(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The region datasite's communities and mobility mocks."""
        return region_mock_pair(self.communities, self.mobility, self.declaration)

    def mobility_table(self) -> pd.DataFrame:
        """The flows, an empty table when the city has none (a region datasite's asset)."""
        if self.mobility is not None:
            return self.mobility
        return pd.DataFrame(
            {
                "src": pd.Series([], dtype=object),
                "dst": pd.Series([], dtype=object),
                "flow": pd.Series([], dtype=float),
            }
        )


def load_city(city_dir: str | Path, mock: MockDeclaration | str | None = None) -> CityTables:
    """:class:`CityTables` of a city folder, with the mocks drawn as :func:`city_declaration`
    says."""
    return CityTables(city_dir, city_declaration(Path(city_dir), mock))

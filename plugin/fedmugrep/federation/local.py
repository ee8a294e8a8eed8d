"""Local runtime: every party in this process (same party code as the PySyft runtime).

Used by fast tests and benchmarks, and as the reference the PySyft runtime is compared with.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pandas as pd

from fedmugrep.federation.coordinator import FederationResult
from fedmugrep.federation.mocks import MockDeclaration
from fedmugrep.federation.owner_report import owner_predictions, pooled_metrics
from fedmugrep.federation.owners import owner_caps
from fedmugrep.federation.parties import PublicArtefacts, RegionParty, TransactionParty
from fedmugrep.federation.plan import FederationPlan
from fedmugrep.federation.run import CityTables, city_declaration, prepare_public, train
from fedmugrep.training.prepare import community_graph


def coordinator_region(
    public: PublicArtefacts,
    geography: pd.DataFrame,
    plan: FederationPlan,
    folder: Path,
    run_id: str,
) -> RegionParty:
    """Model 2 at the coordinator, for a federation without a region datasite: built on the
    public geography only (no attributes, no flows), so it releases nothing to noise or charge
    (``region_epsilon`` off); its state lives in ``folder``."""
    if plan.privacy is not None:
        plan = replace(plan, privacy=replace(plan.privacy, region_epsilon=None))
    return RegionParty(
        community_graph(public.encoders, public.graph_config, geography, None),
        public.model_config,
        plan,
        folder,
        init_state=public.init_state["region"] if public.init_state else None,
        request_id=run_id,
    )


def run_local(
    city_dir: Path,
    plan: FederationPlan,
    home: Path,
    *,
    mock_seed: int = 1000,
    mock: MockDeclaration | str | None = "synthetic",
    progress: bool = True,
    cap_epsilon: float | None = None,
    run_id: str | None = None,
    resume: bool = False,
    region_datasite: bool = True,
) -> FederationResult:
    """Federated training on a city folder with every party in-process.

    ``city_dir`` holds one ``transactions_<agency>.csv`` per agency, ``communities.csv`` and
    optionally ``mobility.csv`` and ``public.toml`` (the owners' public declaration). Each
    agency's mock is made as ``mock`` says (:func:`~fedmugrep.federation.run.city_declaration`:
    ``"synthetic"`` the built-in synthetic city drawn with ``mock_seed``, ``"declared"`` from
    ``public.toml``, ``None`` whichever the folder has, or a declaration); the public
    artefacts and the pretraining see the mocks only, as in the PySyft runtime.

    ``region_datasite=False`` runs without a region datasite (ARCHITECTURE §2): model 2 then runs
    at the coordinator over the noised intra-region representations and the public geography
    of the communities (names, districts, centres) only; nothing is charged for it.

    Each agency's data owner caps the data scientist at ``cap_epsilon`` (default: the plan's
    target epsilon) before anything runs. ``run_id`` names the run in every ledger entry and
    keys the parties' idempotent releases (a fresh id per call unless given). The coordinator
    checkpoints every round under ``home/coordinator``; ``resume=True`` continues the last
    run there from its checkpoint (same run id: nothing already released is charged again).
    """
    ck_dir = Path(home) / "coordinator"
    ck_dir.mkdir(parents=True, exist_ok=True)
    if resume and (ck_dir / "run_id").exists():
        run_id = (ck_dir / "run_id").read_text().strip()
    else:
        run_id = run_id or uuid.uuid4().hex
        (ck_dir / "checkpoint.pt").unlink(missing_ok=True)
    (ck_dir / "run_id").write_text(run_id)

    city_dir, home = Path(city_dir), Path(home)
    decl = city_declaration(city_dir, mock)
    if decl.kind == "synthetic":
        decl = replace(decl, seed=mock_seed)
    city = CityTables(city_dir, decl)
    mocks = {name: city.agency_mock(name) for name in city.agencies}
    # the same public artefacts as the PySyft runtime builds from the datasites' mocks
    if region_datasite:
        comms, mob = city.communities, city.mobility
        mock_comms, mock_mob = city.region_mocks()
    else:  # the coordinator's model 2 sees the public geography only (no attributes, no flows)
        comms = mock_comms = city.geography
        mob = mock_mob = None
    public = prepare_public(mock_comms, mock_mob, mocks, plan, progress=progress)
    caps = owner_caps(plan, cap_epsilon)
    agencies = {}
    for name, df in city.agencies.items():
        party = TransactionParty(
            name, df, home / city.files[name].stem, public, plan, request_id=run_id
        )
        if caps.agency is not None:
            party.ledger.set_cap(party.data_scientist, name, epsilon=caps.agency, delta=caps.delta)
        agencies[name] = party
    if not region_datasite:
        region = coordinator_region(public, comms, plan, home / "coordinator" / "region", run_id)
    else:
        region = RegionParty(
            community_graph(public.encoders, public.graph_config, comms, mob),
            public.model_config,
            plan,
            home / "region",
            init_state=public.init_state["region"] if public.init_state else None,
            request_id=run_id,
        )
        if caps.region is not None:
            region.ledger.set_cap(
                region.data_scientist, region.name, epsilon=caps.region, delta=caps.delta
            )
    result = train(plan, public, agencies, region, ck_dir / "checkpoint.pt", progress=progress)
    result.data_scientist = region.data_scientist
    result.homes = {n: a.home for n, a in agencies.items()}
    if region_datasite:
        result.homes[region.name] = region.home
    result.owner_metrics, _ = pooled_metrics(
        owner_predictions([a.home for a in agencies.values() if a.name not in result.dropped])
    )
    return result

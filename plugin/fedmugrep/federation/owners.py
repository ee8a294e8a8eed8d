"""What a run does on the data owners' behalf when one process plays every owner.

Both runtimes can play every role on a synthetic city (tests, benchmarks, the demo): then the
same rules decide which files are the agencies' tables and what cap each owner sets. A real
owner runs their own datasite and sets their own cap (``fedmugrep budget set``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedmugrep.errors import ConfigError
from fedmugrep.federation.plan import FederationPlan

__all__ = ["AGENCY_GLOB", "OwnerCaps", "agency_files", "owner_caps"]

#: The agencies' tables in a city folder: ``transactions_<agency>.csv``.
AGENCY_GLOB = "transactions_agency*.csv"


def agency_files(city_dir: str | Path) -> dict[str, Path]:
    """``{agency name: its transactions file}`` of a city folder, in name order.

    Raises:
        ConfigError: when the folder holds none.
    """
    files = sorted(Path(city_dir).glob(AGENCY_GLOB))
    if not files:
        raise ConfigError(f"no {AGENCY_GLOB} in {city_dir}; write a city with `fedmugrep synth`")
    return {f.stem.removeprefix("transactions_"): f for f in files}


@dataclass(frozen=True)
class OwnerCaps:
    """The epsilon caps the owners set for the data scientist (``None``: no cap, which the
    owner must pair with an explicit opt-in to exact releases).

    Attributes:
        agency: each transaction datasite's cap.
        region: the region datasite's cap.
        delta: the caps' delta.
    """

    agency: float | None
    region: float | None
    delta: float


def owner_caps(plan: FederationPlan, cap_epsilon: float | None = None) -> OwnerCaps:
    """Each agency caps at ``cap_epsilon`` (default: the plan's target epsilon), the region at
    the plan's ``region_epsilon``; without privacy nobody caps."""
    p = plan.privacy
    if p is None:
        return OwnerCaps(None, None, 0.0)
    agency = cap_epsilon if cap_epsilon is not None else p.epsilon
    return OwnerCaps(agency, p.region_epsilon, p.delta)

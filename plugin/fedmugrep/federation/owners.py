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

#: The agencies' tables in a city folder: ``transactions_<agency>.csv`` (``.parquet`` too).
AGENCY_GLOB = "transactions_*"
#: ``transactions_all.csv``: the pooled table ``fedmugrep synth`` writes beside the agencies'.
POOLED_NAME = "all"


def agency_files(city_dir: str | Path) -> dict[str, Path]:
    """``{agency name: its transactions file}`` of a city folder, in name order: one
    ``transactions_<agency>.csv`` (or ``.parquet``) per agency, ``transactions_all.*`` (the
    pooled table) left out.

    Raises:
        ConfigError: when the folder holds none.
    """
    files = sorted(
        f
        for f in Path(city_dir).glob(AGENCY_GLOB)
        if f.suffix in (".csv", ".parquet") and f.stem != f"transactions_{POOLED_NAME}"
    )
    if not files:
        raise ConfigError(
            f"no transactions_<agency>.csv in {city_dir}: put one sales table per agency there "
            "(see the README's 'your own data'), or write a city with `fedmugrep synth`"
        )
    names = [f.stem.removeprefix("transactions_") for f in files]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{city_dir}: agency {dup[0]!r} has both a .csv and a .parquet table")
    return dict(zip(names, files, strict=True))


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

"""A data scientist's own remaining budget, read from a datasite by URL.

The privacy ledger lives in the owner's home and never leaves it; what a data scientist may
know of it is their own caps and spending. :func:`publish_budgets` registers one public
PySyft API endpoint, ``fedmugrep.budget``, on the datasite (the owner does it, in
``fedmugrep datasite start``); it answers the *calling* account's rows only: the endpoint
reads ``context.user.email`` on the server, so a data scientist cannot ask for someone
else's budget, and adding or changing endpoints stays an admin's right (PySyft refuses it to
data scientists). :func:`my_budget` is the data scientist's side.

The endpoint's code runs inside the datasite's server process, from the source PySyft stores
with it, so it is self-contained: it imports the ledger itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedmugrep.errors import ConfigError
from fedmugrep.pysyft.quiet import quiet_syft

__all__ = ["BUDGET_ENDPOINT", "my_budget", "publish_budgets"]

BUDGET_ENDPOINT = "fedmugrep.budget"


def _endpoint(home: Path) -> Any:
    import syft as sy  # deferred: importing syft takes seconds

    @sy.api_endpoint(path=BUDGET_ENDPOINT, settings={"home": str(home)})
    def budget(context) -> list:  # type: ignore[no-untyped-def]  # noqa: ANN001
        """Your cap, spent and remaining epsilon per dataset on this datasite."""
        from pathlib import Path  # shipped as source: runs in the datasite's process

        from fedmugrep.privacy.ledger import LEDGER_FILENAME, Ledger  # shipped as source

        home = Path(context.settings["home"])
        if not (home / LEDGER_FILENAME).is_file():
            return []
        me = context.user.email
        return [
            {
                "dataset": b.dataset,
                "cap_epsilon": b.cap_epsilon,
                "cap_delta": b.cap_delta,
                "spent_epsilon": b.spent.epsilon,
                "remaining_epsilon": b.remaining,
                "refusals": b.refusals,
            }
            for b in Ledger(home, create=False).budgets()
            if b.data_scientist == me
        ]

    return budget


def publish_budgets(admin: Any, home: str | Path) -> bool:
    """Register the ``fedmugrep.budget`` endpoint on the datasite (once).

    Args:
        admin: the owner's (admin) client.
        home: the datasite's home, where its privacy ledger lives.

    Returns:
        ``True`` when registered now, ``False`` when the datasite already had it.

    Raises:
        ConfigError: when PySyft refuses the endpoint.
    """
    import syft as sy  # deferred: importing syft takes seconds

    with quiet_syft():
        paths = {str(e.path) for e in admin.custom_api.api_endpoints()}
        if BUDGET_ENDPOINT in paths:
            return False
        result = admin.custom_api.add(endpoint=_endpoint(Path(home).resolve()))
    if isinstance(result, sy.SyftError):  # pragma: no cover - 0.9.5 raises instead
        raise ConfigError(f"could not publish the budget endpoint: {result.message}")
    return True


def my_budget(client: Any) -> list[dict[str, Any]] | None:
    """The calling data scientist's budget rows on one datasite.

    Returns:
        One dict per dataset with a cap or spending (``cap_epsilon``, ``cap_delta``,
        ``spent_epsilon``, ``remaining_epsilon``, ``refusals``; an empty list when the owner
        has set no cap for this account yet), or ``None`` when the datasite does not publish
        budgets (started without ``fedmugrep datasite start``).
    """
    import syft as sy  # deferred: importing syft takes seconds

    with quiet_syft():
        try:
            rows = client.api.services.api.call_public(BUDGET_ENDPOINT)
        except sy.SyftException:
            return None
        if isinstance(rows, sy.SyftError):
            return None
        if hasattr(rows, "get"):  # an ActionObject wrapping the list
            rows = rows.get()
    if not isinstance(rows, list):
        return None
    return [dict(r) for r in rows]

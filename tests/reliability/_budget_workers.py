"""Run in spawned processes by test_concurrent_budget.py (kept light: no torch import)."""

from __future__ import annotations

import time
from typing import Any

from fedmugrep.errors import BudgetExceededError
from fedmugrep.privacy.events import event_from_dict
from fedmugrep.privacy.ledger import Ledger


def charge_requests(
    home: str,
    worker: int,
    requests: list[tuple[str, str, dict]],
    mode: str,
    barrier: Any,
    results: Any,
) -> None:
    """Send ``requests`` ``(data scientist, request id, event dict)`` as fast as possible once
    every worker is ready; report ``(request id, data scientist, outcome)`` for each.

    ``mode`` ``"charge"`` calls :meth:`Ledger.charge`; ``"charge_then"`` computes the value
    between the budget check and the charge (with a short sleep that widens the race window)
    and counts a value as released only when ``charge_then`` returned it.
    """
    ledger = Ledger(home)
    barrier.wait()
    outcome = []
    for ds, request_id, event in requests:
        common = dict(
            data_scientist=ds,
            request_id=request_id,
            dataset="sales",
            mechanism="laplace" if event["kind"] == "laplace" else "gaussian",
            events=[event_from_dict(event)],
        )
        try:
            if mode == "charge":
                ledger.charge(**common, payload=request_id.encode())
                outcome.append((request_id, ds, "charged"))
            else:

                def compute(rid: str = request_id) -> str:
                    time.sleep(0.002)
                    return f"noised value of {rid}"

                value = ledger.charge_then(compute, **common)
                assert value == f"noised value of {request_id}"
                outcome.append((request_id, ds, "charged"))
        except BudgetExceededError:
            outcome.append((request_id, ds, "refused"))
    results.put((worker, outcome))

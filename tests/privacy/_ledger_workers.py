"""Functions run in spawned processes by test_ledger.py (kept light: no torch import)."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from fedmugrep.errors import BudgetExceededError
from fedmugrep.privacy.events import LaplaceEvent
from fedmugrep.privacy.ledger import LEDGER_FILENAME, Ledger


def charge_many(home: str, worker: int, attempts: int, barrier: Any, results: Any) -> None:
    """Charge ``attempts`` Laplace releases as fast as possible after all workers are ready."""
    ledger = Ledger(home)
    barrier.wait()
    outcome = []
    for i in range(attempts):
        try:
            ledger.charge(
                data_scientist="alice",
                request_id=f"w{worker}-{i}",
                dataset="sales",
                mechanism="laplace",
                events=[LaplaceEvent(1.0, 2.0, 1, bound=1000.0)],
                payload=f"{worker}-{i}".encode(),
            )
            outcome.append("charged")
        except BudgetExceededError:
            outcome.append("refused")
    results.put((worker, outcome))


def die_inside_transaction(home: str) -> None:
    """Start writing an entry and the head, then die before committing."""
    conn = sqlite3.connect(os.path.join(home, LEDGER_FILENAME), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE head SET count = count + 100")
    os._exit(3)

"""The budget rows a data owner sees: cap, spent and remaining per data scientist and dataset.

Shared by ``fedmugrep budget``, ``fedmugrep datasite status`` and ``fedmugrep requests
approve``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedmugrep.privacy.ledger import LEDGER_FILENAME, Ledger
from fedmugrep.pysyft.config import DatasiteConfig

__all__ = ["budget_rows", "format_budget_table"]


def budget_rows(config: DatasiteConfig, data_scientist: str | None = None) -> list[dict[str, Any]]:
    """Cap, spent and remaining per (data scientist, dataset) in the datasite's ledger.

    An empty list when the datasite has no ledger yet (nothing set, nothing spent).
    """
    if not (config.home / LEDGER_FILENAME).is_file():
        return []
    rows = []
    for b in Ledger(config.home, create=False).budgets():
        if data_scientist is not None and b.data_scientist != data_scientist:
            continue
        rows.append(
            {
                "data_scientist": b.data_scientist,
                "dataset": b.dataset,
                "cap_epsilon": b.cap_epsilon,
                "cap_delta": b.cap_delta,
                "spent_epsilon": b.spent.epsilon,
                "remaining_epsilon": b.remaining,
                "releases": dict(b.releases),
                "refusals": b.refusals,
            }
        )
    return rows


def format_budget_table(rows: Sequence[dict[str, Any]], config_path: str = "TOML") -> str:
    """A text table of :func:`budget_rows` (``config_path`` goes into the hint when empty)."""
    if not rows:
        return (
            "(no budgets set; set one with: fedmugrep budget set --config "
            f"{config_path} --data-scientist EMAIL)"
        )

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    header = (
        "data scientist",
        "dataset",
        "cap eps",
        "cap delta",
        "spent eps",
        "remaining",
        "refused",
    )
    body = [
        (
            r["data_scientist"],
            r["dataset"],
            num(r["cap_epsilon"]),
            "-" if r["cap_delta"] is None else f"{r['cap_delta']:g}",
            num(r["spent_epsilon"]),
            num(r["remaining_epsilon"]),
            str(r["refusals"]),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip() for b in body]
    return "\n".join(lines)

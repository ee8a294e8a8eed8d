"""What an auditor reads off a privacy ledger: budgets per pair, verification, exports.

Pure presentation on top of :class:`~fedmugrep.privacy.ledger.Ledger`; the CLI
(``fedmugrep audit``) is a thin wrapper around :func:`audit_report`, :func:`render_table`
and :func:`export`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from fedmugrep.errors import ConfigError
from fedmugrep.privacy.ledger import (
    BudgetStatus,
    Ledger,
    LedgerEntry,
    LedgerHead,
    LedgerProblem,
    VerificationReport,
)
from fedmugrep.privacy.witness import check_witness

__all__ = ["AuditReport", "audit_report", "export", "render_table"]


@dataclass(frozen=True)
class AuditReport:
    """Everything ``fedmugrep audit`` shows.

    Attributes:
        ledger: path of the ledger file.
        head: the stored head (record it to detect later rewrites).
        entries: number of entries.
        budgets: one :class:`~fedmugrep.privacy.ledger.BudgetStatus` per pair.
        verification: the verification report, if it was asked for.
    """

    ledger: str
    head: LedgerHead
    entries: int
    budgets: tuple[BudgetStatus, ...]
    verification: VerificationReport | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (infinite or undefined numbers become ``None``)."""
        return _jsonable(
            {
                "ledger": self.ledger,
                "head": str(self.head),
                "entries": self.entries,
                "budgets": [_budget_dict(b) for b in self.budgets],
                "verification": None if self.verification is None else self.verification.to_dict(),
            }
        )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def spending_summary(home: str | Path, data_scientist: str, dataset: str) -> dict[str, Any] | None:
    """What a run reports per datasite: ``epsilon`` spent by ``data_scientist`` on
    ``dataset``, the owner's ``cap`` and ``delta``, and whether the ledger verifies
    (``ledger_ok``). ``None`` when the owner set no cap (exact releases allowed: no privacy)."""
    ledger = Ledger(home)
    cap = ledger.cap(data_scientist, dataset)
    if cap is None:
        return None
    return {
        "epsilon": ledger.spent(data_scientist, dataset),
        "cap": cap[0],
        "delta": cap[1],
        "ledger_ok": ledger.verify().ok,
    }


def _budget_dict(b: BudgetStatus) -> dict[str, Any]:
    return {
        "data_scientist": b.data_scientist,
        "dataset": b.dataset,
        "epsilon_spent": b.spent.epsilon,
        "cap_epsilon": b.cap_epsilon,
        "cap_delta": b.cap_delta,
        "remaining": b.remaining,
        "bound": b.spent.bound,
        "rdp_epsilon": b.spent.rdp_epsilon,
        "plain_sum_epsilon": b.spent.plain_sum_epsilon,
        "releases": dict(b.releases),
        "refusals": b.refusals,
    }


def audit_report(
    ledger: Ledger, *, verify: bool = False, expected_head: str | None = None
) -> AuditReport:
    """Collect budgets (and, if asked, verification) from one consistent read of ``ledger``."""
    verification = None
    if verify or expected_head is not None:
        verification = ledger.verify(expected_head=expected_head)
        # the release index beside the ledger is a second record: it catches a ledger that
        # was deleted, replaced or truncated without needing a head recorded earlier
        witness = check_witness(ledger, raise_on_missing=False)
        if not witness.ok:
            problem = LedgerProblem(
                "truncated",
                (),
                f"the ledger lacks {witness.missing} of the {witness.recorded} charged releases "
                f"recorded in the release index ({', '.join(str(f) for f in witness.files)}): "
                "entries were deleted, or the ledger was replaced or truncated",
            )
            verification = replace(
                verification, ok=False, problems=(*verification.problems, problem)
            )
    return AuditReport(
        ledger=str(ledger.path),
        head=ledger.head(),
        entries=len(ledger.entries()),
        budgets=tuple(ledger.budgets()),
        verification=verification,
    )


def _fmt(x: float | None, spec: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf"
    return format(x, spec)


def render_table(report: AuditReport) -> str:
    """Human-readable summary: one row per (data scientist, dataset), then verification."""
    header = [
        "data scientist",
        "dataset",
        "eps spent",
        "cap",
        "delta",
        "remaining",
        "releases",
        "refused",
    ]
    rows = [
        [
            b.data_scientist,
            b.dataset,
            _fmt(b.spent.epsilon),
            _fmt(b.cap_epsilon),
            _fmt(b.cap_delta, ".0e") if b.cap_delta else "-",
            _fmt(b.remaining),
            ", ".join(f"{m} x{n}" for m, n in b.releases.items()) or "-",
            str(b.refusals),
        ]
        for b in report.budgets
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = [
        f"Privacy ledger {report.ledger}",
        f"{report.entries} entries; head {report.head}",
        "",
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    if not rows:
        lines.append("(no caps or releases recorded)")
    if report.verification is not None:
        lines += ["", str(report.verification)]
    return "\n".join(lines)


def _entry_row(e: LedgerEntry) -> dict[str, Any]:
    return asdict(e)


def export(ledger: Ledger, path: str | Path, *, report: AuditReport | None = None) -> Path:
    """Write the ledger to ``path``: ``.csv`` → one row per entry; ``.json`` → summary + entries.

    Raises:
        ConfigError: the suffix is neither ``.csv`` nor ``.json``.
    """
    path = Path(path)
    entries = ledger.entries()
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".json"}:
        raise ConfigError(
            f"export file must end in .csv or .json (got {path.name!r}); e.g. --export audit.csv"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        columns = (
            list(_entry_row(entries[0]).keys())
            if entries
            else list(LedgerEntry.__dataclass_fields__)
        )
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for e in entries:
                writer.writerow({k: ("" if v is None else v) for k, v in _entry_row(e).items()})
    else:
        report = report if report is not None else audit_report(ledger)
        data = report.to_dict()
        data["entries_detail"] = _jsonable([_entry_row(e) for e in entries])
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path

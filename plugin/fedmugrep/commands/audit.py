"""``fedmugrep audit``: read, verify and export a datasite's privacy ledger.

Exit codes (see :mod:`fedmugrep.cli`): 0 when the ledger is read (and, with ``--verify``,
verifies); 2 when ``--home`` is not a datasite's home folder (missing, or without a ledger);
4 when verification fails (:class:`~fedmugrep.errors.LedgerIntegrityError`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fedmugrep.errors import LedgerIntegrityError, UsageError
from fedmugrep.privacy.audit import audit_report, export, render_table
from fedmugrep.privacy.ledger import LEDGER_FILENAME, Ledger

EPILOG = """\
Examples:
  fedmugrep audit --home ~/datasites/agency1
  fedmugrep audit --home ~/datasites/agency1 --verify --json
  fedmugrep audit --home ~/datasites/agency1 --verify --expected-head 42:3f1c...e9 --export audit.csv

Record the printed head (COUNT:HASH) somewhere the datasite cannot write; passing it back with
--expected-head later detects even a consistent rewrite of the whole ledger.
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``audit`` sub-command to ``subparsers``."""
    parser = subparsers.add_parser(
        "audit",
        help="show privacy budgets spent per data scientist and dataset; verify the ledger",
        description=(
            "List, per data scientist and dataset, the epsilon spent, the cap, what remains and "
            "the releases by mechanism, from the datasite's hash-chained privacy ledger."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--home",
        required=True,
        type=Path,
        metavar="DIR",
        help="the datasite's home folder (holding privacy_ledger.sqlite)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check the hash chain; exit 4 naming any edited, deleted, inserted or reordered entry",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--export",
        type=Path,
        metavar="FILE",
        help="also write the entries to FILE (.csv: one row per entry; .json: summary + entries)",
    )
    parser.add_argument(
        "--expected-head",
        metavar="COUNT:HASH",
        help="a head recorded earlier; implies --verify",
    )
    parser.set_defaults(func=run)
    return parser


def _check_home(home: Path) -> None:
    fix = f"pass the datasite's home folder (the one holding {LEDGER_FILENAME})"
    if not home.is_dir():
        problem = "is not a folder" if home.exists() else "does not exist"
        raise UsageError(
            f"--home {home} {problem}, so there is no privacy ledger at {home / LEDGER_FILENAME}; "
            + fix
        )
    if not (home / LEDGER_FILENAME).is_file():
        raise UsageError(f"--home {home}: no privacy ledger at {home / LEDGER_FILENAME}; {fix}")


def run(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep audit``; raises LedgerIntegrityError when verification fails and
    UsageError when ``--home`` holds no ledger."""
    _check_home(args.home)
    ledger = Ledger(args.home, create=False)
    report = audit_report(ledger, verify=args.verify, expected_head=args.expected_head)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print(render_table(report))
    if args.export is not None:
        written = export(ledger, args.export, report=report)
        if not args.json:
            print(f"\nexported {report.entries} entries to {written}")
    if report.verification is not None and not report.verification.ok:
        problems = report.verification.problems
        summary = "; ".join(f"[{p.kind}] {p.message}" for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise LedgerIntegrityError(f"{ledger.path}: {summary}{more}")
    return 0

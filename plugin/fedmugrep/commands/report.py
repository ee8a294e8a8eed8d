"""``fedmugrep report``: an HTML page with the run's figures (training, privacy, bytes, map,
calibration, privacy-utility) and header tables, plus the figures as PNG files.

RUN_DIR is the folder of any training command (``demo --out``, ``train-federated --home``,
``train-central --out``, the home of ``federation train``).

Exit codes (see :mod:`fedmugrep.cli`): 0 when the page is written (sections whose inputs are
missing say so on the page); 2 when RUN_DIR does not exist, is a file, or has no readable
report.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]

EPILOG = """\
Examples:
  fedmugrep report runs/demo                    # writes runs/demo/report/index.html + PNGs
  fedmugrep report runs/fed --out site/ --json  # a train-federated --home
  fedmugrep report runs/central                 # a train-central --out folder
  fedmugrep report runs/federation              # the home of a federation train
  fedmugrep report runs/fed --sweep runs/sweep.json

RUN_DIR is the folder a training command wrote: `fedmugrep demo --out DIR`, `fedmugrep
train-federated --home DIR`, `fedmugrep train-central ... --out DIR`, or the [training] home of
`fedmugrep federation train`. Reads RUN_DIR/report.json (required), RUN_DIR/predictions.csv,
the city's communities.csv (the one report.json names, else RUN_DIR/city/), RUN_DIR/sweep.json
(`fedmugrep sweep --out RUN_DIR/sweep.json`) and every datasite's privacy ledger, which it
verifies itself: each is shown verified, failed (with the problem) or not found, never taken on
trust from report.json. A missing optional input leaves its section with a note saying which
file is missing and how to produce it.
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` sub-command to ``subparsers``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="write an HTML report with figures for a run folder",
        description=(
            "Write a self-contained HTML page (figures embedded, and saved as PNG files next to "
            "it) for the folder of any training command (demo, train-federated, train-central, "
            "federation train): test metrics against the centralized model and baselines, "
            "epsilon spent per datasite against its cap with each ledger verified, training "
            "curves (for a private run: epsilon per round and the noised released metrics), "
            "bytes per round, a city map of predicted prices and errors, predicted vs actual "
            "prices with 80% intervals, and the privacy-utility curve."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run_dir", type=Path, metavar="RUN_DIR", help="run folder holding report.json"
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder for index.html and the PNGs (default RUN_DIR/report)",
    )
    parser.add_argument(
        "--sweep",
        type=Path,
        metavar="FILE",
        help="privacy-utility sweep JSON (default RUN_DIR/sweep.json)",
    )
    parser.add_argument(
        "--json", action="store_true", help='print {"html": PATH, "pngs": [...]} as JSON'
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep report``; raises DataValidationError (exit 2) on a bad RUN_DIR."""
    from fedmugrep.report import write_report  # deferred: loads matplotlib

    result = write_report(args.run_dir, out=args.out, sweep=args.sweep)
    if args.json:
        print(json.dumps({"html": str(result.html), "pngs": [str(p) for p in result.pngs]}))
        return 0
    print(f"report written to {result.html} ({len(result.pngs)} figures)")
    for key, why in result.missing.items():
        print(f"  {key}: not shown — {why}")
    return 0

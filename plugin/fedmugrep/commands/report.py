"""``fedmugrep report``: an HTML page with the run's figures (training, privacy, bytes, map,
calibration, privacy-utility) and header tables, plus the figures as PNG files.

Exit codes (see :mod:`fedmugrep.cli`): 0 when the page is written (sections whose inputs are
missing say so on the page); 2 when RUN_DIR does not exist or has no readable report.json.
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
  fedmugrep report runs/demo --out site/ --json
  fedmugrep report runs/demo --sweep runs/sweep/sweep.json

Reads RUN_DIR/report.json (required), RUN_DIR/predictions.csv, RUN_DIR/city/communities.csv,
RUN_DIR/sweep.json and the ledgers under RUN_DIR/datasites/<site>/; a missing optional input
leaves its section with a note saying which file is missing and how to produce it.
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` sub-command to ``subparsers``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="write an HTML report with figures for a run folder",
        description=(
            "Write a self-contained HTML page (figures embedded, and saved as PNG files next to "
            "it) for a run folder written by `fedmugrep demo`: test metrics against the "
            "centralized model and baselines, epsilon spent per datasite against its cap, "
            "training curves, bytes per round, a city map of predicted prices and errors, "
            "predicted vs actual prices with 80% intervals, and the privacy-utility curve."
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

"""The ``fedmugrep`` command line.

Each sub-command lives in its own module under :mod:`fedmugrep.commands` and exposes
``register(subparsers)``; adding a command means adding its module name to ``COMMANDS``.
Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input, 3 budget exceeded,
4 integrity failure (tampered ledger).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fedmugrep import __version__
from fedmugrep.errors import (
    BudgetExceededError,
    DataValidationError,
    FedMugRepError,
    LedgerIntegrityError,
)

COMMANDS: tuple[str, ...] = (
    "synth",
    "train_central",
    "train_federated",
    "audit",
    "demo",
    "report",
    "datasite",
    "requests",
    "budget",
    "users",
    "federation",
    "appraise",
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_BUDGET, EXIT_INTEGRITY = 0, 1, 2, 3, 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedmugrep",
        description="Federated real-estate appraisal (fed-MugRep) on PySyft datasites.",
        epilog="Example: fedmugrep demo --json runs/demo.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fedmugrep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"fedmugrep.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except DataValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BudgetExceededError as exc:
        print(f"budget exceeded: {exc}", file=sys.stderr)
        return EXIT_BUDGET
    except LedgerIntegrityError as exc:
        print(f"ledger integrity failure: {exc}", file=sys.stderr)
        return EXIT_INTEGRITY
    except FedMugRepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

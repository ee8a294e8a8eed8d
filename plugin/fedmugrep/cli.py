"""The ``fedmugrep`` command line.

Each sub-command lives in its own module under :mod:`fedmugrep.commands` and exposes
``register(subparsers)``; adding a command means adding its module name to ``COMMANDS``.
Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input, 3 budget exceeded,
4 integrity failure (tampered ledger).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedmugrep import __version__
from fedmugrep.errors import (
    BudgetExceededError,
    DataValidationError,
    FedMugRepError,
    LedgerIntegrityError,
    UsageError,
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
    "sweep",
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_BUDGET, EXIT_INTEGRITY = 0, 1, 2, 3, 4


#: ``check(option, value)``: ``None`` when ``value`` is acceptable, else the problem, naming
#: ``option`` (the flag as the user typed it, e.g. ``--rounds``).
Check = Callable[[str, Any], "str | None"]


# ============================================================================ argument checks
def validated(*checks: Check) -> type[argparse.Action]:
    """An argparse ``action`` that stores the (``type=``-converted) value after ``checks``.

    A failed check is bad input found before any work: argparse prints the usage and the
    problem (which names the option) and exits with :data:`EXIT_USAGE`. Defaults are not
    checked (they are the command's own).
    """

    class _Validated(argparse.Action):
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: Any,
            option_string: str | None = None,
        ) -> None:
            option = option_string or self.dest
            for check in checks:
                problem = check(option, values)
                if problem is not None:
                    parser.error(problem)
            setattr(namespace, self.dest, values)

    return _Validated


def int_range(low: int, high: int | None = None) -> Check:
    """An integer in ``[low, high]`` (no upper end when ``high`` is ``None``)."""

    def check(option: str, value: int) -> str | None:
        if value < low:
            return f"{option} must be >= {low} (got {value})"
        if high is not None and value > high:
            return f"{option} must be <= {high} (got {value})"
        return None

    return check


def positive(high: float | None = None) -> Check:
    """A finite number ``> 0`` (and ``<= high`` when given)."""

    def check(option: str, value: float) -> str | None:
        if not (math.isfinite(value) and value > 0):
            return f"{option} must be > 0 (got {value:g})"
        if high is not None and value > high:
            return f"{option} must be <= {high:g} (got {value:g})"
        return None

    return check


def open_unit(option: str, value: float) -> str | None:
    """A number strictly between 0 and 1."""
    if math.isfinite(value) and 0 < value < 1:
        return None
    return f"{option} must be in (0, 1) (got {value:g})"


def half_open_unit(option: str, value: float) -> str | None:
    """A number in ``(0, 1]``."""
    if math.isfinite(value) and 0 < value <= 1:
        return None
    return f"{option} must be in (0, 1] (got {value:g})"


def each(check: Check) -> Check:
    """``check`` applied to every value of a ``nargs`` option (the first problem is reported)."""

    def check_all(option: str, values: Any) -> str | None:
        for value in values:
            problem = check(option, value)
            if problem is not None:
                return problem
        return None

    return check_all


def not_a_dir(option: str, value: Path) -> str | None:
    """A file path to write: not an existing folder."""
    if Path(value).is_dir():
        return f"{option}: {value} is a folder; give the path of the file to write"
    return None


def existing_file(what: str, fix: str = "") -> Check:
    """A path to an existing file; ``what`` names it in the message (e.g. ``model file``)."""

    def check(option: str, value: Path) -> str | None:
        path = Path(value)
        if path.is_file():
            return None
        problem = "is a folder, not a file" if path.is_dir() else "does not exist"
        return f"{option}: {what} {path} {problem}" + (f"; {fix}" if fix else "")

    return check


def existing_dir(what: str, fix: str = "") -> Check:
    """A path to an existing folder; ``what`` names it in the message (e.g. ``home folder``)."""

    def check(option: str, value: Path) -> str | None:
        path = Path(value)
        if path.is_dir():
            return None
        problem = "is a file, not a folder" if path.exists() else "does not exist"
        return f"{option}: {what} {path} {problem}" + (f"; {fix}" if fix else "")

    return check


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
    except (DataValidationError, UsageError) as exc:
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

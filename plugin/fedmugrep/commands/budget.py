"""``fedmugrep budget set|show``: the data owner's privacy budget per data scientist.

The budget lives in the datasite's hash-chained privacy ledger (``HOME/privacy_ledger.sqlite``,
:class:`~fedmugrep.privacy.ledger.Ledger`), keyed by (data scientist e-mail, dataset). On a
datasite, fedmugrep charges every release to the dataset named after the datasite (what
:func:`~fedmugrep.pysyft.run.run_syft` caps too), so that is the default. The
ledger refuses every release of a data scientist without a cap: set one before they start.

``budget set`` checks, when the datasite runs, that the data scientist has an account on it
(refused otherwise: create it with ``fedmugrep users add``); when it does not run, the cap is
set and a warning says the account could not be checked.

Exit codes (see :mod:`fedmugrep.cli`): 0 ok; 2 a bad config, e-mail, epsilon or delta, or no
such account on the running datasite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedmugrep.commands.budget_table import budget_rows, format_budget_table
from fedmugrep.commands.datasite import (
    add_config_argument,
    admin_login,
    load_config,
    running_url,
    server_pid,
    usage_errors,
)
from fedmugrep.commands.users import accounts
from fedmugrep.errors import ConfigError, FedMugRepError
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.pysyft.config import DatasiteConfig

__all__ = ["budget_rows", "format_budget_table", "register"]

EPILOG = """\
Examples:
  fedmugrep budget set  --config datasites/agency-a.toml --data-scientist dana@uni.example
  fedmugrep budget set  --config datasites/agency-a.toml --data-scientist dana@uni.example \\
                        --epsilon 4 --delta 1e-5
  fedmugrep budget show --config datasites/agency-a.toml
  fedmugrep budget show --config datasites/agency-a.toml --data-scientist dana@uni.example --json
"""

_SET_EPILOG = """\
Example:
  fedmugrep budget set --config datasites/agency-a.toml --data-scientist dana@uni.example \\
                       --epsilon 4 --delta 1e-5

Without --epsilon/--delta the caps of the TOML's [budget] section apply. The cap is recorded
in the ledger's hash chain; lowering it below what was spent refuses every further release.
The datasite need not run; when it runs, the data scientist's account must exist on it
(create it with: fedmugrep users add --config TOML --email EMAIL).
"""

_SHOW_EPILOG = """\
Examples:
  fedmugrep budget show --config datasites/agency-a.toml
  fedmugrep budget show --config datasites/agency-a.toml --data-scientist dana@uni.example --json

Spent epsilon is recomputed from the charged events at the cap's delta (Renyi-DP composition,
or the plain sum when smaller). Verify the ledger itself with: fedmugrep audit --home HOME --verify
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``budget`` sub-command (with ``set`` and ``show``)."""
    parser = subparsers.add_parser(
        "budget",
        help="set or show a data scientist's privacy budget on a datasite",
        description=(
            "Set or show the epsilon/delta cap of each data scientist on a datasite, with what "
            "they spent and what remains, from the datasite's privacy ledger."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    set_ = actions.add_parser(
        "set",
        help="set (or change) a data scientist's cap",
        description="Set or change the epsilon/delta cap of one data scientist on this datasite.",
        epilog=_SET_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(set_)
    set_.add_argument(
        "--data-scientist",
        required=True,
        metavar="EMAIL",
        help="the data scientist's account e-mail on the datasite",
    )
    set_.add_argument(
        "--epsilon", type=float, metavar="E", help="epsilon cap (default: [budget] epsilon_cap)"
    )
    set_.add_argument(
        "--delta", type=float, metavar="D", help="delta cap (default: [budget] delta_cap)"
    )
    set_.add_argument(
        "--dataset",
        metavar="NAME",
        help="ledger dataset the cap covers (default: the datasite's name)",
    )
    set_.add_argument("--note", default="", help="free text recorded with the cap")
    set_.add_argument("--json", action="store_true", help="print JSON instead of text")
    set_.set_defaults(func=usage_errors(run_set))

    show = actions.add_parser(
        "show",
        help="cap, spent and remaining per data scientist",
        description="Show cap, spent and remaining epsilon per data scientist and dataset.",
        epilog=_SHOW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(show)
    show.add_argument(
        "--data-scientist", metavar="EMAIL", help="only this data scientist (default: everyone)"
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(func=usage_errors(run_show))
    return parser


def _check_email(email: str) -> str:
    if "@" not in email or not email.strip():
        raise ConfigError(
            f"--data-scientist must be the data scientist's account e-mail (got {email!r}); "
            "releases are charged to the verified caller's e-mail, e.g. dana@uni.example"
        )
    return email.strip()


def check_account(config: DatasiteConfig, path: Path, email: str) -> bool:
    """Whether ``email`` has an account on the datasite; ``False`` when that cannot be checked
    (the datasite is not running, or the owner cannot log in), after a warning on stderr.

    Raises:
        ConfigError: the datasite runs and has no account ``email`` (the message says how to
            create it).
    """
    create = f"fedmugrep users add --config {path} --email {email}"
    pid = server_pid(config)
    try:
        if pid is None:
            raise FedMugRepError(f"datasite '{config.name}' is not running")
        emails = {
            u["email"].lower() for u in accounts(admin_login(config, running_url(config), pid))
        }
    except FedMugRepError as exc:
        print(
            f"warning: could not check that {email} has an account ({exc}); the cap is set "
            f"anyway. If the account does not exist, create it with: {create}",
            file=sys.stderr,
        )
        return False
    if email.lower() not in emails:
        raise ConfigError(
            f"no account {email} on datasite '{config.name}'; create it first with: {create} "
            "(then set the cap, or pass --epsilon to users add)"
        )
    return True


# =============================================================================== commands
def run_set(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep budget set``."""
    config = load_config(args.config)
    email = _check_email(args.data_scientist)
    epsilon = args.epsilon if args.epsilon is not None else config.epsilon_cap
    delta = args.delta if args.delta is not None else config.delta_cap
    if epsilon is None or delta is None:
        missing = [n for n, v in (("epsilon", epsilon), ("delta", delta)) if v is None]
        raise ConfigError(
            f"no {' and no '.join(missing)} cap: pass "
            + " ".join(f"--{n} VALUE" for n in missing)
            + f", or set [budget] {' and '.join(f'{n}_cap' for n in missing)} in {args.config}"
        )
    dataset = args.dataset or config.name
    check_account(config, args.config, email)
    ledger = Ledger(config.home)
    entry = ledger.set_cap(
        email, dataset, epsilon=float(epsilon), delta=float(delta), note=args.note
    )
    (row,) = [r for r in budget_rows(config, email) if r["dataset"] == dataset]
    if args.json:
        print(json.dumps({**row, "ledger_seq": entry.seq}, indent=2, sort_keys=True))
        return 0
    print(
        f"cap for {email} on datasite '{config.name}' (dataset '{dataset}'): epsilon "
        f"{row['cap_epsilon']:g}, delta {row['cap_delta']:g}; spent {row['spent_epsilon']:.4f}, "
        f"remaining {row['remaining_epsilon']:.4f} (ledger entry {entry.seq})"
    )
    if row["remaining_epsilon"] < 0:
        print(
            f"note: the cap is below what {email} already spent; every further release is refused"
        )
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep budget show``."""
    config = load_config(args.config)
    email = None if args.data_scientist is None else _check_email(args.data_scientist)
    rows = budget_rows(config, email)
    if args.json:
        print(json.dumps({"datasite": config.name, "budgets": rows}, indent=2, sort_keys=True))
        return 0
    print(f"privacy budgets on datasite '{config.name}' (ledger {config.home}):")
    if not rows and email is not None:
        print(
            f"no cap for {email}: every release they request is refused until you set one with:\n"
            f"  fedmugrep budget set --config {args.config} --data-scientist {email}"
        )
        return 0
    print(format_budget_table(rows, str(args.config)))
    return 0

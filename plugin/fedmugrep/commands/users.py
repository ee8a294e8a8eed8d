"""``fedmugrep users add|list``: the data owner creates data scientists' accounts.

Self sign-up stays disabled on a datasite: the owner creates each data scientist's account on
their running datasite and, with ``--epsilon``, sets the data scientist's privacy cap in the
same step (as ``fedmugrep budget set``). The new account's password is read from the
environment variable named by ``--password-env`` or, on a terminal, prompted for; it is never
read from a file or a command-line argument (those end up in shell histories). The owner hands
it to the data scientist out of band.

Exit codes (see :mod:`fedmugrep.cli`): 0 ok; 1 the datasite is not running; 2 a bad config,
e-mail, password or cap, or an account that exists already.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any

from fedmugrep.commands.datasite import (
    add_config_argument,
    admin_login,
    load_config,
    require_running,
    usage_errors,
)
from fedmugrep.errors import ConfigError
from fedmugrep.privacy.ledger import Ledger

__all__ = ["DEFAULT_DS_PASSWORD_ENV", "accounts", "read_password", "register"]

#: Environment variable a new data scientist's password is read from by default.
DEFAULT_DS_PASSWORD_ENV = "FEDMUGREP_DS_PASSWORD"

EPILOG = """\
Examples:
  export FEDMUGREP_ADMIN_PASSWORD=...            # the owner's own password
  export FEDMUGREP_DS_PASSWORD=...               # the new account's password (or be prompted)
  fedmugrep users add  --config datasites/agency-a.toml --email dana@uni.example \\
                       --name "Dana Scientist" --epsilon 8
  fedmugrep users list --config datasites/agency-a.toml
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``users`` sub-command (with ``add`` and ``list``)."""
    parser = subparsers.add_parser(
        "users",
        help="create data scientists' accounts on a running datasite (owner), list them",
        description="Create a data scientist's account on the running datasite (sign-up stays "
        "closed) and optionally cap their privacy budget; list the accounts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        help="create a data scientist's account (password from --password-env or a prompt)",
        description="Create a data scientist's account on the running datasite.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(add)
    add.add_argument("--email", required=True, help="the data scientist's account e-mail")
    add.add_argument("--name", default="Data scientist", help="their display name")
    add.add_argument("--institution", default=None, help="their organisation (shown to you)")
    add.add_argument(
        "--password-env",
        default=DEFAULT_DS_PASSWORD_ENV,
        metavar="VAR",
        help=f"environment variable holding the new password (default {DEFAULT_DS_PASSWORD_ENV}; "
        "unset: prompt on a terminal)",
    )
    add.add_argument(
        "--epsilon",
        type=float,
        metavar="E",
        help="also cap their epsilon on this datasite (delta: [budget] delta_cap or 1e-5)",
    )
    add.add_argument("--json", action="store_true", help="print JSON instead of text")
    add.set_defaults(func=usage_errors(run_add))
    show = actions.add_parser(
        "list", help="the datasite's accounts", description="List the datasite's accounts."
    )
    add_config_argument(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.set_defaults(func=usage_errors(run_list))
    return parser


def read_password(env: str, *, what: str) -> str:
    """A password from the environment variable ``env``, else a prompt on a terminal.

    Raises:
        ConfigError: the variable is unset and there is no terminal to prompt on, or the
            password is shorter than 8 characters.
    """
    password = os.environ.get(env)
    if password is None:
        if not sys.stdin.isatty():
            raise ConfigError(
                f"no password for {what}: set the environment variable {env} (or run on a "
                "terminal to be prompted); passwords are never read from files or arguments"
            )
        password = getpass.getpass(f"password for {what}: ")
    if len(password) < 8:
        raise ConfigError(f"the password for {what} must have at least 8 characters")
    return password


def run_add(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep users add``."""
    from fedmugrep.pysyft.runtime import register_data_scientist  # deferred: loads syft, torch

    config = load_config(args.config)
    email = str(args.email).strip()
    if "@" not in email:
        raise ConfigError(f"--email must be an e-mail address (got {args.email!r})")
    if args.epsilon is not None and not args.epsilon > 0:
        raise ConfigError(f"--epsilon must be > 0 (got {args.epsilon})")
    pid, url = require_running(config, args.config)
    password = read_password(args.password_env, what=f"{email} on datasite '{config.name}'")
    admin = admin_login(config, url, pid)
    register_data_scientist(
        admin, email=email, name=args.name, password=password, institution=args.institution
    )
    cap = None
    if args.epsilon is not None:
        delta = config.delta_cap if config.delta_cap is not None else 1e-5
        Ledger(config.home).set_cap(
            email, config.name, epsilon=float(args.epsilon), delta=delta, note="users add"
        )
        cap = {"epsilon": float(args.epsilon), "delta": delta}
    report = {"datasite": config.name, "url": url, "email": email, "cap": cap}
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    print(f"created account {email} on datasite '{config.name}' ({url})")
    if cap is not None:
        print(f"  cap: epsilon {cap['epsilon']:g}, delta {cap['delta']:g}")
    else:
        print(
            f"  no cap yet: every release they request is refused until you set one with\n"
            f"  fedmugrep budget set --config {args.config} --data-scientist {email}"
        )
    print("  give them the URL, the e-mail and the password (out of band)")
    return 0


def accounts(admin: Any) -> list[dict[str, str]]:
    """The datasite's accounts (``email``, ``name``, ``role`` in lower case), through an admin
    client of the running datasite (:func:`~fedmugrep.commands.datasite.admin_login`)."""
    from fedmugrep.pysyft.runtime import quiet_syft  # deferred: loads syft, torch

    with quiet_syft():
        return [
            {"email": str(u.email), "name": str(u.name), "role": str(u.role.name).lower()}
            for u in admin.users.get_all()
        ]


def run_list(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep users list``."""
    config = load_config(args.config)
    pid, url = require_running(config, args.config)
    admin = admin_login(config, url, pid)
    users = accounts(admin)
    if args.json:
        print(json.dumps({"datasite": config.name, "users": users}, indent=2))
        return 0
    print(f"accounts on datasite '{config.name}':")
    for u in users:
        print(f"  {u['email']:<36} {u['role']:<16} {u['name']}")
    return 0

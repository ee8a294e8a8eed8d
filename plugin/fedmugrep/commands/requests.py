"""``fedmugrep requests list|show|approve|deny``: the data owner reviews code requests.

Works on the running datasite of a TOML (``fedmugrep datasite start``), logged in as its root
admin (password from the environment variable named by ``[admin] password_env``). A request is
named by any unique prefix of its id (``list`` prints 8 characters).

Exit codes (see :mod:`fedmugrep.cli`): 0 ok; 1 the datasite does not run or PySyft refused;
2 a bad config, an unknown/ambiguous request id, a request not pending, a denial without reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import fedmugrep
from fedmugrep.commands.budget_table import budget_rows
from fedmugrep.commands.datasite import (
    add_config_argument,
    admin_login,
    load_config,
    require_running,
    usage_errors,
)
from fedmugrep.errors import ConfigError
from fedmugrep.federation.contract import fedmugrep_code_hash
from fedmugrep.pysyft.config import DatasiteConfig

__all__ = ["register", "request_row"]

#: Characters of a request id ``list`` shows (any unique prefix is accepted).
ID_PREFIX = 8

#: Stated epsilon of a release without noise (``fedmugrep.federation.admission.UNBOUNDED_EPSILON``).
_UNBOUNDED = sys.float_info.max

EPILOG = """\
Examples:
  fedmugrep requests list    --config datasites/agency-a.toml --status pending
  fedmugrep requests show    --config datasites/agency-a.toml 3f1c9a2e
  fedmugrep requests approve --config datasites/agency-a.toml 3f1c9a2e
  fedmugrep requests deny    --config datasites/agency-a.toml 3f1c9a2e \\
                             --reason "epsilon per release above 0.5; resubmit"
"""

_LIST_EPILOG = """\
Examples:
  fedmugrep requests list --config datasites/agency-a.toml
  fedmugrep requests list --config datasites/agency-a.toml --status pending --json

Columns: id prefix, data scientist, function, status, projected total epsilon of its privacy
contract ("unbounded" for code that releases without noise).
"""

_SHOW_EPILOG = """\
Examples:
  fedmugrep requests show --config datasites/agency-a.toml 3f1c9a2e
  fedmugrep requests show --config datasites/agency-a.toml 3f1c9a2e --full

Prints the review sheet, privacy first: for a training request what leaves the datasite, with
which sensitivity and noise, epsilon per release and in total, rounds and call cap, computed by
this machine's fedmugrep from the pinned plan; then the pinned privacy contract as this
fedmugrep reads it (and whether it was built for the fedmugrep installed here); then who asked,
the function, the data it reads, the per-call arguments, the output policy and the other pinned
values; then the code. Model weights and other large values are shown by size and sha256
digest; --full prints them whole.
"""

_APPROVE_EPILOG = """\
Example:
  fedmugrep requests approve --config datasites/agency-a.toml 3f1c9a2e

One approval covers every call up to the request's call cap. Releases are still charged to
the data scientist's budget (fedmugrep budget set) and refused beyond it.
"""

_DENY_EPILOG = """\
Example:
  fedmugrep requests deny --config datasites/agency-a.toml 3f1c9a2e \\
      --reason "epsilon per release above 0.5; resubmit with a smaller one"

The data scientist sees the reason: say what to change.
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``requests`` sub-command (with ``list``, ``show``, ``approve``, ``deny``)."""
    parser = subparsers.add_parser(
        "requests",
        help="list, review, approve or deny data scientists' code requests on a datasite",
        description=(
            "Review the code requests data scientists submitted to a running datasite: list "
            "them, show one's review sheet with its privacy contract, approve or deny it."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    list_ = actions.add_parser(
        "list",
        help="list requests (id prefix, data scientist, function, status, projected epsilon)",
        description="List the datasite's code requests, oldest first.",
        epilog=_LIST_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(list_)
    list_.add_argument(
        "--status",
        choices=("pending", "approved", "rejected"),
        help="only requests in this state (default: all)",
    )
    list_.add_argument("--json", action="store_true", help="print JSON instead of a table")
    list_.set_defaults(func=usage_errors(run_list))

    show = actions.add_parser(
        "show",
        help="print a request's review sheet, privacy contract included",
        description="Print the review sheet of one request.",
        epilog=_SHOW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(show)
    show.add_argument("request_id", metavar="REQUEST_ID", help="the request id or a unique prefix")
    show.add_argument(
        "--full",
        action="store_true",
        help="also print every pinned constant's complete JSON (weights as base64), the output "
        "policy's source and the contract's notes in full",
    )
    show.add_argument(
        "--json", action="store_true", help="print JSON (the list row plus the sheet)"
    )
    show.set_defaults(func=usage_errors(run_show))

    approve = actions.add_parser(
        "approve",
        help="approve a pending request",
        description="Approve a pending request: the data scientist may then run the code on "
        "the private data, up to its call cap.",
        epilog=_APPROVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(approve)
    approve.add_argument(
        "request_id", metavar="REQUEST_ID", help="the request id or a unique prefix"
    )
    approve.add_argument("--json", action="store_true", help="print JSON instead of text")
    approve.set_defaults(func=usage_errors(run_approve))

    deny = actions.add_parser(
        "deny",
        help="deny a pending request (--reason required)",
        description="Deny a pending request; the data scientist sees the reason.",
        epilog=_DENY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(deny)
    deny.add_argument("request_id", metavar="REQUEST_ID", help="the request id or a unique prefix")
    deny.add_argument(
        "--reason", metavar="TEXT", help="why, in words the data scientist can act on (required)"
    )
    deny.add_argument("--json", action="store_true", help="print JSON instead of text")
    deny.set_defaults(func=usage_errors(run_deny))
    return parser


# =============================================================================== helpers
def _id(request: Any) -> str:
    return str(request.id).replace("-", "").lower()


def request_row(request: Any) -> dict[str, Any]:
    """One request as plain data (what ``list --json`` prints)."""
    from fedmugrep.pysyft.runtime import quiet_syft, request_contract  # deferred: loads syft, torch

    contract = request_contract(request)
    with quiet_syft():
        row: dict[str, Any] = {
            "id": _id(request),
            "id_prefix": _id(request)[:ID_PREFIX],
            "data_scientist": str(request.requesting_user_email),
            "data_scientist_name": str(request.requesting_user_name),
            "function": str(request.code.service_func_name),
            "status": str(request.status.name).lower(),
            "submitted": str(request.request_time),
        }
    row["contract"] = None
    row["projected_epsilon"] = None
    if contract is not None:
        unbounded = contract.projected_epsilon >= _UNBOUNDED
        row["projected_epsilon"] = None if unbounded else contract.projected_epsilon
        row["contract"] = {
            "mechanisms": list(contract.mechanisms),
            "epsilon_per_release": contract.epsilon_per_release,
            "delta_per_release": contract.delta_per_release,
            "releases": contract.total_releases,
            "projected_epsilon": row["projected_epsilon"],
            "projected_delta": contract.projected_delta,
            "unbounded": unbounded,
            "fedmugrep_version": contract.fedmugrep_version,
            "fedmugrep_code_hash": contract.fedmugrep_code_hash,
        }
    return row


def _epsilon_label(row: dict[str, Any]) -> str:
    contract = row["contract"]
    if contract is None:
        return "no contract"
    if contract["unbounded"]:
        return "unbounded"
    return f"{contract['projected_epsilon']:.4g}"


def _admin(args: argparse.Namespace) -> tuple[DatasiteConfig, Any]:
    config = load_config(args.config)
    pid, url = require_running(config, args.config)
    return config, admin_login(config, url, pid)


def _find(admin: Any, config: DatasiteConfig, args: argparse.Namespace) -> Any:
    """The request named by ``args.request_id`` (a unique, case-insensitive id prefix)."""
    from fedmugrep.pysyft.runtime import list_requests  # deferred: loads syft, torch

    wanted = str(args.request_id).replace("-", "").strip().lower()
    requests = list_requests(admin)
    if not wanted:
        raise ConfigError("REQUEST_ID must not be empty; copy one from `fedmugrep requests list`")
    matches = [r for r in requests if _id(r).startswith(wanted)]
    if len(matches) == 1:
        return matches[0]

    def label(rs: list[Any]) -> str:
        rows = [request_row(r) for r in rs]
        return ", ".join(f"{r['id_prefix']} ({r['function']}, {r['status']})" for r in rows)

    if not matches:
        known = label(requests) if requests else "none"
        raise ConfigError(
            f"no request '{args.request_id}' on datasite '{config.name}'; known requests: "
            f"{known}. List them with: fedmugrep requests list --config {args.config}"
        )
    raise ConfigError(
        f"request id prefix '{args.request_id}' is ambiguous on datasite '{config.name}': "
        f"{label(matches)}; give more characters of the id"
    )


def _require_pending(request: Any, row: dict[str, Any], action: str) -> None:
    if row["status"] != "pending":
        raise ConfigError(
            f"request {row['id_prefix']} ({row['function']} by {row['data_scientist']}) is "
            f"already {row['status']}; only pending requests can be {action}"
        )


# =============================================================================== commands
def run_list(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep requests list``."""
    from fedmugrep.pysyft.runtime import list_requests  # deferred: loads syft, torch

    config, admin = _admin(args)
    rows = [request_row(r) for r in list_requests(admin, status=args.status)]
    if args.json:
        print(json.dumps({"datasite": config.name, "requests": rows}, indent=2, sort_keys=True))
        return 0
    if not rows:
        which = f"{args.status} " if args.status else ""
        print(f"no {which}requests on datasite '{config.name}'")
        return 0
    header = ("id", "data scientist", "function", "status", "projected eps")
    body = [
        (r["id_prefix"], r["data_scientist"], r["function"], r["status"], _epsilon_label(r))
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    for line in (header, *body):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep requests show``."""
    from fedmugrep.pysyft.runtime import describe_request  # deferred: loads syft, torch

    config, admin = _admin(args)
    request = _find(admin, config, args)
    sheet = describe_request(request, full=args.full)
    if args.json:
        print(json.dumps({**request_row(request), "sheet": sheet}, indent=2, sort_keys=True))
    else:
        print(sheet)
    return 0


def run_approve(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep requests approve``."""
    from fedmugrep.pysyft.runtime import (  # deferred: loads syft, torch
        approve_request,
        deny_request,
        request_refusal,
    )

    config, admin = _admin(args)
    request = _find(admin, config, args)
    row = request_row(request)
    _require_pending(request, row, "approved")
    refusal = request_refusal(request)
    if refusal is not None:
        raise ConfigError(
            f"not approved: this datasite would refuse every call of request "
            f"{row['id_prefix']} ({refusal}); deny it with a reason instead: fedmugrep requests "
            f"deny --config {args.config} {row['id_prefix']} --reason '...'"
        )
    approve_request(request)
    row["status"] = "approved"
    superseded = []
    for old in _older_pending(admin, row):  # a resubmission replaces them: nobody runs them
        deny_request(old["request"], reason=f"superseded by request {row['id_prefix']}")
        superseded.append(old["id_prefix"])
    row["superseded"] = superseded
    budget = [r for r in budget_rows(config, row["data_scientist"]) if r["dataset"] == config.name]
    notes = []
    if not budget or budget[0]["cap_epsilon"] is None:
        notes.append(
            f"{row['data_scientist']} has no budget cap on '{config.name}' yet: every noised "
            f"release will be refused until you set one with: fedmugrep budget set --config "
            f"{args.config} --data-scientist {row['data_scientist']}"
        )
    elif row["projected_epsilon"] is not None and (
        row["projected_epsilon"] > budget[0]["remaining_epsilon"]
    ):
        notes.append(
            f"the contract projects epsilon {row['projected_epsilon']:.4g} but only "
            f"{budget[0]['remaining_epsilon']:.4g} remains of {row['data_scientist']}'s cap; "
            "releases beyond it will be refused"
        )
    contract = row["contract"]
    if contract is not None:
        local = (fedmugrep.__version__, fedmugrep_code_hash())
        if (contract["fedmugrep_version"], contract["fedmugrep_code_hash"]) != local:
            notes.append(
                f"the contract names fedmugrep {contract['fedmugrep_version']} sha256 "
                f"{contract['fedmugrep_code_hash'][:12]}..., this machine has {local[0]} sha256 "
                f"{local[1][:12]}...: the approved code refuses to run on another fedmugrep; "
                "ask the data scientist to resubmit against this datasite's version"
            )
    if args.json:
        print(json.dumps({**row, "notes": notes}, indent=2, sort_keys=True))
    else:
        print(
            f"approved request {row['id_prefix']}: '{row['function']}' by "
            f"{row['data_scientist']} (projected epsilon {_epsilon_label(row)})"
        )
        if superseded:
            print(
                f"denied {len(superseded)} older pending request(s) of the same kind from "
                f"{row['data_scientist']} as superseded: {', '.join(superseded)}"
            )
        for note in notes:
            print(f"note: {note}")
    return 0


def _older_pending(admin: Any, approved: dict[str, Any]) -> list[dict[str, Any]]:
    """The pending requests the data scientist of ``approved`` submitted before it, for the
    same kind of training function (an earlier submission of the same training), each with its
    row; none for a request that is not a fedmugrep training request."""
    from fedmugrep.pysyft.runtime import list_requests  # deferred: loads syft, torch
    from fedmugrep.pysyft.scientist import training_kind  # deferred: loads torch

    kind = training_kind(approved["function"])
    if kind is None:
        return []
    out = []
    for request in list_requests(admin, status="pending"):  # oldest first
        row = request_row(request)
        if str(row["submitted"]) > str(approved["submitted"]):
            break  # newer than the approved one: the owner still reviews it
        same = row["data_scientist"] == approved["data_scientist"] and (
            training_kind(row["function"]) == kind
        )
        if same and row["id"] != approved["id"]:
            out.append({**row, "request": request})
    return out


def run_deny(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep requests deny``."""
    from fedmugrep.pysyft.runtime import deny_request  # deferred: loads syft, torch

    if not args.reason or not args.reason.strip():
        raise ConfigError(
            "deny needs --reason TEXT the data scientist can act on, e.g. --reason "
            '"epsilon per release above 0.5; resubmit with a smaller one"'
        )
    config, admin = _admin(args)
    request = _find(admin, config, args)
    row = request_row(request)
    _require_pending(request, row, "denied")
    deny_request(request, reason=args.reason)
    row["status"] = "rejected"
    row["reason"] = args.reason
    if args.json:
        print(json.dumps(row, indent=2, sort_keys=True))
    else:
        print(
            f"denied request {row['id_prefix']}: '{row['function']}' by {row['data_scientist']} "
            f"(reason: {args.reason})"
        )
    return 0

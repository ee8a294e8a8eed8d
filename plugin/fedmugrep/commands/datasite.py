"""``fedmugrep datasite start|stop|status``: run one data owner's PySyft datasite from its TOML.

``start`` launches the persistent HTTP server (``python -m fedmugrep.pysyft.server``)
as a detached background process on the TOML's host and port, waits until it answers, and, the
first time, uploads the private files named in ``[data]``, each with a mock drawn from what
the owner declares public in ``[mock]`` (:mod:`fedmugrep.federation.mocks`; the same mocks
:func:`~fedmugrep.pysyft.run.run_syft` builds). ``status`` says whether it
runs, where, what it holds, how many requests wait for review and what each data scientist has
spent. ``stop`` sends SIGTERM to the pid in ``home/server.pid`` and waits for a clean exit.

The helpers here (config loading, the running check, the admin login) are shared by
``fedmugrep requests`` and ``fedmugrep budget``.

Every data-owner command runs with umask 077 (whatever it creates under the home, e.g. the
privacy ledger of ``fedmugrep budget set``, is the owner's only), and ``start`` repairs the
home's permissions first (folders 0700, files 0600), warning on stderr about what it had to
change: PySyft's database holds every account's signing key. A non-loopback ``host`` is only
served with ``[datasite] allow_remote = true`` or ``--allow-remote`` (plain HTTP: put a TLS
proxy in front).

Exit codes (see :mod:`fedmugrep.cli`): 0 ok; 1 the server failed to start or stop, or is not
running when it must be; 2 a bad config, a missing data file or password.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from fedmugrep.cli import EXIT_USAGE
from fedmugrep.commands.budget_table import budget_rows, format_budget_table
from fedmugrep.data.loading import (
    assign_regions,
    load_communities,
    load_mobility,
    load_transactions,
)
from fedmugrep.errors import ConfigError, FedMugRepError
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.privacy.witness import check_witness, read_witness
from fedmugrep.pysyft.config import DATA_KEYS, DatasiteConfig, load_datasite_config
from fedmugrep.pysyft.owner_files import enforce_private_home, private_umask
from fedmugrep.pysyft.pidfile import pid_alive, read_pid_file

__all__ = [
    "DEFAULT_MOCK_SEED",
    "add_config_argument",
    "admin_login",
    "load_config",
    "register",
    "require_running",
    "running_url",
    "server_pid",
    "start_hint",
    "upload_missing",
    "usage_errors",
]

#: Seed of the synthetic city the mocks are drawn from (the same default as ``run_syft``).
DEFAULT_MOCK_SEED = 1000

#: The [data] key each uploadable dataset is read from, per role (the region's mobility is
#: optional; a transaction datasite's ``communities`` only assigns sales to communities).
_UPLOADS: dict[str, tuple[str, ...]] = {
    "transactions": ("transactions",),
    "region": ("communities", "mobility"),
}

_SERVER_MODULE = b"fedmugrep.pysyft.server"

#: Admin clients by (url, e-mail, server pid, password digest); see :func:`admin_login`.
_ADMIN_CLIENTS: dict[tuple[str, str, int | None, str], Any] = {}

EPILOG = """\
Examples:
  export FEDMUGREP_ADMIN_PASSWORD='choose-a-long-private-password'
  fedmugrep synth --out datasites/data          # example private data, once
  fedmugrep datasite start  --config datasites/agency-a.toml
  fedmugrep datasite status --config datasites/agency-a.toml --json
  fedmugrep datasite stop   --config datasites/agency-a.toml

The admin password is read from the environment variable named by [admin] password_env.
"""

_START_EPILOG = """\
Example:
  FEDMUGREP_ADMIN_PASSWORD=... fedmugrep datasite start --config datasites/agency-a.toml

Starts the server in the background (pid in HOME/server.pid, output in HOME/server.log) and,
the first time, uploads the [data] files, each with a mock drawn from what [mock] declares
public (per column: kind, range or categories, unit; the date and price ranges). The private
table is checked against the declaration first. Without [mock] the mock is schema-only
(column names and types, neutral values) and start says what to declare:
  transaction datasite: dataset 'transactions' (a 'communities' file, if given, only assigns
                        each sale to a community)
  region datasite:      datasets 'communities' and 'mobility'
Running it again while the server runs only uploads what is missing.

Every start makes HOME private (folders 0700, files 0600) and names on stderr what it had to
repair. A host other than loopback (127.0.0.1, ::1, localhost) needs [datasite]
allow_remote = true or --allow-remote: the API is plain HTTP, so put a TLS proxy in front.
"""

_STOP_EPILOG = """\
Example:
  fedmugrep datasite stop --config datasites/agency-a.toml

Sends SIGTERM to the pid in HOME/server.pid and waits for the server to exit. Everything
(accounts, datasets, requests, approvals, the privacy ledger) stays under HOME.
"""

_STATUS_EPILOG = """\
Examples:
  fedmugrep datasite status --config datasites/agency-a.toml
  fedmugrep datasite status --config datasites/agency-a.toml --json

Datasets and requests need the admin password (environment variable named by
[admin] password_env); budgets are read from HOME/privacy_ledger.sqlite.
"""


# =============================================================================== shared helpers
def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Add the ``--config TOML`` option every data-owner command takes."""
    parser.add_argument(
        "--config",
        required=True,
        type=Path,
        metavar="TOML",
        help="the datasite's TOML file (see datasites/README.md)",
    )


def usage_errors(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a data-owner command with a private umask (what it creates is the owner's only),
    turning a :class:`ConfigError` (bad input) into exit code 2."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            with private_umask():
                return func(args)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return wrapper


def load_config(path: Path, *, allow_remote: bool | None = None) -> DatasiteConfig:
    """Load a datasite TOML; a missing or bad file raises a ConfigError naming it.

    ``allow_remote`` overrides ``[datasite] allow_remote`` when not ``None``.
    """
    return load_datasite_config(path, allow_remote=allow_remote)


def start_hint(path: Path) -> str:
    """The command that starts the datasite configured in ``path``."""
    return f"fedmugrep datasite start --config {path}"


def _is_datasite_process(pid: int) -> bool:
    """Whether ``pid`` runs fedmugrep's datasite server (``True`` where /proc is unavailable)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not Path("/proc/self").exists()
    return _SERVER_MODULE in cmdline


def server_pid(config: DatasiteConfig) -> int | None:
    """Pid of the datasite's running HTTP server, or ``None`` (no pid file, dead or foreign pid)."""
    pid = read_pid_file(config.pid_file)
    if pid is None or not pid_alive(pid) or not _is_datasite_process(pid):
        return None
    return pid


def running_url(config: DatasiteConfig) -> str:
    """The URL the server listens on: the TOML's port, else the one a start picked
    (recorded in ``home/datasite.toml``)."""
    if config.port is None and config.toml_file.is_file():
        try:
            started = load_datasite_config(config.toml_file)
        except ConfigError:
            started = config
        if started.port is not None:
            return config.replace(port=started.port).url
    return config.url


def require_running(config: DatasiteConfig, path: Path) -> tuple[int, str]:
    """``(pid, url)`` of the running server.

    Raises:
        FedMugRepError: when it does not run; the message says how to start it.
    """
    pid = server_pid(config)
    if pid is None:
        raise FedMugRepError(
            f"datasite '{config.name}' is not running; start it with: {start_hint(path)}"
        )
    return pid, running_url(config)


def admin_login(config: DatasiteConfig, url: str, pid: int | None = None) -> Any:
    """Log into the running datasite as its root admin (password from ``password_env``).

    A PySyft login costs seconds (it downloads the whole API); with the server's ``pid`` given,
    the client is reused by later commands in the same process (notebooks and tests calling
    :func:`fedmugrep.cli.main` repeatedly) as long as the same server process runs.
    """
    from fedmugrep.pysyft.runtime import login  # deferred: loads syft, torch

    password = config.resolve_admin_password()
    key = (url, config.admin_email, pid, hashlib.sha256(password.encode()).hexdigest())
    if pid is not None and key in _ADMIN_CLIENTS:
        return _ADMIN_CLIENTS[key]
    client = login(url, config.admin_email, password)
    if pid is not None:
        for stale in [k for k in _ADMIN_CLIENTS if k[:2] == key[:2]]:
            del _ADMIN_CLIENTS[stale]
        _ADMIN_CLIENTS[key] = client
    return client


def _check_data_keys(config: DatasiteConfig, path: Path) -> None:
    known = DATA_KEYS[config.kind]
    unknown = sorted(set(config.data_files) - set(known))
    if unknown:
        raise ConfigError(
            f"{path}: [data] key(s) {unknown} are not known for a {config.kind} datasite; "
            f"valid keys: {list(known)} (set [datasite] role if the role was guessed wrong)"
        )


def _check_data_files(config: DatasiteConfig, path: Path) -> None:
    for key, file in sorted(config.data_files.items()):
        if not file.is_file():
            raise ConfigError(
                f"{path}: [data] {key} = {file} does not exist; put the private file there, or "
                "write the example city with: fedmugrep synth --out datasites/data"
            )


# =============================================================================== register
def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``datasite`` sub-command (with ``start``, ``stop``, ``status``)."""
    parser = subparsers.add_parser(
        "datasite",
        help="start, stop or inspect a data owner's datasite (HTTP server) from its TOML",
        description=(
            "Run one data owner's PySyft datasite as a background HTTP server on the host and "
            "port of its TOML: start it (uploading the private data with a mock the first "
            "time), show its status, stop it."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    start = actions.add_parser(
        "start",
        help="start the datasite in the background; upload [data] the first time",
        description="Start the datasite's HTTP server as a detached background process and "
        "upload the private data named in [data] (with a mock drawn from [mock]) if not yet "
        "uploaded.",
        epilog=_START_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(start)
    start.add_argument(
        "--mock-seed",
        type=int,
        default=DEFAULT_MOCK_SEED,
        metavar="N",
        help="seed of the synthetic city the mocks come from with [mock] source = "
        f'"synthetic" and no [mock] seed (default {DEFAULT_MOCK_SEED})',
    )
    start.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the server to answer (default 120)",
    )
    start.add_argument(
        "--allow-remote",
        action="store_true",
        help="serve on a non-loopback [datasite] host (as allow_remote = true; the API is plain "
        "HTTP: put a TLS proxy in front)",
    )
    start.add_argument("--json", action="store_true", help="print JSON instead of text")
    start.set_defaults(func=usage_errors(run_start))

    stop = actions.add_parser(
        "stop",
        help="stop the datasite's server (SIGTERM via its pid file)",
        description="Stop the datasite's HTTP server cleanly; its data stays in its home.",
        epilog=_STOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(stop)
    stop.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the server to exit (default 30)",
    )
    stop.add_argument("--json", action="store_true", help="print JSON instead of text")
    stop.set_defaults(func=usage_errors(run_stop))

    status = actions.add_parser(
        "status",
        help="running or not, URL, pid, datasets, pending requests, budgets spent",
        description="Show whether the datasite runs, its URL and pid, its datasets, the number "
        "of requests waiting for review, and the budget each data scientist has spent.",
        epilog=_STATUS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(func=usage_errors(run_status))
    return parser


# =============================================================================== start
def run_start(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep datasite start``."""
    config = load_config(args.config, allow_remote=True if args.allow_remote else None)
    _check_data_keys(config, args.config)
    try:  # a non-loopback host needs the owner's opt-in: refuse before anything else
        remote_warning = config.check_serving_host()
    except ConfigError as exc:
        raise ConfigError(f"{args.config}: [datasite] {exc}") from None
    if remote_warning:
        print(f"warning: {remote_warning}", file=sys.stderr, flush=True)
    config.resolve_admin_password()  # no password: refuse before launching anything
    repaired = enforce_private_home(config.home, stream=sys.stderr)
    _check_ledger_witness(config)  # a deleted or truncated ledger: refuse to start
    pid = server_pid(config)
    handle = None
    if pid is not None:
        url = running_url(config)
    else:
        if not (config.syft_dir / "db" / "syft.db").exists():  # first start: data must be there
            _check_data_files(config, args.config)
        from fedmugrep.pysyft.runtime import launch_datasite  # deferred: loads syft, torch

        handle = launch_datasite(
            config, mode="http", detach=True, startup_timeout=float(args.timeout)
        )
        pid, url = handle.pid, str(handle.url)
    try:
        admin = admin_login(config, url, pid)
        uploaded = upload_missing(admin, config, args.config, mock_seed=args.mock_seed)
        datasets = _dataset_names(admin)
        from fedmugrep.pysyft.budget_api import publish_budgets  # deferred: loads syft

        publish_budgets(admin, config.home)  # data scientists read their own remaining budget
    except BaseException:
        if handle is not None:  # a start either completes or leaves nothing running
            handle.stop()
        raise
    repaired += enforce_private_home(config.home, stream=sys.stderr)  # after the upload
    report = {
        "name": config.name,
        "role": config.kind,
        "url": url,
        "pid": pid,
        "home": str(config.home),
        "log": str(config.log_file),
        "already_running": handle is None,
        "uploaded": uploaded,
        "datasets": datasets,
        "permissions_repaired": [str(p) for p in repaired],
    }
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    state = "already running" if handle is None else "started"
    print(f"datasite '{config.name}' {state} on {url} (pid {pid})")
    print(f"  home     : {config.home}")
    print(f"  log      : {config.log_file}")
    for up in uploaded:
        print(
            f"  uploaded : dataset '{up['dataset']}' ({up['rows']} private rows; mock of "
            f"{up['mock_rows']} rows: {up['mock_source']})"
        )
        for note in up["notes"]:
            print(f"  note     : {note}")
    print(f"  datasets : {', '.join(datasets) or '(none)'}")
    print(f"next: fedmugrep budget set --config {args.config} --data-scientist EMAIL")
    print(f"      fedmugrep requests list --config {args.config}")
    return 0


def _check_ledger_witness(config: DatasiteConfig) -> None:
    """Refuse to start a datasite whose release index records charges its ledger lacks.

    Raises:
        LedgerIntegrityError: naming how many (exit code 4).
    """
    recorded, _ = read_witness(config.home)
    if recorded:  # a datasite that has released something: its ledger must hold it all
        check_witness(Ledger(config.home))


def _dataset_names(admin: Any) -> list[str]:
    from fedmugrep.pysyft.runtime import quiet_syft  # deferred: loads syft, torch

    with quiet_syft():
        return sorted(str(d.name) for d in admin.datasets.get_all())


def mock_declaration(config: DatasiteConfig, path: Path, mock_seed: int) -> Any:
    """What the datasite's mocks are drawn from: its ``[mock]`` table (schema-only when it
    has none); ``source = "synthetic"`` takes the synthetic city drawn with ``mock_seed``."""
    from fedmugrep.federation.mocks import MockDeclaration  # deferred: loads pandas, sklearn

    decl = MockDeclaration.from_dict(config.mock, source=str(path))
    if decl.kind == "synthetic" and "seed" not in config.mock:
        decl = dataclasses.replace(decl, seed=mock_seed)
    return decl


def upload_missing(
    admin: Any, config: DatasiteConfig, path: Path, *, mock_seed: int
) -> list[dict[str, Any]]:
    """Upload the [data] datasets the datasite does not hold yet, each with its mock.

    The private table is checked against what ``[mock]`` declares public first
    (:func:`~fedmugrep.federation.mocks.check_declaration`); the mock is drawn from the
    declaration (:func:`~fedmugrep.federation.artefacts.agency_mock`). Each upload's record
    has ``notes``: what declaring more would add to the mock.
    """
    existing = set(_dataset_names(admin))
    # a region without a mobility file still holds a (flow-less) mobility dataset
    optional = {"mobility"} if config.kind == "region" else set()
    wanted = [
        k
        for k in _UPLOADS[config.kind]
        if (k in config.data_files or k in optional) and k not in existing
    ]
    if not wanted:
        return []
    _check_data_files(config, path)

    from fedmugrep.data.schema import profile_columns  # deferred: loads pandas
    from fedmugrep.federation.artefacts import (  # deferred: loads torch
        agency_mock,
        public_geography,
        region_mock_pair,
    )
    from fedmugrep.federation.mocks import (  # deferred: loads pandas, sklearn
        check_declaration,
        declaration_notes,
        with_public_districts,
    )
    from fedmugrep.pysyft.runtime import upload_dataset  # deferred: loads syft, torch

    decl = mock_declaration(config, path, mock_seed)
    source = "; ".join(decl.describe())
    files = config.data_files
    tables: dict[str, tuple[pd.DataFrame, pd.DataFrame, str]] = {}
    notes: list[str] = []
    if config.kind == "transactions":
        comms = (
            with_public_districts(load_communities(files["communities"]))
            if "communities" in files
            else None
        )
        private = assign_regions(load_transactions(files["transactions"]), comms)
        if decl.kind == "declared":
            check_declaration(private, decl, file=str(files["transactions"]))
            notes = declaration_notes(private, decl, profile_columns(private))
        geography = public_geography(comms) if comms is not None else None
        mock = agency_mock(private, decl, geography, config.name)
        tables["transactions"] = (
            private,
            mock,
            f"{config.name}'s sales with prices (mock: {source})",
        )
    else:
        comms = with_public_districts(load_communities(files["communities"]))
        if "mobility" in files:
            mob = load_mobility(files["mobility"], comms)
        else:
            mob = pd.DataFrame(
                {
                    "src": pd.Series([], dtype=object),
                    "dst": pd.Series([], dtype=object),
                    "flow": pd.Series([], dtype=float),
                }
            )
        comms_mock, mob_mock = region_mock_pair(comms, mob, decl)
        tables["communities"] = (
            comms,
            comms_mock,
            f"community attributes (mock: public geography; attributes: {source})",
        )
        tables["mobility"] = (
            mob,
            mob_mock,
            "mobility flows between communities (mock: "
            + ("synthetic flows)" if decl.kind == "synthetic" else "no flows)"),
        )
    uploaded = []
    for name in wanted:
        private, mock, description = tables[name]
        upload_dataset(admin, name=name, private=private, mock=mock, description=description)
        uploaded.append(
            {
                "dataset": name,
                "file": str(files[name]) if name in files else None,
                "rows": len(private),
                "mock_rows": len(mock),
                "mock_source": source,
                "notes": notes if name == "transactions" else [],
            }
        )
    return uploaded


# =============================================================================== stop
def run_stop(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep datasite stop``."""
    config = load_config(args.config)
    pid = read_pid_file(config.pid_file)
    report: dict[str, Any] = {"name": config.name, "pid": pid, "stopped": False}
    if pid is None or not pid_alive(pid):
        if pid is not None:
            config.pid_file.unlink(missing_ok=True)  # stale: the server died without cleanup
        report["message"] = "not running"
        _print_stop(args, report, f"datasite '{config.name}' is not running; nothing to stop")
        return 0
    if not _is_datasite_process(pid):
        raise FedMugRepError(
            f"{config.pid_file} names pid {pid}, which is not a fedmugrep datasite server (a "
            f"stale pid file); delete {config.pid_file} and check with: fedmugrep datasite "
            f"status --config {args.config}"
        )
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + float(args.timeout)
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        raise FedMugRepError(
            f"datasite '{config.name}' (pid {pid}) did not exit within {args.timeout:g} s of "
            f"SIGTERM; see {config.log_file}, wait longer with --timeout, or force it with: "
            f"kill -9 {pid}"
        )
    if read_pid_file(config.pid_file) == pid:
        config.pid_file.unlink(missing_ok=True)
    for key in [k for k in _ADMIN_CLIENTS if k[2] == pid]:
        del _ADMIN_CLIENTS[key]
    report["stopped"] = True
    report["message"] = "stopped"
    _print_stop(
        args,
        report,
        f"stopped datasite '{config.name}' (pid {pid}); its data stays in {config.home}",
    )
    return 0


def _print_stop(args: argparse.Namespace, report: dict[str, Any], text: str) -> None:
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else text)


# =============================================================================== status
def run_status(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep datasite status``."""
    config = load_config(args.config)
    pid = server_pid(config)
    report: dict[str, Any] = {
        "name": config.name,
        "role": config.kind,
        "running": pid is not None,
        "pid": pid,
        "url": None,
        "home": str(config.home),
        "log": str(config.log_file),
        "datasets": None,
        "requests": None,
        "pending_requests": None,
        "budgets": budget_rows(config),
        "note": None,
    }
    if pid is None:
        report["note"] = f"not running; start it with: {start_hint(args.config)}"
    else:
        report["url"] = url = running_url(config)
        try:
            admin = admin_login(config, url, pid)
        except ConfigError as exc:
            report["note"] = f"datasets and requests unavailable: {exc}"
        else:
            from fedmugrep.pysyft.runtime import list_requests  # deferred: loads syft, torch

            report["datasets"] = _dataset_names(admin)
            counts = {"pending": 0, "approved": 0, "rejected": 0}
            for request in list_requests(admin):
                key = str(request.status.name).lower()
                counts[key] = counts.get(key, 0) + 1
            report["requests"] = counts
            report["pending_requests"] = counts["pending"]
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    if pid is None:
        print(f"datasite '{config.name}': not running")
    else:
        print(f"datasite '{config.name}': running on {report['url']} (pid {pid})")
    print(f"  role     : {config.kind}")
    print(f"  home     : {config.home}")
    if pid is not None:
        print(f"  log      : {config.log_file}")
    if report["datasets"] is not None:
        print(f"  datasets : {', '.join(report['datasets']) or '(none)'}")
    if report["requests"] is not None:
        counts = report["requests"]
        print(
            "  requests : "
            + ", ".join(f"{n} {k}" for k, n in counts.items())
            + (
                f"  (review: fedmugrep requests list --config {args.config})"
                if counts["pending"]
                else ""
            )
        )
    print("  budgets  :")
    print(
        "\n".join(
            "    " + line
            for line in format_budget_table(report["budgets"], str(args.config)).splitlines()
        )
    )
    if report["note"]:
        print(f"note: {report['note']}")
    return 0

"""Build a persistent PySyft 0.9.5 datasite from a :class:`DatasiteConfig` and serve it over HTTP.

Run a datasite in the foreground (what a data owner does)::

    FEDMUGREP_ADMIN_PASSWORD=... python -m fedmugrep.pysyft.server --config agency-a.toml

Why not ``sy.orchestra.launch(port=...)`` or ``sy.Datasite.named(...)``:

* orchestra's HTTP mode starts from an empty database after every restart, and crashes on
  restart when given a ``db_url``;
* ``Datasite.named(name=...)`` derives the server's signing key from ``sha256(name)``, and the
  root admin *is* that key, so anyone who knows the datasite's name can sign API calls as its
  admin. :func:`build_datasite` instead creates a random key and server id once and keeps them in
  ``home/syft/identity.json`` (mode 0600), with the SQLite database and blob store under
  ``home/syft/``; the datasite keeps its users, datasets, approved code and results across
  restarts.

:func:`build_datasite` also wraps the server's API entry point so that, while a call is being
served, :func:`fedmugrep.pysyft.remote.datasite_home` returns this
datasite's home and :func:`~fedmugrep.pysyft.remote.run_remote` sees the verified caller, for the
approved code running inside that call.

Everything under the home is private to the data owner (folders 0700, files 0600; see
:mod:`fedmugrep.pysyft.owner_files`): the database holds every account's signing key. The
server process runs with umask 077, repairs an existing home at start (warning about what it
changed), and :func:`build_datasite` creates the datasite and serves each call with a private
umask also when it runs inside another process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import fedmugrep
from fedmugrep.errors import ConfigError, FedMugRepError
from fedmugrep.federation.contract import fedmugrep_code_hash
from fedmugrep.pysyft.config import DatasiteConfig, load_datasite_config
from fedmugrep.pysyft.owner_files import enforce_private_home, private_umask, set_private_umask
from fedmugrep.pysyft.pidfile import pid_alive, read_pid_file
from fedmugrep.pysyft.quiet import quiet_syft
from fedmugrep.pysyft.remote import HOME_ENV, NAME_ENV, DatasiteCall, bind_datasite_call

__all__ = ["build_datasite", "main", "pid_alive", "read_pid_file", "serve"]

_LOG = logging.getLogger("fedmugrep.federation")

#: PySyft reads these at import time and would silently replace our identity.
_SYFT_IDENTITY_ENV = ("SERVER_PRIVATE_KEY", "SERVER_UID")


def build_datasite(
    config: DatasiteConfig,
    *,
    reset: bool = False,
    deployment: Literal["python", "remote"] = "python",
    password: str | None = None,
) -> Any:
    """Create (or reopen) the datasite stored under ``config.home``.

    Args:
        config: the datasite's configuration.
        reset: delete ``home/syft`` first (database, blobs and identity): a brand-new datasite.
        deployment: ``"python"`` for in-process use, ``"remote"`` when served over HTTP.
        password: root admin password; default :meth:`DatasiteConfig.resolve_admin_password`.
            Only used when the database has no root admin yet.

    Returns:
        A ``syft.server.datasite.Datasite`` (not started as a web server).

    Raises:
        ConfigError: when ``SERVER_PRIVATE_KEY``/``SERVER_UID`` are set in the environment
            (PySyft would use them instead of the datasite's own identity) or the password is
            missing.
    """
    import syft.server.server as syft_server_module  # deferred: loads syft, torch
    from syft.server.datasite import Datasite  # deferred: loads syft, torch
    from syft.store.blob_storage.on_disk import (  # deferred: loads syft, torch
        OnDiskBlobStorageClientConfig,
        OnDiskBlobStorageConfig,
    )
    from syft.store.db.sqlite import SQLiteDBConfig  # deferred: loads syft, torch

    for name, value in (
        ("SERVER_PRIVATE_KEY", syft_server_module.signing_key_env),
        ("SERVER_UID", syft_server_module.server_uid_env),
    ):
        if value:
            raise ConfigError(
                f"the environment variable {name} is set; PySyft would use it instead of "
                f"datasite '{config.name}''s own identity. Unset it and start again"
            )
    admin_password = password if password is not None else config.resolve_admin_password()
    if reset and config.syft_dir.exists():
        shutil.rmtree(config.syft_dir)

    root_logger = logging.getLogger()
    saved_root_level = root_logger.level
    # the database (with its -wal/-shm), the blob store and the identity: owner only
    with private_umask():
        (config.syft_dir / "db").mkdir(parents=True, exist_ok=True)
        (config.syft_dir / "blob").mkdir(parents=True, exist_ok=True)
        server_id, signing_key = _load_or_create_identity(config.identity_file)
        try:
            server = Datasite(
                name=config.name,
                id=server_id,
                signing_key=signing_key,
                db_config=SQLiteDBConfig(filename="syft.db", path=config.syft_dir / "db"),
                blob_storage_config=OnDiskBlobStorageConfig(
                    client_config=OnDiskBlobStorageClientConfig(
                        base_directory=config.syft_dir / "blob"
                    ),
                    min_blob_size=1,
                ),
                root_email=config.admin_email,
                root_username=config.admin_name,
                root_password=admin_password,
                deployment_type=deployment,
                reset=False,
                processes=0,
                n_consumers=0,
                thread_workers=False,
                create_producer=False,
                in_memory_workers=True,
                enable_warnings=False,
                dev_mode=False,
                background_tasks=False,
                association_request_auto_approval=False,
            )
        finally:
            # Server.__init__ sets the *root* logger to CRITICAL; give the host process its
            # logging back.
            root_logger.setLevel(saved_root_level)
    _bind_calls_to_datasite(server, config)
    return server


def _load_or_create_identity(path: Path) -> tuple[Any, Any]:
    from syft.server.credentials import SyftSigningKey  # deferred: loads syft, torch
    from syft.types.uid import UID  # deferred: loads syft, torch

    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return UID.from_string(data["server_id"]), SyftSigningKey.from_string(
                data["signing_key"]
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"{path} is damaged ({exc}); restore it from a backup, or start with reset "
                "to create a new, empty datasite"
            ) from exc
    server_id, key = UID(), SyftSigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"server_id": server_id.no_dash, "signing_key": str(key)})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(payload)
    return server_id, key


def _bind_calls_to_datasite(server: Any, config: DatasiteConfig) -> None:
    """Wrap the server's API entry point so approved code sees this datasite's home and caller."""
    original: Callable[..., Any] = server.handle_api_call_with_unsigned_result

    def handle_api_call_with_unsigned_result(api_call: Any, *args: Any, **kwargs: Any) -> Any:
        verify_key = getattr(api_call, "credentials", None)

        def lookup_email() -> str | None:
            if verify_key is None:
                return None
            try:
                user = server.services.user.stash.get_by_verify_key(
                    credentials=server.verify_key, verify_key=verify_key
                ).unwrap()
            except Exception:  # noqa: BLE001 - unknown caller: report no e-mail
                return None
            return str(user.email)

        call = DatasiteCall(
            name=config.name,
            home=config.home,
            caller_verify_key=None if verify_key is None else str(verify_key),
            caller_email_lookup=lookup_email,
        )
        # files the approved code writes (ledger, releases, reports) are the owner's only, also
        # when the datasite runs inside another process
        with private_umask(), bind_datasite_call(call):
            return original(api_call, *args, **kwargs)

    server.handle_api_call_with_unsigned_result = handle_api_call_with_unsigned_result


# --------------------------------------------------------------------------- HTTP serving
def serve(
    config: DatasiteConfig,
    *,
    reset: bool = False,
    watch_parent: int | None = None,
) -> None:
    """Serve the datasite over HTTP on ``config.host:config.port`` until SIGTERM/SIGINT.

    Writes ``home/server.pid`` while running (refusing to start when another live server owns
    it), logs one line with the URL and the fedmugrep version and hash, and sets
    ``FEDMUGREP_DATASITE_HOME``/``FEDMUGREP_DATASITE_NAME`` for code executed in this process.
    Sets this process's umask to 077 first and repairs the permissions of an existing home
    (:func:`~fedmugrep.pysyft.owner_files.enforce_private_home`, warning on stderr). On a
    non-loopback host (which needs ``config.allow_remote``) it warns that the API is plain HTTP.

    Args:
        config: the datasite; ``config.port`` must be set.
        reset: start from an empty datasite (see :func:`build_datasite`).
        watch_parent: stop when the process with this pid exits (used by
            :func:`~fedmugrep.pysyft.runtime.launch_datasite` so test servers never
            outlive their test run).
    """
    remote_warning = config.check_serving_host()  # a non-loopback host needs allow_remote
    set_private_umask()  # before PySyft (or anything else) creates a file
    import uvicorn  # deferred: loads uvicorn
    from fastapi import APIRouter, FastAPI  # deferred: loads fastapi
    from syft.server.routes import make_routes  # deferred: loads syft, torch

    if config.port is None:
        raise ConfigError(f"datasite '{config.name}' has no port; set [datasite] port in its TOML")
    config.home.mkdir(parents=True, exist_ok=True)
    enforce_private_home(config.home, stream=sys.stderr)
    if remote_warning:
        print(f"warning: {remote_warning}", file=sys.stderr, flush=True)
    os.environ[HOME_ENV] = str(config.home)
    os.environ[NAME_ENV] = config.name
    with _pid_file(config.pid_file):
        with quiet_syft():
            server = build_datasite(config, reset=reset, deployment="remote")

        @contextlib.asynccontextmanager
        async def lifespan(_app: FastAPI) -> Any:
            try:
                yield
            finally:
                server.stop()

        app = FastAPI(title=config.name, lifespan=lifespan)
        api_router = APIRouter()
        with warnings.catch_warnings():  # FastAPI deprecation notes about syft's routes
            warnings.simplefilter("ignore", DeprecationWarning)
            api_router.include_router(make_routes(worker=server))
        app.include_router(api_router, prefix="/api/v2")
        if watch_parent is not None:
            _start_parent_watchdog(watch_parent)
        code_hash = fedmugrep_code_hash()
        print(
            f"fedmugrep datasite '{config.name}' serving on {config.url} "
            f"(home {config.home}; fedmugrep {fedmugrep.__version__} sha256 {code_hash}; "
            f"pid {os.getpid()})",
            flush=True,
        )
        # uvicorn re-raises the SIGTERM/SIGINT it caught after its graceful shutdown; with the
        # default handler that would kill the process before our pid file is removed.
        signal.signal(signal.SIGTERM, _exit_quietly)
        signal.signal(signal.SIGINT, _exit_quietly)
        try:
            uvicorn.run(
                app,
                host=config.host,
                port=config.port,
                log_level="warning",
                access_log=False,
                lifespan="on",
            )
        finally:
            print(f"fedmugrep datasite '{config.name}' stopped", flush=True)


def _exit_quietly(signum: int, _frame: Any) -> None:
    raise SystemExit(0)


@contextlib.contextmanager
def _pid_file(path: Path) -> Iterator[None]:
    other = read_pid_file(path)
    if other is not None and other != os.getpid() and pid_alive(other):
        raise FedMugRepError(
            f"another server (pid {other}) already runs this datasite (pid file {path}); "
            "stop it first or use its URL"
        )
    tmp = path.with_suffix(".pid.tmp")
    tmp.write_text(f"{os.getpid()}\n", encoding="utf-8")
    tmp.replace(path)
    try:
        yield
    finally:
        if read_pid_file(path) == os.getpid():
            path.unlink(missing_ok=True)


def _start_parent_watchdog(parent_pid: int, interval: float = 1.0) -> None:
    def watch() -> None:
        while pid_alive(parent_pid):
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="fedmugrep-parent-watchdog", daemon=True).start()


def _build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fedmugrep.pysyft.server",
        description="Serve one fedmugrep PySyft datasite over HTTP (persistent across restarts).",
        epilog=(
            "Example: FEDMUGREP_ADMIN_PASSWORD=... python -m fedmugrep.pysyft.server "
            "--config datasites/agency-a.toml"
        ),
    )
    parser.add_argument("--config", required=True, type=Path, help="datasite TOML file")
    parser.add_argument("--host", help="override [datasite] host")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host/[datasite] host (plain HTTP: put a TLS proxy in front)",
    )
    parser.add_argument("--port", type=int, help="override [datasite] port")
    parser.add_argument(
        "--reset",
        action="store_true",
        help="DELETE the datasite's database, blobs and identity first",
    )
    parser.add_argument("--watch-parent", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m fedmugrep.pysyft.server``."""
    set_private_umask()  # before PySyft (or anything else) creates a file
    args = _build_arg_parser().parse_args(argv)
    try:
        config = load_datasite_config(args.config, allow_remote=args.allow_remote or None)
        overrides: dict[str, Any] = {}
        if args.host:
            overrides["host"] = args.host
        if args.port:
            overrides["port"] = args.port
        if overrides:
            config = config.replace(**overrides)
        serve(config, reset=args.reset, watch_parent=args.watch_parent)
    except SystemExit as exc:  # SIGTERM/SIGINT after a clean shutdown
        return int(exc.code or 0)
    except FedMugRepError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2 if isinstance(exc, ConfigError) else 1
    return 0


if __name__ == "__main__":
    _code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    # The state is on disk; skip the interpreter's final garbage collection of PySyft's huge
    # object graph, which takes several seconds.
    os._exit(_code)

"""PySyft 0.9.5 datasite mechanics for fedmugrep: launch, accounts, datasets, requests, calls.

Data owner side::

    handle = launch_datasite(config, mode="http")          # or mode="inprocess"
    admin = handle.login_admin()
    upload_dataset(admin, name="transactions", private=df, mock=mock_df, description="...")
    register_data_scientist(admin, email="ds@uni.example", name="DS", password="...")
    for request in list_requests(admin, status="pending"):
        print(describe_request(request))
        approve_request(request)        # or deny_request(request, reason="...")

Data scientist side::

    ds = login(handle.url, "ds@uni.example", "...")
    asset = get_asset(ds, "transactions")
    contract = PrivacyContract.for_installed(mechanisms=("laplace",), epsilon_per_release=0.1,
                                             rounds=10, projected_epsilon=1.0)
    fn = make_remote_function(toy_round, client=ds, asset=asset, contract=contract,
                              args={"round_no": int, "payload": list})
    submit_request(ds, fn)
    ...                                                  # owner approves once
    for r in range(10):                                  # ... and every round runs
        value = call_remote(ds, "toy_round", data=asset, round_no=r, payload=[0.5, 1.0])

The PySyft patterns these helpers rely on (all checked against the installed 0.9.5 source and
the tests in ``tests/federation/test_syft_runtime.py``):

* Use ``sy.MixedInputPolicy``, not ``sy.ExactMatch``, when a function takes arguments that change
  per call. ``ExactMatch.filter_kwargs`` keeps only the pinned arguments and *silently drops the
  rest* (the function then runs with its defaults, or fails). ``MixedInputPolicy`` takes, per
  argument, an asset (pinned by id), a ``sy.Constant(val=...)`` (pinned value, the caller does
  not pass it) or a python type (``int``, ``float``, ``str``, ``bool``, ``list``, ``dict``,
  ``tuple``, ``set``): the caller passes a fresh value of exactly that type on every call (the
  check is ``type(value) == declared``; an ``int`` is not a ``float``). The client uploads each
  such value as an object the caller owns, one extra request per argument, so pack per-call data
  into few arguments, and numbers into a ``str`` with
  :func:`~fedmugrep.federation.wire.pack_array`: PySyft serialises a ``list`` element by
  element (10,000 floats cost ~1.5 s per call, as one packed string ~0.3 s). A caller cannot
  override a ``sy.Constant``: whatever it passes under that name is replaced by the pinned value.
* One approval serves every round: 0.9.5 never enforces its own output policies' execution limits
  (issue #9391), so :class:`~fedmugrep.pysyft.policy.CallCapPolicy` supplies a real cap
  (default: the contract's ``rounds * releases_per_round``). Every private execution counts,
  including one that ends in an error envelope.
* Approved code runs twice per call on a twin asset (private, then mock); see
  :mod:`fedmugrep.pysyft.remote`.
* Exceptions raised inside approved code reach the data scientist only as "contact the admin";
  :func:`call_remote` therefore unwraps :func:`~fedmugrep.pysyft.remote.run_remote`'s
  envelope and re-raises fedmugrep errors by class.
* ``client.code.<name>`` resolves a function by *name*; two requests with the same function name
  collide, so :func:`submit_request` refuses a name the data scientist already used.
* Mock execution (``mock_execution_permission``) stays off for every account: it would run
  unapproved code inside the datasite. Try code on the mock locally instead (``asset.mock``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import pandas as pd
import syft as sy

import fedmugrep
from fedmugrep import errors as _errors
from fedmugrep.errors import (
    ConfigError,
    DatasiteUnresponsiveError,
    FedMugRepError,
    RequestDeniedError,
)
from fedmugrep.federation.contract import PrivacyContract, fedmugrep_code_hash
from fedmugrep.pysyft.config import DatasiteConfig, load_datasite_config
from fedmugrep.pysyft.owner_files import enforce_private_home, private_umask
from fedmugrep.pysyft.pidfile import pid_alive, read_pid_file
from fedmugrep.pysyft.policy import CALL_CAP_REFUSAL, CallCapPolicy
from fedmugrep.pysyft.quiet import quiet_syft
from fedmugrep.pysyft.remote import ENVELOPE_KEY, mark_mock, strip_mock_marker
from fedmugrep.pysyft.server import build_datasite

T = TypeVar("T")

__all__ = [
    "ALLOWED_ARG_TYPES",
    "DatasiteConfig",
    "DatasiteHandle",
    "PrivacyContract",
    "approve_request",
    "call_remote",
    "with_deadline",
    "code_status",
    "deny_request",
    "describe_request",
    "execution_outputs",
    "fedmugrep_code_hash",
    "fetch_output",
    "find_code",
    "get_asset",
    "launch_datasite",
    "list_requests",
    "load_datasite_config",
    "login",
    "make_remote_function",
    "pinned_constant",
    "quiet_syft",
    "register_data_scientist",
    "request_contract",
    "submit_request",
    "unwrap_result",
    "upload_dataset",
]

Mode = Literal["inprocess", "http"]
RequestStatusName = Literal["pending", "approved", "rejected"]

_LOG = logging.getLogger("fedmugrep.federation")

#: Types a non-pinned argument of a remote function may be declared with (PySyft ``UserOwned``).
ALLOWED_ARG_TYPES: tuple[type, ...] = (str, float, int, bool, dict, list, set, tuple)


# =============================================================================== launching
class DatasiteHandle:
    """A running datasite started by :func:`launch_datasite`.

    Attributes:
        config: the datasite's configuration (with the port actually used).
        mode: ``"inprocess"`` or ``"http"``.
        startup_seconds: wall time of the last (re)start.
    """

    def __init__(
        self,
        config: DatasiteConfig,
        mode: Mode,
        *,
        password: str,
        startup_timeout: float,
        pythonpath: tuple[Path, ...],
        detach: bool,
    ) -> None:
        self.config = config
        self.mode: Mode = mode
        self._password = password
        self._startup_timeout = startup_timeout
        self._pythonpath = pythonpath
        self._detach = detach
        self._server: Any | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        """The datasite's name."""
        return self.config.name

    @property
    def url(self) -> str | None:
        """``http://host:port`` in HTTP mode, ``None`` in-process."""
        return self.config.url if self.mode == "http" else None

    @property
    def server(self) -> Any:
        """The in-process ``syft`` Datasite object.

        Raises:
            FedMugRepError: in HTTP mode or when stopped.
        """
        if self.mode != "inprocess" or self._server is None:
            raise FedMugRepError(
                f"datasite '{self.name}' has no in-process server ({self.mode} mode, "
                f"{'running' if self.running else 'stopped'}); use handle.url"
            )
        return self._server

    @property
    def pid(self) -> int | None:
        """Pid of the HTTP server process (``None`` in-process or when stopped)."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        return None

    @property
    def running(self) -> bool:
        """Whether the datasite is up."""
        if self.mode == "inprocess":
            return self._server is not None
        return self.pid is not None

    # ------------------------------------------------------------------ lifecycle
    def start(self, *, reset: bool = False) -> DatasiteHandle:
        """Start the datasite (called by :func:`launch_datasite`).

        The home is made private first (folders 0700, files 0600; a warning on the
        ``fedmugrep.federation`` logger names what had to be repaired), and everything the
        start creates is private (see :mod:`fedmugrep.pysyft.owner_files`).

        Raises:
            ConfigError: in HTTP mode, on a non-loopback host without ``allow_remote``.
        """
        if self.running:
            raise FedMugRepError(f"datasite '{self.name}' is already running; stop() it first")
        t0 = time.perf_counter()
        remote_warning = self.config.check_serving_host() if self.mode == "http" else ""
        enforce_private_home(self.config.home)
        if remote_warning:
            _LOG.warning(remote_warning)
        with private_umask():  # the home, datasite.toml, server.log; inherited by the server
            if self.mode == "inprocess":
                with quiet_syft():
                    self._server = build_datasite(
                        self.config, reset=reset, deployment="python", password=self._password
                    )
            else:
                self._start_http(reset=reset)
        if self.mode == "inprocess":
            enforce_private_home(self.config.home)
        self.startup_seconds = time.perf_counter() - t0
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the datasite; its data stays under ``config.home``. Safe to call twice."""
        if self.mode == "inprocess":
            server, self._server = self._server, None
            if server is not None:
                with quiet_syft():
                    server.stop()
                enforce_private_home(self.config.home)  # what this process wrote meanwhile
            return
        proc, self._process = self._process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        if read_pid_file(self.config.pid_file) == proc.pid:
            self.config.pid_file.unlink(missing_ok=True)

    def restart(self) -> DatasiteHandle:
        """Stop and start again on the same home (and port); clients must log in again."""
        self.stop()
        return self.start(reset=False)

    def __enter__(self) -> DatasiteHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self.mode == "http" else "in-process"
        state = "running" if self.running else "stopped"
        return f"DatasiteHandle(name={self.name!r}, mode={self.mode!r}, {where}, {state})"

    # ------------------------------------------------------------------ clients
    def login(self, email: str, password: str) -> Any:
        """Log into this datasite (see :func:`login`)."""
        return login(self, email, password)

    def login_admin(self) -> Any:
        """Log in as the root admin (the data owner)."""
        return login(self, self.config.admin_email, self._password)

    # ------------------------------------------------------------------ HTTP
    def _start_http(self, *, reset: bool) -> None:
        cfg = self.config
        other = read_pid_file(cfg.pid_file)
        if other is not None and pid_alive(other):
            raise FedMugRepError(
                f"datasite '{cfg.name}' already runs as pid {other} (pid file {cfg.pid_file}); "
                f"use its URL {cfg.url} or stop that process first"
            )
        if not _port_free(cfg.host, cfg.port):  # type: ignore[arg-type]
            raise ConfigError(
                f"port {cfg.port} on {cfg.host} is in use; pick another [datasite] port for "
                f"'{cfg.name}'"
            )
        cfg.home.mkdir(parents=True, exist_ok=True)
        toml_path = cfg.write_toml()
        env = dict(os.environ)
        for var in ("SERVER_PRIVATE_KEY", "SERVER_UID"):
            env.pop(var, None)
        env[cfg.admin_password_env] = self._password
        paths = [str(p) for p in self._pythonpath]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [
            sys.executable,
            "-m",
            "fedmugrep.pysyft.server",
            "--config",
            str(toml_path),
        ]
        if reset:
            cmd.append("--reset")
        if not self._detach:
            cmd += ["--watch-parent", str(os.getpid())]
        with open(cfg.log_file, "ab") as log:
            log.write(f"\n--- start {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
            log.flush()
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(cfg.home),
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._startup_timeout
        metadata_url = f"{self.config.url}/api/v2/metadata"
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise FedMugRepError(
                    f"datasite '{self.name}' server exited with code {code} while starting; "
                    f"last lines of {self.config.log_file}:\n{_tail(self.config.log_file)}"
                )
            try:
                with urllib.request.urlopen(metadata_url, timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise FedMugRepError(
            f"datasite '{self.name}' did not answer on {metadata_url} within "
            f"{self._startup_timeout:.0f} s; see {self.config.log_file}:\n"
            f"{_tail(self.config.log_file)}"
        )


def launch_datasite(
    config: DatasiteConfig,
    *,
    mode: Mode = "inprocess",
    reset: bool = False,
    startup_timeout: float = 120.0,
    pythonpath: Sequence[str | os.PathLike[str]] | None = None,
    detach: bool = False,
) -> DatasiteHandle:
    """Start a datasite whose state lives under ``config.home``.

    Args:
        config: the datasite (name, home, admin, port...).
        mode: ``"inprocess"`` builds the datasite in this Python process (tests, simulation);
            ``"http"`` starts ``python -m fedmugrep.pysyft.server`` as a separate
            process serving ``http://host:port``. Both keep their state under ``config.home``
            and survive :meth:`DatasiteHandle.restart` with datasets, users, approved code and
            results intact.
        reset: wipe the datasite's previous state first.
        startup_timeout: seconds to wait for the HTTP server to answer.
        pythonpath: folders put first on the server's ``PYTHONPATH`` (HTTP mode); default: the
            folder the imported ``fedmugrep`` package lives in, so the server runs the same code.
        detach: HTTP mode only: keep the server running after this Python process exits
            (default: the server stops when its parent process is gone).

    Returns:
        A running :class:`DatasiteHandle`.

    The home stays private to the data owner: it is repaired at every start (folders 0700,
    files 0600, with a warning naming what was not) and whatever the datasite creates is
    created private (:mod:`fedmugrep.pysyft.owner_files`).

    Raises:
        ConfigError: on a bad mode, a busy port, a missing admin password, or (HTTP mode) a
            non-loopback host without ``config.allow_remote``.
        FedMugRepError: when the server does not come up (the message quotes its log).
    """
    if mode not in ("inprocess", "http"):
        raise ConfigError(f"mode must be 'inprocess' or 'http' (got {mode!r}); pick one")
    if mode == "http":
        config.check_serving_host()
    password = config.resolve_admin_password()
    auto_port = mode == "http" and config.port is None
    if auto_port:
        config = config.replace(port=_free_port(config.host))
    if pythonpath is None:
        paths: tuple[Path, ...] = (Path(fedmugrep.__file__).resolve().parent.parent,)
    else:
        paths = tuple(Path(p).resolve() for p in pythonpath)
    handle = DatasiteHandle(
        config,
        mode,
        password=password,
        startup_timeout=startup_timeout,
        pythonpath=paths,
        detach=detach,
    )
    for attempt in range(5):
        try:
            return handle.start(reset=reset)
        except ConfigError as exc:
            # a port picked here can be taken before the server binds it (parallel starts get
            # the same free port from the kernel): pick another one
            if not auto_port or attempt == 4 or "is in use" not in str(exc):
                raise
            handle.config = handle.config.replace(port=_free_port(handle.config.host))
    raise AssertionError("unreachable")  # pragma: no cover


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# =============================================================================== accounts
def login(target: DatasiteHandle | str, email: str, password: str) -> Any:
    """Log into a datasite as ``email``.

    Args:
        target: a :class:`DatasiteHandle` (either mode) or an URL ``http://host:port``.
        email: account e-mail.
        password: account password.

    Returns:
        A ``syft`` DatasiteClient.

    Raises:
        ConfigError: when the credentials are refused or the URL cannot be reached.
    """
    where = target.name if isinstance(target, DatasiteHandle) else target
    try:
        with quiet_syft():
            if isinstance(target, DatasiteHandle) and target.mode == "inprocess":
                return sy.login(server=target.server, email=email, password=password, cache=False)
            url = target.url if isinstance(target, DatasiteHandle) else target
            return sy.login(url=url, email=email, password=password, cache=False)
    except sy.SyftException as exc:
        raise ConfigError(
            f"login to datasite '{where}' as {email} failed: {_public(exc)}; check the e-mail and "
            "password (the data owner creates accounts with register_data_scientist)"
        ) from exc
    except OSError as exc:  # requests' ConnectionError is an OSError
        raise ConfigError(
            f"cannot reach datasite '{where}' ({exc}); is the server running?"
        ) from exc


def register_data_scientist(
    admin_client: Any,
    *,
    email: str,
    name: str,
    password: str,
    institution: str | None = None,
    exist_ok: bool = False,
) -> bool:
    """Create a data-scientist account (done by the data owner; self sign-up stays disabled).

    PySyft 0.9.5 lets an admin create accounts with ``client.register(...)`` even when
    ``signup_enabled`` is off (the default), so there is no need to open sign-up to guests.
    New accounts have the data-scientist role and no mock-execution permission.

    Returns:
        ``True`` when created, ``False`` when it existed and ``exist_ok`` is set.

    Raises:
        ConfigError: on a short password, or an existing account without ``exist_ok``.
    """
    if len(password) < 8:
        raise ConfigError("password must have at least 8 characters; choose a longer one")
    try:
        with quiet_syft():
            admin_client.register(
                name=name,
                email=email,
                password=password,
                password_verify=password,
                institution=institution,
            )
    except sy.SyftException as exc:
        if "already exists" in _public(exc):
            if exist_ok:
                return False
            raise ConfigError(
                f"an account {email} already exists; log in with it or pass exist_ok=True"
            ) from exc
        raise ConfigError(f"could not create account {email}: {_public(exc)}") from exc
    return True


# =============================================================================== datasets
def upload_dataset(
    admin_client: Any,
    *,
    name: str,
    private: Any,
    mock: Any,
    description: str,
    asset_name: str | None = None,
) -> None:
    """Upload one dataset with one asset (private data + a public mock of the same schema).

    The mock is tagged (``columns.name = "fedmugrep:mock"``) so approved code can tell the mock
    run from the private run (:func:`~fedmugrep.pysyft.remote.is_mock_frame`); the tag is
    removed from the private frame. Keep assets small: PySyft stores them, and every input and
    output of every call, on disk.

    Args:
        admin_client: client of the data owner.
        name: dataset name (data scientists look it up by name).
        private: private DataFrame.
        mock: public DataFrame with the same columns, in the same order.
        description: shown to data scientists.
        asset_name: asset name; default ``name``.

    Raises:
        ConfigError: when the inputs are not DataFrames or their columns differ.
    """
    if not isinstance(private, pd.DataFrame) or not isinstance(mock, pd.DataFrame):
        raise ConfigError(
            f"private and mock must be pandas DataFrames (got {type(private).__name__} and "
            f"{type(mock).__name__}); convert them with pd.DataFrame(...)"
        )
    if list(private.columns) != list(mock.columns):
        raise ConfigError(
            f"mock columns {list(mock.columns)} differ from private columns "
            f"{list(private.columns)}; give the mock the same columns in the same order"
        )
    if not name:
        raise ConfigError("dataset name must not be empty; pass e.g. name='transactions'")
    asset = sy.Asset(
        name=asset_name or name,
        data=strip_mock_marker(private),
        mock=mark_mock(mock),
    )
    dataset = sy.Dataset(name=name, description=description)
    dataset.add_asset(asset)
    try:
        with quiet_syft():
            admin_client.upload_dataset(dataset)
    except sy.SyftException as exc:
        raise ConfigError(f"could not upload dataset '{name}': {_public(exc)}") from exc


def get_asset(client: Any, dataset: str, asset: str | None = None) -> Any:
    """The asset ``asset`` (default: same name as the dataset) of dataset ``dataset``.

    Raises:
        ConfigError: when the dataset or asset does not exist (the message lists what does).
    """
    with quiet_syft():
        datasets = client.datasets.get_all()
    names = [d.name for d in datasets]
    if dataset not in names:
        raise ConfigError(f"no dataset '{dataset}' on datasite '{client.name}'; available: {names}")
    found = datasets[names.index(dataset)]
    asset_names = [a.name for a in found.assets]
    wanted = asset or dataset
    if wanted not in asset_names:
        raise ConfigError(f"dataset '{dataset}' has no asset '{wanted}'; available: {asset_names}")
    return found.assets[asset_names.index(wanted)]


# =============================================================================== requests
def make_remote_function(
    func: Callable[..., Any],
    *,
    client: Any,
    asset: Any,
    contract: PrivacyContract,
    args: Mapping[str, type] | None = None,
    max_calls: int | None = None,
    name: str | None = None,
    data_arg: str = "data",
    contract_arg: str = "contract",
) -> Any:
    """Wrap a plain module-level function as a PySyft syft function with fedmugrep's policies.

    The input policy is ``sy.MixedInputPolicy`` pinning ``asset`` under ``data_arg`` and the
    contract dict as ``sy.Constant`` under ``contract_arg``; every name in ``args`` becomes an
    argument the caller passes anew on every call, with exactly the declared type. The output
    policy is :class:`CallCapPolicy` with ``max_calls`` (default ``contract.total_releases``).

    ``func`` must be defined in a source file (PySyft ships ``inspect.getsource(func)``), take
    exactly ``data_arg``, ``contract_arg`` and the names in ``args`` with no defaults, use no
    globals (import inside the body: the code runs in the datasite, where ``import fedmugrep``
    gets the datasite's installed fedmugrep) and carry no annotations that need imports.

    Returns:
        A ``syft`` SubmitUserCode, ready for :func:`submit_request`.

    Raises:
        ConfigError: when the signature does not match, or an argument type is not allowed.
    """
    declared = dict(args or {})
    for arg, kind in declared.items():
        if kind not in ALLOWED_ARG_TYPES:
            raise ConfigError(
                f"argument '{arg}' is declared as {kind!r}; PySyft 0.9.5 accepts only "
                f"{[t.__name__ for t in ALLOWED_ARG_TYPES]} for per-call arguments"
            )
    if data_arg in declared or contract_arg in declared or data_arg == contract_arg:
        raise ConfigError(f"'{data_arg}' and '{contract_arg}' are pinned; do not list them in args")
    sig = inspect.signature(func)
    expected = {data_arg, contract_arg, *declared}
    got = set(sig.parameters)
    bad_kinds = [
        p.name
        for p in sig.parameters.values()
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.default is not p.empty
    ]
    if got != expected or bad_kinds:
        raise ConfigError(
            f"{func.__name__}{sig} must take exactly {sorted(expected)} without defaults, "
            f"*args or **kwargs (missing: {sorted(expected - got)}, extra: {sorted(got - expected)}, "
            f"with defaults/varargs: {bad_kinds})"
        )
    try:
        inspect.getsource(func)
    except (OSError, TypeError) as exc:
        raise ConfigError(
            f"cannot read the source of {func.__name__} ({exc}); define it in a .py file"
        ) from exc
    cap = contract.total_releases if max_calls is None else max_calls
    policy_kwargs: dict[str, Any] = {
        data_arg: asset,
        contract_arg: sy.Constant(val=contract.to_dict()),
        **declared,
    }
    with quiet_syft():
        input_policy = sy.MixedInputPolicy(client=client, **policy_kwargs)
        output_policy = CallCapPolicy(max_calls=cap)
        return sy.syft_function(input_policy=input_policy, output_policy=output_policy, name=name)(
            func
        )


def submit_request(ds_client: Any, remote_function: Any) -> Any:
    """Submit a code request to the datasite's owner.

    Raises:
        ConfigError: when the data scientist already has code with this function name on the
            datasite (``client.code.<name>`` would become ambiguous); choose another ``name=``
            in :func:`make_remote_function`.
    """
    fname = remote_function.func_name
    with quiet_syft():
        existing = [c for c in ds_client.code.get_all() if c.service_func_name == fname]
    if existing:
        state = code_status(ds_client, fname)
        raise ConfigError(
            f"you already submitted a function named '{fname}' to datasite "
            f"'{ds_client.name}' (status: {state}); pass name='{fname}_v{len(existing) + 1}' "
            "to make_remote_function"
        )
    try:
        with quiet_syft():
            return ds_client.code.request_code_execution(remote_function)
    except sy.SyftException as exc:
        raise ConfigError(f"could not submit '{fname}': {_public(exc)}") from exc


def list_requests(
    admin_client: Any,
    *,
    status: RequestStatusName | None = None,
    function_name: str | None = None,
) -> list[Any]:
    """Code requests on the datasite, oldest first.

    Args:
        admin_client: the data owner's client.
        status: keep only ``"pending"``, ``"approved"`` or ``"rejected"`` requests.
        function_name: keep only requests for this function.
    """
    with quiet_syft():
        requests = list(admin_client.requests.get_all())
        if status is not None:
            requests = [r for r in requests if r.status.name.lower() == status]
        if function_name is not None:
            requests = [r for r in requests if r.code.service_func_name == function_name]
    return sorted(requests, key=lambda r: float(r.request_time.utc_timestamp))


def approve_request(request: Any) -> None:
    """Approve a code request: the data scientist may then call the code (up to its call cap)."""
    try:
        with quiet_syft():
            request.approve()
    except sy.SyftException as exc:
        raise FedMugRepError(f"could not approve request {request.id}: {_public(exc)}") from exc


def deny_request(request: Any, *, reason: str) -> None:
    """Deny a code request; the data scientist sees ``reason``.

    Raises:
        ConfigError: on an empty reason.
    """
    if not reason or not reason.strip():
        raise ConfigError(
            "a denial needs a reason the data scientist can act on; pass reason='...'"
        )
    try:
        with quiet_syft():
            request.deny(reason=reason)
    except sy.SyftException as exc:
        raise FedMugRepError(f"could not deny request {request.id}: {_public(exc)}") from exc


def code_status(ds_client: Any, function_name: str) -> str:
    """``"pending"``, ``"approved"``, ``"denied: <reason>"`` or ``"missing"`` for a function."""
    with quiet_syft():
        codes = [c for c in ds_client.code.get_all() if c.service_func_name == function_name]
        if not codes:
            return "missing"
        status = codes[-1].status
        if status.denied:
            return f"denied: {status.first_denial_reason}"
        return "approved" if status.approved else "pending"


def describe_request(request: Any, *, full: bool = False) -> str:
    """A plain-text review sheet of a code request for the data owner, short enough to read
    in a minute.

    In order: the request's id and status; the privacy figures — for a federation request
    computed by this machine's fedmugrep from the pinned plan (what leaves, sensitivities,
    noise, epsilon per release and in total, rounds, call cap), then the pinned privacy
    contract as this fedmugrep reads it (and whether its fedmugrep hash matches the one
    installed here); who asked, the function and its code hash, the pinned assets, the
    per-call arguments, the output policy and the other constants; then the code.

    Large pinned values (model weights, vocabularies, long strings) are shown by size and
    sha256 digest, and an output policy identical to this machine's
    :class:`~fedmugrep.pysyft.policy.CallCapPolicy` by its digest. ``full=True`` also prints
    every constant's complete JSON, the output policy's source and the contract's notes
    untruncated.
    """
    with quiet_syft():
        code = request.code
        status = request.status.name
        rules = _flat_input_rules(code)
        pinned, per_call, constants = [], [], {}
        for arg, rule in rules.items():
            kind = type(rule).__name__
            if kind == "Constant":
                constants[arg] = rule.val
            elif kind == "UserOwned":
                per_call.append(f"{arg}: {getattr(rule.type, '__name__', rule.type)}")
            else:
                uid = getattr(rule, "val", rule)
                pinned.append(f"{arg} -> {_asset_label(code, uid)}")
        role = "region" if "mobility" in rules else "transaction"
        cap = (code.output_policy_init_kwargs or {}).get("max_calls")
        cap = cap if isinstance(cap, int) else None
        institution = request.requesting_user_institution
        lines = [f"Request {request.id} [{status}]"]
        # ------------------------------------------------ privacy first, computed here
        lines += _federation_review_lines(constants, role=role, call_cap=cap)
        contracts = {a: v for a, v in constants.items() if _is_contract(v)}
        for value in contracts.values():
            lines += _describe_contract(value, call_cap=cap, full=full)
        if not contracts:
            lines += [
                "privacy contract: NONE pinned — fedmugrep does not bound what this code releases",
                f"  call cap          : {cap if cap is not None else 'not set (unlimited)'}",
            ]
        # ------------------------------------------------ who, what, with which data
        lines += [
            "request:",
            f"  submitted by : {request.requesting_user_name} <{request.requesting_user_email}>"
            + (f" ({institution})" if institution else ""),
            f"  submitted at : {request.request_time}",
            f"  function     : {code.service_func_name} (code sha256 {code.code_hash})",
            f"  pinned data  : {', '.join(pinned) or '(none)'}",
            f"  per-call args: {', '.join(per_call) or '(none)'}",
            f"  output policy: {_output_policy_label(code)}",
        ]
        for arg, value in constants.items():
            if arg in contracts:
                continue
            summary = _describe_constant(value).splitlines()
            lines.append(f"  constant '{arg}': {summary[0]}")
            lines.extend("    " + ln for ln in summary[1:])
        # ------------------------------------------------ the code
        lines.append("code:")
        lines.extend("    " + ln for ln in code.raw_code.rstrip().splitlines())
        policy_src = getattr(code.output_policy_type, "raw_code", None)
        if policy_src:
            digest = hashlib.sha256(policy_src.strip().encode("utf-8")).hexdigest()
            if not full and policy_src.strip() == _installed_policy_source():
                lines.append(
                    f"output policy code: identical to this machine's fedmugrep CallCapPolicy "
                    f"(sha256 {digest[:16]}…; --full prints it)"
                )
            else:
                lines.append(f"output policy code (sha256 {digest[:16]}…):")
                lines.extend("    " + ln for ln in policy_src.rstrip().splitlines())
        if full:
            for arg, value in constants.items():
                lines.append(f"constant '{arg}' in full (JSON):")
                text = json.dumps(value, indent=1, sort_keys=True, default=str)
                lines.extend("    " + ln for ln in text.splitlines())
    return "\n".join(lines)


def request_refusal(request: Any) -> str | None:
    """Why this datasite's admission would refuse every call of a federation request (its
    pinned plan, artefacts or contract), or ``None`` when it would serve it (or pins no plan).
    """
    with quiet_syft():
        code = request.code
        rules = _flat_input_rules(code)
        cap = (code.output_policy_init_kwargs or {}).get("max_calls")
    constants = {a: r.val for a, r in rules.items() if type(r).__name__ == "Constant"}
    role = "region" if "mobility" in rules else "transaction"
    lines = _federation_review_lines(constants, role=role, call_cap=cap)
    if lines and "REFUSES" in lines[0]:
        return lines[1].strip()
    return None


def request_contract(request: Any) -> PrivacyContract | None:
    """The privacy contract a code request pins (a ``sy.Constant``), or ``None``.

    ``None`` also when the pinned contract does not parse; :func:`describe_request` shows why.
    """
    with quiet_syft():
        rules = _flat_input_rules(request.code)
    for rule in rules.values():
        value = getattr(rule, "val", None) if type(rule).__name__ == "Constant" else None
        if isinstance(value, Mapping) and str(value.get("schema", "")).startswith(
            "fedmugrep.privacy-contract"
        ):
            try:
                return PrivacyContract.from_dict(value)
            except FedMugRepError:
                return None
    return None


def _flat_input_rules(code: Any) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    for per_server in (code.input_policy_init_kwargs or {}).values():
        rules.update(per_server)
    return rules


def _asset_label(code: Any, uid: Any) -> str:
    try:
        api = code._get_api()
        assets = api.services.dataset.get_assets_by_action_id(uid=uid)
        datasets = api.services.dataset.get_by_action_id(uid=uid)
        asset_name = assets[0].name if assets else "?"
        dataset_name = datasets[0].name if datasets else "?"
        return f"dataset '{dataset_name}', asset '{asset_name}'"
    except Exception:  # noqa: BLE001 - the label is best effort, the id is always shown
        return f"object {uid}"


def _output_policy_label(code: Any) -> str:
    kind = code.output_policy_type
    kwargs = {k: v for k, v in (code.output_policy_init_kwargs or {}).items() if k != "id"}
    args = ", ".join(f"{k}={v!r}" for k, v in sorted(kwargs.items()))
    if hasattr(kind, "raw_code"):
        return f"{kind.class_name}({args}) [custom, see 'output policy code' below]"
    return f"{getattr(kind, '__name__', kind)}({args})"


def _federation_review_lines(
    constants: Mapping[str, Any], *, role: str, call_cap: Any
) -> list[str]:
    # deferred: the remote functions pull in the party code (torch), which light commands skip
    from fedmugrep.pysyft.functions import review_lines

    return review_lines(
        constants, role=role, call_cap=call_cap if isinstance(call_cap, int) else None
    )


def _describe_constant(value: Any) -> str:
    """A pinned constant in a few lines: the public artefacts by their figures, anything else
    as its JSON when short, else by size and digest (one line per top-level key)."""
    from fedmugrep.federation.wire import PUBLIC_SCHEMA  # deferred: loads torch
    from fedmugrep.pysyft.functions import describe_public_constant  # deferred: loads torch

    if isinstance(value, Mapping) and value.get("schema") == PUBLIC_SCHEMA:
        return describe_public_constant(value)
    text = json.dumps(value, sort_keys=True, default=str)
    if len(text) <= _SHORT_JSON:
        return text
    lines = [f"{_brief(value)} (--full prints it)"]
    if isinstance(value, Mapping):
        items = list(value.items())
        lines += [f"  {str(k)[:40]}: {_brief(v)}" for k, v in items[:_SHOWN_KEYS]]
        if len(items) > _SHOWN_KEYS:
            lines.append(f"  ... and {len(items) - _SHOWN_KEYS} more keys")
    return "\n".join(lines)


#: JSON up to this many characters is shown as it is; longer values by size and digest.
_SHORT_JSON = 160
#: Top-level keys of a large pinned mapping listed on the sheet.
_SHOWN_KEYS = 12


def _brief(value: Any) -> str:
    """``value`` as its JSON when short, else its kind, size and sha256 (never its content)."""
    text = json.dumps(value, sort_keys=True, default=str)
    if len(text) <= 80:
        return text
    if isinstance(value, str):
        kind = f"a string of {len(value):,} characters"
    elif isinstance(value, Mapping):
        kind = f"a mapping of {len(value)} keys, {len(text):,} characters of JSON"
    elif isinstance(value, list | tuple):
        kind = f"a list of {len(value)} items, {len(text):,} characters of JSON"
    else:
        kind = f"a {type(value).__name__}, {len(text):,} characters of JSON"
    return f"{kind}, sha256 {hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}…"


def _is_contract(value: Any) -> bool:
    return isinstance(value, Mapping) and str(value.get("schema", "")).startswith(
        "fedmugrep.privacy-contract"
    )


#: Characters of the contract's notes (the data scientist's words) the short sheet shows.
_NOTES_SHOWN = 200


def _describe_contract(value: Mapping[str, Any], *, call_cap: int | None, full: bool) -> list[str]:
    """The pinned privacy contract as this machine's fedmugrep reads it."""
    try:
        contract = PrivacyContract.from_dict(value)
    except FedMugRepError as exc:
        return [
            f"privacy contract: INVALID — {exc}",
            "  (every call would be refused; --full prints the pinned value)",
        ]
    local_hash = fedmugrep_code_hash()
    same = (
        contract.fedmugrep_code_hash == local_hash
        and contract.fedmugrep_version == fedmugrep.__version__
    )
    matches = (
        "yes"
        if same
        else (f"NO (this machine: fedmugrep {fedmugrep.__version__} sha256 {local_hash})")
    )
    lines = [
        "privacy contract: pinned by the data scientist, read by this machine's fedmugrep",
        f"  mechanisms        : {', '.join(contract.mechanisms)}",
        f"  per release       : epsilon {contract.epsilon_per_release:g}, "
        f"delta {contract.delta_per_release:g}",
        f"  releases          : {contract.rounds} rounds x {contract.releases_per_round} "
        f"= {contract.total_releases}",
        f"  plain-sum epsilon : {contract.plain_sum_epsilon:g}",
        f"  projected total   : epsilon {contract.projected_epsilon:g} at delta "
        f"{contract.projected_delta:g}",
        f"  call cap          : {call_cap if call_cap is not None else 'not set (unlimited)'}",
        f"  fedmugrep         : {contract.fedmugrep_version} sha256 "
        + (
            contract.fedmugrep_code_hash
            if full or not same
            else f"{contract.fedmugrep_code_hash[:16]}…"
        ),
        f"  matches local fedmugrep: {matches}",
    ]
    if contract.notes:
        notes = " ".join(str(contract.notes).split())
        if not full and len(notes) > _NOTES_SHOWN:
            notes = notes[:_NOTES_SHOWN] + "… (--full prints all)"
        lines.append(f"  notes (the data scientist's words): {notes}")
    return lines


def _installed_policy_source() -> str:
    """The source of this machine's :class:`CallCapPolicy`, as PySyft ships it."""
    return inspect.getsource(CallCapPolicy).strip()


# =============================================================================== calling
def with_deadline(fn: Callable[[], T], timeout: float | None, what: str) -> T:
    """``fn()``, or :class:`~fedmugrep.errors.DatasiteUnresponsiveError` after ``timeout`` s.

    PySyft 0.9.5's HTTP client posts API calls without a timeout, so a hung (not dead) server
    blocks its caller forever. ``fn`` runs in a daemon thread; on timeout that thread is
    abandoned (its reply, if it ever comes, is dropped: the lost-reply journal of
    :class:`~fedmugrep.pysyft.proxies._Remote` recovers what ran). ``None``: no
    deadline, ``fn`` runs in this thread. Meant for HTTP datasites; an in-process datasite
    would keep running the abandoned call inside this process.
    """
    if timeout is None:
        return fn()
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, daemon=True, name=f"fedmugrep {what}").start()
    if not done.wait(timeout):
        raise DatasiteUnresponsiveError(
            f"{what}: no answer within {timeout:g} s (the server is up but hung); ask its data "
            "owner to restart it (`fedmugrep datasite stop` / `start`), then resume the run"
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


def call_remote(ds_client: Any, function_name: str, /, **kwargs: Any) -> Any:
    """Run an approved remote function on the private data and return its (noised) value.

    Pass the pinned asset under its argument name (e.g. ``data=asset``) and every per-call
    argument with exactly its declared type; numpy scalars and arrays are converted to python
    floats/ints/lists first.

    Returns:
        The value, unwrapped from :func:`~fedmugrep.pysyft.remote.run_remote`'s envelope
        when the function uses it.

    Raises:
        RequestDeniedError: when the owner denied the request (message has their reason).
        FedMugRepError: when the request is still pending, the call cap is used up, the function
            failed in the datasite, or the datasite raised a fedmugrep error (re-raised as the
            same class, e.g. ``BudgetExceededError``).
    """
    call_kwargs = {k: _to_python(v) for k, v in kwargs.items()}
    try:
        with quiet_syft():
            fn = getattr(ds_client.code, function_name, None)
            if fn is None:
                raise ConfigError(
                    f"datasite '{ds_client.name}' has no function '{function_name}' for you; "
                    "submit it with submit_request first"
                )
            pointer = fn(**call_kwargs)
            result = pointer.get() if hasattr(pointer, "get") else pointer
    except sy.SyftException as exc:
        raise _call_error(ds_client, function_name, exc) from exc
    return unwrap_result(ds_client, function_name, result)


def unwrap_result(ds_client: Any, function_name: str, result: Any) -> Any:
    """The value of one private execution's result, as :func:`call_remote` returns it.

    Raises:
        FedMugRepError: on a ``SyftError``, the mock run's result, or an error envelope (a
            fedmugrep error is re-raised as the same class).
    """
    if isinstance(result, sy.SyftError):
        raise FedMugRepError(
            f"'{function_name}' failed inside datasite '{ds_client.name}': {result.message}; the "
            "data owner finds the traceback in the datasite's server.log"
        )
    if isinstance(result, Mapping) and result.get(ENVELOPE_KEY) == 1:
        if result.get("mock"):
            raise FedMugRepError(
                f"'{function_name}' on datasite '{ds_client.name}' returned the mock run's "
                "result, not the private one; the request is not approved for you"
            )
        if not result.get("ok"):
            raise _rebuild_error(str(result.get("error")), str(result.get("message")))
        return result.get("value")
    return result


def find_code(ds_client: Any, function_name: str) -> list[Any]:
    """The data scientist's submitted codes named ``function_name`` on a datasite, oldest first."""
    with quiet_syft():
        codes = [c for c in ds_client.code.get_all() if c.service_func_name == function_name]
    return codes


def pinned_constant(code: Any, name: str) -> Any:
    """The value a code request pins as ``sy.Constant`` under argument ``name`` (else ``None``)."""
    with quiet_syft():
        rule = _flat_input_rules(code).get(name)
    return getattr(rule, "val", None) if type(rule).__name__ == "Constant" else None


def execution_outputs(ds_client: Any, function_name: str) -> list[Any]:
    """The stored results of every private execution of the data scientist's (single) code
    ``function_name``, oldest first (``ExecutionOutput`` objects; one per call that ran,
    including calls whose reply never reached the caller).

    Raises:
        ConfigError: when there is no such code.
    """
    codes = find_code(ds_client, function_name)
    if not codes:
        raise ConfigError(
            f"datasite '{ds_client.name}' has no function '{function_name}' for you; submit it "
            "with submit_request first"
        )
    with quiet_syft():
        history = list(codes[-1].output_history)
    return sorted(history, key=lambda o: float(o.created_at.utc_timestamp))


def fetch_output(ds_client: Any, function_name: str, output: Any) -> Any:
    """The value of one :func:`execution_outputs` entry, unwrapped like :func:`call_remote`."""
    with quiet_syft():
        values = output.outputs
        value = values[0] if isinstance(values, list) and values else values
        value = value.get() if hasattr(value, "get") else value
        value = getattr(value, "syft_action_data", value)
    return unwrap_result(ds_client, function_name, value)


def _call_error(ds_client: Any, function_name: str, exc: BaseException) -> FedMugRepError:
    text = _public(exc)
    state = code_status(ds_client, function_name)
    where = f"datasite '{ds_client.name}'"
    if state.startswith("denied"):
        return RequestDeniedError(
            f"the data owner of {where} denied '{function_name}': {state[len('denied: ') :]}"
        )
    if state == "pending":
        return FedMugRepError(
            f"'{function_name}' on {where} is still waiting for the data owner's approval"
        )
    if CALL_CAP_REFUSAL in text:
        return FedMugRepError(
            f"'{function_name}' on {where} has used up its approved number of calls; submit a "
            "new request for more rounds"
        )
    if "is not met" in text or "failed to filter kwargs" in text:
        return ConfigError(
            f"an argument of '{function_name}' does not match the approved input policy "
            f"({text}); pass the pinned asset and per-call values of exactly the declared types"
        )
    return FedMugRepError(f"calling '{function_name}' on {where} failed: {text}")


def _rebuild_error(name: str, message: str) -> FedMugRepError:
    cls = getattr(_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, FedMugRepError):
        try:
            return cls(message)
        except TypeError:
            pass
    return FedMugRepError(f"{name}: {message}")


def _to_python(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and type(value).__module__ == "numpy":
        return tolist()
    return value


def _public(exc: BaseException) -> str:
    msg = getattr(exc, "public_message", None) or str(exc)
    return " ".join(str(msg).split())

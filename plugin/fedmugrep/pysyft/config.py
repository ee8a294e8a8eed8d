"""Configuration of one PySyft datasite run by a data owner (frozen, loadable from TOML).

This module does not import ``syft`` so the CLI can read and check a config quickly.

A datasite keeps everything under its *home* folder::

    home/
      datasite.toml     the config the server process was started with (no password in it)
      server.pid        pid of the running HTTP server (removed on clean shutdown)
      server.log        the server's stdout/stderr
      syft/identity.json  server id + signing key (created once, mode 0600)
      syft/db/          PySyft's SQLite database (users, datasets, code, requests, results)
      syft/blob/        PySyft's blob store (objects over 1 MB)

TOML layout (paths are relative to the TOML file)::

    [datasite]
    name = "agency-a"
    home = "agency-a"
    host = "127.0.0.1"      # loopback; any other host needs allow_remote = true
    port = 8081
    role = "transactions"   # optional: "transactions" or "region" (default: from [data])
    allow_remote = false    # optional: serve on a non-loopback host (plain HTTP: TLS proxy!)

    [admin]
    email = "owner@agency-a.example"
    name = "Agency A data owner"
    password_env = "FEDMUGREP_ADMIN_PASSWORD"   # or: password = "..." (tests only)

    [data]
    transactions = "data/agency-a-transactions.csv"

    [budget]
    epsilon_cap = 8.0
    delta_cap = 1e-5

    [mock]                  # what is public about the data: the mock is drawn from it
    dates = ["2021-01-01", "2023-12-31"]
    price = [30000, 3000000]
    [mock.columns.area_m2]
    kind = "number"
    range = [10, 400]
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fedmugrep.errors import ConfigError, ConfigFileError, PrivacyParameterError
from fedmugrep.tomlfile import read_toml, toml_string

__all__ = [
    "DATA_KEYS",
    "DEFAULT_PASSWORD_ENV",
    "ROLES",
    "ConfigFileError",
    "DatasiteConfig",
    "is_loopback_host",
    "load_datasite_config",
    "read_toml",
]

#: Environment variable the admin password is read from when the TOML names none.
DEFAULT_PASSWORD_ENV = "FEDMUGREP_ADMIN_PASSWORD"

#: PySyft's built-in root password; a datasite must never run with it.
_SYFT_DEFAULT_PASSWORD = "changethis"  # nosec - listed to be refused

#: What a datasite holds: a transaction datasite (an agency's sales) or the region datasite
#: (community table + mobility flows).
ROLES: tuple[str, ...] = ("transactions", "region")

#: The [data] keys the ``fedmugrep datasite start`` command knows how to upload (with a mock),
#: per role; the first key of each role is required.
DATA_KEYS: dict[str, tuple[str, ...]] = {
    "transactions": ("transactions", "communities"),
    "region": ("communities", "mobility"),
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_SECTIONS: dict[str, frozenset[str]] = {
    "datasite": frozenset({"name", "home", "host", "port", "role", "allow_remote"}),
    "admin": frozenset({"email", "name", "password", "password_env"}),
    "data": frozenset(),  # free keys: asset name -> file
    "budget": frozenset({"epsilon_cap", "delta_cap"}),
    "mock": frozenset(),  # checked by fedmugrep.federation.mocks.MockDeclaration
}


@dataclass(frozen=True, kw_only=True)
class DatasiteConfig:
    """How one data owner runs their datasite.

    Attributes:
        name: datasite name (letters, digits, ``_.-``; shown to data scientists).
        home: folder that holds the datasite's database, blobs, identity, pid and log files.
        admin_email: e-mail of the root admin (the data owner) created on first start.
        admin_password: root admin password; ``None`` means "read it from ``admin_password_env``".
            Never written to disk by fedmugrep and hidden from ``repr``.
        admin_password_env: environment variable holding the password when ``admin_password`` is None.
        admin_name: display name of the root admin.
        host: interface the HTTP server binds to (keep ``127.0.0.1`` unless behind a proxy).
            A host that is not loopback (``127.0.0.0/8``, ``::1``, ``localhost``) is only
            served with ``allow_remote`` (see :meth:`check_serving_host`).
        port: HTTP port; ``None`` lets :func:`~fedmugrep.pysyft.runtime.launch_datasite`
            pick a free one.
        data_files: asset name -> private data file the owner uploads (informational for the
            runtime; the CLI uses it).
        mock: the ``[mock]`` table: what the owner declares public about the data, which the
            uploaded mocks are drawn from (:class:`~fedmugrep.federation.mocks.MockDeclaration`;
            a relative ``file`` already resolved against the TOML's folder).
        epsilon_cap: the owner's total epsilon budget per data scientist (``None``: not set here).
        delta_cap: the owner's total delta budget per data scientist (``None``: not set here).
        role: ``"transactions"`` or ``"region"`` (:data:`ROLES`); ``None`` lets :attr:`kind`
            infer it from ``data_files`` (a ``communities`` file without ``transactions`` means
            region). When set and ``data_files`` is not empty, the role's main file must be in it
            (``transactions``, or ``communities`` for the region).
        allow_remote: the owner's explicit opt-in to serve on a non-loopback ``host``. The API
            is plain HTTP (passwords, signed calls and results unencrypted), so other machines
            should reach it only through a TLS-terminating proxy.

    Raises:
        ConfigError: on an invalid name, e-mail, port, password or env-var name.
        PrivacyParameterError: on an invalid budget cap.
    """

    name: str
    home: Path
    admin_email: str
    admin_password: str | None = field(default=None, repr=False)
    admin_password_env: str = DEFAULT_PASSWORD_ENV
    admin_name: str = "Data owner"
    host: str = "127.0.0.1"
    port: int | None = None
    data_files: Mapping[str, Path] = field(default_factory=dict)
    mock: Mapping[str, Any] = field(default_factory=dict)
    epsilon_cap: float | None = None
    delta_cap: float | None = None
    role: str | None = None
    allow_remote: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigError(
                f"datasite name must be 1-63 letters, digits or '_.-' starting with a letter or "
                f"digit (got {self.name!r}); pass e.g. name='agency-a'"
            )
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())
        if not isinstance(self.admin_email, str) or "@" not in self.admin_email:
            raise ConfigError(
                f"admin_email must be an e-mail address (got {self.admin_email!r}); "
                "pass e.g. admin_email='owner@agency-a.example'"
            )
        if self.admin_password is not None:
            _check_password(self.admin_password)
        if not _ENV_RE.match(self.admin_password_env):
            raise ConfigError(
                f"admin_password_env must be an environment variable name (got "
                f"{self.admin_password_env!r}); pass e.g. '{DEFAULT_PASSWORD_ENV}'"
            )
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(
                f"host must be a non-empty string (got {self.host!r}); pass e.g. host='127.0.0.1'"
            )
        if not isinstance(self.allow_remote, bool):
            raise ConfigError(
                f"allow_remote must be true or false (got {self.allow_remote!r}); write "
                "allow_remote = true (no quotes) to serve on a non-loopback host"
            )
        if self.port is not None:
            if isinstance(self.port, bool) or not isinstance(self.port, int):
                raise ConfigError(f"port must be an int (got {self.port!r}); pass e.g. 8081")
            if not 1 <= self.port <= 65535:
                raise ConfigError(f"port must be in 1..65535 (got {self.port}); pass e.g. 8081")
        files = {str(k): Path(v) for k, v in dict(self.data_files).items()}
        object.__setattr__(self, "data_files", MappingProxyType(files))
        if self.epsilon_cap is not None:
            eps = float(self.epsilon_cap)
            if not math.isfinite(eps) or eps <= 0:
                raise PrivacyParameterError(
                    f"epsilon_cap must be > 0 and finite (got {self.epsilon_cap}); pass a positive value"
                )
            object.__setattr__(self, "epsilon_cap", eps)
        if self.delta_cap is not None:
            delta = float(self.delta_cap)
            if not 0.0 <= delta < 1.0:
                raise PrivacyParameterError(
                    f"delta_cap must be in [0, 1) (got {self.delta_cap}); pass e.g. 1e-5"
                )
            object.__setattr__(self, "delta_cap", delta)
        if self.role is not None:
            if self.role not in ROLES:
                raise ConfigError(
                    f"role must be one of {list(ROLES)} (got {self.role!r}); pass e.g. "
                    "role='transactions' for an agency, role='region' for the region datasite"
                )
            main = DATA_KEYS[self.role][0]
            if files and main not in files:
                raise ConfigError(
                    f"a {self.role} datasite needs a [data] {main} file (has {sorted(files)}); "
                    f'add {main} = "..." under [data]'
                )

    @property
    def kind(self) -> str:
        """The datasite's role: :attr:`role` if set, else inferred from :attr:`data_files`."""
        if self.role is not None:
            return self.role
        files = self.data_files
        return (
            "region" if "communities" in files and "transactions" not in files else "transactions"
        )

    # ------------------------------------------------------------------ host
    def check_serving_host(self) -> str:
        """Check that the HTTP server may bind :attr:`host`.

        A loopback host (``127.0.0.0/8``, ``::1``, ``localhost``) is always fine. Any other
        host (``0.0.0.0``, a LAN address, a host name) exposes the plain-HTTP API to other
        machines and needs :attr:`allow_remote`.

        Returns:
            ``""`` for a loopback host, else the warning to show when serving it.

        Raises:
            ConfigError: for a non-loopback host without ``allow_remote``.
        """
        if is_loopback_host(self.host):
            return ""
        if not self.allow_remote:
            raise ConfigError(
                f"datasite '{self.name}': host {self.host!r} is not a loopback address, and the "
                "datasite speaks plain HTTP: passwords, signed calls and results would cross "
                'the network unencrypted. Keep host = "127.0.0.1" and let a TLS-terminating '
                "proxy (nginx, caddy) forward to it; or, if such a proxy or a trusted private "
                "network is in place, opt in with allow_remote = true under [datasite] (or "
                "--allow-remote)"
            )
        return (
            f"datasite '{self.name}' listens on {self.host} (allow_remote): its API is plain "
            "HTTP; let other machines reach it only through a TLS-terminating proxy"
        )

    # ------------------------------------------------------------------ paths
    @property
    def syft_dir(self) -> Path:
        """PySyft's state (database, blobs, identity)."""
        return self.home / "syft"

    @property
    def identity_file(self) -> Path:
        """Server id and signing key, created on first start."""
        return self.syft_dir / "identity.json"

    @property
    def pid_file(self) -> Path:
        """Pid of the running HTTP server."""
        return self.home / "server.pid"

    @property
    def log_file(self) -> Path:
        """The HTTP server's stdout/stderr."""
        return self.home / "server.log"

    @property
    def toml_file(self) -> Path:
        """Where :meth:`write_toml` puts the config an HTTP server is started with."""
        return self.home / "datasite.toml"

    @property
    def url(self) -> str:
        """``http://host:port``.

        Raises:
            ConfigError: when no port is set.
        """
        if self.port is None:
            raise ConfigError(
                f"datasite '{self.name}' has no port; set [datasite] port in its TOML"
            )
        return f"http://{self.host}:{self.port}"

    # --------------------------------------------------------------- password
    def resolve_admin_password(self, env: Mapping[str, str] | None = None) -> str:
        """The admin password: ``admin_password`` or the value of ``admin_password_env``.

        Raises:
            ConfigError: when neither is set, or the password is PySyft's default.
        """
        if self.admin_password is not None:
            return self.admin_password
        environ = os.environ if env is None else env
        value = environ.get(self.admin_password_env)
        if not value:
            raise ConfigError(
                f"no admin password for datasite '{self.name}': set the environment variable "
                f"{self.admin_password_env} (or [admin] password in the TOML, for tests only)"
            )
        _check_password(value)
        return value

    def replace(self, **changes: Any) -> DatasiteConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------- TOML
    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> DatasiteConfig:
        """Load a config; see the module docstring for the layout."""
        return load_datasite_config(path)

    def to_toml(self) -> str:
        """TOML text of this config with absolute paths and *without* the password."""
        lines = [
            "# written by fedmugrep; the admin password is read from the environment",
            "[datasite]",
            f"name = {toml_string(self.name)}",
            f"home = {toml_string(str(self.home))}",
            f"host = {toml_string(self.host)}",
        ]
        if self.port is not None:
            lines.append(f"port = {self.port}")
        if self.role is not None:
            lines.append(f"role = {toml_string(self.role)}")
        if self.allow_remote:
            lines.append("allow_remote = true")
        lines += [
            "",
            "[admin]",
            f"email = {toml_string(self.admin_email)}",
            f"name = {toml_string(self.admin_name)}",
            f"password_env = {toml_string(self.admin_password_env)}",
        ]
        if self.data_files:
            lines += ["", "[data]"]
            lines += [
                f"{toml_string(k)} = {toml_string(str(self._abs(v)))}"
                for k, v in sorted(self.data_files.items())
            ]
        budget = [
            f"{k} = {v!r}"
            for k, v in (("epsilon_cap", self.epsilon_cap), ("delta_cap", self.delta_cap))
            if v is not None
        ]
        if budget:
            lines += ["", "[budget]", *budget]
        return "\n".join(lines) + "\n"

    def write_toml(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write :meth:`to_toml` to ``path`` (default :attr:`toml_file`) and return the path."""
        target = Path(path) if path is not None else self.toml_file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.to_toml(), encoding="utf-8")
        return target

    def _abs(self, p: Path) -> Path:
        return p if p.is_absolute() else (self.home / p)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is a loopback address: ``127.0.0.0/8``, ``::1`` or ``localhost``."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def load_datasite_config(
    path: str | os.PathLike[str], *, allow_remote: bool | None = None
) -> DatasiteConfig:
    """Read a datasite TOML file (layout in the module docstring).

    Relative ``home`` and ``[data]`` paths are resolved against the TOML file's folder;
    ``home`` defaults to a folder named after the datasite next to the TOML file.

    Args:
        path: the TOML file.
        allow_remote: overrides ``[datasite] allow_remote`` when not ``None`` (a command's
            ``--allow-remote`` flag).

    Raises:
        ConfigError: when the file is missing or has unknown/missing keys or bad values.
        ConfigFileError: when it is not UTF-8 text or not valid TOML (the message names the
            file, and the line of a syntax error).
    """
    src = Path(path)
    if not src.is_file():
        raise ConfigError(f"datasite config {src} does not exist; pass the path of a .toml file")
    raw = read_toml(src, what="datasite config")
    for section, value in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"{src}: unknown section [{section}]; valid sections: "
                + ", ".join(f"[{s}]" for s in _SECTIONS)
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{src}: [{section}] must be a table")
        allowed = _SECTIONS[section]
        if allowed:
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise ConfigError(
                    f"{src}: unknown key(s) {unknown} in [{section}]; valid keys: {sorted(allowed)}"
                )
    site = raw.get("datasite", {})
    admin = raw.get("admin", {})
    for section, key in (("datasite", "name"), ("admin", "email")):
        if key not in raw.get(section, {}):
            raise ConfigError(f"{src}: missing [{section}] {key}; add it")
    base = src.resolve().parent
    home = Path(site.get("home", site["name"]))
    data = {
        str(k): (Path(v) if Path(v).is_absolute() else base / v)
        for k, v in raw.get("data", {}).items()
    }
    budget = raw.get("budget", {})
    mock = dict(raw.get("mock", {}))
    if isinstance(mock.get("file"), str) and not Path(mock["file"]).is_absolute():
        mock["file"] = str(base / mock["file"])
    try:
        return DatasiteConfig(
            name=site["name"],
            home=home if home.is_absolute() else base / home,
            host=site.get("host", "127.0.0.1"),
            port=site.get("port"),
            admin_email=admin["email"],
            admin_name=admin.get("name", "Data owner"),
            admin_password=admin.get("password"),
            admin_password_env=admin.get("password_env", DEFAULT_PASSWORD_ENV),
            data_files=data,
            mock=mock,
            epsilon_cap=budget.get("epsilon_cap"),
            delta_cap=budget.get("delta_cap"),
            role=site.get("role"),
            allow_remote=site.get("allow_remote", False) if allow_remote is None else allow_remote,
        )
    except ConfigError as exc:
        raise type(exc)(f"{src}: {exc}") from exc


def _check_password(value: str) -> None:
    if not isinstance(value, str) or len(value) < 8:
        raise ConfigError("admin password must have at least 8 characters; choose a longer one")
    if value == _SYFT_DEFAULT_PASSWORD:
        raise ConfigError(
            "admin password is PySyft's public default 'changethis'; choose a private one"
        )

"""The privacy contract a data scientist pins into every code request, and the package hash.

A request's input policy carries the contract as a ``sy.Constant``: the data owner reads it when
reviewing (see :func:`fedmugrep.pysyft.runtime.describe_request`) and the approved code
receives the very same dict on every call. Inside the datasite, :func:`check_contract_installed`
refuses to run when the contract was written for another fedmugrep build than the one installed
there, so "the request shows the version and hash of the code it calls" (ARCHITECTURE §3) holds for as
long as the approval is used.

The contract is a *claim* by the data scientist. It is not what protects the data: the datasite's
own accountant and ledger enforce the owner's cap on every release, whatever the contract says.

This module does not import ``syft``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fedmugrep
from fedmugrep.errors import ConfigError, PrivacyParameterError

__all__ = [
    "CONTRACT_SCHEMA",
    "PrivacyContract",
    "check_contract_installed",
    "fedmugrep_code_hash",
    "installed_package_dir",
]

#: Identifies the layout of :meth:`PrivacyContract.to_dict`.
CONTRACT_SCHEMA = "fedmugrep.privacy-contract/1"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SKIP_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
_SKIP_SUFFIXES = frozenset({".pyc", ".pyo", ".swp", ".tmp"})


def installed_package_dir() -> Path:
    """Folder of the ``fedmugrep`` package this interpreter imports."""
    return Path(fedmugrep.__file__).resolve().parent


def fedmugrep_code_hash(package_dir: str | Path | None = None, *, refresh: bool = False) -> str:
    """SHA-256 over the source files of the fedmugrep package, independent of machine and order.

    Every regular file below ``package_dir`` is included except caches (``__pycache__``,
    ``*.pyc``, editor temp files, hidden files). Files are visited in sorted order of their
    POSIX relative path and fed to one SHA-256 as ``path NUL size NUL bytes`` records, so
    renaming, adding, removing or editing any file changes the hash; timestamps, permissions
    and the absolute location do not.

    The result is cached per folder for the life of the process (the code a server runs is the
    code it imported at start); pass ``refresh=True`` to re-read the files.

    Args:
        package_dir: package folder; defaults to :func:`installed_package_dir`.
        refresh: ignore the cache.

    Returns:
        64 lowercase hex digits.
    """
    root = Path(package_dir).resolve() if package_dir is not None else installed_package_dir()
    if refresh:
        _hash_tree.cache_clear()
    return _hash_tree(str(root))


@functools.lru_cache(maxsize=16)
def _hash_tree(root_str: str) -> str:
    root = Path(root_str)
    if not (root / "__init__.py").is_file():
        raise ConfigError(f"{root} is not a Python package folder; pass the fedmugrep package dir")
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part in _SKIP_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if path.suffix in _SKIP_SUFFIXES or not path.is_file():
            continue
        files.append((rel.as_posix(), path))
    digest = hashlib.sha256()
    for rel_posix, path in sorted(files):
        data = path.read_bytes()
        digest.update(rel_posix.encode("utf-8") + b"\0" + str(len(data)).encode() + b"\0")
        digest.update(data)
    return digest.hexdigest()


@dataclass(frozen=True, kw_only=True)
class PrivacyContract:
    """What a data scientist promises a data owner about one remote function.

    Attributes:
        mechanisms: noise mechanisms the function applies before anything leaves the datasite,
            e.g. ``("gaussian-dpsgd", "laplace")``.
        epsilon_per_release: epsilon charged for one release (one call).
        delta_per_release: delta charged for one release.
        rounds: number of training rounds the data scientist plans (one call per round).
        releases_per_round: releases (calls) per round.
        projected_epsilon: total epsilon after all rounds as computed by the accountant
            (Rényi-DP composition; may be below the plain sum).
        projected_delta: the delta that ``projected_epsilon`` is stated at.
        fedmugrep_version: version of fedmugrep the function calls into.
        fedmugrep_code_hash: :func:`fedmugrep_code_hash` of that fedmugrep.
        notes: free text for the reviewer.

    Raises:
        PrivacyParameterError: on non-positive epsilons, deltas outside [0, 1), rounds < 1.
        ConfigError: on an empty mechanism list or a malformed hash.
    """

    mechanisms: tuple[str, ...]
    epsilon_per_release: float
    delta_per_release: float = 0.0
    rounds: int
    releases_per_round: int = 1
    projected_epsilon: float
    projected_delta: float = 0.0
    fedmugrep_version: str
    fedmugrep_code_hash: str
    notes: str = ""

    def __post_init__(self) -> None:
        mechs = (self.mechanisms,) if isinstance(self.mechanisms, str) else tuple(self.mechanisms)
        if not mechs or not all(isinstance(m, str) and m for m in mechs):
            raise ConfigError(
                f"mechanisms must be a non-empty list of names (got {self.mechanisms!r}); "
                "pass e.g. ('gaussian-dpsgd', 'laplace')"
            )
        object.__setattr__(self, "mechanisms", mechs)
        for name in ("epsilon_per_release", "projected_epsilon"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value <= 0:
                raise PrivacyParameterError(
                    f"{name} must be > 0 and finite (got {getattr(self, name)}); pass a positive value"
                )
            object.__setattr__(self, name, value)
        for name in ("delta_per_release", "projected_delta"):
            value = float(getattr(self, name))
            if not 0.0 <= value < 1.0:
                raise PrivacyParameterError(
                    f"{name} must be in [0, 1) (got {getattr(self, name)}); pass e.g. 1e-5"
                )
            object.__setattr__(self, name, value)
        for name in ("rounds", "releases_per_round"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PrivacyParameterError(
                    f"{name} must be an int >= 1 (got {value!r}); pass a positive count"
                )
        if not _HEX64.match(str(self.fedmugrep_code_hash)):
            raise ConfigError(
                f"fedmugrep_code_hash must be 64 lowercase hex digits (got "
                f"{self.fedmugrep_code_hash!r}); use fedmugrep_code_hash()"
            )

    @classmethod
    def for_installed(
        cls,
        *,
        mechanisms: Sequence[str],
        epsilon_per_release: float,
        rounds: int,
        projected_epsilon: float,
        delta_per_release: float = 0.0,
        releases_per_round: int = 1,
        projected_delta: float = 0.0,
        notes: str = "",
        package_dir: str | Path | None = None,
    ) -> PrivacyContract:
        """A contract stamped with the version and hash of the fedmugrep this process imports.

        ``package_dir`` stamps another copy of fedmugrep instead (the one a datasite runs).
        """
        return cls(
            mechanisms=tuple(mechanisms),
            epsilon_per_release=epsilon_per_release,
            delta_per_release=delta_per_release,
            rounds=rounds,
            releases_per_round=releases_per_round,
            projected_epsilon=projected_epsilon,
            projected_delta=projected_delta,
            fedmugrep_version=fedmugrep.__version__,
            fedmugrep_code_hash=fedmugrep_code_hash(package_dir),
            notes=notes,
        )

    @property
    def total_releases(self) -> int:
        """``rounds * releases_per_round``."""
        return self.rounds * self.releases_per_round

    @property
    def plain_sum_epsilon(self) -> float:
        """Basic-composition bound ``total_releases * epsilon_per_release``."""
        return self.total_releases * self.epsilon_per_release

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (what goes into the ``sy.Constant``)."""
        out = asdict(self)
        out["mechanisms"] = list(self.mechanisms)
        return {"schema": CONTRACT_SCHEMA, **out}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyContract:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: on a wrong schema or unknown/missing keys.
        """
        payload = dict(data)
        schema = payload.pop("schema", None)
        if schema != CONTRACT_SCHEMA:
            raise ConfigError(
                f"privacy contract has schema {schema!r}, expected {CONTRACT_SCHEMA!r}; "
                "rebuild it with PrivacyContract.for_installed(...)"
            )
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(set(payload) - fields)
        if unknown:
            raise ConfigError(
                f"privacy contract has unknown keys {unknown}; valid keys: {sorted(fields)}"
            )
        try:
            return cls(**payload)
        except TypeError as exc:
            raise ConfigError(f"privacy contract is incomplete ({exc}); rebuild it") from exc

    def to_json(self) -> str:
        """Pretty, key-sorted JSON (what a reviewer reads)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def check_contract_installed(
    contract: Mapping[str, Any] | PrivacyContract, *, package_dir: str | Path | None = None
) -> PrivacyContract:
    """Refuse a contract written for another fedmugrep build than the installed one.

    Called inside the datasite before approved code touches data.

    Returns:
        The parsed contract.

    Raises:
        ConfigError: when the contract is malformed or its version/hash differ from the
            installed package.
    """
    parsed = (
        contract if isinstance(contract, PrivacyContract) else PrivacyContract.from_dict(contract)
    )
    installed = fedmugrep_code_hash(package_dir)
    if parsed.fedmugrep_code_hash != installed or parsed.fedmugrep_version != fedmugrep.__version__:
        raise ConfigError(
            "the request's privacy contract was made for fedmugrep "
            f"{parsed.fedmugrep_version} (sha256 {parsed.fedmugrep_code_hash[:12]}...) but this "
            f"datasite runs fedmugrep {fedmugrep.__version__} (sha256 {installed[:12]}...); "
            "submit a new request built against the datasite's version"
        )
    return parsed

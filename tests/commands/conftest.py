"""Shared fixtures of the data-owner command tests: a small synthetic city and datasite TOMLs."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from fedmugrep.cli import main
from fedmugrep.data.synthetic import CityConfig, make_city, write_city

PASSWORD_ENV = "FEDMUGREP_TEST_ADMIN_PASSWORD"
PASSWORD = "owner-secret-123"


@pytest.fixture(scope="session")
def city_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic city written like ``fedmugrep synth`` (600 sales, 3 agencies)."""
    out = tmp_path_factory.mktemp("city")
    write_city(make_city(CityConfig(seed=3, n_transactions=600)), out)
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_toml(
    folder: Path,
    name: str,
    *,
    data: dict[str, Path],
    port: int | None = None,
    budget: bool = True,
    role: str | None = None,
    mock: str | None = "synthetic",
) -> Path:
    """A datasite TOML in ``folder`` whose password comes from :data:`PASSWORD_ENV`; its mocks
    come from the synthetic city (``mock="synthetic"``) unless ``mock=None`` (no [mock]
    section: a schema-only mock)."""
    lines = ["[datasite]", f'name = "{name}"', 'host = "127.0.0.1"']
    if port is not None:
        lines.append(f"port = {port}")
    if role is not None:
        lines.append(f'role = "{role}"')
    lines += ["", "[admin]", f'email = "owner@{name}.example"', f'password_env = "{PASSWORD_ENV}"']
    lines += ["", "[data]", *(f'{k} = "{v}"' for k, v in data.items())]
    if budget:
        lines += ["", "[budget]", "epsilon_cap = 5.0", "delta_cap = 1e-5"]
    if mock:  # the example data is the synthetic city: its generator is its public mock
        lines += ["", "[mock]", f'source = "{mock}"']
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., tuple[int, str, str]]:
    """Run ``fedmugrep ARGV`` in this process; returns ``(exit code, stdout, stderr)``."""

    def run(*argv: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run

"""The example datasite configs in ``datasites/`` and the ``role`` key of the config schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmugrep.data.synthetic import CityConfig, make_city, write_city
from fedmugrep.errors import ConfigError
from fedmugrep.pysyft.config import DATA_KEYS, DatasiteConfig, load_datasite_config

from .conftest import write_toml

DATASITES = Path(__file__).resolve().parents[2] / "datasites"
EXAMPLES = ("agency-a", "agency-b", "agency-c", "region")


def load(name: str) -> DatasiteConfig:
    return load_datasite_config(DATASITES / f"{name}.toml")


def test_examples_load_with_distinct_ports_homes_and_loopback_hosts() -> None:
    configs = [load(n) for n in EXAMPLES]
    assert [c.name for c in configs] == list(EXAMPLES)
    assert len({c.port for c in configs}) == len(EXAMPLES)
    assert len({c.home for c in configs}) == len(EXAMPLES)
    assert all(c.host == "127.0.0.1" for c in configs)
    assert all(c.home.parent == DATASITES for c in configs)
    assert all(c.admin_password is None for c in configs)  # never a password in a file
    assert {c.admin_password_env for c in configs} == {"FEDMUGREP_ADMIN_PASSWORD"}
    assert [c.kind for c in configs] == ["transactions"] * 3 + ["region"]


def test_example_data_paths_are_what_synth_writes_into_datasites_data(tmp_path: Path) -> None:
    written = {
        p.name for p in write_city(make_city(CityConfig(n_transactions=300)), tmp_path).values()
    }
    used: list[str] = []
    for name in EXAMPLES:
        config = load(name)
        assert set(config.data_files) <= set(DATA_KEYS[config.kind])
        for path in config.data_files.values():
            assert path.parent == DATASITES / "data"
            assert path.name in written, f"{name}: {path.name} is not written by fedmugrep synth"
            used.append(path.name)
    # each agency its own file; the region holds the community table and mobility
    assert sorted(used) == [
        "communities.csv",
        "mobility.csv",
        "transactions_agency1.csv",
        "transactions_agency2.csv",
        "transactions_agency3.csv",
    ]


def test_readme_shows_synth_first_then_the_cli_and_keeps_the_python_way() -> None:
    text = (DATASITES / "README.md").read_text(encoding="utf-8")
    synth = text.index("fedmugrep synth --out datasites/data")
    for name in EXAMPLES:
        assert text.index(f"fedmugrep datasite start --config datasites/{name}.toml") > synth
    for command in (
        "datasite status",
        "datasite stop",
        "requests list",
        "requests approve",
        "requests deny",
        "budget set",
        "budget show",
    ):
        assert f"fedmugrep {command}" in text
    assert "python -m fedmugrep.pysyft.server --config" in text
    assert "launch_datasite(" in text


def test_role_is_inferred_from_data_when_not_set(tmp_path: Path) -> None:
    def cfg(**data: str) -> DatasiteConfig:
        return DatasiteConfig(
            name="x",
            home=tmp_path,
            admin_email="o@x.example",
            data_files={k: Path(v) for k, v in data.items()},
        )

    assert cfg().kind == "transactions"
    assert cfg(transactions="t.csv").kind == "transactions"
    assert cfg(transactions="t.csv", communities="c.csv").kind == "transactions"
    assert cfg(communities="c.csv", mobility="m.csv").kind == "region"


def test_role_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"role must be one of \['transactions', 'region'\]"):
        DatasiteConfig(name="x", home=tmp_path, admin_email="o@x.example", role="agency")
    with pytest.raises(ConfigError, match=r"a region datasite needs a \[data\] communities file"):
        DatasiteConfig(
            name="x",
            home=tmp_path,
            admin_email="o@x.example",
            role="region",
            data_files={"mobility": Path("m.csv")},
        )
    with pytest.raises(ConfigError, match=r"transactions datasite needs a \[data\] transactions"):
        DatasiteConfig(
            name="x",
            home=tmp_path,
            admin_email="o@x.example",
            role="transactions",
            data_files={"communities": Path("c.csv")},
        )


def test_role_round_trips_through_toml_and_a_bad_one_names_the_file(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path, "region-x", data={"communities": tmp_path / "c.csv"}, port=9000, role="region"
    )
    config = load_datasite_config(path)
    assert config.role == "region" and config.kind == "region"
    again = load_datasite_config(config.write_toml(tmp_path / "copy.toml"))
    assert again.role == "region" and again.port == 9000
    path.write_text(path.read_text().replace('role = "region"', 'role = "regoin"'))
    with pytest.raises(ConfigError, match=rf"{path.name}.*role must be one of"):
        load_datasite_config(path)

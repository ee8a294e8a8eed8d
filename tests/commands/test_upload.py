"""What ``fedmugrep datasite start`` uploads, on an in-process datasite (no HTTP server).

The region datasite holds the community table and the mobility flows; both go up with mocks
whose public geography matches and whose attributes and flows come from the synthetic city.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("syft")

from fedmugrep.commands.datasite import upload_missing  # noqa: E402
from fedmugrep.pysyft.config import load_datasite_config  # noqa: E402
from fedmugrep.pysyft.remote import strip_mock_marker  # noqa: E402
from fedmugrep.pysyft.runtime import get_asset, launch_datasite  # noqa: E402

from .conftest import PASSWORD, PASSWORD_ENV, write_toml  # noqa: E402


def test_region_datasite_uploads_communities_and_mobility_once(
    tmp_path: Path, city_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    toml = write_toml(
        tmp_path,
        "region",
        data={"communities": city_dir / "communities.csv", "mobility": city_dir / "mobility.csv"},
        role="region",
    )
    config = load_datasite_config(toml)
    handle = launch_datasite(config, mode="inprocess")
    try:
        admin = handle.login_admin()
        uploaded = upload_missing(admin, config, toml, mock_seed=7)
        assert [u["dataset"] for u in uploaded] == ["communities", "mobility"]
        assert upload_missing(admin, config, toml, mock_seed=7) == []  # only the first time

        private = pd.read_csv(city_dir / "communities.csv")
        comms = get_asset(admin, "communities")
        mock = strip_mock_marker(comms.mock)
        assert list(mock.columns) == list(private.columns) and len(mock) == len(private)
        for col in ("community", "district", "lat", "lon"):  # public geography kept
            assert mock[col].astype(str).tolist() == private[col].astype(str).tolist()
        assert not mock["income_index"].equals(private["income_index"])  # attributes are not
        assert len(strip_mock_marker(comms.data)) == len(private)

        flows = get_asset(admin, "mobility")
        assert list(strip_mock_marker(flows.mock).columns) == ["src", "dst", "flow"]
        assert len(strip_mock_marker(flows.data)) == len(pd.read_csv(city_dir / "mobility.csv"))
    finally:
        handle.stop()

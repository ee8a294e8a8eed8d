"""The data owner's review sheet of a training request, on a real in-process datasite.

A data scientist's session (the same code ``fedmugrep federation`` runs) submits its training
request to one agency datasite; the owner's sheet must fit on a screen, lead with the privacy
figures this datasite computes (mechanisms, sensitivities, epsilon per release and in total,
rounds, call cap) before the code, and show the pinned model weights by size and digest, never
as base64; ``full=True`` (``requests show --full``) prints the pinned values whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("syft")

from fedmugrep.federation.mocks import MockDeclaration  # noqa: E402
from fedmugrep.federation.plan import FederationPlan, PrivacyPlan  # noqa: E402
from fedmugrep.federation.run import CityTables, city_declaration  # noqa: E402
from fedmugrep.pysyft.functions import clear_party_cache  # noqa: E402
from fedmugrep.pysyft.runtime import (  # noqa: E402
    DatasiteConfig,
    describe_request,
    launch_datasite,
    list_requests,
    pinned_constant,
    register_data_scientist,
    upload_dataset,
)
from fedmugrep.pysyft.scientist import DataScientistSession, planned_calls  # noqa: E402

DS_EMAIL, DS_PASSWORD = "dana@uni.example", "dana-secret-12"
PLAN = FederationPlan(rounds=3, privacy=PrivacyPlan(epsilon=4.0), pretrain_epochs=1)
#: A run of base64 this long is a blob (the sheet's digests are hex, 16 characters).
BLOB = re.compile(r"[A-Za-z0-9+/=]{200,}")


@dataclass
class Submitted:
    request: Any
    public: dict[str, Any]  # the public constant as the datasite holds it


@pytest.fixture(scope="module")
def submitted(tmp_path_factory: pytest.TempPathFactory, city_dir: Path) -> Iterator[Submitted]:
    home = tmp_path_factory.mktemp("review")
    source = city_declaration(city_dir, "synthetic").source
    city = CityTables(city_dir, MockDeclaration(kind="synthetic", seed=1000, source=source))
    config = DatasiteConfig(
        name="agency1",
        home=home / "agency1",
        admin_email="owner@agency1.example",
        admin_password="owner-secret-1",
    )
    handle = launch_datasite(config, mode="inprocess", reset=True)
    try:
        admin = handle.login_admin()
        upload_dataset(
            admin,
            name="transactions",
            private=city.agencies["agency1"],
            mock=city.agency_mock("agency1"),
            description="agency1's sales",
        )
        register_data_scientist(admin, email=DS_EMAIL, name="Dana", password=DS_PASSWORD)
        session = DataScientistSession(
            {"agency1": handle},
            {"agency1": "transactions"},
            email=DS_EMAIL,
            password=DS_PASSWORD,
            plan=PLAN,
            home=home / "coordinator",
            geography=city.geography,
        )
        session.connect()
        session.submit()
        (request,) = list_requests(admin, status="pending")
        public = pinned_constant(request.code, "public")
        assert public["init_region"], "the request pins public starting weights"
        yield Submitted(request, public)
    finally:
        handle.stop()
        clear_party_cache(config.home)


def test_the_sheet_is_short_and_leads_with_the_privacy_figures(submitted: Submitted) -> None:
    sheet = describe_request(submitted.request)
    lines = sheet.splitlines()
    assert len(lines) < 80, sheet
    code_at = lines.index("code:")
    first = {
        key: next(i for i, ln in enumerate(lines) if key in ln)
        for key in (
            "PRIVACY (computed by this datasite from the pinned plan; transaction datasite)",
            "gaussian:theta+z_grad, sensitivity",  # per mechanism, with its sensitivity
            "  total: ε",
            "over 3 rounds",
            f"  call cap: {planned_calls(PLAN)[0]}",
            "privacy contract: pinned by the data scientist",
            "  mechanisms        : laplace:intra_region, gaussian:theta+z_grad",
            "  per release       : epsilon",
            "  projected total   : epsilon",
            "  matches local fedmugrep: yes",
        )
    }
    assert all(i < code_at for i in first.values()), first
    assert lines[0].startswith("Request ") and first[next(iter(first))] == 1  # privacy first
    assert "def transaction_call_" in "\n".join(lines[code_at:])
    # weights and vocabularies by size and digest, never as base64 or the constant's JSON
    assert BLOB.search(sheet) is None
    n = len(submitted.public["init_region"])
    assert re.search(
        rf"initial region weights: {n} tensors, [0-9,]+ values, sha256 [0-9a-f]+", sheet
    )
    assert not any(v in sheet for v in submitted.public["init_region"].values())
    assert "in full (JSON)" not in sheet
    # PySyft's copy of the policy is fedmugrep's: one line instead of its source
    assert "output policy code: identical to this machine's fedmugrep CallCapPolicy" in sheet
    assert "class CallCapPolicy" not in sheet


def test_the_full_sheet_prints_the_pinned_values_whole(submitted: Submitted) -> None:
    short = describe_request(submitted.request)
    full = describe_request(submitted.request, full=True)
    head = short.splitlines()[:12]  # the privacy figures: the same, first
    assert full.splitlines()[:12] == head and "  total: ε" in "\n".join(head)
    text = json.dumps(submitted.public, indent=1, sort_keys=True, default=str)
    assert "constant 'public' in full (JSON):" in full
    assert "\n".join("    " + ln for ln in text.splitlines()) in full
    assert all(v in full for v in submitted.public["init_region"].values())
    assert BLOB.search(full)  # the blob check above sees the weights when they are there
    assert "class CallCapPolicy(sy.CustomOutputPolicy)" in full

"""Fixtures of the security suite: the reliability suite's small city and its public constant,
and a way to call the remote functions exactly as a datasite runs them (bound datasite call,
real ledger, no transport)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fedmugrep.federation.admission import region_contract, transaction_contract
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.pysyft.functions import clear_party_cache, region_call, transaction_call
from fedmugrep.pysyft.remote import ENVELOPE_KEY, DatasiteCall, bind_datasite_call
from tests.reliability.conftest import AGENCY, CALLER, PLAN, City, one_torch_thread, small_city

__all__ = ["AGENCY", "CALLER", "PLAN", "City", "Site", "one_torch_thread", "small_city"]


@dataclass
class Site:
    """One datasite's entry point (``transaction_call`` or ``region_call``) with its home, as a
    datasite binds it: the verified caller, a real ledger capped for that caller."""

    name: str
    home: Path
    role: str
    assets: dict[str, Any]
    public: dict
    contract: dict
    calls: list[dict] = field(default_factory=list)

    @classmethod
    def make(cls, city: City, home: Path, *, role: str = "transaction", cap: float = 100.0):
        name = AGENCY if role == "transaction" else "region"
        Ledger(home).set_cap(CALLER, name, epsilon=cap, delta=PLAN.privacy.delta)
        if role == "transaction":
            assets = {"data": city.transactions}
            contract = transaction_contract(PLAN).to_dict()
        else:
            assets = {"data": city.communities, "mobility": city.mobility}
            n = len(city.public["encoders"]["communities"])
            contract = region_contract(PLAN, n_communities=n).to_dict()
        return cls(name, home, role, assets, copy.deepcopy(city.public), contract)

    def call(self, method: str, payload: dict | str, **overrides: Any) -> dict:
        """The envelope of one call (a raw exception escapes and fails the test)."""
        entry = transaction_call if self.role == "transaction" else region_call
        site = DatasiteCall(name=self.name, home=self.home, caller_email_lookup=lambda: CALLER)
        text = payload if isinstance(payload, str) else json.dumps(payload)
        kwargs = {
            **self.assets,
            "contract": self.contract,
            "public": self.public,
            "method": method,
            "payload": text,
            **overrides,
        }
        with bind_datasite_call(site):
            out = entry(**kwargs)
        assert out[ENVELOPE_KEY] == 1
        self.calls.append(out)
        return out

    def charged(self) -> int:
        return sum(e.status == "charged" for e in Ledger(self.home).entries())

    def close(self) -> None:
        clear_party_cache(self.home)


@pytest.fixture
def site_factory(small_city: City, tmp_path: Path):
    made: list[Site] = []

    def make(role: str = "transaction", *, name: str = "site", cap: float = 100.0) -> Site:
        site = Site.make(small_city, tmp_path / f"{name}-{len(made)}", role=role, cap=cap)
        made.append(site)
        return site

    yield make
    for site in made:
        site.close()

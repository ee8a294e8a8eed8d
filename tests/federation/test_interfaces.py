"""Every runtime's parties implement the same typed interface, with the same signatures."""

from __future__ import annotations

import inspect

import pytest

from fedmugrep.federation.interfaces import RegionSite, TransactionSite
from fedmugrep.federation.parties import RegionParty, TransactionParty
from fedmugrep.pysyft.proxies import SyftRegionParty, SyftTransactionParty


def _members(protocol: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in vars(protocol).items()
        if callable(fn) and not name.startswith("_")
    }


@pytest.mark.parametrize(
    ("protocol", "implementation"),
    [
        (TransactionSite, TransactionParty),
        (TransactionSite, SyftTransactionParty),
        (RegionSite, RegionParty),
        (RegionSite, SyftRegionParty),
    ],
)
def test_the_implementation_has_every_method_with_the_protocols_parameters(
    protocol: type, implementation: type
) -> None:
    members = _members(protocol)
    assert members  # the protocol declares methods
    for name, signature in members.items():
        method = getattr(implementation, name, None)
        assert callable(method), f"{implementation.__name__} lacks {name}"
        got = list(inspect.signature(method).parameters)
        assert got == list(signature.parameters), (implementation.__name__, name, got)

"""The ledger and the calibration take their accountant from Opacus's accountant registry.

A spy accountant registered under the ledger's name must be the one that composes every
total (the tests fail if either computes ε without asking the registry); a foreign class
registered under it is refused; a process without opacus gets the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from opacus.accountants import RDPAccountant
from opacus.accountants.registry import create_accountant as opacus_create
from opacus.accountants.registry import register_accountant

from fedmugrep.errors import BudgetExceededError, ConfigError
from fedmugrep.privacy.accountant import ACCOUNTANTS, FedMugRepAccountant
from fedmugrep.privacy.analysis.composition import PrivacySpent, compose_events
from fedmugrep.privacy.calibration import (
    CALIBRATION_ACCOUNTANT,
    laplace_scale_for_epsilon,
    noise_multiplier_for_epsilon,
)
from fedmugrep.privacy.events import (
    GaussianEvent,
    LaplaceEvent,
    PrivacyEvent,
    SubsampledGaussianEvent,
)
from fedmugrep.privacy.ledger import LEDGER_ACCOUNTANT, Ledger

DELTA = 1e-5
LAP = LaplaceEvent(1.0, 2.0, 1, bound=1000.0)
SGD = SubsampledGaussianEvent(1.1, 0.01, 200)


class SpyAccountant(FedMugRepAccountant):
    """fedmugrep's accountant that records each instance and can inflate what it reports."""

    instances: ClassVar[list[SpyAccountant]] = []
    factor: ClassVar[float] = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.composed: list[PrivacyEvent] = []
        self.asked: list[float] = []
        SpyAccountant.instances.append(self)

    def compose(self, event: PrivacyEvent) -> None:
        super().compose(event)
        self.composed.append(event)

    def get_privacy_spent(self, *, delta: float) -> PrivacySpent:
        self.asked.append(delta)
        spent = super().get_privacy_spent(delta=delta)
        return dataclasses.replace(spent, epsilon=spent.epsilon * self.factor)


@pytest.fixture
def spy() -> Iterator[type[SpyAccountant]]:
    """:class:`SpyAccountant` registered with Opacus under the ledger's accountant name."""
    assert LEDGER_ACCOUNTANT == CALIBRATION_ACCOUNTANT == FedMugRepAccountant.MECHANISM
    SpyAccountant.instances, SpyAccountant.factor = [], 1.0
    register_accountant(LEDGER_ACCOUNTANT, SpyAccountant, force=True)
    try:
        yield SpyAccountant
    finally:
        register_accountant(LEDGER_ACCOUNTANT, ACCOUNTANTS[LEDGER_ACCOUNTANT], force=True)
    assert type(opacus_create(LEDGER_ACCOUNTANT)) is FedMugRepAccountant


def _charge(ledger: Ledger, i: int, events: list[PrivacyEvent]) -> None:
    ledger.charge(
        data_scientist="alice",
        request_id=f"r{i}",
        dataset="sales",
        mechanism="m",
        events=events,
        payload=b"p",
    )


def test_the_ledger_composes_with_the_registered_accountant(
    tmp_path: Path, spy: type[SpyAccountant]
) -> None:
    ledger = Ledger(tmp_path)
    ledger.set_cap("alice", "sales", epsilon=10.0, delta=DELTA)
    history = [[SGD], [LAP], [GaussianEvent(3.0, 2), LAP]]
    for i, events in enumerate(history):
        _charge(ledger, i, events)
    charged = [e for events in history for e in events]
    expected = compose_events(charged, delta=DELTA)

    spy.instances.clear()
    assert ledger.spent("alice", "sales") == expected.epsilon
    assert ledger.budget("alice", "sales").spent == expected
    assert [b.spent for b in ledger.budgets()] == [expected]
    assert len(spy.instances) == 3
    assert all(s.composed == charged and s.asked == [DELTA] for s in spy.instances)

    spy.instances.clear()
    _charge(ledger, 9, [LAP])  # one accountant: before, then after the new event
    (charging,) = spy.instances
    assert charging.composed == [*charged, LAP] and charging.asked == [DELTA, DELTA]

    spy.factor = 2.0  # the ledger's totals are whatever the registered accountant reports
    total = compose_events([*charged, LAP], delta=DELTA).epsilon
    assert ledger.spent("alice", "sales") == 2.0 * total
    spy.factor = 10.0 / total  # the next release would cross the cap of 10
    with pytest.raises(BudgetExceededError, match="would be"):
        _charge(ledger, 10, [LAP])
    assert ledger.entries()[-1].status == "refused"


def test_the_calibration_composes_with_the_registered_accountant(
    spy: type[SpyAccountant],
) -> None:
    kwargs = dict(target_epsilon=5.0, delta=DELTA, sample_rate=0.01, steps=500)
    prior = [LaplaceEvent(1.0, 1.0, 2)]
    sigma = noise_multiplier_for_epsilon(**kwargs, prior_events=prior)
    assert spy.instances and all(s.composed[: len(prior)] == prior for s in spy.instances)
    assert any(isinstance(s.composed[-1], SubsampledGaussianEvent) for s in spy.instances)
    scale = laplace_scale_for_epsilon(target_epsilon=1.0, delta=DELTA, sensitivity=1.0)

    spy.factor = 2.0  # a more pessimistic registered accountant calibrates more noise
    assert noise_multiplier_for_epsilon(**kwargs, prior_events=prior) > sigma
    assert laplace_scale_for_epsilon(target_epsilon=1.0, delta=DELTA, sensitivity=1.0) > scale


def test_a_foreign_accountant_under_the_name_is_refused(tmp_path: Path) -> None:
    Ledger(tmp_path)  # creates the ledger with fedmugrep's accountant registered
    register_accountant(LEDGER_ACCOUNTANT, RDPAccountant, force=True)
    try:
        with pytest.raises(ConfigError, match="maps 'fedmugrep_rdp' to RDPAccountant"):
            Ledger(tmp_path)
        with pytest.raises(ConfigError, match="cannot compose fedmugrep events"):
            laplace_scale_for_epsilon(target_epsilon=1.0, delta=DELTA, sensitivity=1.0)
    finally:
        register_accountant(LEDGER_ACCOUNTANT, ACCOUNTANTS[LEDGER_ACCOUNTANT], force=True)


_LAPLACE_RUN = """
import json, sys
from fedmugrep.errors import BudgetExceededError
from fedmugrep.privacy.events import LaplaceEvent
from fedmugrep.privacy.ledger import Ledger
ledger = Ledger(sys.argv[1])
ledger.set_cap("alice", "sales", epsilon=2.0, delta=1e-5)
for i in range(6):
    try:
        ledger.charge(data_scientist="alice", request_id=f"r{i}", dataset="sales",
                      mechanism="laplace", events=[LaplaceEvent(1.0, 2.0 + i % 2, 1, bound=1e3)],
                      payload=b"p")
    except BudgetExceededError:
        pass
out = [(e.status, e.epsilon, e.total_epsilon) for e in ledger.entries()]
out.append(repr(ledger.budget("alice", "sales").spent))
print(json.dumps({"opacus": "opacus" in sys.modules, "numbers": out}))
"""


def test_a_process_without_opacus_gets_the_registered_accountants_numbers(
    tmp_path: Path,
) -> None:
    def run(*preload: str, home: str) -> dict:
        code = "".join(f"import {m}\n" for m in preload) + _LAPLACE_RUN
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / home)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return json.loads(done.stdout)

    without = run(home="a")
    with_registry = run("fedmugrep.privacy.accountant", home="b")
    assert not without["opacus"] and with_registry["opacus"]
    assert without["numbers"] == with_registry["numbers"]
    assert [n[0] for n in without["numbers"][:-1]].count("refused") >= 1


def test_the_accountant_keeps_the_composition_order() -> None:
    """Composed in the given order, so its totals equal compose_events bit for bit."""
    events: list[PrivacyEvent] = [
        SubsampledGaussianEvent(1.0, 0.02, 3),
        LaplaceEvent(1.0, 5.0, 2),
        GaussianEvent(2.0),
        SubsampledGaussianEvent(1.0, 0.02, 2),
        SubsampledGaussianEvent(2.0, 0.02, 1),
        LaplaceEvent(1.0, 3.0, 1, bound=100.0),
    ]
    acc = FedMugRepAccountant()
    for event in events:
        acc.compose(event)
    assert acc.history == [(1.0, 0.02, 5), (2.0, 0.02, 1)]
    assert acc.all_events() == [
        SubsampledGaussianEvent(1.0, 0.02, 5),
        LaplaceEvent(1.0, 5.0, 2),
        GaussianEvent(2.0),
        SubsampledGaussianEvent(2.0, 0.02, 1),
        LaplaceEvent(1.0, 3.0, 1, bound=100.0),
    ]
    for delta in (DELTA, 1e-3):
        assert acc.get_privacy_spent(delta=delta) == compose_events(events, delta=delta)
    restored = FedMugRepAccountant()
    restored.load_state_dict(acc.state_dict())
    assert restored.all_events() == acc.all_events()
    legacy = {k: v for k, v in acc.state_dict().items() if k != "event_positions"}
    restored.load_state_dict(legacy)  # a state without positions: DP-SGD steps last
    assert restored.all_events()[-2:] == [SubsampledGaussianEvent(*h) for h in acc.history]

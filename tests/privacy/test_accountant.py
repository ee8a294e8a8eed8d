"""Accountants: the contract every one passes, Opacus integration, calibration."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest

from fedmugrep.errors import BudgetExceededError, ConfigError
from fedmugrep.privacy.accountant import (
    ACCOUNTANTS,
    BasicCompositionAccountant,
    FedMugRepAccountant,
    accountant_from_events,
    create_accountant,
)
from fedmugrep.privacy.analysis.composition import compose_events
from fedmugrep.privacy.calibration import laplace_scale_for_epsilon, noise_multiplier_for_epsilon
from fedmugrep.privacy.events import (
    GaussianEvent,
    LaplaceEvent,
    PrivacyEvent,
    SubsampledGaussianEvent,
    UnsupportedEventError,
)

DELTA = 1e-5


class NotAnEvent:
    """Something an accountant must refuse."""


class AccountantContract:
    """What every accountant must do (after dp_accounting's ``PrivacyAccountantTest``).

    Subclass it once per accountant in :data:`ACCOUNTANTS`; ``test_every_accountant_has_a_contract_test``
    fails when one is missing.
    """

    mechanism: str

    def make(self) -> FedMugRepAccountant:
        return create_accountant(self.mechanism)

    def supported_events(self) -> list[PrivacyEvent]:
        return [LaplaceEvent(1.0, 4.0, 3), LaplaceEvent(2.0, 10.0, 1, bound=100.0, dimension=5)]

    def test_no_events_means_zero_epsilon(self) -> None:
        acc = self.make()
        assert acc.get_epsilon(DELTA) == 0.0
        assert acc.get_epsilon(0.0) == 0.0
        assert len(acc) == 0

    def test_unsupported_event_is_a_clear_error_and_changes_nothing(self) -> None:
        acc = self.make()
        acc.compose(self.supported_events()[0])
        before = acc.get_epsilon(DELTA)
        assert not acc.supports(NotAnEvent())
        with pytest.raises(UnsupportedEventError, match="cannot account for NotAnEvent"):
            acc.compose(NotAnEvent())  # type: ignore[arg-type]
        assert acc.get_epsilon(DELTA) == before

    def test_supports_agrees_with_compose(self) -> None:
        candidates = [
            LaplaceEvent(1.0, 1.0),
            GaussianEvent(2.0),
            SubsampledGaussianEvent(1.0, 0.1, 5),
        ]
        for event in candidates:
            acc = self.make()
            if acc.supports(event):
                acc.compose(event)
                assert acc.get_epsilon(DELTA) > 0
            else:
                with pytest.raises(UnsupportedEventError):
                    acc.compose(event)

    def test_epsilon_grows_with_events(self) -> None:
        acc = self.make()
        last = 0.0
        for event in self.supported_events() * 2:
            acc.compose(event)
            eps = acc.get_epsilon(DELTA)
            assert eps > last
            last = eps

    def test_state_dict_round_trip(self) -> None:
        acc = self.make()
        for event in self.supported_events():
            acc.compose(event)
        state = acc.state_dict()
        assert state["mechanism"] == self.mechanism
        for restored_state in (copy.deepcopy(state), pickle.loads(pickle.dumps(state))):
            other = self.make()
            other.load_state_dict(restored_state)
            assert other.get_epsilon(DELTA) == acc.get_epsilon(DELTA)
            assert other.all_events() == acc.all_events()
            assert len(other) == len(acc)

    def test_refuses_a_foreign_state_dict(self) -> None:
        with pytest.raises(ValueError, match="cannot be loaded"):
            self.make().load_state_dict({"history": [], "mechanism": "rdp"})
        with pytest.raises(ValueError):
            self.make().load_state_dict({})

    def test_registered_with_opacus(self) -> None:
        from opacus.accountants.registry import create_accountant as opacus_create

        assert type(opacus_create(self.mechanism)) is ACCOUNTANTS[self.mechanism]
        assert self.make().mechanism() == self.mechanism


class TestFedMugRepAccountantContract(AccountantContract):
    mechanism = "fedmugrep_rdp"

    def supported_events(self) -> list[PrivacyEvent]:
        return [*super().supported_events(), SubsampledGaussianEvent(1.1, 0.01, 100)]


class TestBasicCompositionAccountantContract(AccountantContract):
    mechanism = "fedmugrep_basic"


def test_every_accountant_has_a_contract_test() -> None:
    covered = {cls.mechanism for cls in AccountantContract.__subclasses__()}
    assert covered == set(ACCOUNTANTS)


def test_create_accountant_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="choose one of .'fedmugrep_basic', 'fedmugrep_rdp'."):
        create_accountant("nope")


def test_basic_accountant_refuses_dp_sgd_steps() -> None:
    acc = BasicCompositionAccountant()
    with pytest.raises(UnsupportedEventError, match="SubsampledGaussianEvent"):
        acc.step(noise_multiplier=1.0, sample_rate=0.1)
    acc.compose(LaplaceEvent(1.0, 2.0, 3))
    assert acc.get_epsilon(DELTA) == 1.5


def test_step_merges_like_opacus_and_matches_composition() -> None:
    acc = FedMugRepAccountant()
    for _ in range(3):
        acc.step(noise_multiplier=1.0, sample_rate=0.02)
    acc.step(noise_multiplier=2.0, sample_rate=0.02)
    acc.compose(LaplaceEvent(1.0, 5.0, 2))
    assert acc.history == [(1.0, 0.02, 3), (2.0, 0.02, 1)]
    assert len(acc) == 4 + 2 and acc.steps == 4
    expected = compose_events(
        [
            SubsampledGaussianEvent(1.0, 0.02, 3),
            SubsampledGaussianEvent(2.0, 0.02, 1),
            LaplaceEvent(1.0, 5.0, 2),
        ],
        delta=DELTA,
    )
    assert acc.get_privacy_spent(delta=DELTA) == expected
    assert "fedmugrep_rdp" in repr(acc) and "steps=4" in repr(acc)


def test_reports_min_of_rdp_and_plain_sum() -> None:
    few = accountant_from_events([LaplaceEvent(1.0, 1.0, 2)])
    spent = few.get_privacy_spent(delta=DELTA)
    assert spent.epsilon == spent.plain_sum_epsilon == 2.0 < spent.rdp_epsilon
    many = accountant_from_events([LaplaceEvent(1.0, 10.0, 500)])
    spent = many.get_privacy_spent(delta=DELTA)
    assert spent.epsilon == spent.rdp_epsilon < spent.plain_sum_epsilon


def test_privacy_engine_uses_the_accountant_by_name() -> None:
    torch = pytest.importorskip("torch")
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = TensorDataset(torch.randn(32, 3), torch.randn(32, 1))
    loader = DataLoader(data, batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus: "Secure RNG turned off" (fine in a test)
        engine = PrivacyEngine(accountant="fedmugrep_rdp")
        assert isinstance(engine.accountant, FedMugRepAccountant)
        engine.accountant.compose(LaplaceEvent(1.0, 10.0, 5))  # released before training
        model, optimizer, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
        )
        x, y = next(iter(loader))
        while len(x) == 0:  # Poisson sampling may draw an empty batch
            x, y = next(iter(loader))
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    assert engine.accountant.history == [(1.0, 0.25, 1)]
    assert SubsampledGaussianEvent(1.0, 0.25, 1) in engine.accountant.all_events()
    eps = engine.get_epsilon(DELTA)
    laplace_only = compose_events([LaplaceEvent(1.0, 10.0, 5)], delta=DELTA).epsilon
    assert eps > laplace_only > 0


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_calibration_accounts_for_earlier_laplace_spending() -> None:
    from opacus.accountants.utils import get_noise_multiplier

    prior = [LaplaceEvent(1.0, 1.0, 2)]  # epsilon 2 already spent
    target, q, steps = 5.0, 0.01, 1000
    sigma = noise_multiplier_for_epsilon(
        target_epsilon=target, delta=DELTA, sample_rate=q, steps=steps, prior_events=prior
    )
    total = compose_events([*prior, SubsampledGaussianEvent(sigma, q, steps)], delta=DELTA)
    assert target - 0.01 <= total.epsilon <= target
    opacus_sigma = get_noise_multiplier(
        target_epsilon=target, target_delta=DELTA, sample_rate=q, steps=steps, accountant="rdp"
    )
    assert sigma > opacus_sigma
    overspent = compose_events(
        [*prior, SubsampledGaussianEvent(opacus_sigma, q, steps)], delta=DELTA
    )
    assert overspent.epsilon > target  # what Opacus's own calibration would have done


def test_calibration_refuses_an_exhausted_budget() -> None:
    with pytest.raises(BudgetExceededError, match="alone cost epsilon=3"):
        noise_multiplier_for_epsilon(
            target_epsilon=2.0,
            delta=DELTA,
            sample_rate=0.01,
            steps=10,
            prior_events=[LaplaceEvent(1.0, 1.0, 3)],
        )


def test_laplace_scale_calibration() -> None:
    scale = laplace_scale_for_epsilon(target_epsilon=0.5, delta=DELTA, sensitivity=2.0)
    assert scale == pytest.approx(4.0, rel=1e-3) and scale >= 4.0
    planned = [LaplaceEvent(1.0, 10.0, 20)]
    scale = laplace_scale_for_epsilon(
        target_epsilon=3.0, delta=DELTA, sensitivity=1.0, count=10, planned_events=planned
    )
    total = compose_events([*planned, LaplaceEvent(1.0, scale, 10)], delta=DELTA).epsilon
    assert 3.0 - 1e-3 <= total <= 3.0


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_opacus_own_calibration_runs_on_our_accountant() -> None:
    """make_private_with_epsilon calls get_noise_multiplier(accountant=<name>), which sets
    ``history`` directly; ours must agree with Opacus's RDP accountant there."""
    from opacus.accountants.utils import get_noise_multiplier

    kwargs = dict(target_epsilon=3.0, target_delta=DELTA, sample_rate=0.02, steps=300)
    ours = get_noise_multiplier(**kwargs, accountant="fedmugrep_rdp", epsilon_tolerance=0.05)
    theirs = get_noise_multiplier(**kwargs, accountant="rdp", epsilon_tolerance=0.05)
    assert ours == pytest.approx(theirs, rel=0.05)

"""Stateful privacy accountants that implement Opacus's ``IAccountant`` interface.

:class:`FedMugRepAccountant` (registered as ``"fedmugrep_rdp"``) composes Laplace releases
with Opacus's DP-SGD steps on one Rényi-DP curve and reports ``min(RDP bound, plain sum)``
(see :mod:`fedmugrep.privacy.analysis.composition`). :class:`BasicCompositionAccountant`
(``"fedmugrep_basic"``) is the pure-ε sum of Laplace releases only.

Both are registered in Opacus's accountant registry on import, so
``PrivacyEngine(accountant="fedmugrep_rdp")`` works once this module is imported::

    import fedmugrep.privacy.accountant  # registers the accountants
    engine = opacus.PrivacyEngine(accountant="fedmugrep_rdp")
    engine.accountant.compose(LaplaceEvent(sensitivity=1.0, scale=10.0))  # earlier release
    model, opt, loader = engine.make_private(..., noise_multiplier=sigma, ...)
    engine.get_epsilon(1e-5)  # covers both the Laplace release and the DP-SGD steps

Use :func:`~fedmugrep.privacy.calibration.noise_multiplier_for_epsilon` to choose ``sigma``:
Opacus's ``make_private_with_epsilon`` ignores what was spent before.

:func:`create_accountant` obtains an accountant from Opacus's registry by name, as Opacus's own
``create_accountant`` does, so whatever class is registered under a fedmugrep name is the one
used; the calibration (:mod:`fedmugrep.privacy.calibration`) and, in a process that has
imported opacus, the ledger (:mod:`fedmugrep.privacy.ledger`) get theirs through it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from opacus.accountants import registry as opacus_registry
from opacus.accountants.accountant import IAccountant
from opacus.accountants.registry import register_accountant

from fedmugrep.errors import ConfigError
from fedmugrep.privacy.analysis.composition import PrivacySpent, compose_events
from fedmugrep.privacy.analysis.rdp import DEFAULT_ORDERS
from fedmugrep.privacy.events import (
    GaussianEvent,
    LaplaceEvent,
    PrivacyEvent,
    SubsampledGaussianEvent,
    UnsupportedEventError,
    event_from_dict,
)

__all__ = [
    "ACCOUNTANTS",
    "BasicCompositionAccountant",
    "FedMugRepAccountant",
    "accountant_from_events",
    "create_accountant",
]


class FedMugRepAccountant(IAccountant):
    """Rényi-DP accountant for Laplace releases and DP-SGD steps (orders up to 4096).

    * Laplace: Mironov 2017, Prop. 6 (snapping-adjusted for events with a bound).
    * Subsampled Gaussian: Mironov, Talwar, Zhang 2019 via Opacus's ``compute_rdp``.
    * Gaussian: Mironov 2017, Prop. 7.
    * RDP → (ε, δ): Canonne–Kamath–Steinke 2020, Prop. 12 (as dp_accounting).
    * Reported ε = ``min(RDP bound, plain sum)``; the plain sum is Σ pure ε of Laplace
      releases plus the Gaussian part's RDP ε, defined only when there is a Laplace event.

    Attributes:
        history: Opacus-format DP-SGD steps ``[(noise_multiplier, sample_rate, steps)]`` (kept
            in that format so Opacus's ``get_noise_multiplier`` and checkpoints work).
        events: every other event composed (Laplace, Gaussian), in order.
        event_positions: for each of ``events``, the length of ``history`` when it was
            composed; :meth:`all_events` interleaves the two lists by it, so the events are
            composed in the order they were given (the order determines the floating-point sums).
        orders: the RDP orders optimised over.
    """

    MECHANISM: ClassVar[str] = "fedmugrep_rdp"
    SUPPORTED: ClassVar[tuple[type[PrivacyEvent], ...]] = (
        LaplaceEvent,
        GaussianEvent,
        SubsampledGaussianEvent,
    )

    def __init__(self, *, orders: Sequence[float] | None = None) -> None:
        super().__init__()
        self.history: list[tuple[float, float, int]] = []
        self.events: list[PrivacyEvent] = []
        self.event_positions: list[int] = []
        self.orders: tuple[float, ...] = tuple(orders) if orders is not None else DEFAULT_ORDERS

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(mechanism={self.mechanism()!r}, steps={self.steps}, "
            f"releases={len(self.events)}, orders={len(self.orders)} up to {max(self.orders):g})"
        )

    # -- composition -------------------------------------------------------------------
    @classmethod
    def supports(cls, event: object) -> bool:
        """Whether :meth:`compose` accepts ``event``."""
        return isinstance(event, cls.SUPPORTED)

    def compose(self, event: PrivacyEvent) -> None:
        """Add one event's cost.

        Raises:
            UnsupportedEventError: :meth:`supports` is false for ``event``; nothing changes.
        """
        if not self.supports(event):
            raise UnsupportedEventError(
                f"{type(self).__name__} cannot account for {type(event).__name__}; "
                f"it supports {', '.join(c.__name__ for c in self.SUPPORTED)}"
            )
        if isinstance(event, SubsampledGaussianEvent):
            self._add_steps(event.noise_multiplier, event.sample_rate, event.steps)
        else:
            self.events.append(event)
            self.event_positions.append(len(self.history))

    def _add_steps(self, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        if self.history and self.history[-1][:2] == (noise_multiplier, sample_rate):
            sigma, q, n = self.history[-1]
            self.history[-1] = (sigma, q, n + steps)
        else:
            self.history.append((noise_multiplier, sample_rate, steps))

    def step(self, *, noise_multiplier: float, sample_rate: float) -> None:
        """Opacus hook: one DP-SGD step (Poisson rate ``sample_rate``, noise ``noise_multiplier``)."""
        self.compose(SubsampledGaussianEvent(noise_multiplier, sample_rate, 1))

    def all_events(self) -> list[PrivacyEvent]:
        """Every composed event, DP-SGD steps included, as fedmugrep event records.

        In composition order: each of ``events`` after the ``history`` entries that existed
        when it was composed (DP-SGD steps merged into an earlier entry stay there, which
        keeps the order in which each distinct event first appeared).
        """
        steps = [SubsampledGaussianEvent(s, q, int(n)) for (s, q, n) in self.history]
        positions = self.event_positions
        if len(positions) != len(self.events):  # ``events`` replaced wholesale: steps last
            positions = [0] * len(self.events)
        out: list[PrivacyEvent] = []
        taken = 0
        for event, position in zip(self.events, positions, strict=True):
            upto = min(position, len(steps))
            out.extend(steps[taken:upto])
            taken = max(taken, upto)
            out.append(event)
        out.extend(steps[taken:])
        return out

    @property
    def steps(self) -> int:
        """Number of DP-SGD steps composed."""
        return int(sum(n for (_, _, n) in self.history))

    # -- reporting ---------------------------------------------------------------------
    def get_privacy_spent(self, *, delta: float) -> PrivacySpent:
        """Full report at ``delta``: reported ε, both bounds and the optimal order."""
        return compose_events(self.all_events(), delta=delta, orders=self.orders)

    def get_epsilon(self, delta: float, *args: Any, **kwargs: Any) -> float:
        """ε spent so far at ``delta`` (``min(RDP, plain sum)``); 0.0 with no events."""
        return self.get_privacy_spent(delta=delta).epsilon

    def __len__(self) -> int:
        """Number of privacy-consuming events: DP-SGD steps plus Laplace/Gaussian releases.

        Counting releases too makes Opacus warn in ``make_private_with_epsilon`` when budget
        was spent on Laplace releases before training.
        """
        releases = sum(getattr(e, "count", 1) for e in self.events)
        return self.steps + int(releases)

    @classmethod
    def mechanism(cls) -> str:
        return cls.MECHANISM

    # -- persistence -------------------------------------------------------------------
    def state_dict(self, destination: Any = None) -> Any:
        """Opacus-style state: ``history``, ``mechanism``, plus ``events``, their positions and
        ``orders``."""
        destination = super().state_dict(destination if destination is not None else OrderedDict())
        destination["events"] = [e.to_dict() for e in self.events]
        destination["event_positions"] = list(self.event_positions)
        destination["orders"] = list(self.orders)
        return destination

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict`; raises ``ValueError`` on a foreign state."""
        super().load_state_dict(state_dict)
        self.history = [(float(s), float(q), int(n)) for (s, q, n) in state_dict["history"]]
        self.events = [event_from_dict(dict(e)) for e in state_dict.get("events", [])]
        positions = state_dict.get("event_positions")
        if positions is None or len(positions) != len(self.events):
            positions = [0] * len(self.events)  # a state without positions: steps last
        self.event_positions = [int(p) for p in positions]
        if "orders" in state_dict:
            self.orders = tuple(float(a) for a in state_dict["orders"])


class BasicCompositionAccountant(FedMugRepAccountant):
    """Pure-ε basic composition of Laplace releases: ε = Σ pure ε, δ-free.

    Supports only :class:`~fedmugrep.privacy.events.LaplaceEvent`; DP-SGD steps raise
    :class:`~fedmugrep.privacy.events.UnsupportedEventError`. Useful as the simplest
    explainable bound and as a second accountant for the contract tests.
    """

    MECHANISM: ClassVar[str] = "fedmugrep_basic"
    SUPPORTED: ClassVar[tuple[type[PrivacyEvent], ...]] = (LaplaceEvent,)

    def get_privacy_spent(self, *, delta: float) -> PrivacySpent:
        total = sum(e.count * e.epsilon for e in self.events if isinstance(e, LaplaceEvent))
        bound = "plain_sum" if self.events else "none"
        plain = float(total) if self.events else None
        return PrivacySpent(float(total), float(delta), float("nan"), plain, float("nan"), bound)


#: fedmugrep's accountants by mechanism name (each also registered with Opacus).
ACCOUNTANTS: dict[str, type[FedMugRepAccountant]] = {
    FedMugRepAccountant.MECHANISM: FedMugRepAccountant,
    BasicCompositionAccountant.MECHANISM: BasicCompositionAccountant,
}


def create_accountant(
    mechanism: str = FedMugRepAccountant.MECHANISM, *, orders: Sequence[float] | None = None
) -> FedMugRepAccountant:
    """A fresh accountant by name, created by Opacus's accountant registry.

    The registry builds whatever class is registered under ``mechanism`` (fedmugrep's own
    unless :func:`opacus.accountants.registry.register_accountant` replaced it).

    Args:
        mechanism: a fedmugrep accountant name (a key of :data:`ACCOUNTANTS`).
        orders: RDP orders to optimise over (``None``: the accountant's default).

    Raises:
        ConfigError: the name is unknown (the message lists the valid names), or the class
            registered under it is not a :class:`FedMugRepAccountant`.
    """
    if mechanism not in ACCOUNTANTS:
        raise ConfigError(f"unknown accountant {mechanism!r}; choose one of {sorted(ACCOUNTANTS)}")
    accountant = opacus_registry.create_accountant(mechanism)
    if not isinstance(accountant, FedMugRepAccountant):
        raise ConfigError(
            f"Opacus's accountant registry maps {mechanism!r} to {type(accountant).__name__}, "
            "which cannot compose fedmugrep events; register a FedMugRepAccountant subclass "
            f"with opacus.accountants.registry.register_accountant({mechanism!r}, ..., force=True)"
        )
    if orders is not None:
        accountant.orders = tuple(orders)
    return accountant


def accountant_from_events(
    events: Iterable[PrivacyEvent],
    mechanism: str = FedMugRepAccountant.MECHANISM,
    *,
    orders: Sequence[float] | None = None,
) -> FedMugRepAccountant:
    """A new accountant (from :func:`create_accountant`) that has composed ``events``."""
    acc = create_accountant(mechanism, orders=orders)
    for event in events:
        acc.compose(event)
    return acc


for _name, _cls in ACCOUNTANTS.items():
    # force=True: re-importing (e.g. importlib.reload) must not fail on "already registered".
    register_accountant(_name, _cls, force=True)

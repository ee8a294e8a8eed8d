"""Composition of privacy events into one (ε, δ) figure. Pure functions, no state.

Two sound bounds are computed and the smaller is reported:

* **RDP**: the events' RDP curves are added order by order and converted with
  :func:`~fedmugrep.privacy.analysis.rdp.rdp_to_epsilon`.
* **Plain sum** (basic composition): the pure ε of every Laplace release added up, plus —
  when Gaussian events are present — the RDP-converted ε of the Gaussian part alone at the
  full δ. For few Laplace releases this is tighter than RDP (whose conversion always pays a
  ``log(1/δ)/(α-1)`` term). With only Gaussian events it equals the RDP bound, so it is
  reported as ``None``.

Snapped Laplace releases (events with a ``bound``) are charged Mironov's slightly larger
pure ε' in the plain sum; in the RDP curve they are charged the ideal Laplace curve plus
``(2α-1)/(α-1) · (ε' - ε)`` and never more than ε' (an ε'-DP mechanism is (α, ε')-RDP).
The additive term follows from Mironov's proof that each snapped output's probability is
within ``exp(±(ε' - ε))`` of the ideal mechanism's (a conservative reading: the proof's
per-side error is half of that).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fedmugrep.privacy.analysis.rdp import (
    DEFAULT_ORDERS,
    gaussian_rdp,
    laplace_rdp,
    rdp_to_epsilon,
    subsampled_gaussian_rdp,
)
from fedmugrep.privacy.events import (
    GaussianEvent,
    LaplaceEvent,
    PrivacyEvent,
    SubsampledGaussianEvent,
    UnsupportedEventError,
)

__all__ = ["PrivacySpent", "compose_events", "event_rdp", "plain_sum_epsilon"]

_SUPPORTED = (LaplaceEvent, GaussianEvent, SubsampledGaussianEvent)


@dataclass(frozen=True)
class PrivacySpent:
    """The cost of a set of events at one δ.

    Attributes:
        epsilon: the reported ε: ``min(rdp_epsilon, plain_sum_epsilon)``.
        delta: the δ it holds at.
        rdp_epsilon: ε from the RDP curve.
        plain_sum_epsilon: ε from basic composition, ``None`` without Laplace events.
        optimal_order: the RDP order achieving ``rdp_epsilon`` (``nan`` when undefined).
        bound: ``"rdp"`` or ``"plain_sum"`` — which one was reported (``"none"`` if empty).
    """

    epsilon: float
    delta: float
    rdp_epsilon: float
    plain_sum_epsilon: float | None
    optimal_order: float
    bound: str


def _check_supported(event: object) -> None:
    if not isinstance(event, _SUPPORTED):
        raise UnsupportedEventError(
            f"cannot account for {type(event).__name__}; supported events are "
            f"{', '.join(c.__name__ for c in _SUPPORTED)} (fedmugrep.privacy.events)"
        )


def event_rdp(event: PrivacyEvent, orders: Sequence[float] = DEFAULT_ORDERS) -> np.ndarray:
    """RDP curve of one event (all its ``count``/``steps`` repetitions included).

    Raises:
        UnsupportedEventError: ``event`` is not a fedmugrep event this module understands.
    """
    _check_supported(event)
    if isinstance(event, LaplaceEvent):
        curve = laplace_rdp(orders, event.noise_ratio)
        if event.bound is not None:
            a = np.asarray(orders, dtype=np.float64)
            charged = event.epsilon
            excess = charged - event.ideal_epsilon
            curve = np.minimum(curve + (2.0 * a - 1.0) / (a - 1.0) * excess, charged)
        return event.count * curve
    if isinstance(event, GaussianEvent):
        return event.count * gaussian_rdp(orders, event.noise_multiplier)
    assert isinstance(event, SubsampledGaussianEvent)
    with np.errstate(invalid="ignore"):
        return event.steps * subsampled_gaussian_rdp(
            orders, sample_rate=event.sample_rate, noise_multiplier=event.noise_multiplier
        )


def plain_sum_epsilon(
    events: Iterable[PrivacyEvent], delta: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> float | None:
    """Basic-composition ε: Σ pure ε of Laplace releases (+ RDP ε of the Gaussian part at δ).

    Returns:
        ``None`` when there is no Laplace event (the bound would equal the RDP bound).
    """
    laplace = 0.0
    gaussian_rdp_total = np.zeros(len(orders))
    has_laplace = has_gaussian = False
    for event in _grouped(events):
        _check_supported(event)
        if isinstance(event, LaplaceEvent):
            laplace += event.count * event.epsilon
            has_laplace = True
        else:
            gaussian_rdp_total = gaussian_rdp_total + event_rdp(event, orders)
            has_gaussian = True
    if not has_laplace:
        return None
    if has_gaussian:
        gaussian_eps, _ = rdp_to_epsilon(orders, gaussian_rdp_total, delta)
        return laplace + gaussian_eps
    return laplace


def _grouped(events: Iterable[PrivacyEvent]) -> list[PrivacyEvent]:
    """Merge identical events (same parameters) by adding counts, so curves are computed once."""
    counts: Counter[tuple] = Counter()
    order: dict[tuple, PrivacyEvent] = {}
    merged: list[PrivacyEvent] = []
    for event in events:
        _check_supported(event)
        if isinstance(event, LaplaceEvent):
            key = ("l", event.sensitivity, event.scale, event.bound, event.dimension)
            counts[key] += event.count
        elif isinstance(event, GaussianEvent):
            key = ("g", event.noise_multiplier)
            counts[key] += event.count
        else:
            assert isinstance(event, SubsampledGaussianEvent)
            key = ("s", event.noise_multiplier, event.sample_rate)
            counts[key] += event.steps
        order.setdefault(key, event)
    for key, event in order.items():
        n = counts[key]
        if isinstance(event, LaplaceEvent):
            merged.append(
                LaplaceEvent(event.sensitivity, event.scale, n, event.bound, event.dimension)
            )
        elif isinstance(event, GaussianEvent):
            merged.append(GaussianEvent(event.noise_multiplier, n))
        else:
            assert isinstance(event, SubsampledGaussianEvent)
            merged.append(SubsampledGaussianEvent(event.noise_multiplier, event.sample_rate, n))
    return merged


def compose_events(
    events: Iterable[PrivacyEvent], *, delta: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> PrivacySpent:
    """Total cost of ``events`` at ``delta``: the smaller of the RDP and plain-sum bounds.

    Args:
        events: fedmugrep events (any order; identical ones are merged).
        delta: target δ in [0, 1).
        orders: RDP orders to optimise over.

    Returns:
        :class:`PrivacySpent`; ε = 0 for no events.

    Raises:
        UnsupportedEventError: an event is not a supported fedmugrep event.
    """
    merged = _grouped(events)
    if not merged:
        return PrivacySpent(0.0, float(delta), 0.0, None, math.nan, "none")
    total = np.zeros(len(orders))
    for event in merged:
        total = total + event_rdp(event, orders)
    rdp_eps, order = rdp_to_epsilon(orders, total, delta)
    plain = plain_sum_epsilon(merged, delta, orders)
    if plain is not None and plain < rdp_eps:
        return PrivacySpent(plain, float(delta), rdp_eps, plain, order, "plain_sum")
    return PrivacySpent(rdp_eps, float(delta), rdp_eps, plain, order, "rdp")

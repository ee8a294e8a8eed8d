"""Choose noise for a target ε *given everything else that is spent or planned*.

Opacus's ``make_private_with_epsilon`` calibrates the DP-SGD noise as if training were the only
release; here earlier Laplace releases (``prior_events``, e.g. an accountant's or ledger's
history) and planned ones (``planned_events``, e.g. the per-round noised representations)
are composed with the candidate noise on the same RDP curve, so the *total* stays within the
target.

Each candidate is costed by the accountant registered with Opacus under
:data:`CALIBRATION_ACCOUNTANT` (created through Opacus's registry by
:func:`~fedmugrep.privacy.accountant.create_accountant`, as Opacus's own
``get_noise_multiplier`` does): it composes the events and reports ε at δ.

Example::

    sigma = noise_multiplier_for_epsilon(
        target_epsilon=8.0, delta=1e-5, sample_rate=0.01, steps=1000,
        prior_events=accountant.all_events(),
        planned_events=[LaplaceEvent(sensitivity=1.0, scale=10.0, count=20)],
    )
    engine.make_private(..., noise_multiplier=sigma, ...)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from fedmugrep.errors import BudgetExceededError, PrivacyParameterError
from fedmugrep.privacy.accountant import FedMugRepAccountant, accountant_from_events
from fedmugrep.privacy.analysis.rdp import DEFAULT_ORDERS
from fedmugrep.privacy.events import LaplaceEvent, PrivacyEvent, SubsampledGaussianEvent

__all__ = ["CALIBRATION_ACCOUNTANT", "laplace_scale_for_epsilon", "noise_multiplier_for_epsilon"]

#: Name, in Opacus's accountant registry, of the accountant that costs each candidate noise.
CALIBRATION_ACCOUNTANT = FedMugRepAccountant.MECHANISM

_MAX_NOISE = 1e6


def _check_target(target_epsilon: float, delta: float, tolerance: float) -> None:
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise PrivacyParameterError(
            f"target_epsilon must be > 0 (got {target_epsilon}); pass a positive value"
        )
    if not (0 <= delta < 1):
        raise PrivacyParameterError(f"delta must be in [0, 1) (got {delta}); pass e.g. 1e-5")
    if not (tolerance > 0):
        raise PrivacyParameterError(f"tolerance must be > 0 (got {tolerance}); pass e.g. 0.01")


def _bisect(
    cost: Callable[[float], float],
    *,
    target: float,
    tolerance: float,
    start: float,
    what: str,
) -> float:
    """Smallest noise (to ``tolerance`` in ε) with ``cost(noise) <= target``; cost decreasing."""
    high = start
    eps_high = cost(high)
    while eps_high > target:
        high *= 2.0
        if high > _MAX_NOISE:
            raise BudgetExceededError(
                f"no {what} <= {_MAX_NOISE:g} reaches target epsilon {target} "
                f"(smallest reachable is about {eps_high:.4g}); raise the target or plan fewer releases"
            )
        eps_high = cost(high)
    low = 0.0
    for _ in range(200):
        if target - eps_high <= tolerance or high - low <= 1e-9 * high:
            break
        mid = 0.5 * (low + high)
        eps_mid = cost(mid)
        if eps_mid <= target:
            high, eps_high = mid, eps_mid
        else:
            low = mid
    return high


def _base_epsilon(events: list[PrivacyEvent], delta: float, orders: Sequence[float]) -> float:
    """ε at ``delta`` of ``events``, from a fresh registered accountant that composed them."""
    accountant = accountant_from_events(events, CALIBRATION_ACCOUNTANT, orders=orders)
    return accountant.get_epsilon(delta)


def noise_multiplier_for_epsilon(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    prior_events: Iterable[PrivacyEvent] = (),
    planned_events: Iterable[PrivacyEvent] = (),
    tolerance: float = 0.01,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> float:
    """DP-SGD noise multiplier so that prior + planned + training costs at most ``target_epsilon``.

    Args:
        target_epsilon: total ε allowed at ``delta`` (> 0).
        delta: δ of the target.
        sample_rate: Poisson sampling rate of each step (batch size / dataset size).
        steps: number of DP-SGD steps planned.
        prior_events: events already spent (e.g. ``accountant.all_events()``).
        planned_events: other releases planned alongside training.
        tolerance: the returned σ gives ε in ``[target - tolerance, target]`` (absolute).
        orders: RDP orders.

    Returns:
        The noise multiplier σ (smallest found within tolerance).

    Raises:
        BudgetExceededError: prior + planned releases alone already reach the target.
    """
    _check_target(target_epsilon, delta, tolerance)
    base = list(prior_events) + list(planned_events)
    spent = _base_epsilon(base, delta, orders)
    if spent >= target_epsilon:
        raise BudgetExceededError(
            f"the prior and planned releases alone cost epsilon={spent:.4g} >= target "
            f"{target_epsilon}; nothing is left for training: raise the target or release less"
        )
    probe = SubsampledGaussianEvent(1.0, sample_rate, steps)  # validates sample_rate/steps

    def cost(sigma: float) -> float:
        if sigma <= 0:
            return math.inf
        event = SubsampledGaussianEvent(sigma, probe.sample_rate, probe.steps)
        return _base_epsilon([*base, event], delta, orders)

    return _bisect(
        cost, target=target_epsilon, tolerance=tolerance, start=1.0, what="noise multiplier"
    )


def laplace_scale_for_epsilon(
    *,
    target_epsilon: float,
    delta: float,
    sensitivity: float,
    count: int = 1,
    bound: float | None = None,
    dimension: int = 1,
    prior_events: Iterable[PrivacyEvent] = (),
    planned_events: Iterable[PrivacyEvent] = (),
    tolerance: float = 1e-3,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> float:
    """Laplace scale for ``count`` releases so the total cost is at most ``target_epsilon``.

    With no prior/planned events and ``count=1`` this is ``sensitivity / target_epsilon``
    (slightly more with snapping: give ``bound`` and the release's ``dimension``).
    Sensitivity is the L1 sensitivity of each release.

    Raises:
        BudgetExceededError: prior + planned releases alone already reach the target.
    """
    _check_target(target_epsilon, delta, tolerance)
    probe = LaplaceEvent(sensitivity, 1.0, count)
    base = list(prior_events) + list(planned_events)
    spent = _base_epsilon(base, delta, orders)
    if spent >= target_epsilon:
        raise BudgetExceededError(
            f"the prior and planned releases alone cost epsilon={spent:.4g} >= target "
            f"{target_epsilon}; raise the target or release less"
        )

    def cost(scale: float) -> float:
        if scale <= 0:
            return math.inf
        if bound is not None and bound >= 2.0**46 * scale:
            return math.inf
        event = LaplaceEvent(probe.sensitivity, scale, count, bound, dimension)
        return _base_epsilon([*base, event], delta, orders)

    return _bisect(
        cost,
        target=target_epsilon,
        tolerance=tolerance,
        start=max(probe.sensitivity / target_epsilon, 1e-12),
        what="Laplace scale",
    )

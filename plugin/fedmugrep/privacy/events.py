"""Immutable records of privacy-consuming releases, consumed by accountants and the ledger.

Modelled on Google ``dp_accounting``'s ``DpEvent`` family: an event says *what* was released
(mechanism and its noise parameters), never *what value*; accountants turn events into a
privacy cost and say whether they :meth:`support <fedmugrep.privacy.accountant.FedMugRepAccountant.supports>`
an event before composing it.

Neighbouring relation everywhere: add or remove one transaction record (ARCHITECTURE §3).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from fedmugrep.errors import FedMugRepError, PrivacyParameterError

__all__ = [
    "EVENT_TYPES",
    "GaussianEvent",
    "LaplaceEvent",
    "PrivacyEvent",
    "SubsampledGaussianEvent",
    "UnsupportedEventError",
    "event_from_dict",
    "snapping_epsilon",
]

#: Mironov (2012), Theorem 1 charges an extra ``2**-49 * B / lambda`` for the snapping
#: mechanism (sensitivity-1 units). We double it to also cover the rounding of the
#: normalisation ``f / sensitivity`` (see :func:`snapping_epsilon`).
SNAPPING_SLACK = 2.0**-48
#: Mironov (2012) proves the snapping bound only when ``B < 2**46 * lambda``.
SNAPPING_MAX_BOUND_RATIO = 2.0**46


class UnsupportedEventError(FedMugRepError, TypeError):
    """An accountant was given an event it cannot account for; nothing was composed."""


def _check_positive(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise PrivacyParameterError(
            f"{name} must be a number > 0 (got {value!r}); pass a positive value"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise PrivacyParameterError(f"{name} must be > 0 (got {value}); pass a positive value")
    return value


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PrivacyParameterError(
            f"{name} must be an integer >= 1 (got {value!r}); pass a positive count"
        )
    return value


def snapping_epsilon(
    *, sensitivity: float, scale: float, bound: float, dimension: int = 1
) -> float:
    """Pure epsilon charged for one snapped Laplace release (Mironov 2012, Theorem 1).

    In sensitivity-1 units (``lambda = scale / sensitivity``, ``B' = bound / sensitivity``)
    Mironov's snapping mechanism ``clamp_B(round_Lambda(clamp_B(x) + S * lambda * ln U*))``
    is ``(1/lambda + 2**-49 * B'/lambda)``-DP for ``lambda < B' < 2**46 * lambda``; the proof's
    sharper form is ``(1 + 12 B' eta)/lambda + 2 eta`` with ``eta = 2**-53``: the ideal
    ``|x - x'|/lambda`` plus a floating-point term that does not shrink with ``|x - x'|``. A
    vector release pays that term once per coordinate, so we charge

    ``eps' = sensitivity/scale + dimension * 2**-48 * max(bound, scale) / scale``

    which, per coordinate, dominates the sharper form for every ``B'`` (also ``B' <= lambda``)
    with room for the rounding of ``x / sensitivity`` (at most ``2 eta B'`` per coordinate).
    The excess over ``sensitivity/scale`` is tiny: ``3.6e-15 * bound/scale`` per coordinate.

    Args:
        sensitivity: L1 sensitivity of the released statistic (> 0).
        scale: Laplace scale ``b`` (> 0).
        bound: declared bound ``B`` on every coordinate's ``|value|`` (> 0).
        dimension: number of coordinates released together (>= 1).

    Returns:
        The pure epsilon to charge; slightly larger than ``sensitivity / scale``.

    Raises:
        PrivacyParameterError: a parameter is not positive, or ``bound >= 2**46 * scale``
            (floating point cannot hide the input at that ratio).
    """
    sensitivity = _check_positive("sensitivity", sensitivity)
    scale = _check_positive("scale", scale)
    bound = _check_positive("bound", bound)
    dimension = _check_count("dimension", dimension)
    if bound >= SNAPPING_MAX_BOUND_RATIO * scale:
        raise PrivacyParameterError(
            f"bound must be < 2**46 * scale for the snapping mechanism (got bound={bound}, "
            f"scale={scale}); use a smaller bound or more noise"
        )
    return sensitivity / scale + dimension * SNAPPING_SLACK * max(bound, scale) / scale


class PrivacyEvent:
    """Base class of the event records (all are frozen dataclasses)."""

    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with a ``kind`` tag; inverse of :func:`event_from_dict`."""
        out: dict[str, Any] = {"kind": self.kind}
        out.update(asdict(self))  # type: ignore[call-overload]
        return out


@dataclass(frozen=True)
class LaplaceEvent(PrivacyEvent):
    """``count`` releases of the Laplace mechanism with L1 sensitivity and scale.

    Each release adds independent ``Laplace(0, scale)`` noise to every coordinate of a
    statistic whose L1 sensitivity is ``sensitivity``; ``noise_ratio = scale/sensitivity``
    is dp_accounting's ``LaplaceDpEvent.noise_multiplier``. Pure DP: ``epsilon = 1/noise_ratio``
    per release. When ``bound`` is set, the release used the snapping mechanism on
    ``dimension`` coordinates and costs :func:`snapping_epsilon` instead.

    Attributes:
        sensitivity: L1 sensitivity Δf (> 0).
        scale: Laplace scale b (> 0).
        count: number of identical releases (>= 1).
        bound: clamp bound B of the snapping mechanism, or ``None`` for an ideal
            real-valued Laplace mechanism (analysis only).
        dimension: coordinates per release (matters only with ``bound``).
    """

    sensitivity: float
    scale: float
    count: int = 1
    bound: float | None = None
    dimension: int = 1

    kind: ClassVar[str] = "laplace"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sensitivity", _check_positive("sensitivity", self.sensitivity))
        object.__setattr__(self, "scale", _check_positive("scale", self.scale))
        _check_count("count", self.count)
        _check_count("dimension", self.dimension)
        if self.bound is not None:
            object.__setattr__(self, "bound", _check_positive("bound", self.bound))
            self.epsilon  # noqa: B018 - validates bound against scale

    @property
    def noise_ratio(self) -> float:
        """``scale / sensitivity``: the ideal mechanism is ``1/noise_ratio``-DP."""
        return self.scale / self.sensitivity

    @property
    def ideal_epsilon(self) -> float:
        """Pure epsilon of one ideal (real-valued) release: ``sensitivity / scale``."""
        return self.sensitivity / self.scale

    @property
    def epsilon(self) -> float:
        """Pure epsilon charged per release (snapping-adjusted when ``bound`` is set)."""
        if self.bound is None:
            return self.ideal_epsilon
        return snapping_epsilon(
            sensitivity=self.sensitivity,
            scale=self.scale,
            bound=self.bound,
            dimension=self.dimension,
        )


@dataclass(frozen=True)
class GaussianEvent(PrivacyEvent):
    """``count`` releases of the Gaussian mechanism, noise std = ``noise_multiplier`` × L2 sensitivity.

    RDP (Mironov 2017, Prop. 7): ``eps(alpha) = alpha / (2 sigma**2)`` per release.
    """

    noise_multiplier: float
    count: int = 1

    kind: ClassVar[str] = "gaussian"

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "noise_multiplier", _check_positive("noise_multiplier", self.noise_multiplier)
        )
        _check_count("count", self.count)


@dataclass(frozen=True)
class SubsampledGaussianEvent(PrivacyEvent):
    """``steps`` DP-SGD steps: Poisson sampling at ``sample_rate``, then the Gaussian mechanism.

    RDP from Mironov, Talwar & Zhang (2019) as computed by
    ``opacus.accountants.analysis.rdp.compute_rdp``.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int = 1

    kind: ClassVar[str] = "subsampled_gaussian"

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "noise_multiplier", _check_positive("noise_multiplier", self.noise_multiplier)
        )
        rate = _check_positive("sample_rate", self.sample_rate)
        if rate > 1:
            raise PrivacyParameterError(
                f"sample_rate must be in (0, 1] (got {rate}); pass batch_size / dataset_size"
            )
        object.__setattr__(self, "sample_rate", rate)
        _check_count("steps", self.steps)


EVENT_TYPES: dict[str, type[PrivacyEvent]] = {
    cls.kind: cls for cls in (LaplaceEvent, GaussianEvent, SubsampledGaussianEvent)
}


def event_from_dict(data: dict[str, Any]) -> PrivacyEvent:
    """Rebuild an event from :meth:`PrivacyEvent.to_dict` output.

    Raises:
        UnsupportedEventError: the ``kind`` tag names no known event type.
    """
    fields = dict(data)
    kind = fields.pop("kind", None)
    cls = EVENT_TYPES.get(str(kind))
    if cls is None:
        raise UnsupportedEventError(
            f"unknown privacy event kind {kind!r}; expected one of {sorted(EVENT_TYPES)}"
        )
    return cls(**fields)

"""Rényi-DP curves and the RDP → (ε, δ) conversion. Pure functions, no state.

All curves are for the add-or-remove-one neighbouring relation and are evaluated on a grid
of orders ``alpha > 1`` (:data:`DEFAULT_ORDERS`). Composition is addition of curves.

References:
    Mironov, "Rényi Differential Privacy", CSF 2017 (Prop. 6: Laplace; Prop. 7: Gaussian).
    Mironov, Talwar, Zhang, "Rényi Differential Privacy of the Sampled Gaussian Mechanism",
    2019 (computed here by ``opacus.accountants.analysis.rdp.compute_rdp``).
    Canonne, Kamath, Steinke, "The Discrete Gaussian for Differential Privacy", 2020,
    Prop. 12; Balle et al., "Hypothesis Testing Interpretations and Rényi DP", 2020, Thm. 21
    (the conversion, identical to ``dp_accounting.rdp.compute_epsilon``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from fedmugrep.errors import PrivacyParameterError

__all__ = [
    "DEFAULT_ORDERS",
    "MAX_SUBSAMPLED_GAUSSIAN_ORDER",
    "gaussian_rdp",
    "laplace_rdp",
    "laplace_rdp_reference",
    "rdp_to_delta",
    "rdp_to_epsilon",
    "subsampled_gaussian_rdp",
]


def _default_orders() -> tuple[float, ...]:
    dp_accounting = [1 + x / 10.0 for x in range(1, 100)] + [128, 256, 512, 1024]
    fractional = [1.0 + x / 20.0 for x in range(1, 200)]  # 1.05, 1.10, ..., 10.95
    integer = list(range(11, 64)) + list(range(64, 256, 4)) + list(range(256, 1025, 32))
    large = [1536, 2048, 4096]
    return tuple(sorted({float(a) for a in dp_accounting + fractional + integer + large}))


#: Dense grid of RDP orders: every order of dp_accounting's default list
#: (1.1..10.9 by 0.1, 11..63, 128, 256, 512, 1024) plus steps of 0.05 below 11, steps of
#: 4 up to 256, 32 up to 1024, and 1536/2048/4096 (useful for few Laplace releases).
DEFAULT_ORDERS: tuple[float, ...] = _default_orders()

#: Opacus's subsampled-Gaussian computation overflows (NaN) above about order 1024; we treat
#: larger orders as unusable (+inf) for that curve, which is sound.
MAX_SUBSAMPLED_GAUSSIAN_ORDER = 1024.0


def _orders_array(orders: Sequence[float]) -> np.ndarray:
    arr = np.asarray(orders, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(arr > 1.0) or not np.all(np.isfinite(arr)):
        raise PrivacyParameterError(
            "orders must be a non-empty 1-D sequence of finite numbers > 1 "
            f"(got {list(np.atleast_1d(arr))[:5]}...); use DEFAULT_ORDERS"
        )
    return arr


def laplace_rdp(orders: Sequence[float], noise_ratio: float) -> np.ndarray:
    """RDP curve of one Laplace release (Mironov 2017, Prop. 6).

    With ``b = scale / sensitivity`` (``noise_ratio``) and order ``alpha > 1``::

        eps(alpha) = 1/(alpha-1) * log( alpha/(2alpha-1) * exp((alpha-1)/b)
                                        + (alpha-1)/(2alpha-1) * exp(-alpha/b) )

    evaluated in the algebraically equal, overflow-free form
    ``1/b + log1p((alpha-1)/(2alpha-1) * expm1(-(2alpha-1)/b)) / (alpha-1)``.
    Tight for a scalar statistic; for a vector with L1 sensitivity Δ the same curve bounds
    the release because the curve is superadditive in ``1/b`` (tested), the convention
    dp_accounting's ``LaplaceDpEvent`` uses too.

    Args:
        orders: RDP orders, each > 1.
        noise_ratio: ``scale / sensitivity`` (> 0).

    Returns:
        Array of RDP epsilons, one per order.
    """
    if not (math.isfinite(noise_ratio) and noise_ratio > 0):
        raise PrivacyParameterError(
            f"noise_ratio must be > 0 (got {noise_ratio}); pass scale / sensitivity"
        )
    a = _orders_array(orders)
    eps = 1.0 / noise_ratio
    c = np.expm1(-(2.0 * a - 1.0) * eps) / (2.0 * a - 1.0)  # in (-1/(2a-1), 0)
    x = (a - 1.0) * c  # in (-1/2, 0)
    safe_x = np.where(x == 0.0, -1.0, x)
    log1p_over_x = np.where(x == 0.0, 1.0, np.log1p(safe_x) / safe_x)
    return eps + c * log1p_over_x


def laplace_rdp_reference(order: float, noise_ratio: float) -> float:
    """Mironov 2017 Prop. 6 exactly as printed (may overflow); used to test :func:`laplace_rdp`."""
    a, b = float(order), float(noise_ratio)
    inner = a / (2 * a - 1) * math.exp((a - 1) / b) + (a - 1) / (2 * a - 1) * math.exp(-a / b)
    return math.log(inner) / (a - 1)


def gaussian_rdp(orders: Sequence[float], noise_multiplier: float) -> np.ndarray:
    """RDP curve of one Gaussian release: ``alpha / (2 sigma**2)`` (Mironov 2017, Prop. 7)."""
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise PrivacyParameterError(
            f"noise_multiplier must be > 0 (got {noise_multiplier}); pass a positive value"
        )
    return _orders_array(orders) / (2.0 * noise_multiplier**2)


@lru_cache(maxsize=256)
def _subsampled_gaussian_rdp_cached(
    sample_rate: float, noise_multiplier: float, orders: tuple[float, ...]
) -> np.ndarray:
    # Imported here: importing opacus pulls in torch (seconds), which processes that only
    # account for Laplace releases (e.g. the ledger) should not pay.
    from opacus.accountants.analysis.rdp import compute_rdp

    out = np.full(len(orders), np.inf)
    usable = [i for i, a in enumerate(orders) if a <= MAX_SUBSAMPLED_GAUSSIAN_ORDER]
    if usable:
        vals = compute_rdp(
            q=sample_rate,
            noise_multiplier=noise_multiplier,
            steps=1,
            orders=[orders[i] for i in usable],
        )
        vals = np.where(np.isnan(vals), np.inf, np.asarray(vals, dtype=np.float64))
        out[usable] = vals
    out.setflags(write=False)
    return out


def subsampled_gaussian_rdp(
    orders: Sequence[float], *, sample_rate: float, noise_multiplier: float
) -> np.ndarray:
    """RDP curve of one Poisson-subsampled Gaussian step (DP-SGD).

    Computed by ``opacus.accountants.analysis.rdp.compute_rdp`` (Mironov, Talwar, Zhang
    2019); orders above :data:`MAX_SUBSAMPLED_GAUSSIAN_ORDER` and any NaN become ``+inf``
    (never used by the conversion). Cached per ``(sample_rate, noise_multiplier, orders)``.

    Returns:
        Array of RDP epsilons of *one* step, one per order.
    """
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise PrivacyParameterError(
            f"noise_multiplier must be > 0 (got {noise_multiplier}); pass a positive value"
        )
    if not (0 < sample_rate <= 1):
        raise PrivacyParameterError(
            f"sample_rate must be in (0, 1] (got {sample_rate}); pass batch_size / dataset_size"
        )
    key = tuple(float(a) for a in _orders_array(orders))
    return np.array(
        _subsampled_gaussian_rdp_cached(float(sample_rate), float(noise_multiplier), key)
    )


def rdp_to_epsilon(
    orders: Sequence[float], rdp: Sequence[float], delta: float
) -> tuple[float, float]:
    """Smallest ε such that the RDP curve implies (ε, δ)-DP; also the order that achieves it.

    Per order (Canonne–Kamath–Steinke 2020, Prop. 12; Balle et al. 2020, Thm. 21)::

        eps = rdp + log1p(-1/alpha) - log(delta * alpha) / (alpha - 1)

    used for ``alpha > 1.01`` exactly as ``dp_accounting.rdp.compute_epsilon`` does, plus its
    KL shortcut (ε = 0 when ``delta**2 + expm1(-rdp) > 0``).

    Args:
        orders: RDP orders.
        rdp: RDP epsilons at those orders (``inf`` allowed).
        delta: target δ in [0, 1).

    Returns:
        ``(epsilon, optimal_order)``; ``(inf, nan)`` when no order gives a finite bound.
    """
    a = _orders_array(orders)
    r = np.asarray(rdp, dtype=np.float64)
    if r.shape != a.shape:
        raise PrivacyParameterError(
            f"rdp must have one value per order (got {r.shape} for {a.shape} orders)"
        )
    if not (0 <= delta < 1):
        raise PrivacyParameterError(f"delta must be in [0, 1) (got {delta}); pass e.g. 1e-5")
    if delta == 0:
        if np.all(r <= 0):
            return 0.0, float(a[0])
        return math.inf, math.nan
    r = np.maximum(r, 0.0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        eps = r + np.log1p(-1.0 / a) - np.log(delta * a) / (a - 1.0)
        eps = np.where(a > 1.01, eps, np.inf)
        kl_zero = delta**2 + np.expm1(-r) > 0
        eps = np.where(kl_zero, 0.0, eps)
        eps = np.where(np.isnan(eps), np.inf, eps)
    idx = int(np.argmin(eps))
    if not math.isfinite(eps[idx]):
        return math.inf, math.nan
    return max(0.0, float(eps[idx])), float(a[idx])


def rdp_to_delta(
    orders: Sequence[float], rdp: Sequence[float], epsilon: float
) -> tuple[float, float]:
    """Smallest δ such that the RDP curve implies (ε, δ)-DP (same bound as :func:`rdp_to_epsilon`).

    Returns:
        ``(delta, optimal_order)``.
    """
    a = _orders_array(orders)
    r = np.maximum(np.asarray(rdp, dtype=np.float64), 0.0)
    if r.shape != a.shape:
        raise PrivacyParameterError(
            f"rdp must have one value per order (got {r.shape} for {a.shape} orders)"
        )
    if not (epsilon >= 0):
        raise PrivacyParameterError(f"epsilon must be >= 0 (got {epsilon}); pass e.g. 1.0")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        kl = np.where(r == 0, -np.inf, 0.5 * np.log1p(-np.exp(-r)))
        bound = (a - 1.0) * (r - epsilon + np.log1p(-1.0 / a)) - np.log(a)
        logdelta = np.where(a > 1.01, np.minimum(kl, bound), kl)
        logdelta = np.where(np.isnan(logdelta), np.inf, logdelta)
    idx = int(np.argmin(logdelta))
    return min(1.0, math.exp(min(0.0, float(logdelta[idx])))), float(a[idx])

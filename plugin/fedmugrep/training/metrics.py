"""Valuation metrics on log-price Gaussians.

The point valuation is the median of the predicted log-normal, ``exp(mu)``; the 80%
interval is ``exp(mu +/- 1.2816 sigma)``.
"""

from __future__ import annotations

import numpy as np

Z80 = 1.2815515655446004  # Phi^-1(0.9)

#: Largest |log price| a price bound is computed from: exp(700) is ~1e304, still a float. A model
#: far off (e.g. a noisy private one) can predict a log-sigma whose 80 % bounds overflow.
_LOG_BOUND = 700.0


def bounded_exp(x: np.ndarray | float) -> np.ndarray:
    """``exp(x)`` with ``x`` clipped to ``[-700, 700]``: finite and positive (no overflow to
    inf, no underflow to 0), so interval bounds stay usable for a log or a ratio."""
    return np.exp(np.clip(np.asarray(x, dtype=np.float64), -_LOG_BOUND, _LOG_BOUND))


def point_metrics(price: np.ndarray, pred_price: np.ndarray) -> dict[str, float]:
    """MAE, MAPE, RMSE (currency) and MAE on log-price of point predictions.

    Shapes:
        price, pred_price ``[n]`` -> scalars.
    """
    price = np.asarray(price, dtype=np.float64)
    pred_price = np.asarray(pred_price, dtype=np.float64)
    err = pred_price - price
    return {
        "mae": float(np.mean(np.abs(err))),
        "mape": float(np.mean(np.abs(err) / price)),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae_log": float(np.mean(np.abs(np.log(pred_price) - np.log(price)))),
        "n": int(price.size),
    }


def distribution_metrics(
    price: np.ndarray, mu_log: np.ndarray, sigma_log: np.ndarray
) -> dict[str, float]:
    """Point metrics of ``exp(mu)`` plus ``coverage80`` and mean interval width (relative).

    Shapes:
        price, mu_log, sigma_log ``[n]`` -> scalars.
    """
    out = point_metrics(price, np.exp(mu_log))
    y = np.log(np.asarray(price, dtype=np.float64))
    out["coverage80"] = float(np.mean(np.abs(y - mu_log) <= Z80 * sigma_log))
    half = Z80 * np.asarray(sigma_log, dtype=np.float64)
    out["interval80_rel_width"] = float(np.mean(bounded_exp(half) - bounded_exp(-half)))
    return out

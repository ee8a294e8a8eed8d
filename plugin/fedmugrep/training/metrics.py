"""Valuation metrics on log-price Gaussians.

The point valuation is the median of the predicted log-normal, ``exp(mu)``; the 80%
interval is ``exp(mu +/- 1.2816 sigma)``.
"""

from __future__ import annotations

import numpy as np

Z80 = 1.2815515655446004  # Phi^-1(0.9)


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
    out["interval80_rel_width"] = float(np.mean(np.exp(Z80 * sigma_log) - np.exp(-Z80 * sigma_log)))
    return out

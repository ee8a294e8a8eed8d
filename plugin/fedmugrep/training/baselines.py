"""Baselines on the same split and features: ridge, HistGradientBoosting, MLP (no graphs).

Features for every baseline: the encoded profile columns, time (``t_years``), latitude
and longitude — exactly what the fed-MugRep model sees about the target itself — and
the district code (categorical for gradient boosting, one-hot for the others). None of
them sees the event graph (neighbours' prices) or the community graph.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.neural_network import MLPRegressor

from fedmugrep.training.metrics import point_metrics


def _onehot(codes: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((codes.size, n), dtype=np.float32)
    out[np.arange(codes.size), codes] = 1.0
    return out


def run_baselines(
    x: np.ndarray,
    district: np.ndarray,
    y_log: np.ndarray,
    price: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    n_districts: int,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Fit each baseline on ``train`` rows (log-price target) and score it on ``test`` rows."""
    xo = np.concatenate([x, _onehot(district, n_districts)], axis=1)
    xc = np.concatenate([x, district[:, None].astype(np.float32)], axis=1)
    cat = np.zeros(xc.shape[1], dtype=bool)
    cat[-1] = True
    models = {
        "ridge": (RidgeCV(alphas=np.logspace(-3, 3, 13)), xo),
        "hist_gradient_boosting": (
            HistGradientBoostingRegressor(
                max_iter=600,
                learning_rate=0.05,
                early_stopping=True,
                validation_fraction=0.15,
                categorical_features=cat,
                random_state=seed,
            ),
            xc,
        ),
        "mlp": (
            MLPRegressor(
                hidden_layer_sizes=(64, 64),
                early_stopping=True,
                max_iter=400,
                random_state=seed,
                learning_rate_init=1e-3,
                alpha=1e-4,
            ),
            xo,
        ),
    }
    out: dict[str, dict[str, float]] = {}
    yc = y_log[train].mean()
    for name, (model, feats) in models.items():
        model.fit(feats[train], y_log[train] - yc)
        pred = model.predict(feats[test]) + yc
        out[name] = point_metrics(price[test], np.exp(pred))
    return out

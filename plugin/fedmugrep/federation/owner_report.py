"""The data owners' view of an evaluation: exact metrics and per-row predictions.

:meth:`TransactionParty.evaluate` writes them into the datasite's home
(``evaluations/<request>/<agency>-<split>-predictions.csv``); they are never released to the
data scientist (who receives noised aggregates). Whoever holds the homes — the data owners, or
the demo and the benchmarks, which play every role on synthetic data — pools them here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from fedmugrep.training.metrics import Z80, distribution_metrics


def owner_predictions(homes: Iterable[Path], *, split: str = "test") -> pd.DataFrame:
    """The newest evaluation's per-row predictions from every home, concatenated.

    Raises:
        FileNotFoundError: when a home holds no evaluation of ``split``.
    """
    frames = []
    for home in homes:
        files = sorted(
            Path(home).glob(f"evaluations/*/*-{split}-predictions.csv"),
            key=lambda f: f.stat().st_mtime,
        )
        if not files:
            raise FileNotFoundError(f"no {split} evaluation under {Path(home) / 'evaluations'}")
        newest = files[-1].parent
        frames += [pd.read_csv(f) for f in sorted(newest.glob(f"*-{split}-predictions.csv"))]
    return pd.concat(frames, ignore_index=True)


def pooled_metrics(pred: pd.DataFrame) -> tuple[dict, dict]:
    """Exact metrics over all rows and per agency (``agency`` column) from predictions."""

    def metrics(df: pd.DataFrame) -> dict:
        mu = np.log(df["pred_median"].to_numpy(np.float64))
        sig = (np.log(df["pred_hi80"].to_numpy()) - np.log(df["pred_lo80"].to_numpy())) / (2 * Z80)
        return distribution_metrics(df["price"].to_numpy(np.float64), mu, sig)

    per = {str(a): metrics(g) for a, g in pred.groupby("agency", sort=True)}
    return metrics(pred), per

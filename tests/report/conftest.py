"""A realistic run folder, built once per session: synthetic city, report.json with a
private run's history, test-split predictions, a real privacy ledger and a sweep."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedmugrep.data.synthetic import CityConfig, make_city, write_city
from fedmugrep.privacy.events import LaplaceEvent
from fedmugrep.privacy.ledger import Ledger

SITES = ("agency1", "agency2", "agency3")
ROUNDS = 8
CAP = 8.0
DS = "analyst@example.org"


def _report(private: bool) -> dict:
    rng = np.random.default_rng(1)
    history = []
    for r in range(1, ROUNDS + 1):
        rec: dict = {
            "round": r,
            "seconds": 1.5 + 0.1 * rng.random(),
            "bytes_up": {
                s: int(30_000 + 4_000 * k + 2_000 * rng.random()) for k, s in enumerate(SITES)
            },
            "bytes_dense": 412_000,
            "val_mae_log": 0.30 * np.exp(-r / 4) + 0.12 + 0.005 * rng.random(),
        }
        if private:
            rec["epsilon"] = {
                s: 0.3 + (CAP - 1.0 - 0.2 * k) * r / ROUNDS for k, s in enumerate(SITES)
            }
        else:
            rec["train_loss"] = 1.2 * np.exp(-r / 3) + 0.4
        history.append(rec)
    metrics = {"mae": 41_000.0, "mape": 0.118, "mae_log": 0.112, "coverage80": 0.79}
    privacy = (
        {
            s: {"epsilon": history[-1]["epsilon"][s], "cap": CAP, "delta": 1e-5, "ledger_ok": True}
            for s in SITES
        }
        if private
        else {}
    )
    return {
        "mode": "inprocess",
        "federated": metrics,
        "centralized": {"mae": 35_000.0, "mape": 0.101, "mae_log": 0.097, "coverage80": 0.81},
        "baselines": {
            "ridge": {"mae": 52_000.0, "mape": 0.15, "mae_log": 0.14, "rmse": 70_000.0},
            "hist_gradient_boosting": {"mae": 44_000.0, "mape": 0.126, "mae_log": 0.12},
        },
        "bayes_floor": {"mae": 29_000.0, "mae_log": 0.08},
        "privacy": privacy,
        "noise_multiplier": 1.3 if private else 0.0,
        "history": history,
        "setup_seconds": 4.2,
        "train_seconds": 12.8,
        "demo_seconds": 31.0,
        "plan": {"rounds": ROUNDS, "lr": 0.01, "optimizer": "adam", "seed": 0,
                 "privacy": {"epsilon": CAP, "delta": 1e-5, "clip": 1.0} if private else None},
    }  # fmt: skip


def _predictions(city_dir: Path) -> pd.DataFrame:
    tx = pd.read_csv(city_dir / "transactions_all.csv")
    truth = pd.read_csv(city_dir / "truth.csv")
    test = tx["date"] >= "2023-07-01"
    rng = np.random.default_rng(2)
    t = tx.loc[test].reset_index(drop=True)
    median = t["price"] * np.exp(rng.normal(0.0, 0.12, len(t)))
    half = 1.2816 * 0.14
    return pd.DataFrame(
        {
            "agency": truth.loc[test, "agency"].to_numpy(),
            "transaction_id": t["transaction_id"],
            "date": t["date"],
            "community": t["community"],
            "district": t["district"],
            "lat": t["lat"],
            "lon": t["lon"],
            "price": t["price"],
            "pred_median": median.round(0),
            "pred_lo80": (median * np.exp(-half)).round(0),
            "pred_hi80": (median * np.exp(half)).round(0),
        }
    )


def _ledger(home: Path) -> None:
    led = Ledger(home)
    led.set_cap(DS, "agency1", epsilon=CAP, delta=1e-5)
    events = [LaplaceEvent(sensitivity=1.0, scale=5.0)] + [
        LaplaceEvent(sensitivity=1.0, scale=2.0) for _ in range(ROUNDS)
    ]
    for i, ev in enumerate(events):
        led.charge(
            data_scientist=DS,
            request_id="run-1",
            dataset="agency1",
            mechanism="laplace",
            events=[ev],
            payload=float(i),
        )


def build_run_dir(root: Path, *, private: bool = True) -> Path:
    run = root / "run"
    city_dir = run / "city"
    write_city(make_city(CityConfig(n_transactions=800)), city_dir)
    (run / "report.json").write_text(json.dumps(_report(private), indent=2))
    _predictions(city_dir).to_csv(run / "predictions.csv", index=False)
    _ledger(run / "datasites" / "agency1")
    sweep = [
        {"epsilon": eps, "mape": 0.10 + 0.08 / (eps or 1e9) ** 0.7 + 0.006 * k, "seed": k}
        for eps in (0.5, 1.0, 2.0, 4.0, 8.0, None)
        for k in range(3)
    ]
    (run / "sweep.json").write_text(json.dumps(sweep))
    return run


@pytest.fixture(scope="session")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run_dir(tmp_path_factory.mktemp("report_base"))


@pytest.fixture
def run_dir(base_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of the session's run folder (tests may delete or edit files)."""
    return Path(shutil.copytree(base_run, tmp_path / "run"))

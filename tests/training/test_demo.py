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
        ]
    )
    assert rc == 0
    # every phase that takes more than a moment shows its progress (bars on stderr), and each
    # owner's review sheet is printed before the approval
    std = capsys.readouterr()
    assert "train-central:" in std.err  # stops early on validation, before its 100 %
    for phase in (
        "starting datasites (inprocess)",
        "uploading private data and mocks",
        "pretraining on the mocks",
        "set-up releases",
        "federated rounds",
    ):
        assert f"{phase}: 100%" in std.err, phase
    assert std.out.count("--- datasite 'agency1': review ---") == 1
    rep = json.loads((out / "report.json").read_text())
    for key in ("mae", "mape", "mae_log"):
        assert rep["federated"][key] > 0
    assert rep["centralized"]["mape"] > 0
    # every datasite, the region one included, spends at most its cap, ledgers verify
    assert set(rep["privacy"]) == {"agency1", "agency2", "agency3", "region"}
    for p in rep["privacy"].values():
        assert 0 < p["epsilon"] <= p["cap"] == 4.0 and p["ledger_ok"]
    assert len(rep["bytes_per_round"]) == 2
    assert [sorted(h["epsilon"]) for h in rep["history"]] == [sorted(rep["privacy"])] * 2
    # epsilon at the end of the last round: the region has made all its releases by then (its
    # last update returned the final z); the agencies still release calibration and evaluation
    last = rep["history"][-1]["epsilon"]
    assert last["region"] == rep["privacy"]["region"]["epsilon"]
    for agency in ("agency1", "agency2", "agency3"):
        assert rep["history"][0]["epsilon"][agency] < last[agency]
        assert last[agency] < rep["privacy"][agency]["epsilon"]
    assert "bayes_floor" in rep
    # the data scientist's view is noised; the owners' exact view is what report.json pools
    assert rep["federated_released"]["mape"] != rep["federated"]["mape"]
    assert (out / "predictions.csv").is_file() and (out / "model.pt").is_file()
    page = out / "report" / "index.html"
    pngs = {p.name for p in page.parent.glob("*.png")}
    # a private run releases no per-round loss: its first section draws what it released (ε
    # per round, the noised test metrics); the demo runs no sweep, so section 6 says how to
    assert (
        page.is_file()
        and {
            "training_curves.png",
            "epsilon_spent.png",
            "bytes_per_round.png",
            "city_map.png",
            "predicted_vs_actual.png",
        }
        == pngs
    )
    # the page verified every datasite's ledger itself (the four of this run, in their homes)
    from fedmugrep.report import load_inputs

    assert rep["command"] == "demo"
    checks = load_inputs(out).ledgers
    assert sorted(checks) == sorted(rep["privacy"])
    assert {c.status for c in checks.values()} == {"verified"}
    assert page.read_text(encoding="utf-8").count("✔ verified") == 4
    assert "epsilon" in std.out and "x centralized" in std.out

    # run again into the same folder, without a region datasite: the previous run's datasites
    # (whose ledgers hold the budget it spent) are replaced, not charged again
    capsys.readouterr()
    rc = main(
        [
            "demo", "--out", str(out), "--transactions", "1500", "--rounds", "2",
            "--epsilon", "4", "--quiet", "--no-region-datasite",
        ]
    )  # fmt: skip
    assert rc == 0
    assert "replacing the previous demo run" in capsys.readouterr().out
    again = json.loads((out / "report.json").read_text())
    assert set(again["privacy"]) == {"agency1", "agency2", "agency3"}  # no region datasite
    assert not (out / "datasites" / "region").exists()
    for p in again["privacy"].values():
        assert 0 < p["epsilon"] <= p["cap"] == 4.0 and p["ledger_ok"]
    assert again["federated"]["mae_log"] < 0.5

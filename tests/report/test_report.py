"""``fedmugrep report``: the page, its PNGs, missing inputs and the command line."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from fedmugrep.cli import main
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.report import FIGURES, load_inputs, write_report
from fedmugrep.report.plots import coverage80, sweep_summary
from tests.report.conftest import DS


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 400, (path, img.shape)
    rgb = img[..., :3]
    assert float(rgb.std()) > 0.05, f"{path.name} looks blank (pixel std {rgb.std():.4f})"
    # more than a few colours: axes, text and data were drawn
    q = (rgb * 255).astype(np.int32)
    colours = np.unique((q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2])
    assert colours.size > 50, path.name


def test_full_report_has_every_figure(run_dir: Path) -> None:
    res = write_report(run_dir)
    assert res.html == run_dir / "report" / "index.html"
    assert res.missing == {}
    assert [p.name for p in res.pngs] == [name for _key, name in FIGURES]
    page = res.html.read_text(encoding="utf-8")
    embedded = re.findall(
        r'src="data:image/png;base64,([A-Za-z0-9+/=]+)" [^>]*data-file="([^"]+)"', page
    )
    assert {f for _b, f in embedded} == {p.name for p in res.pngs}
    for b64, name in embedded:
        png = res.html.parent / name
        assert base64.b64decode(b64) == png.read_bytes()
        assert f'href="{name}"' in page
        _check_png(png)
    # header tables: metrics, privacy per datasite with ledger status, run time, plan
    for text in ("centralized", "ridge", "Bayes floor", "agency3", "verified", "31.0 s", "rounds"):
        assert text in page, text
    # private run: the caption says why there is no training loss
    assert "never their training loss" in page
    cov = coverage80(load_inputs(run_dir).predictions)
    assert f"{100 * cov:.1f}%" in page


def test_missing_predictions_still_renders(run_dir: Path) -> None:
    (run_dir / "predictions.csv").unlink()
    (run_dir / "sweep.json").unlink()
    res = write_report(run_dir, out=run_dir / "site")
    page = res.html.read_text(encoding="utf-8")
    assert set(res.missing) == {"map", "calibration", "sweep"}
    assert page.count(f"{run_dir / 'predictions.csv'}: file not found") == 2
    assert "fedmugrep demo --out" in page and "sweep.json: file not found" in page
    assert {p.name for p in res.pngs} == {
        "training_curves.png",
        "epsilon_spent.png",
        "bytes_per_round.png",
    }
    for p in res.pngs:
        _check_png(p)


def test_epsilon_rebuilt_from_ledger_and_bad_inputs(run_dir: Path) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    for rec in report["history"]:
        rec.pop("epsilon")
    (run_dir / "report.json").write_text(json.dumps(report))
    (run_dir / "predictions.csv").write_text("community,price\nC001,100\n")  # columns missing
    inputs = load_inputs(run_dir)
    curve = inputs.epsilon_curves["agency1"]
    assert not curve.per_round and len(curve.x) == 9  # 1 + ROUNDS charged Laplace releases
    spent = Ledger(run_dir / "datasites" / "agency1").spent(DS, "agency1")
    assert curve.epsilon[0] == pytest.approx(0.2) and curve.epsilon[-1] == pytest.approx(spent)
    assert np.all(np.diff(curve.epsilon) > 0)
    assert "missing column(s) pred_median" in str(inputs.missing["predictions"])
    res = write_report(run_dir)
    assert "rebuilt from its privacy ledger" in res.html.read_text(encoding="utf-8")
    _check_png(res.html.parent / "epsilon_spent.png")
    # a stale PNG of a figure that can no longer be drawn is removed
    assert not (res.html.parent / "city_map.png").exists()


def test_sweep_summary_groups_no_privacy_last() -> None:
    summ = sweep_summary(
        [{"epsilon": None, "mape": 0.1, "seed": 0}]
        + [{"epsilon": e, "mape": m, "seed": s} for e, m, s in ((2.0, 0.2, 0), (2.0, 0.3, 1), (1.0, 0.5, 0))]
    )  # fmt: skip
    assert summ["epsilon"].tolist()[:2] == [1.0, 2.0] and np.isnan(summ["epsilon"].iloc[2])
    assert summ["mean"].tolist() == pytest.approx([0.5, 0.25, 0.1])
    assert summ["n"].tolist() == [1, 2, 1]


def test_cli(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["report", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert str(empty / "report.json") in capsys.readouterr().err

    out = tmp_path / "html"
    assert main(["report", str(run_dir), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["html"] == str(out / "index.html") and Path(printed["html"]).is_file()
    assert len(printed["pngs"]) == len(FIGURES)
    assert all(Path(p).parent == out for p in printed["pngs"])


def test_unreadable_ledger_is_explained(run_dir: Path) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    for rec in report["history"]:
        rec.pop("epsilon")
    (run_dir / "report.json").write_text(json.dumps(report))
    ledger = run_dir / "datasites" / "agency1" / "privacy_ledger.sqlite"
    for extra in ledger.parent.glob("privacy_ledger.sqlite-*"):
        extra.unlink()
    ledger.write_bytes(b"not a database")
    (run_dir / "predictions.csv").unlink()  # only the epsilon section matters here
    res = write_report(run_dir)
    assert "epsilon" in res.missing and "unreadable" in res.missing["epsilon"]
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(ledger).execute("SELECT * FROM entries").fetchall()


def test_epsilon_plot_shows_the_releases_after_the_last_round() -> None:
    from fedmugrep.report.inputs import EpsilonCurve
    from fedmugrep.report.plots import epsilon_spent

    curves = {
        "agency1": EpsilonCurve((0.0, 1.0, 2.0), (2.0, 5.0, 7.2), True),
        "region": EpsilonCurve((0.0, 1.0, 2.0), (3.0, 5.0, 8.0), True),
    }
    privacy = {"agency1": {"epsilon": 8.0, "cap": 8.0}, "region": {"epsilon": 8.0, "cap": 8.0}}
    ax = epsilon_spent(curves, privacy).axes[0]
    ends = {
        (line.get_marker(), tuple(line.get_xdata()), tuple(line.get_ydata()))
        for line in ax.get_lines()
    }
    # agency1 charged 0.8 after round 2 (calibration, evaluation): drawn up to its total
    assert ("*", (3.0,), (8.0,)) in ends
    assert ax.get_xlim()[1] > 3.0  # the star is inside the axes
    assert sum(1 for m, _, _ in ends if m == "*") == 1  # the region's last round was its total
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "agency1: spent (8 in all)" in labels
    assert "after the rounds: calibration and evaluation releases" in labels

"""``fedmugrep report`` on the folders the training commands write, on a tiny city.

A real private ``train-federated`` run (2 rounds, no pretraining), a real ``train-central``
run folder and the report of a real federation result as ``federation train`` writes it: the
page verifies every ledger itself, the plots keep coinciding datasites apart, the bytes
caption compares honestly, and a private run's first section shows what it released.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedmugrep.cli import main
from fedmugrep.compression import HEADER_BYTES
from fedmugrep.data.synthetic import CityConfig, make_city, write_city
from fedmugrep.privacy.ledger import LEDGER_FILENAME
from fedmugrep.report import load_inputs, write_report
from fedmugrep.report.html import _bytes_ratio
from fedmugrep.report.plots import epsilon_spent, private_releases


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("city")
    write_city(make_city(CityConfig(seed=3, n_transactions=600)), out)
    return out


@pytest.fixture(scope="module")
def fed_home(city: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private train-federated run: 3 agencies and the region, 2 rounds, ε cap 4."""
    home = tmp_path_factory.mktemp("fed") / "home"
    argv = ["train-federated", "--city", str(city), "--home", str(home), "--rounds", "2"]
    argv += ["--pretrain-epochs", "0", "--epsilon", "4", "--quiet"]
    assert main(argv) == 0
    yield home


@pytest.fixture
def fed_copy(fed_home: Path, tmp_path: Path) -> Path:
    """A copy of the run folder whose report.json still names the original homes: the
    report must find the ledgers in the copy (a moved folder) or say they are missing."""
    copy = Path(shutil.copytree(fed_home, tmp_path / "moved"))
    report = json.loads((copy / "report.json").read_text())
    report["homes"] = {s: str(tmp_path / "gone" / Path(h).name) for s, h in report["homes"].items()}
    (copy / "report.json").write_text(json.dumps(report))
    return copy


def _text(page: Path) -> str:
    """The page's visible text."""
    raw = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page.read_text(encoding="utf-8"))
    return re.sub(
        r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", "", raw, flags=re.S))
    )


SITES = ("agency1", "agency2", "agency3", "region")


def _ledger_row(text: str, site: str) -> str:
    """The privacy table's row of ``site`` (up to the next datasite's row or the table's end)."""
    table = text[text.index("privacy ledger (verified now)") : text.index("Ledgers:")]
    start = table.index(f" {site} ")
    later = [table.index(f" {s} ", start) for s in SITES[SITES.index(site) + 1 :]]
    return table[start : min(later, default=len(table))]


def test_train_federated_home_every_ledger_verified_by_the_report(fed_home: Path) -> None:
    res = write_report(fed_home)
    inputs = load_inputs(fed_home)
    assert inputs.kind == "train-federated"
    assert {s: c.status for s, c in inputs.ledgers.items()} == dict.fromkeys(
        ("agency1", "agency2", "agency3", "region"), "verified"
    )
    text = _text(res.html)
    assert text.count("✔ verified") == 4 and "Ledgers: 4 verified" in text
    assert set(res.missing) == {"sweep"}  # every other section draws from the home alone
    assert "fedmugrep sweep --city" in res.missing["sweep"]


def test_a_tampered_or_missing_ledger_is_never_marked_verified(fed_copy: Path) -> None:
    # agency2's ledger edited behind its API; agency3's ledger gone; report.json still says
    # ledger_ok: true for both (what the run recorded is not what the page shows)
    recorded = json.loads((fed_copy / "report.json").read_text())["privacy"]
    assert recorded["agency2"]["ledger_ok"] is True and recorded["agency3"]["ledger_ok"] is True
    conn = sqlite3.connect(
        fed_copy / "transactions_agency2" / LEDGER_FILENAME, isolation_level=None
    )
    conn.execute("DROP TRIGGER IF EXISTS entries_no_update")
    conn.execute("UPDATE entries SET epsilon = 0.0001 WHERE seq = 2")
    conn.close()
    for f in (fed_copy / "transactions_agency3").glob(f"{LEDGER_FILENAME}*"):
        f.unlink()

    checks = load_inputs(fed_copy).ledgers
    assert checks["agency1"].status == "verified"  # found in the moved folder
    assert checks["agency1"].path == fed_copy / "transactions_agency1" / LEDGER_FILENAME
    assert checks["agency2"].status == "failed" and "[edited] entry 2" in checks["agency2"].detail
    assert checks["agency3"].status == "not found"
    text = _text(write_report(fed_copy).html)
    row2, row3 = _ledger_row(text, "agency2"), _ledger_row(text, "agency3")
    assert (
        "FAILED verification" in row2
        and "[edited] entry 2" in row2
        and "verified " not in row2.replace("FAILED verification", "")
    )
    assert "not found: not checked" in row3 and "✔" not in row3
    assert "Ledgers: 2 verified, 1 failed, 1 not found" in text


def test_private_run_first_section_shows_what_was_released(fed_home: Path) -> None:
    inputs = load_inputs(fed_home)
    rep = inputs.report
    fig = private_releases(inputs.epsilon_curves, rep["federated_released"], rep["federated"])
    assert fig is not None
    eps_ax, metric_ax = fig.axes
    # ε charged in each round: the increments of each site's per-round cumulative curve
    for line in eps_ax.get_lines():
        site = line.get_label().split(" ")[0]
        cum = [h["epsilon"][site] for h in rep["history"]]
        assert list(line.get_ydata()) == pytest.approx([cum[0], cum[1] - cum[0]])
    assert {ln.get_label().split(" ")[0] for ln in eps_ax.get_lines()} == set(rep["privacy"])
    # the released metrics with their noise sd, beside the owners' exact ones
    labels = [t.get_text() for t in metric_ax.get_xticklabels()]
    assert labels == ["MAPE", "MAE of log price", "80% interval coverage"]
    res = write_report(fed_home)
    assert "training" not in res.missing
    text = _text(res.html)
    assert "1. Training: what a private run releases" in text and "ε each datasite" in text
    assert f"{100 * rep['federated_released']['mape']:.2f}% ± " in text  # released ± noise sd


def test_coinciding_epsilon_curves_stay_distinguishable(fed_home: Path) -> None:
    inputs = load_inputs(fed_home)
    agencies = [inputs.epsilon_curves[s] for s in ("agency1", "agency2", "agency3")]
    assert agencies[0] == agencies[1] == agencies[2]  # the agencies spend identically here
    ax = epsilon_spent(inputs.epsilon_curves, inputs.privacy).axes[0]
    spent = {ln.get_label(): ln for ln in ax.get_lines() if ": spent" in ln.get_label()}
    assert len(spent) == 4
    styles = {
        (ln.get_marker(), str(ln.get_linestyle()), ln.get_markersize()) for ln in spent.values()
    }
    assert len(styles) == 4  # no two datasites drawn alike
    for site in ("agency2", "agency3"):
        (label,) = [lb for lb in spent if lb.startswith(f"{site}:")]
        assert label.endswith("; same curve as agency1")
    legend = {
        t.get_text(): h
        for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles, strict=True)
    }
    for label, line in spent.items():  # each legend entry is drawn as its line
        handle = legend[label]
        assert (handle.get_marker(), handle.get_linestyle(), handle.get_color()) == (
            line.get_marker(), line.get_linestyle(), line.get_color()
        )  # fmt: skip


def test_full_uploads_travel_densely_and_the_caption_says_so(fed_home: Path) -> None:
    history = load_inputs(fed_home).history
    up = [v for h in history for v in h["bytes_up"].values()]
    dense = history[0]["bytes_dense"]
    # upload rate 1: every channel, sent without its index list -- the dense update plus the
    # sparse format's 32-byte header, never the 4 bytes per channel on top
    assert set(up) == {dense + HEADER_BYTES}
    text = _text(write_report(fed_home).html)
    assert "about the same size as the dense update" in text
    assert "smaller than the dense update" not in text and "larger than" not in text


def test_bytes_caption_says_larger_when_uploads_exceed_the_dense_update() -> None:
    history = [{"bytes_dense": 100, "bytes_up": {"a": 132, "b": 132}}]
    caption = _bytes_ratio(history, upload_rate=1.0)
    assert "<b>1.32× larger</b> than the dense update" in caption and "32-byte header" in caption
    assert "<b>4.0× smaller</b>" in _bytes_ratio([{"bytes_dense": 400, "bytes_up": {"a": 100}}])


def test_train_central_out_is_a_run_folder(
    city: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, js = tmp_path / "central", tmp_path / "central.json"
    argv = [
        "train-central",
        "--transactions",
        *map(str, sorted(city.glob("transactions_agency*.csv"))),
    ]
    argv += [
        "--communities",
        str(city / "communities.csv"),
        "--mobility",
        str(city / "mobility.csv"),
    ]
    argv += ["--epochs", "15", "--no-baselines", "--quiet", "--out", str(out), "--json", str(js)]
    assert main(argv) == 0
    assert "fedmugrep report" in capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    assert rep["command"] == "train-central" and rep["model"] == json.loads(js.read_text())["model"]
    res = write_report(out)
    assert {p.name for p in res.pngs} == {
        "training_curves.png",
        "city_map.png",
        "predicted_vs_actual.png",
    }
    assert set(res.missing) == {"epsilon", "bytes", "sweep"}
    assert "no datasite" in res.missing["epsilon"] and "sends no update" in res.missing["bytes"]
    inputs = load_inputs(out)
    assert len(inputs.predictions) == rep["split"]["test"]
    # the page's coverage is the coverage train-central measured on the same test sales
    assert f"Coverage: {100 * rep['model']['coverage80']:.1f}%" in _text(res.html)
    assert inputs.ledgers == {} and "✔" not in _text(res.html)


def test_a_report_json_file_is_refused_with_the_folder_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    js = tmp_path / "central.json"
    js.write_text("{}")
    assert main(["report", str(js)]) == 2
    err = capsys.readouterr().err
    assert str(js) in err and "is a file, not a run folder" in err and "--out DIR" in err


def test_federation_train_home_names_where_each_ledger_is(city: Path, tmp_path: Path) -> None:
    from fedmugrep.federation.local import run_local
    from fedmugrep.federation.plan import FederationPlan, PrivacyPlan
    from fedmugrep.report.run_summary import federation_report

    plan = FederationPlan(
        rounds=1, pretrain_epochs=0, privacy=PrivacyPlan.for_epsilon(4.0, region_epsilon=4.0)
    )
    res = run_local(city, plan, tmp_path / "owners", progress=False)
    home = tmp_path / "dana"  # the data scientist's home: no ledger, no owner's file
    home.mkdir()
    sites = [(n, f"http://127.0.0.1:{8081 + i}", "region" if n == "region" else "transactions")
             for i, n in enumerate(sorted(res.homes))]  # fmt: skip
    report = federation_report(res, plan, model_file=home / "model.pt", sites=sites)
    (home / "report.json").write_text(json.dumps(report, default=str))

    res_page = write_report(home)
    inputs = load_inputs(home)
    assert inputs.kind == "federation train"
    assert {c.status for c in inputs.ledgers.values()} == {"remote"}
    text = _text(res_page.html)
    assert "✔" not in text and text.count("on the datasite: not checked here") == len(sites)
    assert "http://127.0.0.1:8081" in text
    assert "released to the data scientist" in text and "training" not in res_page.missing
    assert "stay on the datasites" in res_page.missing["calibration"]
    assert {p.name for p in res_page.pngs} == {"training_curves.png", "bytes_per_round.png"}

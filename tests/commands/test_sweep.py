"""``fedmugrep sweep``: the privacy-utility sweep the report's section 6 draws, on a tiny city."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fedmugrep.cli import EXIT_USAGE, build_parser
from fedmugrep.report import load_inputs, write_report
from fedmugrep.report.plots import sweep_summary

Cli = Callable[..., tuple[int, str, str]]
QUICK = ("--rounds", "1", "--pretrain-epochs", "0", "--quiet")


def test_sweep_writes_what_the_report_draws(cli: Cli, city_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "fed"
    code, _, err = cli(
        "train-federated", "--city", city_dir, "--home", home, "--epsilon", "4", *QUICK
    )
    assert code == 0, err
    assert "sweep" in load_inputs(home).missing  # before the sweep: section 6 says how

    out = home / "sweep.json"
    code, printed, err = cli(
        "sweep", "--city", city_dir, "--epsilons", "8", "2", "--no-privacy-reference",
        "--home", tmp_path / "runs", "--out", out, *QUICK,
    )  # fmt: skip
    assert code == 0, err
    lines = [ln for ln in printed.splitlines() if ln.startswith("[")]
    assert [ln.split(":")[0] for ln in lines] == [
        "[1/3] epsilon 2 seed 0",
        "[2/3] epsilon 8 seed 0",
        "[3/3] no privacy seed 0",
    ]
    sweep = json.loads(out.read_text())
    assert sweep["command"] == "sweep" and sweep["rounds"] == 1
    runs = sweep["runs"]
    assert [r["epsilon"] for r in runs] == [2.0, 8.0, None]
    for r, line in zip(runs, lines, strict=True):
        assert 0 < r["mape"] < 5 and f"test MAPE {r['mape']:.4f}" in line
        if r["epsilon"] is not None:  # each run spent at most its own cap, in its own home
            assert set(r["epsilon_spent"]) == {"agency1", "agency2", "agency3", "region"}
            assert all(0 < e <= r["epsilon"] for e in r["epsilon_spent"].values())
        else:
            assert r["epsilon_spent"] == {}
    assert (
        tmp_path / "runs" / "eps2-seed0" / "transactions_agency1" / "privacy_ledger.sqlite"
    ).is_file()

    res = write_report(home)
    assert "sweep" not in res.missing
    assert (home / "report" / "privacy_utility.png").is_file()
    page = res.html.read_text(encoding="utf-8")
    summ = sweep_summary(load_inputs(home).sweep)
    for row in summ.itertuples():  # the page's table is the sweep's runs
        assert f"{100 * row.mean:.2f}%" in page
    assert "∞ (no DP)" in page

    # the same --home again: its runs' ledgers have spent budget, so it is refused (exit 2)
    code, _, err = cli("sweep", "--city", city_dir, "--epsilons", "2", "--home", tmp_path / "runs",
                       "--out", tmp_path / "again.json", *QUICK)  # fmt: skip
    assert code == EXIT_USAGE and "--home" in err and "eps2-seed0" in err
    assert not (tmp_path / "again.json").exists()


def test_bad_values_exit_2_naming_the_option(
    capsys: pytest.CaptureFixture[str], city_dir: Path, tmp_path: Path
) -> None:
    cases = [
        (["--epsilons", "4", "-1"], "--epsilons must be > 0 (got -1)"),
        (["--epsilons", "4", "--rounds", "0"], "--rounds must be >= 1 (got 0)"),
        (["--epsilons", "4", "--out", str(tmp_path)], f"--out: {tmp_path} is a folder"),
        (["--epsilons", "4", "--city", str(tmp_path / "nope")], "--city: city folder"),
    ]
    for extra, message in cases:
        argv = ["sweep", "--city", str(city_dir), "--out", str(tmp_path / "s.json"), *extra]
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(argv)
        assert exc.value.code == EXIT_USAGE
        assert message in capsys.readouterr().err, extra
    assert not (tmp_path / "s.json").exists()


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--help"])
    out = capsys.readouterr().out
    assert "fedmugrep sweep --city city/ --epsilons 1 2 4 8" in out and "fedmugrep report" in out

"""``fedmugrep appraise``: valuations from an exported model file (no datasite)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from fedmugrep.cli import main
from fedmugrep.data.loading import load_communities, load_transactions
from fedmugrep.federation.artefacts import public_from_mocks
from fedmugrep.federation.plan import FederationPlan
from fedmugrep.federation.valuation import ValuationModel
from fedmugrep.models.mugrep import EventModel

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def files(city_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model file (public artefacts from the city's own files, random model 1: the command's
    plumbing does not need a trained model), properties and a sales history."""
    out = tmp_path_factory.mktemp("appraise")
    comms = load_communities(city_dir / "communities.csv")
    tx = load_transactions(city_dir / "transactions_agency1.csv")
    plan = FederationPlan(rounds=1, pretrain_epochs=0)
    public = public_from_mocks(comms, [tx], plan)
    torch.manual_seed(0)
    state = EventModel(public.model_config).state_dict()
    z = torch.randn(len(public.encoders.vocab.communities), public.model_config.z_dim) * 0.1
    ValuationModel(public, state, z, geography=comms).save(out / "model.pt")
    cut = tx["date"].quantile(0.8)
    props = tx[tx["date"] >= cut].drop(columns=["price", "community", "district"])
    props.to_csv(out / "props.csv", index=False, date_format="%Y-%m-%d")
    tx[tx["date"] < cut].to_csv(out / "sales.csv", index=False, date_format="%Y-%m-%d")
    return {"model": out / "model.pt", "props": out / "props.csv", "sales": out / "sales.csv"}


def test_help_shows_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["appraise", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text and "fedmugrep appraise --model" in text and "--history" in text


def test_csv_and_json_outputs(cli: Cli, files: dict[str, Path], tmp_path: Path) -> None:
    n = len(pd.read_csv(files["props"]))
    code, out, err = cli(
        "appraise", "--model", files["model"], "--properties", files["props"],
        "--history", files["sales"], "--out", tmp_path / "v.csv",
    )  # fmt: skip
    assert code == 0, err
    table = pd.read_csv(tmp_path / "v.csv")
    assert len(table) == n and f"{n} valuation(s)" in out
    assert {"transaction_id", "pred_median", "pred_lo80", "pred_hi80", "sigma_log"} <= set(table)
    assert (table["pred_lo80"] < table["pred_median"]).all()
    assert (table["pred_median"] < table["pred_hi80"]).all()
    assert table["n_neighbours"].max() > 0

    code, _, err = cli(
        "appraise", "--model", files["model"], "--properties", files["props"],
        "--json", tmp_path / "v.json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "v.json").read_text())
    assert len(report["valuations"]) == n and "none spent" in report["privacy"]
    assert report["valuations"][0]["n_neighbours"] == 0
    for row in report["valuations"]:  # prices in whole currency units, as in the CSV
        assert all(isinstance(row[c], int) for c in ("pred_median", "pred_lo80", "pred_hi80"))

    code, out, _ = cli("appraise", "--model", files["model"], "--properties", files["props"])
    assert code == 0 and "pred_median" in out


def test_bad_input_exits_with_row_and_column(
    cli: Cli, files: dict[str, Path], tmp_path: Path
) -> None:
    rows = pd.read_csv(files["props"], dtype=str).head(4)
    rows.loc[1, "lon"] = "east"
    rows.to_csv(tmp_path / "bad.csv", index=False)
    code, _, err = cli("appraise", "--model", files["model"], "--properties", tmp_path / "bad.csv")
    assert code == 2
    assert "row 2" in err and "column 'lon'" in err and "bad.csv" in err

    (tmp_path / "model.pt").write_bytes(b"nope")
    code, _, err = cli("appraise", "--model", tmp_path / "model.pt", "--properties", files["props"])
    assert code == 1 and "not a fedmugrep valuation model" in err


def test_prices_are_whole_currency_units_in_the_csv_and_grouped_on_the_console(
    cli: Cli, files: dict[str, Path], tmp_path: Path
) -> None:
    code, _, err = cli(
        "appraise", "--model", files["model"], "--properties", files["props"],
        "--out", tmp_path / "v.csv",
    )  # fmt: skip
    assert code == 0, err
    text = (tmp_path / "v.csv").read_text(encoding="utf-8")
    table = pd.read_csv(tmp_path / "v.csv")
    for name in ("pred_median", "pred_lo80", "pred_hi80"):  # same column names, integers
        assert pd.api.types.is_integer_dtype(table[name]), name
    assert "e+" not in text and table["sigma_log"].dtype.kind == "f"
    header, first = text.splitlines()[:2]
    row = dict(zip(header.split(","), first.split(","), strict=True))
    assert row["pred_median"].isdigit()

    code, out, _ = cli("appraise", "--model", files["model"], "--properties", files["props"])
    assert code == 0 and "pred_median" in out and "e+" not in out
    median = int(table["pred_median"].iloc[0])
    assert f"{median:,}" in out.splitlines()[1]  # e.g. 267,700 (same model, same properties)
    assert median >= 1000  # the check above is about thousands separators


def test_price_rounding_and_console_format_helpers() -> None:
    from fedmugrep.commands.appraise import format_table, rounded_prices

    raw = pd.DataFrame(
        {
            "transaction_id": ["a", "b"],
            "pred_median": [267_700.4999999999, 1_234_567.5],
            "pred_lo80": [199_999.6, 1_000_000.123456789012345],
            "pred_hi80": [350_000.0, 1_500_000.9],
            "sigma_log": [0.123456789, 0.2],
        }
    )
    out = rounded_prices(raw)
    assert out["pred_median"].tolist() == [267_700, 1_234_568]
    assert out["pred_lo80"].tolist() == [200_000, 1_000_000]
    assert out["sigma_log"].tolist() == raw["sigma_log"].tolist()  # not a price: unchanged
    assert list(out.columns) == list(raw.columns)
    text = format_table(raw)
    assert "267,700" in text and "1,234,568" in text and "2.677e+05" not in text
    assert "0.1235" in text

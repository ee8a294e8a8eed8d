"""``fedmugrep appraise``: value properties with an exported fed-MugRep model (C7).

Runs on the data scientist's machine with a model saved by
:meth:`~fedmugrep.federation.valuation.ValuationModel.save`; no datasite is contacted and no
privacy budget is spent (the model is made of DP releases and public artefacts; the
properties and the optional sales history are the caller's own).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fedmugrep.cli import existing_file, validated

#: The valuation columns in currency units: whole units in the CSV, thousands separators on
#: the console (the model's spread makes anything finer noise).
PRICE_COLUMNS = ("pred_median", "pred_lo80", "pred_hi80")

EPILOG = """example:
  fedmugrep appraise --model runs/fed/model.pt --properties my_properties.csv \\
      --history my_sales.csv --out valuations.csv
  fedmugrep appraise --model runs/fed/model.pt --properties my_properties.csv --json out.json

properties: transactions columns without price (transaction_id, date, lat, lon and the
model's profile columns; community/district optional when the model carries the public
geography). history: your own earlier sales with prices, used as neighbours.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "appraise",
        help="value properties with an exported model (no datasite, no privacy cost)",
        description="Price distributions (median and 80% interval) for a list of properties "
        "from a model exported with ValuationModel.save.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        action=validated(
            existing_file(
                "model file",
                "pass a file written by ValuationModel.save (fedmugrep train-federated writes "
                "HOME/model.pt)",
            )
        ),
        help="model file (ValuationModel.save)",
    )
    # a missing properties or history file is already bad input (exit 2) when it is read
    p.add_argument(
        "--properties", type=Path, required=True, help="properties to value (.csv or .parquet)"
    )
    p.add_argument(
        "--history", type=Path, help="your own earlier sales with prices (event-graph neighbours)"
    )
    p.add_argument(
        "--id-column", default="transaction_id", help="identifier column (default transaction_id)"
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", type=Path, help="write the valuations as JSON records here")
    out.add_argument("--out", type=Path, help="write the valuations as CSV here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedmugrep.federation.valuation import (  # deferred: loads torch
        ValuationModel,
        load_history,
        load_properties,
    )

    model = ValuationModel.load(args.model)
    props = load_properties(args.properties, id_column=args.id_column)
    history = (
        load_history(args.history, id_column=args.id_column) if args.history is not None else None
    )
    table = model.appraise(props, history, id_column=args.id_column)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        rounded_prices(table).to_csv(args.out, index=False)
        print(f"{len(table)} valuation(s) written to {args.out}")
    elif args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "model": str(args.model),
                    "privacy": "none spent: exported DP model, your own data",
                    "valuations": rounded_prices(table).to_dict(orient="records"),
                },
                indent=2,
            )
        )
        print(f"{len(table)} valuation(s) written to {args.json}")
    else:
        print(format_table(table))
    return 0


def rounded_prices(table: Any) -> Any:
    """``table`` with its price columns rounded to whole currency units (integers when all are
    finite); the other columns unchanged."""
    out = table.copy()
    for name in PRICE_COLUMNS:
        if name in out.columns:
            col = out[name].astype(float).round(0)
            out[name] = (
                col.astype("int64") if col.notna().all() and col.abs().lt(2**62).all() else col
            )
    return out


def format_table(table: Any) -> str:
    """The valuations for the console: prices rounded with thousands separators (``267,700``),
    other numbers with 4 significant digits."""

    def price(v: float) -> str:
        return f"{v:,.0f}" if v == v and abs(v) != float("inf") else str(v)

    formatters = {name: price for name in PRICE_COLUMNS if name in table.columns}
    return table.to_string(index=False, formatters=formatters, float_format=lambda v: f"{v:,.4g}")

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
        description="Price distributions (median and 80%% interval) for a list of properties "
        "from a model exported with ValuationModel.save.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", type=Path, required=True, help="model file (ValuationModel.save)")
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
        table.to_csv(args.out, index=False)
        print(f"{len(table)} valuation(s) written to {args.out}")
    elif args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "model": str(args.model),
                    "privacy": "none spent: exported DP model, your own data",
                    "valuations": table.to_dict(orient="records"),
                },
                indent=2,
            )
        )
        print(f"{len(table)} valuation(s) written to {args.json}")
    else:
        print(table.to_string(index=False, float_format=lambda v: f"{v:,.4g}"))
    return 0

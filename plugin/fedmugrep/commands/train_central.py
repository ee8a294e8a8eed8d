"""``fedmugrep train-central``: the centralized reference run with baselines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedmugrep.cli import int_range, validated

EPILOG = """example:
  fedmugrep synth --out city/
  fedmugrep train-central --transactions city/transactions_agency*.csv \\
      --communities city/communities.csv --mobility city/mobility.csv --json runs/central.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-central",
        help="train the fed-MugRep model on pooled data and compare with baselines",
        description="Train on pooled transactions with a temporal split (test = latest 20% of "
        "dates, validation before it) and compare with ridge, HistGradientBoosting and an MLP.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--transactions",
        nargs="+",
        type=Path,
        required=True,
        help="transaction files (CSV/Parquet)",
    )
    p.add_argument("--communities", type=Path, help="communities table (CSV/Parquet)")
    p.add_argument("--mobility", type=Path, help="mobility flows (CSV/Parquet)")
    p.add_argument("--json", type=Path, help="write the metrics report here")
    p.add_argument(
        "--epochs",
        type=int,
        default=400,
        action=validated(int_range(1, 1_000_000)),
        help="training epochs of the fed-MugRep model (default 400)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of the model and the baselines (default 0)",
    )
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedmugrep.training.central import TrainConfig, central_reference  # deferred: loads torch

    out = central_reference(
        list(args.transactions),
        args.communities,
        args.mobility,
        tcfg=TrainConfig(epochs=args.epochs, seed=args.seed),
        progress=not args.quiet,
        with_baselines=not args.no_baselines,
    )
    print(format_summary(out))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"report written to {args.json}")
    return 0


def format_summary(rep: dict) -> str:
    rows = [("fed-MugRep (central)", rep["model"])]
    rows += [(name, m) for name, m in rep.get("baselines", {}).items()]
    if "bayes_floor" in rep:
        rows.append(("Bayes floor", rep["bayes_floor"]))
    lines = [f"{'':24s} {'MAE':>10s} {'MAPE':>8s} {'RMSE':>10s} {'MAE log':>8s}"]
    for name, m in rows:
        lines.append(
            f"{name:24s} {m.get('mae', float('nan')):10.0f} {m.get('mape', float('nan')):8.4f} "
            f"{m.get('rmse', float('nan')):10.0f} {m.get('mae_log', float('nan')):8.4f}"
        )
    m = rep["model"]
    lines.append(
        f"coverage of the 80% interval: {m['coverage80']:.3f}; training {m['train_seconds']:.1f} s"
    )
    return "\n".join(lines)

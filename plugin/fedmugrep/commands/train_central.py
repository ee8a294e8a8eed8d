"""``fedmugrep train-central``: the centralized reference run with baselines.

``--out DIR`` makes it a run folder like the other training commands: ``DIR/report.json``
(the metrics report, as ``--json`` writes it, naming its command and the communities file),
``DIR/predictions.csv`` (the test-split predictions with 80% intervals) and the report page
``DIR/report/index.html`` (``fedmugrep report DIR`` redraws it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedmugrep.cli import int_range, validated
from fedmugrep.errors import UsageError

EPILOG = """example:
  fedmugrep synth --out city/
  fedmugrep train-central --transactions city/transactions_agency*.csv \\
      --communities city/communities.csv --mobility city/mobility.csv --out runs/central
  fedmugrep report runs/central       # redraws runs/central/report/index.html

--out DIR writes DIR/report.json, DIR/predictions.csv (test sales, predicted median and 80%
interval) and the report page DIR/report/index.html; --json F writes the metrics alone.
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
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="run folder: report.json, predictions.csv and the report page DIR/report/index.html "
        "(what `fedmugrep report DIR` reads)",
    )
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
    from fedmugrep.training.central import TrainConfig, central_run  # deferred: loads torch

    if args.out is not None and args.out.is_file():
        raise UsageError(f"--out: {args.out} is a file; give a folder for the run")
    out, predictions = central_run(
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
    if args.out is not None:
        from fedmugrep.report import write_report  # deferred: loads matplotlib

        args.out.mkdir(parents=True, exist_ok=True)
        run_report = {
            "command": "train-central",
            **out,
            "centralized": {
                k: out["model"][k]
                for k in ("mae", "mape", "mae_log", "coverage80")
                if k in out["model"]
            },
            "train_seconds": out["model"].get("train_seconds"),
        }
        if args.communities is not None:
            run_report["communities_file"] = str(Path(args.communities).resolve())
        (args.out / "report.json").write_text(json.dumps(run_report, indent=2))
        predictions.to_csv(args.out / "predictions.csv", index=False)
        page = write_report(args.out)
        print(
            f"run folder {args.out}: report.json, predictions.csv and the page {page.html} "
            f"(fedmugrep report {args.out} redraws it)"
        )
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

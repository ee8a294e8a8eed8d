"""``fedmugrep synth``: write a city folder: the built-in synthetic city (per-agency files plus
ground truth), the same city in a foreign schema, or the real ``modeldata::Sacramento`` sales."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fedmugrep.cli import existing_file, validated
from fedmugrep.data.public_datasets import write_foreign_city, write_sacramento
from fedmugrep.data.synthetic import CityConfig, make_city, write_city
from fedmugrep.errors import ConfigError, DataValidationError, UsageError

__all__ = ["register", "run"]

_EPILOG = """\
Writes transactions_agency<k>.csv (one per agency), transactions_all.csv, communities.csv,
mobility.csv, truth.csv and metadata.json (generative model, drawn coefficients, Bayes floor).

--dataset foreign writes the same kind of city as another organisation keeps it (its own column
names, units, community names and dates; no district column, no mobility.csv) and
--dataset sacramento the 932 real sales of modeldata::Sacramento split over agencies sac1..;
both add public.toml, the [mock] declaration their owners would publish
(fedmugrep synth --out runs/sacramento --dataset sacramento).

Example:
  fedmugrep synth --out runs/city --seed 1 --transactions 20000 --agencies 3
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``synth`` sub-command to ``subparsers``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "synth",
        help="generate the synthetic city (CSV files + ground truth)",
        description="Generate the built-in synthetic city: per-agency transaction files, "
        "communities, mobility flows, ground truth and metadata.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="output folder (created if needed; files are replaced)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="TOML",
        action=validated(existing_file("city config", "pass the path of a .toml file")),
        help="CityConfig values from a TOML file (top level or [city] table); "
        "the flags below override it",
    )
    parser.add_argument(
        "--dataset",
        choices=("synthetic", "foreign", "sacramento"),
        default="synthetic",
        help="which city to write (default synthetic)",
    )
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument(
        "--transactions", type=int, metavar="N", help="number of transactions (default 12000)"
    )
    parser.add_argument("--agencies", type=int, metavar="N", help="number of agencies (default 3)")
    parser.add_argument(
        "--json", action="store_true", help="print the summary as JSON instead of text"
    )
    parser.set_defaults(func=run)
    return parser


def _config(args: argparse.Namespace) -> CityConfig:
    """The city config from ``--config`` and the flags; a bad file or value is bad input
    (:class:`~fedmugrep.errors.UsageError`, exit 2; the message names the file)."""
    try:
        base = CityConfig.from_toml(args.config).to_dict() if args.config else {}
        for flag, name in (
            ("seed", "seed"),
            ("transactions", "n_transactions"),
            ("agencies", "n_agencies"),
        ):
            value = getattr(args, flag)
            if value is not None:
                base[name] = value
        return CityConfig.from_dict(base)
    except DataValidationError:
        raise  # already bad input (exit 2), naming the file and line
    except ConfigError as exc:
        where = (
            f"--config {args.config}: " if args.config and str(args.config) not in str(exc) else ""
        )
        raise UsageError(f"{where}{exc}") from exc


def _run_other(args: argparse.Namespace) -> int:
    if args.config is not None:
        raise UsageError(f"--config applies to --dataset synthetic only (got {args.dataset})")
    seed = 0 if args.seed is None else args.seed
    agencies = 3 if args.agencies is None else args.agencies
    if args.dataset == "sacramento":
        if args.transactions is not None:
            raise UsageError("--transactions does not apply to --dataset sacramento (932 sales)")
        paths = write_sacramento(args.out, agencies=agencies, seed=seed)
    else:
        n = 3000 if args.transactions is None else args.transactions
        paths = write_foreign_city(args.out, seed=seed, transactions=n, agencies=agencies)
    rows = {
        stem: sum(1 for _ in open(p, encoding="utf-8")) - 1
        for stem, p in paths.items()
        if p.suffix == ".csv"
    }
    if args.json:
        print(
            json.dumps(
                {
                    "out": str(args.out),
                    "dataset": args.dataset,
                    "seed": seed,
                    "files": {s: str(p) for s, p in paths.items()},
                    "rows": rows,
                },
                indent=2,
            )
        )
        return 0
    print(f"{args.dataset} city (seed {seed}) written to {args.out}")
    for stem, n_rows in rows.items():
        print(f"  {stem + '.csv':<26}{n_rows:>7} rows")
    print("  public.toml                (the owners' [mock] declaration)")
    return 0


def run(args: argparse.Namespace) -> int:
    """Generate, write and summarise the city; returns the exit code."""
    if args.dataset != "synthetic":
        return _run_other(args)
    cfg = _config(args)
    city = make_city(cfg)
    paths = write_city(city, args.out)
    meta = city.metadata
    floor = meta["bayes_floor"]
    summary = {
        "out": str(args.out),
        "seed": cfg.seed,
        "files": {stem: str(p) for stem, p in paths.items()},
        "counts": meta["counts"],
        "agencies": {a: v["districts"] for a, v in meta["agencies"].items()},
        "bayes_floor": {"mae_log": floor["mae_log"], "mae": floor["mae"]},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    counts = meta["counts"]
    print(f"synthetic city (seed {cfg.seed}) written to {args.out}")
    for agency, n in counts["per_agency"].items():
        share = 100 * n / counts["transactions"]
        districts = ", ".join(meta["agencies"][agency]["districts"])
        print(f"  transactions_{agency}.csv  {n:>7} rows ({share:4.1f} %)  districts {districts}")
    print(f"  transactions_all.csv      {counts['transactions']:>7} rows")
    print(
        f"  communities.csv           {counts['communities']:>7} rows "
        f"({counts['districts']} districts)"
    )
    print(f"  mobility.csv              {counts['mobility']:>7} rows")
    print("  truth.csv, metadata.json")
    print(
        f"Bayes floor (oracle, all transactions): MAE {floor['mae']:,.0f} EUR, "
        f"MAE on log price {floor['mae_log']:.4f}"
    )
    return 0

"""``fedmugrep train-federated``: federated fed-MugRep on a city folder (local runtime).

A city folder holds one ``transactions_<agency>.csv`` per agency (any profile columns of the
owners' own), ``communities.csv``, an optional ``mobility.csv`` and an optional
``public.toml`` (what the owners declare public about their tables: the mocks are drawn from
it; :mod:`fedmugrep.federation.mocks`).

Every party runs in this process through the same party code the PySyft datasites run;
each agency's ledger lives under ``--home``, and so do the run's ``report.json``, the owners'
pooled ``predictions.csv``, the exported ``model.pt`` and the report page (the same post-run
report as ``fedmugrep demo``; ``fedmugrep report HOME`` redraws it). The PySyft-backed run is
``fedmugrep demo``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedmugrep.cli import half_open_unit, int_range, open_unit, positive, validated
from fedmugrep.data.loading import load_communities
from fedmugrep.federation.mocks import with_public_districts

EPILOG = """A city folder: transactions_<agency>.csv (one per agency), communities.csv, and
optionally mobility.csv and public.toml (the owners' public declaration the mocks are drawn
from; without it the built-in synthetic city is the mock, which only fits its own schema).

example:
  fedmugrep synth --out city/
  fedmugrep train-federated --city city/ --home runs/fed --rounds 30 --epsilon 8 --json runs/fed.json
  fedmugrep audit --home runs/fed/transactions_agency1
  fedmugrep appraise --model runs/fed/model.pt --properties my_listings.csv
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-federated",
        help="federated training over the agencies of a city folder (local runtime)",
        description="Train fed-MugRep across the agencies of a city folder (yours, or one "
        "written by `fedmugrep synth`), with DP-SGD on the event graph and a ledger per agency.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--city",
        type=Path,
        required=True,
        help="city folder: transactions_<agency>.csv files, communities.csv, optional "
        "mobility.csv and public.toml",
    )
    p.add_argument(
        "--mock",
        choices=("auto", "declared", "synthetic"),
        default="auto",
        help="what the mocks are drawn from: the folder's public.toml (declared), the built-in "
        "synthetic city (synthetic), or auto: public.toml when the folder has one",
    )
    p.add_argument(
        "--home", type=Path, required=True, help="folder for the parties' ledgers and state"
    )
    # the bounds are the plan's (FederationPlan / PrivacyPlan): bad values exit 2 before any work
    p.add_argument(
        "--rounds",
        type=int,
        default=30,
        action=validated(int_range(1, 100_000)),
        help="federated rounds (default 30)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=0.01,
        action=validated(positive(100.0)),
        help="learning rate of both models (default 0.01)",
    )
    p.add_argument(
        "--pretrain-epochs",
        type=int,
        default=150,
        action=validated(int_range(0, 100_000)),
        help="public pretraining on the mocks before any private release (0: none; default 150)",
    )
    p.add_argument(
        "--upload-rate",
        type=float,
        default=1.0,
        action=validated(half_open_unit),
        help="share of channels sent per round, in (0, 1] (default 1)",
    )
    p.add_argument(
        "--epsilon",
        type=float,
        default=8.0,
        action=validated(positive(1e6)),
        help="target epsilon per agency, > 0 (default 8)",
    )
    p.add_argument(
        "--delta",
        type=float,
        default=1e-5,
        action=validated(open_unit),
        help="target delta per agency, in (0, 1) (default 1e-5)",
    )
    p.add_argument(
        "--clip",
        type=float,
        default=0.3,
        action=validated(positive(1e6)),
        help="per-target gradient clip norm of DP-SGD, > 0 (default 0.3)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        action=validated(int_range(-(2**63), 2**63 - 1)),
        help="random seed of the run (default 0)",
    )
    p.add_argument("--no-privacy", action="store_true", help="no noise, no ledger (reference run)")
    p.add_argument(
        "--no-region-datasite",
        action="store_true",
        help="no region datasite: model 2 runs here over the public community geography",
    )
    p.add_argument(
        "--laplace-updates",
        action="store_true",
        help="the patent's literal Laplace mechanism on model updates (much noisier; the "
        "contract shows its cost) instead of Gaussian DP-SGD",
    )
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument(
        "--export-model",
        type=Path,
        default=None,
        help="write the trained model for `fedmugrep appraise` (default HOME/model.pt)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedmugrep.federation.local import run_local  # deferred: loads torch
    from fedmugrep.federation.plan import FederationPlan, PrivacyPlan  # deferred: loads torch
    from fedmugrep.report.run_summary import (  # deferred: loads torch, matplotlib
        print_summary,
        save_run,
        summarise_run,
    )

    privacy = (
        None
        if args.no_privacy
        else PrivacyPlan.for_epsilon(
            args.epsilon,
            region_epsilon=args.epsilon,
            delta=args.delta,
            clip=args.clip,
            update_mechanism="laplace" if args.laplace_updates else "gaussian",
        )
    )
    plan = FederationPlan(
        rounds=args.rounds,
        lr=args.lr,
        region_lr=args.lr,
        upload_rate=args.upload_rate,
        privacy=privacy,
        pretrain_epochs=args.pretrain_epochs,
        seed=args.seed,
    )
    res = run_local(
        args.city,
        plan,
        args.home,
        progress=not args.quiet,
        region_datasite=not args.no_region_datasite,
        mock=None if args.mock == "auto" else args.mock,
    )

    out = {"command": "train-federated"} | summarise_run(
        res,
        plan,
        communities=with_public_districts(load_communities(args.city / "communities.csv")),
        out_dir=args.home,
        model_file=args.export_model,
        communities_file=(args.city / "communities.csv").resolve(),
    )
    print_summary(out)
    page = save_run(out, args.home, also=args.json)
    print(
        f"report written to {args.home / 'report.json'}"
        + (f" and {args.json}" if args.json else "")
        + f"; page {page.html} (fedmugrep report {args.home} redraws it)"
    )
    return 0

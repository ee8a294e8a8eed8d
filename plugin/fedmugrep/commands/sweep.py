"""``fedmugrep sweep``: the privacy–utility sweep the report's section 6 draws.

For every ε in ``--epsilons`` (and every seed in ``--seeds``) it runs the same local federated
training as ``fedmugrep train-federated`` on a city folder, each run in a fresh home (fresh
ledgers, so no run spends another's budget), and records the test MAPE the data owners
measure exactly on their own test sales (a sweep plays every owner: it needs a city you hold).
``--no-privacy-reference`` adds one run without privacy per seed (ε = ∞ on the page).

It writes (and rewrites after every run, so an interrupted sweep keeps what finished)::

    {"command": "sweep", "city": ..., "rounds": ..., "runs": [
        {"epsilon": 2.0, "seed": 0, "mape": 0.14, "mae_log": ..., "coverage80": ...,
         "released_mape": ..., "epsilon_spent": {...}, "seconds": ...}, ...]}

``fedmugrep report RUN_DIR`` reads ``RUN_DIR/sweep.json`` (or ``--sweep FILE``).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from fedmugrep.cli import each, existing_dir, int_range, not_a_dir, positive, validated
from fedmugrep.errors import UsageError
from fedmugrep.federation.owner_report import owner_predictions, pooled_metrics
from fedmugrep.privacy.audit import spending_summary

__all__ = ["register", "run", "sweep_runs"]

EPILOG = """example:
  fedmugrep synth --out city/
  fedmugrep train-federated --city city/ --home runs/fed
  fedmugrep sweep --city city/ --epsilons 1 2 4 8 --rounds 30 --out runs/fed/sweep.json
  fedmugrep report runs/fed          # section 6 draws runs/fed/sweep.json

One line per run as it finishes: "[2/4] epsilon 2 seed 0: test MAPE 0.1412 (38 s)".
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="privacy-utility sweep: train federated at several epsilons, write sweep.json",
        description="Train fed-MugRep across the agencies of a city folder once per epsilon "
        "(and seed), with the same local federated training as `fedmugrep train-federated`, "
        "and write the test MAPE of each run to the JSON file `fedmugrep report` draws as "
        "its privacy-utility curve.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--city",
        type=Path,
        required=True,
        action=validated(existing_dir("city folder", "write one with `fedmugrep synth --out DIR`")),
        help="city folder: transactions_<agency>.csv files, communities.csv, optional "
        "mobility.csv and public.toml (as for train-federated)",
    )
    p.add_argument(
        "--epsilons",
        type=float,
        nargs="+",
        required=True,
        metavar="EPS",
        action=validated(each(positive(1e6))),
        help="epsilon cap per datasite of each run, > 0 (e.g. 1 2 4 8)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        action=validated(not_a_dir),
        help="the sweep JSON to write (e.g. RUN_DIR/sweep.json, where `fedmugrep report "
        "RUN_DIR` looks)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=30,
        action=validated(int_range(1, 100_000)),
        help="federated rounds of every run (default 30)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        metavar="SEED",
        action=validated(each(int_range(-(2**63), 2**63 - 1))),
        help="random seeds; every epsilon runs once per seed (default 0)",
    )
    p.add_argument(
        "--pretrain-epochs",
        type=int,
        default=150,
        action=validated(int_range(0, 100_000)),
        help="public pretraining on the mocks before any private release (default 150)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=0.01,
        action=validated(positive(100.0)),
        help="learning rate of both models (default 0.01)",
    )
    p.add_argument(
        "--no-privacy-reference",
        action="store_true",
        help="also run once per seed without privacy (drawn as epsilon = infinity)",
    )
    p.add_argument(
        "--no-region-datasite",
        action="store_true",
        help="no region datasite: model 2 runs here over the public community geography",
    )
    p.add_argument(
        "--mock",
        choices=("auto", "declared", "synthetic"),
        default="auto",
        help="what the mocks are drawn from, as for train-federated (default auto)",
    )
    p.add_argument(
        "--home",
        type=Path,
        default=None,
        help="keep every run's home (ledgers, owners' reports) under HOME/eps<EPS>-seed<SEED> "
        "(default: a temporary folder, removed at the end)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars (the per-run lines stay)")
    p.set_defaults(func=run)


def _run_dir_name(epsilon: float | None, seed: int) -> str:
    return f"{'no-privacy' if epsilon is None else f'eps{epsilon:g}'}-seed{seed}"


def sweep_runs(args: argparse.Namespace, homes: Path) -> list[dict[str, Any]]:
    """Train once per (epsilon, seed) in a fresh home under ``homes``; rewrite ``args.out``
    after every run; return the runs' records."""
    from fedmugrep.federation.local import run_local  # deferred: loads torch
    from fedmugrep.federation.plan import FederationPlan, PrivacyPlan  # deferred: loads torch

    grid: list[tuple[float | None, int]] = [
        (eps, seed) for eps in sorted(set(args.epsilons)) for seed in args.seeds
    ]
    if args.no_privacy_reference:
        grid += [(None, seed) for seed in args.seeds]
    for eps, seed in grid:
        home = homes / _run_dir_name(eps, seed)
        if home.exists() and any(home.iterdir()):
            raise UsageError(
                f"--home: {home} already holds a run (its ledgers have spent budget); remove "
                "it or give another --home"
            )
    runs: list[dict[str, Any]] = []
    header = {
        "command": "sweep",
        "city": str(args.city.resolve()),
        "rounds": args.rounds,
        "pretrain_epochs": args.pretrain_epochs,
        "metric": "mape: exact test MAPE pooled from the data owners' own evaluations",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for i, (eps, seed) in enumerate(grid, start=1):
        t0 = time.perf_counter()
        privacy = None if eps is None else PrivacyPlan.for_epsilon(eps, region_epsilon=eps)
        plan = FederationPlan(
            rounds=args.rounds,
            lr=args.lr,
            region_lr=args.lr,
            privacy=privacy,
            pretrain_epochs=args.pretrain_epochs,
            seed=seed,
        )
        home = homes / _run_dir_name(eps, seed)
        res = run_local(
            args.city,
            plan,
            home,
            progress=not args.quiet,
            region_datasite=not args.no_region_datasite,
            mock=None if args.mock == "auto" else args.mock,
        )
        agency_homes = [h for n, h in res.homes.items() if n != "region" and n not in res.dropped]
        pooled, _per_agency = pooled_metrics(owner_predictions(agency_homes))
        spent = {}
        for dataset, h in res.homes.items():
            summary = spending_summary(h, res.data_scientist, dataset)
            if summary is not None:
                spent[dataset] = summary["epsilon"]
        released = res.metrics.get("mape")
        rec = {
            "epsilon": eps,
            "seed": seed,
            "mape": pooled["mape"],
            "mae_log": pooled["mae_log"],
            "coverage80": pooled["coverage80"],
            "released_mape": None
            if released is None or not math.isfinite(float(released))
            else float(released),
            "epsilon_spent": spent,
            "seconds": time.perf_counter() - t0,
        }
        runs.append(rec)
        args.out.write_text(json.dumps({**header, "runs": runs}, indent=2))
        what = "no privacy" if eps is None else f"epsilon {eps:g}"
        print(
            f"[{i}/{len(grid)}] {what} seed {seed}: test MAPE {rec['mape']:.4f} "
            f"({rec['seconds']:.0f} s)",
            flush=True,
        )
    return runs


def run(args: argparse.Namespace) -> int:
    """Execute ``fedmugrep sweep``."""
    if args.home is not None:
        runs = sweep_runs(args, args.home)
    else:
        with tempfile.TemporaryDirectory(prefix="fedmugrep-sweep-") as tmp:
            runs = sweep_runs(args, Path(tmp))
    print(
        f"sweep written to {args.out} ({len(runs)} runs); draw it with fedmugrep report "
        f"RUN_DIR --sweep {args.out}"
        + (f" (or fedmugrep report {args.out.parent})" if args.out.name == "sweep.json" else "")
    )
    return 0

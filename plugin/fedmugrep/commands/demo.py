"""``fedmugrep demo``: the README's main job on the built-in synthetic city.

1. Generate the synthetic city (three agencies, a region party's community table).
2. Centralized reference: fed-MugRep on pooled data vs baselines vs the Bayes floor.
3. Federated: one PySyft datasite per agency plus the region datasite (in-process, or real
   HTTP servers on 127.0.0.1 with ``--http``); the data scientist submits one request per
   datasite carrying its privacy contract, each data owner reviews and approves it, then
   DP federated training runs with every release charged to the datasite's ledger.
4. Report: test metrics, epsilon spent per datasite against its cap, bytes per round.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

from fedmugrep.commands.train_central import format_summary
from fedmugrep.data.loading import load_communities
from fedmugrep.data.synthetic import CityConfig, make_city, write_city

EPILOG = """example:
  fedmugrep demo                          # in-process datasites, writes runs/demo/report.json
  fedmugrep demo --http --rounds 20       # real HTTP datasites on 127.0.0.1
  fedmugrep demo --no-privacy --json out.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo on the built-in synthetic city",
        description="Generate the synthetic city, train the centralized reference, then train "
        "fed-MugRep across PySyft datasites with differential privacy and report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic city and training")
    p.add_argument(
        "--transactions", type=int, default=None, help="city size (default: the built-in size)"
    )
    p.add_argument("--rounds", type=int, default=30, help="federated rounds (default 30)")
    p.add_argument(
        "--epsilon", type=float, default=8.0, help="epsilon cap per datasite (delta 1e-5)"
    )
    p.add_argument(
        "--no-privacy", action="store_true", help="federate without noise (owners opt in)"
    )
    p.add_argument(
        "--http", action="store_true", help="datasites as HTTP servers in separate processes"
    )
    p.add_argument(
        "--no-region-datasite",
        action="store_true",
        help="no region datasite: model 2 runs at the coordinator over the public community "
        "geography (three agency datasites only)",
    )
    p.add_argument("--json", type=Path, help="also write the report here")
    p.add_argument("--quiet", action="store_true", help="no progress bars or review sheets")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedmugrep.federation.owners import agency_files  # deferred: loads torch
    from fedmugrep.federation.plan import FederationPlan, PrivacyPlan  # deferred: loads torch
    from fedmugrep.pysyft.run import run_syft  # deferred: loads torch
    from fedmugrep.report.run_summary import (  # deferred: loads torch, matplotlib
        print_summary,
        save_run,
        summarise_run,
    )
    from fedmugrep.training.central import TrainConfig, central_reference  # deferred: loads torch

    t0 = time.perf_counter()
    # a demo plays every data owner on a fresh synthetic city: a previous demo's datasites
    # (their ledgers hold the budget that run spent) and generated files are replaced
    previous = [args.out / d for d in ("datasites", "city", "report") if (args.out / d).exists()]
    if previous:
        print(
            f"replacing the previous demo run in {args.out} (new city, new datasites; their "
            "ledgers start empty)"
        )
        for folder in previous:
            shutil.rmtree(folder)
    cfg = replace(CityConfig(), seed=args.seed)
    if args.transactions:
        cfg = replace(cfg, n_transactions=args.transactions)
    city_dir = args.out / "city"
    print(f"[1/3] synthetic city (seed {cfg.seed}) -> {city_dir}")
    write_city(make_city(cfg), city_dir)
    tx_files = list(agency_files(city_dir).values())

    print(f"[2/3] centralized reference on {len(tx_files)} agencies' pooled transactions")
    central = central_reference(
        tx_files,
        city_dir / "communities.csv",
        city_dir / "mobility.csv",
        tcfg=TrainConfig(seed=args.seed),
        progress=not args.quiet,
    )
    print(format_summary(central))

    mode = "http" if args.http else "inprocess"
    privacy = (
        None
        if args.no_privacy
        else PrivacyPlan.for_epsilon(args.epsilon, region_epsilon=args.epsilon)
    )
    plan = FederationPlan(rounds=args.rounds, privacy=privacy, seed=args.seed)
    print(
        f"[3/3] federated training over PySyft datasites ({mode}"
        + (", no region datasite" if args.no_region_datasite else "")
        + f"), {args.rounds} rounds, "
        + ("no privacy" if privacy is None else f"epsilon cap {args.epsilon} per datasite")
    )
    res = run_syft(
        city_dir,
        plan,
        args.out / "datasites",
        mode=mode,
        progress=not args.quiet,
        region_datasite=not args.no_region_datasite,
    )

    out = summarise_run(
        res, plan, communities=load_communities(city_dir / "communities.csv"), out_dir=args.out
    )
    out = {
        "command": "demo",
        "mode": mode,
        **out,
        "centralized": {k: central["model"][k] for k in ("mae", "mape", "mae_log", "coverage80")},
        "baselines": central.get("baselines", {}),
        "setup_seconds": res.setup_seconds,
        "train_seconds": res.train_seconds,
    }
    if "bayes_floor" in central:
        out["bayes_floor"] = central["bayes_floor"]
    out["demo_seconds"] = time.perf_counter() - t0
    print_summary(out)
    page = save_run(out, args.out, also=args.json)
    print(
        f"report written to {args.out / 'report.json'} and {page.html} ({out['demo_seconds']:.0f} s)"
    )
    return 0

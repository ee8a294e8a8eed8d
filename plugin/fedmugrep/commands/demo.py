"""``fedmugrep demo``: the README's main job on the built-in synthetic city.

Today it generates the synthetic city and runs the centralized fed-MugRep model against
the baselines and the Bayes floor. (The federated run over PySyft datasites replaces it
when the federation lands.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

EPILOG = """example:
  fedmugrep demo                       # writes runs/demo/{city/,report.json}
  fedmugrep demo --out /tmp/demo --seed 3 --json /tmp/demo.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo on the built-in synthetic city",
        description="Generate the synthetic city, train fed-MugRep on it and report test metrics "
        "against baselines and the Bayes floor.",
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
    p.add_argument("--json", type=Path, help="also write the report here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fedmugrep.commands.train_central import format_summary
    from fedmugrep.data.synthetic import CityConfig, make_city, write_city
    from fedmugrep.training.central import (
        TrainConfig,
        attach_bayes_floor,
        load_inputs,
        public_report,
        train_central,
    )

    t0 = time.perf_counter()
    cfg = replace(CityConfig(), seed=args.seed)
    if args.transactions:
        cfg = replace(cfg, n_transactions=args.transactions)
    city_dir = args.out / "city"
    print(f"[1/2] synthetic city (seed {cfg.seed}) -> {city_dir}")
    files = write_city(make_city(cfg), city_dir)
    tx_files = sorted(city_dir.glob("transactions_agency*.csv"))
    print(f"[2/2] centralized training on {len(tx_files)} agencies' pooled transactions")
    tx, comms, mob = load_inputs(tx_files, city_dir / "communities.csv", city_dir / "mobility.csv")
    report = train_central(
        tx, comms, mob, tcfg=TrainConfig(seed=args.seed), progress=not args.quiet
    )
    attach_bayes_floor(report, tx, tx_files)
    out = public_report(report)
    out["mode"] = "centralized"
    out["city"] = (
        {k: str(v) for k, v in files.items()} if isinstance(files, dict) else str(city_dir)
    )
    out["demo_seconds"] = time.perf_counter() - t0
    print(format_summary(out))
    for target in [args.out / "report.json", args.json]:
        if target:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(out, indent=2))
    print(f"report written to {args.out / 'report.json'} ({out['demo_seconds']:.0f} s)")
    return 0

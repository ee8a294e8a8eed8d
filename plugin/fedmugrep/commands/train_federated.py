"""``fedmugrep train-federated``: federated fed-MugRep on a synthetic-city folder (local runtime).

Every party runs in this process through the same party code the PySyft datasites run;
each agency's ledger lives under ``--home``. The PySyft-backed run is ``fedmugrep demo`` once
the federation issue lands.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EPILOG = """example:
  fedmugrep synth --out city/
  fedmugrep train-federated --city city/ --home runs/fed --rounds 60 --epsilon 8 --json runs/fed.json
  fedmugrep audit --home runs/fed/transactions_agency1
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-federated",
        help="federated training over the agencies of a synthetic city (local runtime)",
        description="Train fed-MugRep across the agencies of a city folder written by "
        "`fedmugrep synth`, with DP-SGD on the event graph and a ledger per agency.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--city", type=Path, required=True, help="folder written by fedmugrep synth")
    p.add_argument(
        "--home", type=Path, required=True, help="folder for the parties' ledgers and state"
    )
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument(
        "--upload-rate", type=float, default=1.0, help="share of channels sent per round"
    )
    p.add_argument(
        "--epsilon", type=float, default=8.0, help="target epsilon per agency (delta 1e-5)"
    )
    p.add_argument("--no-privacy", action="store_true", help="no noise, no ledger (reference run)")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedmugrep.federation.local import run_local
    from fedmugrep.federation.plan import FederationPlan, PrivacyPlan

    privacy = None if args.no_privacy else PrivacyPlan(epsilon=args.epsilon)
    plan = FederationPlan(
        rounds=args.rounds,
        lr=args.lr,
        region_lr=args.lr,
        upload_rate=args.upload_rate,
        privacy=privacy,
    )
    res = run_local(args.city, plan, args.home, progress=not args.quiet)
    from fedmugrep.privacy.ledger import Ledger

    spent = {}
    if privacy is not None:
        for folder in sorted(args.home.glob("transactions_*")):
            name = folder.name.removeprefix("transactions_")
            spent[name] = {
                "epsilon": Ledger(folder).spent("data-scientist", name),
                "cap": privacy.epsilon,
            }
    out = {
        "federated": res.metrics,
        "per_agency": res.per_agency,
        "privacy": spent,
        "noise_multiplier": res.noise_multiplier,
        "bytes_per_round": [h.bytes_up for h in res.history],
        "bytes_dense_per_round": res.history[-1].bytes_dense if res.history else 0,
        "plan": plan.to_dict(),
    }
    m = res.metrics
    print(
        f"federated test: MAE {m['mae']:,.0f}  MAPE {m['mape']:.4f}  MAE log {m['mae_log']:.4f}  coverage80 {m['coverage80']:.3f}"
    )
    for name, s in spent.items():
        print(f"  {name}: epsilon spent {s['epsilon']:.3f} of cap {s['cap']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"report written to {args.json}")
    return 0

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
import json
import shutil
import time
from pathlib import Path

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
    from dataclasses import replace

    from fedmugrep.commands.train_central import format_summary
    from fedmugrep.data.loading import load_communities
    from fedmugrep.data.synthetic import CityConfig, make_city, write_city
    from fedmugrep.federation.owner_report import owner_predictions, pooled_metrics
    from fedmugrep.federation.plan import FederationPlan, PrivacyPlan, epsilon_after_each_round
    from fedmugrep.federation.valuation import ValuationModel
    from fedmugrep.privacy.audit import spending_summary
    from fedmugrep.privacy.ledger import Ledger
    from fedmugrep.pysyft.run import run_syft
    from fedmugrep.report import write_report
    from fedmugrep.training.central import TrainConfig, central_reference

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
    tx_files = sorted(city_dir.glob("transactions_agency*.csv"))

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

    privacy_rep, eps_curves = {}, {}
    for dataset, home in res.homes.items():
        summary = spending_summary(home, res.data_scientist, dataset)
        if summary is None:  # nothing capped: exact releases the owner allowed (no privacy)
            continue
        privacy_rep[dataset] = summary
        eps_curves[dataset] = epsilon_after_each_round(
            Ledger(home).entries(), dataset, len(res.history)
        )

    # the data owners' view: exact metrics and per-row predictions stay in each datasite's home;
    # the demo plays every owner, so it may pool them (the data scientist only got noised sums)
    agency_homes = [h for n, h in res.homes.items() if n != "region"]
    predictions = owner_predictions(agency_homes)
    owner_pooled, owner_per = pooled_metrics(predictions)
    predictions.to_csv(args.out / "predictions.csv", index=False)
    model_file = ValuationModel.from_result(
        res, geography=load_communities(city_dir / "communities.csv")
    ).save(args.out / "model.pt")

    fed = {k: owner_pooled[k] for k in ("mae", "mape", "mae_log", "coverage80", "n")}
    history = []
    for i, h in enumerate(res.history):
        rec = {
            "round": h.round,
            "seconds": h.seconds,
            "bytes_up": h.bytes_up,
            "bytes_dense": h.bytes_dense,
            "epsilon": {d: c[i] for d, c in eps_curves.items() if i < len(c)},
        }
        if h.train_loss is not None:
            rec["train_loss"] = h.train_loss
        history.append(rec)
    out = {
        "mode": mode,
        "federated": fed,
        "federated_note": "exact test metrics from the data owners' own reports (pooled)",
        "federated_released": {
            k: v
            for k, v in res.metrics.items()
            if k in ("mae", "mape", "mae_log", "coverage80", "n") or k.endswith("_noise_sd")
        },
        "federated_per_agency": owner_per,
        "centralized": {k: central["model"][k] for k in ("mae", "mape", "mae_log", "coverage80")},
        "baselines": central.get("baselines", {}),
        "privacy": privacy_rep,
        "noise_multiplier": res.noise_multiplier,
        "history": history,
        "bytes_per_round": [h.bytes_up for h in res.history],
        "bytes_dense_per_round": res.history[-1].bytes_dense if res.history else 0,
        "district_summary": res.district_summary,
        "setup_seconds": res.setup_seconds,
        "train_seconds": res.train_seconds,
        "model_file": str(model_file),
        "plan": plan.to_dict(),
    }
    if "bayes_floor" in central:
        out["bayes_floor"] = central["bayes_floor"]
    out["demo_seconds"] = time.perf_counter() - t0

    ratio = fed["mape"] / out["centralized"]["mape"]
    rel = out["federated_released"]
    print(
        f"federated test (data owners' exact metrics): MAE {fed['mae']:,.0f}  MAPE "
        f"{fed['mape']:.4f} ({ratio:.2f} x centralized)  MAE log {fed['mae_log']:.4f}  "
        f"coverage80 {fed['coverage80']:.3f}"
    )
    if privacy is not None:
        print(
            f"  released to the data scientist (Laplace-noised, +- noise sd): MAPE "
            f"{rel['mape']:.4f} +- {rel['mape_noise_sd']:.4f}  MAE log {rel['mae_log']:.4f} "
            f"+- {rel['mae_log_noise_sd']:.4f}  coverage80 {rel['coverage80']:.3f} "
            f"+- {rel['coverage80_noise_sd']:.3f}"
        )
    for name, st in privacy_rep.items():
        print(
            f"  {name}: epsilon {st['epsilon']:.3f} of cap {st['cap']}; ledger verified: "
            f"{st['ledger_ok']}"
        )
    if res.history:
        up = sum(res.history[-1].bytes_up.values()) / len(res.history[-1].bytes_up)
        print(
            f"  bytes up per datasite per round: {up:,.0f} (dense {out['bytes_dense_per_round']:,})"
        )
    print(f"  model for valuations: {model_file} (fedmugrep appraise --model {model_file} ...)")
    for target in [args.out / "report.json", args.json]:
        if target:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(out, indent=2, default=str))
    page = write_report(args.out)
    print(
        f"report written to {args.out / 'report.json'} and {page.html} ({out['demo_seconds']:.0f} s)"
    )
    return 0

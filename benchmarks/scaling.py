"""Scaling: event-graph construction time and memory vs size; round time vs number of datasites.

1. **Event graph** (capability C1): :func:`~fedmugrep.graphs.event.build_event_graph` on the
   synthetic city's transactions for n = 10k, 100k and 1M on two maps: ``same`` (the default
   20 x 15 km map with 60 communities: sales per community grow with n, so at 1M most of a
   row's K predecessors are same-day sales that the rule must skip) and ``scaled`` (communities
   and area grow with n: density of the default 12,000-sale city, a bigger region rather than a
   denser city; only for n > 12,000), with the training configuration
   (:class:`~fedmugrep.training.prepare.GraphConfig`: K = 10, 3 km, 180 days, links within a
   community, every row a possible source) and both rules: ``"recent"`` (what training uses) and
   ``"greedy"``. Each (n, rule) runs in its own subprocess, which loads the arrays, notes its
   resident memory, resets its peak-RSS mark, builds the graph and reports wall time and peak
   RSS (``VmHWM``); the build's peak memory is that peak minus the RSS before the build. Goal: <= 30 s at 1M on 2 cores.
2. **Round time vs datasites**: the default synthetic city (12,000 sales) split into N = 1, 2, 4
   and 8 transaction datasites (``CityConfig(n_agencies=N)`` with equal agency weights; same sales
   for every N), a private federated run in the local runtime (every party in this process, one
   after the other), median seconds of a round.

Run: ``.venv/bin/python benchmarks/scaling.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

GRAPH_SIZES = (10_000, 100_000, 1_000_000)
QUICK_GRAPH_SIZES = (2_000,)
RULES = ("recent", "greedy")
MAPS = ("same", "scaled")
DEFAULT_CITY = 12_000
GOAL_SECONDS_AT_1M = 30.0
DATASITES = (1, 2, 4, 8)
QUICK_DATASITES = (1, 2)
ROUND_CITY = 12_000
QUICK_ROUND_CITY = 800
ROUNDS = 3
QUICK_ROUNDS = 1
WORKER = "--graph-worker"


# ------------------------------------------------------------------------------ event graph
def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    """This process's peak RSS (``VmHWM``). Not ``ru_maxrss``: Linux carries that across
    ``execve``, so a worker would report its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def graph_worker(npz: str, rule: str, repeats: int) -> None:
    """Subprocess: build the event graph ``repeats`` times; print one JSON line."""
    import numpy as np

    _common.one_torch_thread()
    from fedmugrep.graphs.event import build_event_graph
    from fedmugrep.training.prepare import GraphConfig

    arrays = np.load(npz)
    lat, lon, t, group = arrays["lat"], arrays["lon"], arrays["t"], arrays["group"]
    known = np.ones(len(lat), dtype=bool)
    gcfg = GraphConfig(rule=rule)
    maxrss_before = _peak_rss_mib()
    peak_was_reset = _reset_peak_rss()
    rss_before = _rss_mib()
    seconds, edges = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        graph = build_event_graph(
            lat,
            lon,
            t,
            k=gcfg.k,
            max_km=gcfg.max_km,
            max_days=gcfg.max_days,
            group=group if gcfg.event_within_community else None,
            source_mask=known,
            rule=gcfg.rule,
        )
        seconds.append(time.perf_counter() - t0)
        edges = graph.num_edges
        del graph
    maxrss_after = _peak_rss_mib()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "edges": edges,
                "rss_before_mib": rss_before,
                "peak_rss_before_build_mib": maxrss_before,
                "peak_reset_before_build": peak_was_reset,
                "peak_rss_mib": maxrss_after,
                "build_peak_mib": maxrss_after - rss_before,
            }
        )
    )


def city_config(n: int, city_map: str):  # noqa: ANN201
    """``same``: the default 20 x 15 km map with 60 communities (density grows with n);
    ``scaled``: communities and area grow with n (sales per community and per km2 stay those of
    the default 12,000-sale city)."""
    from fedmugrep.data.synthetic import CityConfig

    if city_map == "same":
        return CityConfig(n_transactions=n)
    factor = n / DEFAULT_CITY
    return CityConfig(
        n_transactions=n,
        n_communities=round(60 * factor),
        width_km=20.0 * factor**0.5,
        height_km=15.0 * factor**0.5,
    )


def city_arrays(n: int, city_map: str, folder: Path) -> tuple[Path, dict]:
    """The synthetic city's coordinates, days and community codes, saved for the workers."""
    import numpy as np

    from fedmugrep.data.synthetic import make_city
    from fedmugrep.training.prepare import days_since_epoch

    t0 = time.perf_counter()
    cfg = city_config(n, city_map)
    tx = make_city(cfg).transactions
    path = folder / f"city_{n}_{city_map}.npz"
    np.savez(
        path,
        lat=tx["lat"].to_numpy(np.float64),
        lon=tx["lon"].to_numpy(np.float64),
        t=days_since_epoch(tx["date"]),
        group=tx["community"].astype("category").cat.codes.to_numpy(np.int64),
    )
    meta = {
        "map": city_map,
        "map_km": [cfg.width_km, cfg.height_km],
        "generate_seconds": time.perf_counter() - t0,
        "communities": int(tx["community"].nunique()),
        "days": int((tx["date"].max() - tx["date"].min()).days) + 1,
    }
    return path, meta


def event_graph_part(sizes: tuple[int, ...]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(n, m) for m in MAPS for n in sizes if m == "same" or n > DEFAULT_CITY]
        for n, city_map in jobs:
            npz, meta = city_arrays(n, city_map, Path(tmp))
            for rule in RULES:
                repeats = 1 if n >= 1_000_000 else 3
                proc = subprocess.run(
                    [sys.executable, __file__, WORKER, str(npz), rule, str(repeats)],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "OMP_NUM_THREADS": "1"},
                    check=False,
                )
                if proc.returncode != 0:
                    rows.append(
                        {"n": n, "map": city_map, "rule": rule, "error": proc.stderr[-2000:]}
                    )
                    print(f"event graph n={n} rule={rule}: FAILED\n{proc.stderr[-2000:]}")
                    continue
                got = json.loads(proc.stdout.strip().splitlines()[-1])
                row = {
                    "n": n,
                    "rule": rule,
                    "k": 10,
                    **meta,
                    **got,
                    "median_seconds": _common.median(got["seconds"]),
                    "training_rule": rule == "recent",
                }
                rows.append(row)
                print(
                    f"event graph n={n:>9,} {city_map:>6} map rule={rule:<6}: "
                    f"{row['median_seconds']:7.2f} s, "
                    f"build peak {row['build_peak_mib']:7.0f} MiB "
                    f"(process peak {row['peak_rss_mib']:.0f} MiB), {row['edges']:,} edges",
                    flush=True,
                )
    return rows


# ------------------------------------------------------------------------------ rounds
def rounds_part(
    datasites: tuple[int, ...], n_transactions: int, rounds: int, quick: bool = False
) -> list[dict]:
    _common.one_torch_thread()
    from fedmugrep.data.synthetic import CityConfig, make_city, write_city
    from fedmugrep.federation.local import run_local
    from fedmugrep.federation.plan import FederationPlan, PrivacyPlan

    plan = FederationPlan(
        rounds=rounds, privacy=PrivacyPlan(), **_common.quick_plan_overrides(quick)
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_sites in datasites:
            city = make_city(
                CityConfig(
                    n_transactions=n_transactions,
                    n_agencies=n_sites,
                    agency_weights=(1.0,) * n_sites,
                )
            )
            city_dir = Path(tmp) / f"city{n_sites}"
            write_city(city, city_dir)
            t0 = time.perf_counter()
            res = run_local(city_dir, plan, Path(tmp) / f"home{n_sites}", progress=False)
            total = time.perf_counter() - t0
            secs = [h.seconds for h in res.history]
            row = {
                "datasites": n_sites,
                "transactions": n_transactions,
                "per_datasite": city.metadata["counts"]["per_agency"],
                "rounds": rounds,
                "round_seconds": secs,
                "median_round_seconds": _common.median(secs),
                "run_seconds": total,
                "bytes_up_per_datasite": _common.median(
                    [b for h in res.history for b in h.bytes_up.values()]
                ),
            }
            rows.append(row)
            print(
                f"{n_sites} datasites: median round {row['median_round_seconds']:.2f} s "
                f"(run {total:.1f} s; sizes {list(row['per_datasite'].values())})",
                flush=True,
            )
    base = rows[0]["median_round_seconds"]
    for row in rows:
        row["vs_one_datasite"] = row["median_round_seconds"] / base
    return rows


# ------------------------------------------------------------------------------ output
def plot(graph_rows: list[dict], round_rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ok = [r for r in graph_rows if "error" not in r]
    for (rule, city_map), style in zip(
        [(r, m) for m in MAPS for r in RULES], ("o-", "s-", "o--", "s--"), strict=True
    ):
        rs = sorted(
            (
                r
                for r in ok
                if r["rule"] == rule and (r["map"] == city_map or r["n"] <= DEFAULT_CITY)
            ),
            key=lambda r: r["n"],
        )
        if city_map == "scaled" and not any(r["map"] == "scaled" for r in rs):
            continue
        label = f"{rule}{' (training)' if rule == 'recent' else ''}, {city_map} map"
        axes[0].plot([r["n"] for r in rs], [r["median_seconds"] for r in rs], style, label=label)
        axes[1].plot([r["n"] for r in rs], [r["build_peak_mib"] for r in rs], style, label=label)
    axes[0].axhline(GOAL_SECONDS_AT_1M, color="r", ls=":", label="goal at 1M: 30 s")
    for ax, ylabel in zip(axes[:2], ("build seconds", "build peak memory (MiB, RSS)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("transactions")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_title("event graph construction (K=10)")
    axes[1].set_title("event graph peak memory")
    n = [r["datasites"] for r in round_rows]
    axes[2].plot(n, [r["median_round_seconds"] for r in round_rows], "o-")
    axes[2].set_xscale("log", base=2)
    axes[2].set_xticks(n, [str(x) for x in n])
    axes[2].set_ylim(bottom=0)
    axes[2].set_xlabel("transaction datasites (same city, split)")
    axes[2].set_ylabel("median round seconds")
    tx = round_rows[0]["transactions"] if round_rows else 0
    axes[2].set_title(f"round time, local runtime ({tx:,} sales)")
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = _common.parse_args(__doc__.splitlines()[0], argv)
    t0 = time.perf_counter()
    sizes = QUICK_GRAPH_SIZES if args.quick else GRAPH_SIZES
    graph_rows = event_graph_part(sizes)
    round_rows = rounds_part(
        QUICK_DATASITES if args.quick else DATASITES,
        QUICK_ROUND_CITY if args.quick else ROUND_CITY,
        QUICK_ROUNDS if args.quick else ROUNDS,
        args.quick,
    )
    largest = max(sizes)
    at_largest = {
        f"{r['rule']}/{r['map']}": r["median_seconds"]
        for r in graph_rows
        if r["n"] == largest and "error" not in r
    }
    data = {
        "benchmark": "scaling",
        "quick": args.quick,
        "machine": _common.machine_info(),
        "event_graph": {
            "sizes": list(sizes),
            "rules": list(RULES),
            "graph_config": "GraphConfig(): k=10, max_km=3, max_days=180, within community",
            "goal": f"<= {GOAL_SECONDS_AT_1M:g} s at 1M transactions on 2 cores",
            "seconds_at_largest": at_largest,
            "goal_met": (
                max(v for k, v in at_largest.items() if k.startswith("recent/"))
                <= GOAL_SECONDS_AT_1M
                if largest >= 1_000_000
                else None
            ),
            "rows": graph_rows,
        },
        "rounds": {
            "runtime": "local",
            "privacy": "PrivacyPlan() defaults (epsilon 8)",
            "rows": round_rows,
        },
        "seconds": time.perf_counter() - t0,
    }
    _common.write_json(args.out, "scaling", data)
    plot(graph_rows, round_rows, args.out / "scaling.png")
    print(f"wrote {args.out / 'scaling.json'} and scaling.png")
    return data


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == WORKER:
        graph_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()

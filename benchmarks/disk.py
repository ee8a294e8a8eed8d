"""Disk per round on a datasite: what PySyft's store, the ledger and the release record grow by.

The demo's city (12,000 sales, 3 agencies and the region datasite, the default private plan) is
trained twice on in-process PySyft datasites, for ``R1`` and ``R2`` rounds, each time on fresh
datasites. After each run every datasite's home is measured by part:

* ``syft store``: PySyft's database (``syft/db``, measured on a copy after a WAL checkpoint, so
  the figure is the data, not the write-ahead log's high-water mark) and its blob store;
* ``ledger``: ``privacy_ledger.sqlite`` (same treatment);
* ``releases``: the datasite's record of every release (replayed on retries, uncharged);
* ``model state``: the region datasite's model 2 after every round (what a resumed run or the
  best-round restore rewinds to);
* ``evaluations``: the owner's exact test metrics and per-sale predictions (once per run);
* anything else.

Growth per round = (size after ``R2`` rounds - size after ``R1``) / (``R2 - R1``): the set-up
(uploads, requests, one-off releases) cancels out. Goal: <= 100 KB per round per datasite.

Run: ``.venv/bin/python benchmarks/disk.py [--quick] [--out DIR] [--rounds R1 R2]``.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

GOAL_BYTES_PER_ROUND = 100_000
PARTS = ("syft store", "ledger", "releases", "model state", "evaluations", "other")


def _configure(parser: Any) -> None:
    parser.add_argument(
        "--rounds", type=int, nargs=2, default=(2, 8), metavar=("R1", "R2"), help="(default 2 8)"
    )


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _sqlite_bytes(db: Path, scratch: Path) -> int:
    """Size of an SQLite database with its WAL folded in (measured on a copy)."""
    if not db.exists():
        return 0
    copy = scratch / db.name
    for suffix in ("", "-wal", "-shm"):
        src = db.with_name(db.name + suffix)
        if src.exists():
            shutil.copy2(src, copy.with_name(copy.name + suffix))
    with sqlite3.connect(copy) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = copy.stat().st_size
    for suffix in ("", "-wal", "-shm"):
        copy.with_name(copy.name + suffix).unlink(missing_ok=True)
    return size


def home_parts(home: Path) -> dict[str, int]:
    """Bytes of a datasite's home by part (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        db_dir = home / "syft" / "db"
        dbs = sorted(p for p in db_dir.glob("*.db")) if db_dir.exists() else []
        syft_db = sum(_sqlite_bytes(p, scratch) for p in dbs)
        syft_rest = _tree_bytes(home / "syft") - _tree_bytes(db_dir)
        ledger = _sqlite_bytes(home / "privacy_ledger.sqlite", scratch)
    region_runs = list((home / "fedmugrep_region").glob("*"))
    parts = {
        "syft store": syft_db + syft_rest,
        "ledger": ledger,
        "releases": _tree_bytes(home / "releases")
        + sum(_tree_bytes(r / "releases") for r in region_runs),
        "model state": sum(
            p.stat().st_size
            for r in region_runs
            for pattern in ("region_model*.pt", "model_round_*.pt")
            for p in r.glob(pattern)
        ),
        "evaluations": _tree_bytes(home / "evaluations"),
    }
    # the ledger's files are counted once, above, as its data
    ledger_files = sum(p.stat().st_size for p in home.glob("privacy_ledger.sqlite*"))
    known = _tree_bytes(home / "syft") + ledger_files
    known += sum(parts[p] for p in ("releases", "model state", "evaluations"))
    parts["other"] = max(_tree_bytes(home) - known, 0)
    return parts


def one_run(city: Path, rounds: int, base: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    from fedmugrep.federation.plan import FederationPlan, PrivacyPlan
    from fedmugrep.pysyft.run import run_syft

    plan = FederationPlan(rounds=rounds, privacy=PrivacyPlan(), **overrides)
    home = base / f"r{rounds}"
    t0 = time.perf_counter()
    res = run_syft(city, plan, home, mode="inprocess", progress=False)
    seconds = time.perf_counter() - t0
    sites = {name: home_parts(Path(h)) for name, h in sorted(res.homes.items())}
    coordinator = _tree_bytes(home / "coordinator")
    return {"rounds": rounds, "seconds": seconds, "sites": sites, "coordinator": coordinator}


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    growth = data["per_round"]
    names = sorted(growth)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    bottom = np.zeros(len(names))
    colors = dict(
        zip(
            PARTS,
            ["tab:blue", "tab:red", "tab:orange", "tab:purple", "tab:green", "0.6"],
            strict=True,
        )
    )
    for part in PARTS:
        vals = np.array([max(growth[n][part], 0) / 1e3 for n in names])
        ax.bar(names, vals, bottom=bottom, label=part, color=colors[part])
        bottom += vals
    for i, n in enumerate(names):
        ax.text(i, bottom[i], f"{growth[n]['total'] / 1e3:.1f} KB", ha="center", va="bottom")
    ax.axhline(GOAL_BYTES_PER_ROUND / 1e3, color="r", ls=":", label="goal: 100 KB per round")
    ax.set_ylabel("KB added per round (per datasite)")
    r1, r2 = data["rounds"]
    ax.set_title(
        f"disk per round on each datasite ({data['transactions']:,} sales; {r1} vs {r2} rounds)"
    )
    ax.set_ylim(0, max(max(bottom), GOAL_BYTES_PER_ROUND / 1e3) * 1.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _common.parse_args(__doc__.splitlines()[0], argv, _configure)
    _common.one_torch_thread()
    from dataclasses import replace

    from fedmugrep.data.synthetic import CityConfig, make_city, write_city

    cfg = CityConfig() if not args.quick else replace(CityConfig(), n_transactions=1200)
    r1, r2 = (1, 2) if args.quick else tuple(args.rounds)
    if not 1 <= r1 < r2:
        raise SystemExit(f"--rounds needs 1 <= R1 < R2 (got {r1} {r2})")
    overrides = _common.quick_plan_overrides(args.quick)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        write_city(make_city(cfg), base / "city")
        runs = [one_run(base / "city", r, base, overrides) for r in (r1, r2)]
    per_round: dict[str, dict[str, float]] = {}
    for name in runs[0]["sites"]:
        a, b = runs[0]["sites"][name], runs[1]["sites"][name]
        row = {p: (b[p] - a[p]) / (r2 - r1) for p in PARTS}
        row["total"] = sum(row.values())
        per_round[name] = row
    coordinator_per_round = (runs[1]["coordinator"] - runs[0]["coordinator"]) / (r2 - r1)
    worst = max(v["total"] for v in per_round.values())
    data = {
        "benchmark": "disk",
        "machine": _common.machine_info(),
        "quick": args.quick,
        "transactions": cfg.n_transactions,
        "rounds": [r1, r2],
        "runs": runs,
        "per_round": per_round,
        "coordinator_per_round": coordinator_per_round,
        "goal": {
            "goal": "<= 100 KB per round per datasite",
            "max_bytes_per_round": worst,
            "met": worst <= GOAL_BYTES_PER_ROUND,
        },
        "seconds": time.perf_counter() - t0,
    }
    _common.write_json(args.out, "disk", data)
    plot(data, args.out / "disk.png")
    for name, row in per_round.items():
        parts = ", ".join(f"{p} {row[p] / 1e3:.1f} KB" for p in PARTS)
        print(f"{name}: {row['total'] / 1e3:.1f} KB per round ({parts})")
    print(
        f"coordinator (the data scientist's journal): {coordinator_per_round / 1e3:.1f} KB per round"
    )
    print(f"wrote {args.out / 'disk.json'} and disk.png")
    return data


if __name__ == "__main__":
    main()

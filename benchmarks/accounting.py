"""Our accountant's epsilon vs dp-accounting's PLD and RDP accountants on the real schedule.

The schedule is what one transaction datasite releases in a federated run
(:class:`~fedmugrep.federation.plan.FederationPlan` with ``PrivacyPlan.for_epsilon(target)``):
the one-off Laplace releases (``planned_events()``: intra-region sums, community price levels,
counts and the target count; the per-district summary; the noised test evaluation) and, every
round, ``round_events()``: the joint Gaussian release of the model-1 and z gradient sums with
``FederationPlan.noise_multiplier()``, calibrated by
our accountant so the whole schedule costs the target epsilon. For rounds in {10, 30, 60, 120} and targets {1, 2, 4, 8, 16} at delta 1e-5 it
reports, for the same events:

* ``ours``: :func:`~fedmugrep.privacy.analysis.composition.compose_events` (min of RDP and plain
  sum), what the ledgers charge;
* ``ours_rdp``: our RDP bound alone;
* ``plain_sum``: our plain sum (pure epsilon of every Laplace release + the Gaussian part's RDP
  epsilon), ``null`` when RDP is the only bound;
* ``dp_pld`` / ``dp_rdp``: Google dp-accounting 0.6's ``PLDAccountant`` (near-exact) and
  ``RdpAccountant`` on the same events (ideal Laplace; our events add the snapping mechanism's
  ~1e-12 epsilon).

``ours / dp_pld`` is the budget a PLD accountant would save on this schedule.

Run: ``.venv/bin/python benchmarks/accounting.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

DELTA = 1e-5
ROUNDS = (10, 30, 60, 120)
TARGETS = (1.0, 2.0, 4.0, 8.0, 16.0)
QUICK_ROUNDS = (10,)
QUICK_TARGETS = (4.0, 8.0)


def dp_event(events: list) -> object:
    """The dp-accounting twin of our events (Laplace by noise ratio, Gaussian by multiplier)."""
    import dp_accounting

    from fedmugrep.privacy.events import GaussianEvent, LaplaceEvent

    parts = []
    for e in events:
        if isinstance(e, LaplaceEvent):
            inner = dp_accounting.LaplaceDpEvent(e.noise_ratio)
        elif isinstance(e, GaussianEvent):
            inner = dp_accounting.GaussianDpEvent(e.noise_multiplier)
        else:  # pragma: no cover - the plan only has these two
            raise TypeError(type(e).__name__)
        parts.append(inner if e.count == 1 else dp_accounting.SelfComposedDpEvent(inner, e.count))
    return dp_accounting.ComposedDpEvent(parts)


def one(rounds: int, target: float) -> dict:
    import dp_accounting

    from fedmugrep.errors import BudgetExceededError
    from fedmugrep.federation.plan import FederationPlan, PrivacyPlan
    from fedmugrep.privacy.analysis.composition import compose_events

    plan = FederationPlan(rounds=rounds, privacy=PrivacyPlan.for_epsilon(target, delta=DELTA))
    row: dict = {"rounds": rounds, "target_epsilon": target, "delta": DELTA}
    t0 = time.perf_counter()
    try:
        nm = plan.noise_multiplier()
    except BudgetExceededError as exc:
        row.update(feasible=False, reason=str(exc))
        return row
    fixed = plan.planned_events()
    n_laplace = sum(e.count for e in fixed)
    per_round = plan.round_events(nm)
    events = fixed + per_round * rounds
    spent = compose_events(events, delta=DELTA)
    t_ours = time.perf_counter() - t0
    event = dp_event(events)
    t0 = time.perf_counter()
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(event)
    dp_pld = pld.get_epsilon(DELTA)
    t_pld = time.perf_counter() - t0
    t0 = time.perf_counter()
    rdp = dp_accounting.rdp.RdpAccountant()
    rdp.compose(event)
    dp_rdp = rdp.get_epsilon(DELTA)
    t_rdp = time.perf_counter() - t0
    row.update(
        feasible=True,
        noise_multiplier=nm,
        releases={"laplace": n_laplace, "gaussian": rounds * sum(e.count for e in per_round)},
        laplace_pure_epsilon=sum(e.count * e.epsilon for e in fixed),
        ours=spent.epsilon,
        ours_bound=spent.bound,
        ours_rdp=spent.rdp_epsilon,
        ours_order=spent.optimal_order,
        plain_sum=spent.plain_sum_epsilon,
        dp_pld=dp_pld,
        dp_rdp=dp_rdp,
        ours_over_pld=spent.epsilon / dp_pld,
        ours_over_dp_rdp=spent.epsilon / dp_rdp,
        seconds={"ours_calibrate_and_compose": t_ours, "dp_pld": t_pld, "dp_rdp": t_rdp},
    )
    return row


def pld_noise_multiplier(rounds: int, target: float, ours_nm: float) -> float:
    """Smallest Gaussian noise multiplier (to 0.5 %) with dp-accounting PLD epsilon <= target
    for the same schedule: how much less noise a PLD accountant would need."""
    import dp_accounting

    from fedmugrep.federation.plan import FederationPlan, PrivacyPlan

    plan = FederationPlan(rounds=rounds, privacy=PrivacyPlan.for_epsilon(target, delta=DELTA))
    fixed = plan.planned_events()

    def eps(sigma: float) -> float:
        acc = dp_accounting.pld.PLDAccountant()
        acc.compose(dp_event(fixed + plan.round_events(sigma) * rounds))
        return acc.get_epsilon(DELTA)

    low, high = 0.5 * ours_nm, ours_nm  # PLD <= ours: ours_nm is feasible
    while eps(low) <= target:
        low, high = 0.5 * low, low
    while high - low > 0.005 * high:
        mid = 0.5 * (low + high)
        low, high = (low, mid) if eps(mid) <= target else (mid, high)
    return high


def fixed_events() -> list:
    """The plan's one-off Laplace releases (setup and district summary) at the default plan."""
    from fedmugrep.federation.plan import FederationPlan

    plan = FederationPlan()
    return plan.planned_events()


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    rounds = sorted({r["rounds"] for r in rows})
    fig, axes = plt.subplots(1, len(rounds), figsize=(4.2 * len(rounds), 4), squeeze=False)
    for ax, n in zip(axes[0], rounds, strict=True):
        rs = [r for r in rows if r["rounds"] == n and r["feasible"]]
        x = [r["target_epsilon"] for r in rs]
        ax.axhline(1.0, color="0.7", lw=1, label="target")
        ax.plot(x, [r["ours"] / r["target_epsilon"] for r in rs], "o-", label="ours (min RDP, sum)")
        ax.plot(
            x, [r["dp_rdp"] / r["target_epsilon"] for r in rs], "s--", label="dp-accounting RDP"
        )
        ax.plot(x, [r["dp_pld"] / r["target_epsilon"] for r in rs], "^-", label="dp-accounting PLD")
        ps = [
            (r["target_epsilon"], r["plain_sum"] / r["target_epsilon"])
            for r in rs
            if r["plain_sum"] is not None
        ]
        if ps:
            ax.plot(*zip(*ps, strict=True), "x:", label="plain sum")
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{v:g}" for v in x])
        lap = rs[0]["releases"]["laplace"] if rs else 0
        gauss = rs[0]["releases"]["gaussian"] if rs else 0
        ax.set_title(f"{n} rounds ({gauss} Gaussian + {lap} Laplace)")
        ax.set_xlabel("target epsilon (noise calibrated by ours)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"epsilon / target at delta={DELTA:g}")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Epsilon of one datasite's release schedule: ours vs dp-accounting")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = _common.parse_args(__doc__.splitlines()[0], argv)
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    targets = QUICK_TARGETS if args.quick else TARGETS
    t0 = time.perf_counter()
    rows = []
    for n in rounds:
        for target in targets:
            row = one(n, target)
            rows.append(row)
            if row["feasible"]:
                print(
                    f"rounds {n:4d} target {target:5g}: sigma {row['noise_multiplier']:.3f} "
                    f"ours {row['ours']:.4f} ({row['ours_bound']}) "
                    f"RDP {row['dp_rdp']:.4f} PLD {row['dp_pld']:.4f} "
                    f"sum {row['plain_sum'] if row['plain_sum'] is None else round(row['plain_sum'], 4)}",
                    flush=True,
                )
            else:
                print(f"rounds {n:4d} target {target:5g}: infeasible ({row['reason']})")
    feasible = [r for r in rows if r["feasible"]]
    if not args.quick:  # a PLD bisection per rounds value at target 8 (about 10 s each)
        for r in feasible:
            if r["target_epsilon"] == 8.0:
                r["pld_noise_multiplier"] = pld_noise_multiplier(
                    r["rounds"], r["target_epsilon"], r["noise_multiplier"]
                )
                r["pld_noise_saving"] = 1 - r["pld_noise_multiplier"] / r["noise_multiplier"]
                print(
                    f"rounds {r['rounds']:4d} target 8: PLD needs sigma "
                    f"{r['pld_noise_multiplier']:.3f} (ours {r['noise_multiplier']:.3f}, "
                    f"{100 * r['pld_noise_saving']:.1f} % less noise)",
                    flush=True,
                )
    data = {
        "benchmark": "accounting",
        "quick": args.quick,
        "machine": _common.machine_info(),
        "delta": DELTA,
        "rounds": list(rounds),
        "targets": list(targets),
        "fixed_events": [e.to_dict() for e in fixed_events()],
        "rows": rows,
        "summary": {
            "max_ours_over_target": max(r["ours"] / r["target_epsilon"] for r in feasible),
            "ours_over_pld_range": [
                min(r["ours_over_pld"] for r in feasible),
                max(r["ours_over_pld"] for r in feasible),
            ],
            "ours_over_dp_rdp_range": [
                min(r["ours_over_dp_rdp"] for r in feasible),
                max(r["ours_over_dp_rdp"] for r in feasible),
            ],
            "ours_never_below_pld": all(r["ours"] >= r["dp_pld"] - 1e-9 for r in feasible),
        },
        "seconds": time.perf_counter() - t0,
    }
    _common.write_json(args.out, "accounting", data)
    plot(rows, args.out / "accounting.png")
    print(f"wrote {args.out / 'accounting.json'} and accounting.png")
    return data


if __name__ == "__main__":
    main()

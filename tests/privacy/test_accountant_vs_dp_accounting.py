"""Cross-check of FedMugRepAccountant against Google's dp-accounting (v0.6.0).

Run as a script to print the side-by-side table::

    PYTHONPATH=plugin .venv/bin/python tests/privacy/test_accountant_vs_dp_accounting.py
"""

from __future__ import annotations

from functools import cache

import pytest

dp_accounting = pytest.importorskip("dp_accounting")

from fedmugrep.privacy.accountant import accountant_from_events  # noqa: E402
from fedmugrep.privacy.events import LaplaceEvent, SubsampledGaussianEvent  # noqa: E402

DELTA = 1e-5
KS = (1, 10, 100, 1000)
RATIOS = (1.0, 10.0)  # b / Δ
SNAP_BOUND = 1e4  # a realistic declared bound for the snapped variant (in units of Δ)


@cache
def dp_laplace(k: int, ratio: float) -> tuple[float, float]:
    """dp-accounting's (PLD ε, RDP ε) for k Laplace releases with noise multiplier b/Δ."""
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(dp_accounting.LaplaceDpEvent(ratio), k)
    rdp = dp_accounting.rdp.RdpAccountant()
    rdp.compose(dp_accounting.LaplaceDpEvent(ratio), k)
    return pld.get_epsilon(DELTA), rdp.get_epsilon(DELTA)


def ours_laplace(k: int, ratio: float, *, snapped: bool = False):
    event = LaplaceEvent(1.0, ratio, k, bound=SNAP_BOUND if snapped else None)
    return accountant_from_events([event]).get_privacy_spent(delta=DELTA)


def joint_events():
    return [SubsampledGaussianEvent(1.1, 0.01, 1000), LaplaceEvent(1.0, 10.0, 20)]


def dp_joint() -> tuple[float, float]:
    sgd = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1)), 1000
    )
    lap = dp_accounting.SelfComposedDpEvent(dp_accounting.LaplaceDpEvent(10.0), 20)
    event = dp_accounting.ComposedDpEvent([sgd, lap])
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(event)
    rdp = dp_accounting.rdp.RdpAccountant()
    rdp.compose(event)
    return pld.get_epsilon(DELTA), rdp.get_epsilon(DELTA)


@pytest.mark.parametrize("snapped", [False, True], ids=["ideal", "snapped"])
@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("k", KS)
def test_laplace_sound_and_within_10_percent_of_rdp(k: int, ratio: float, snapped: bool) -> None:
    pld_eps, rdp_eps = dp_laplace(k, ratio)
    ours = ours_laplace(k, ratio, snapped=snapped).epsilon
    assert ours >= pld_eps, (ours, pld_eps)  # sound: never below the (near-)exact PLD value
    assert ours <= 1.1 * rdp_eps, (ours, rdp_eps)


def test_joint_dp_sgd_and_laplace_matches_rdp_within_1_percent() -> None:
    pld_eps, rdp_eps = dp_joint()
    ours = accountant_from_events(joint_events()).get_privacy_spent(delta=DELTA)
    assert abs(ours.epsilon - rdp_eps) <= 0.01 * rdp_eps, (ours, rdp_eps)
    assert ours.epsilon >= pld_eps
    assert ours.bound == "rdp"  # plain sum (20 × 0.1 + DP-SGD alone) is looser here


def figures() -> list[tuple[str, float, float, float, float | None, str]]:
    """Rows: (scenario, ours, dp PLD, dp RDP, plain sum, bound used)."""
    rows = []
    for ratio in RATIOS:
        for k in KS:
            spent = ours_laplace(k, ratio)
            pld_eps, rdp_eps = dp_laplace(k, ratio)
            rows.append(
                (
                    f"{k} x Laplace b/Δ={ratio:g}",
                    spent.epsilon,
                    pld_eps,
                    rdp_eps,
                    spent.plain_sum_epsilon,
                    spent.bound,
                )
            )
    spent = accountant_from_events(joint_events()).get_privacy_spent(delta=DELTA)
    pld_eps, rdp_eps = dp_joint()
    rows.append(
        (
            "1000 DP-SGD (q=.01, σ=1.1) + 20 Laplace b/Δ=10",
            spent.epsilon,
            pld_eps,
            rdp_eps,
            spent.plain_sum_epsilon,
            spent.bound,
        )
    )
    return rows


if __name__ == "__main__":  # pragma: no cover
    print(f"delta = {DELTA}")
    print(
        f"| {'scenario':<48} | {'ours':>9} | {'dp PLD':>9} | {'dp RDP':>9} | "
        f"{'plain sum':>9} | ours/RDP | bound |"
    )
    for name, ours, pld_eps, rdp_eps, plain, bound in figures():
        plain_s = f"{plain:9.4f}" if plain is not None else "        -"
        print(
            f"| {name:<48} | {ours:9.4f} | {pld_eps:9.4f} | {rdp_eps:9.4f} | {plain_s} | "
            f"{ours / rdp_eps:8.4f} | {bound} |"
        )

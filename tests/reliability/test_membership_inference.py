"""An empirical privacy audit: a distinguishing (membership-inference) attack on two releases.

For each release we run the real mechanism many times on neighbouring datasets ``D`` and
``D'`` (one record added), fit a threshold attack on one half of the outputs and measure its
false-positive and false-negative rates on the other half. An (ε, δ)-DP release forces every
test to satisfy ``FPR + e^ε FNR >= 1 - δ`` and ``FNR + e^ε FPR >= 1 - δ``; with one-sided
Clopper–Pearson upper bounds on FPR and FNR (95 % jointly) this gives the empirical lower bound

    eps_lb = max(log((1 - δ - FPR_ub) / FNR_ub), log((1 - δ - FNR_ub) / FPR_ub))

which must not exceed the accountant's ε for that single release. The controls run the same
attack with the noise scale divided by 1000: there eps_lb must be far above the accountant's
ε, so the audit would fail if noise were silently switched off.

Releases audited (real mechanism classes and real sensitivities from the plan):

(a) the intra-region sums of :meth:`TransactionParty.release_intra`: a
    :class:`~fedmugrep.privacy.laplace.LaplaceMechanism` with the plan's sensitivity
    ``2 m (1 + D)`` and scale (``FederationPlan.setup_events()[0]``), bound ``intra_bound``;
(b) the model-update release of :meth:`TransactionParty.step`: the clipped gradient sum plus
    Gaussian noise from the party's mechanism (:class:`~fedmugrep.privacy.gaussian.GaussianMechanism`)
    with std at least
    ``FederationPlan.theta_noise_std(noise_multiplier)``, whose L2 sensitivity is
    ``training.per_target.sum_sensitivity(clip, K) = (1 + 2K) clip``.

Worst-case neighbours: the statistic on ``D'`` differs from the one on ``D`` by the full
sensitivity, in a single coordinate (what an extreme-price record whose clipped contribution
hits the bound can at most do; the mechanism's guarantee must hold for it). Small tensors
(8 coordinates), 2 x 20,000 seeded trials per release.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import beta

from fedmugrep.federation.plan import FederationPlan, PrivacyPlan
from fedmugrep.privacy.analysis.composition import compose_events
from fedmugrep.privacy.events import GaussianEvent
from fedmugrep.privacy.gaussian import GaussianMechanism, gaussian_release
from fedmugrep.privacy.laplace import (
    InsecureRandomnessWarning,
    LaplaceMechanism,
    SeededRandomSource,
)
from fedmugrep.training.per_target import sum_sensitivity

pytestmark = pytest.mark.statistical

TRIALS = 20_000  # per dataset; half to fit the threshold, half to measure it
DIM = 8
ALPHA = 0.05  # confidence of the joint Clopper-Pearson bounds (alpha/2 each)


# ============================================================================ the audit
def cp_upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper–Pearson upper bound on a rate from ``k`` events in ``n`` trials."""
    return 1.0 if k >= n else float(beta.ppf(1.0 - alpha, k + 1, n - k))


def eps_lower_bound(fp: int, n0: int, fn: int, n1: int, delta: float) -> float:
    """Empirical ε lower bound from counts (see the module docstring); 0 when uninformative."""
    fpr_ub = cp_upper(fp, n0, ALPHA / 2)
    fnr_ub = cp_upper(fn, n1, ALPHA / 2)
    out = 0.0
    for a, b in ((fpr_ub, fnr_ub), (fnr_ub, fpr_ub)):
        if 1.0 - delta - a > 0.0 and b > 0.0:
            out = max(out, math.log((1.0 - delta - a) / b))
    return out


def _counts(s0: np.ndarray, s1: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False positives (``D`` scored ``>= t``) and false negatives (``D'`` scored ``< t``)."""
    s0, s1 = np.sort(s0), np.sort(s1)
    fp = len(s0) - np.searchsorted(s0, t, side="left")
    fn = np.searchsorted(s1, t, side="left")
    return fp, fn


def attack(scores_d: np.ndarray, scores_d1: np.ndarray, delta: float) -> float:
    """Fit "guess D' when score >= t" on the first half, return eps_lb on the second."""
    half = len(scores_d) // 2
    train0, test0 = scores_d[:half], scores_d[half:]
    train1, test1 = scores_d1[:half], scores_d1[half:]
    cands = np.unique(np.concatenate([train0, train1]))
    if len(cands) > 2000:
        cands = np.unique(np.quantile(cands, np.linspace(0, 1, 2001)))
    fp, fn = _counts(train0, train1, cands)
    fitted = [
        eps_lower_bound(int(a), half, int(b), half, delta) for a, b in zip(fp, fn, strict=True)
    ]
    t = cands[int(np.argmax(fitted))]
    fp_t, fn_t = _counts(test0, test1, np.array([t]))
    return eps_lower_bound(int(fp_t[0]), len(test0), int(fn_t[0]), len(test1), delta)


def run_audit(
    release: Callable[[np.ndarray], np.ndarray], f_d: np.ndarray, f_d1: np.ndarray, delta: float
) -> float:
    """Release ``f(D)`` and ``f(D')`` TRIALS times each; attack the differing coordinate."""
    out_d = release(np.tile(f_d, (TRIALS, 1)))
    out_d1 = release(np.tile(f_d1, (TRIALS, 1)))
    assert out_d.shape == (TRIALS, DIM) and np.isfinite(out_d).all()
    return attack(out_d[:, 0], out_d1[:, 0], delta)


def neighbours(sensitivity: float) -> tuple[np.ndarray, np.ndarray]:
    """``f(D)`` (a plausible statistic) and ``f(D')``, one coordinate further by the sensitivity."""
    f_d = np.linspace(-3.0, 4.0, DIM) * sensitivity
    f_d1 = f_d.copy()
    f_d1[0] += sensitivity
    return f_d, f_d1


# ============================================================================ (a) Laplace
def _seeded(seed: int) -> SeededRandomSource:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRandomnessWarning)
        return SeededRandomSource(seed)


@pytest.mark.parametrize("intra_epsilon", [0.2, 1.0])
def test_laplace_intra_sums_leak_no_more_than_accounted(intra_epsilon: float) -> None:
    plan = FederationPlan(privacy=PrivacyPlan(intra_epsilon=intra_epsilon))
    p = plan.privacy
    assert p is not None
    ev = plan.setup_events()[0]  # the intra-region sums, as TransactionParty.release_intra
    assert ev.sensitivity == 2.0 * plan.intra_dim * (1 + plan.intra_max_degree)
    f_d, f_d1 = neighbours(ev.sensitivity)

    def mechanism(scale: float, seed: int) -> LaplaceMechanism:
        return LaplaceMechanism(
            sensitivity=ev.sensitivity, scale=scale, bound=p.intra_bound, source=_seeded(seed)
        )

    mech = mechanism(ev.scale, 11)
    accountant = compose_events([mech.event(dimension=DIM)], delta=p.delta).epsilon
    assert accountant == pytest.approx(intra_epsilon, rel=1e-6)
    eps_lb = run_audit(mech.release, f_d, f_d1, p.delta)

    control = run_audit(mechanism(ev.scale / 1000, 12).release, f_d, f_d1, p.delta)
    print(
        f"\nLaplace intra sums (sensitivity {ev.sensitivity:g}, scale {ev.scale:g}): "
        f"accountant eps {accountant:.4f}, empirical eps_lb {eps_lb:.4f}; "
        f"noise/1000 control eps_lb {control:.4f}"
    )
    assert eps_lb <= accountant
    assert eps_lb >= 0.5 * accountant  # the attack is sharp: it would notice twice the leak
    assert control > accountant + 3.0  # e^3 = 20 times the odds the accountant allows


# ============================================================================ (b) Gaussian
@pytest.mark.parametrize("epsilon", [8.0, 20.0])
def test_gaussian_update_leaks_no_more_than_accounted(epsilon: float) -> None:
    plan = FederationPlan(rounds=40, privacy=PrivacyPlan(epsilon=epsilon))
    p = plan.privacy
    assert p is not None
    nm = plan.noise_multiplier()
    std = plan.theta_noise_std(nm)
    sensitivity = sum_sensitivity(p.clip, plan.k)
    assert std == pytest.approx(nm * sensitivity)
    # a round charges GaussianEvent(nm, count=c): c = 1 joint (theta, z) vector or 2 sums, each
    # of L2 sensitivity (1 + 2K) clip; the audit attacks one of them
    (round_event,) = plan.round_events(nm)
    assert isinstance(round_event, GaussianEvent) and round_event.noise_multiplier == nm
    accountant = compose_events([GaussianEvent(noise_multiplier=nm)], delta=p.delta).epsilon
    f_d, f_d1 = neighbours(sensitivity)

    # the party's mechanism (OpenDP, OS randomness: not seedable, so the audit's outcome is
    # random; its 95 % bounds keep a false alarm rare and the margin is printed)
    mech = GaussianMechanism(sensitivity=sensitivity, noise_multiplier=nm)
    assert mech.std(DIM) >= std

    def release(noise_std: float) -> Callable[[np.ndarray], np.ndarray]:
        def noised(values: np.ndarray) -> np.ndarray:
            return gaussian_release(values.astype(np.float64), std=noise_std)

        return noised

    eps_lb = run_audit(release(mech.std(DIM)), f_d, f_d1, p.delta)
    control = run_audit(release(std / 1000), f_d, f_d1, p.delta)
    print(
        f"\nGaussian update (sensitivity {sensitivity:g}, noise multiplier {nm:.4f}): accountant "
        f"eps {accountant:.4f} at delta {p.delta:g}, empirical eps_lb {eps_lb:.4f}; "
        f"noise/1000 control eps_lb {control:.4f}"
    )
    assert eps_lb <= accountant
    assert control > accountant + 3.0  # e^3 = 20 times the odds the accountant allows

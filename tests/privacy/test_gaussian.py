"""The OpenDP-backed Gaussian mechanism: distribution, calibration, accounting, types, inputs.

OpenDP draws from a cryptographic generator and cannot be seeded, so every statistical test
here is on fresh randomness. Each states its threshold and the chance that it fails on a
correct implementation (its false-alarm rate); they add up to below 5e-4 per run. The power
tests show the same checks do fail when the noise is wrong.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedmugrep.errors import PrivacyParameterError
from fedmugrep.privacy.accountant import accountant_from_events
from fedmugrep.privacy.events import GaussianEvent
from fedmugrep.privacy.gaussian import (
    FINITE_BOUND,
    GaussianMechanism,
    gaussian_release,
)

P_MIN = 1e-4  # KS p-value threshold: under H0 the p-value is uniform, so P(false alarm) = 1e-4
Z_TOL = 5.0  # moment tests accept within 5 standard errors: P(false alarm) = 5.7e-7 each
N_KS = 50_000  # coordinates of the shared sample (>= 20,000; 50,000 for the power tests)
DELTA = 1e-5

SENS, NM = 0.7, 1.3


@pytest.fixture(scope="module")
def mech() -> GaussianMechanism:
    return GaussianMechanism(sensitivity=SENS, noise_multiplier=NM)


@pytest.fixture(scope="module")
def standardised(mech: GaussianMechanism) -> np.ndarray:
    """``release(zeros(N_KS)) / std``: N(0, 1) if the mechanism is right (one draw per run)."""
    return mech.release(np.zeros(N_KS)) / mech.std(N_KS)


# -- the noise distribution ---------------------------------------------------------------


@pytest.mark.statistical
def test_noise_passes_ks_test_against_standard_normal(standardised: np.ndarray) -> None:
    # False alarm 1e-4 (p uniform under H0). The discrete Gaussian on the 2**-30 grid differs
    # from N(0, std²) by far less than KS can resolve at this n (CDF gap ~ 2**-30 / std).
    result = stats.kstest(standardised, "norm")
    assert result.pvalue > P_MIN, result


@pytest.mark.statistical
@pytest.mark.parametrize("factor", [1.1, 1 / 1.1], ids=["std+10%", "std-10%"])
def test_ks_test_has_power_against_a_10_percent_wrong_std(
    standardised: np.ndarray, factor: float
) -> None:
    # The test above CAN fail: the same draws are rejected against N(0, factor²). Here
    # sqrt(n)·D is ≈ 5.5 (simulated: s.d. 0.27, minimum 4.8 over 300 runs) against the 1e-4
    # critical value 2.23, so a miss (this test failing on correct noise) is a >10σ event.
    result = stats.kstest(standardised, stats.norm(scale=factor).cdf)
    assert result.pvalue < P_MIN, result


@pytest.mark.statistical
def test_empirical_std_within_five_standard_errors(standardised: np.ndarray) -> None:
    # s.e. of a sample std of n normals is ~ 1/sqrt(2(n-1)) in std units: 0.32% at n = 50,000,
    # so the tolerance is 1.6% (a 10% error would fail by ~30 standard errors).
    n = standardised.size
    tol = Z_TOL / math.sqrt(2 * (n - 1))
    assert abs(standardised.std(ddof=1) - 1.0) < tol


@pytest.mark.statistical
def test_noise_is_unbiased_for_a_non_zero_input() -> None:
    n = 20_000
    mech = GaussianMechanism(sensitivity=2.5, noise_multiplier=0.9)
    # off-grid values of both signs and very different magnitudes (the input is rounded to
    # the 2**-30 grid: that rounding must not bias the result)
    x = np.linspace(-1e4, 1e4, n) + np.pi / 7
    noise = mech.release(x) - x
    se = mech.std(n) / math.sqrt(n)
    assert abs(noise.mean()) < Z_TOL * se  # false alarm 5.7e-7
    assert abs(noise.std(ddof=1) / mech.std(n) - 1) < Z_TOL / math.sqrt(2 * (n - 1))
    assert stats.kstest(noise / mech.std(n), "norm").pvalue > P_MIN  # false alarm 1e-4


# -- calibration and accounting -----------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5_000, 20_000, 50_000])
@pytest.mark.parametrize(("sens", "nm"), [(1.0, 1.0), (0.37, 1.1), (3.0, 0.5), (1e3, 4.0)])
def test_std_is_at_least_nominal_and_within_1e6_relative(sens: float, nm: float, n: int) -> None:
    mech = GaussianMechanism(sensitivity=sens, noise_multiplier=nm)
    nominal = nm * sens
    assert mech.std(n) >= nominal
    assert (mech.std(n) - nominal) / nominal < 1e-6
    # the excess is OpenDP's charge for rounding to 2**k: about sqrt(n) * 2**k / Δ
    assert (mech.std(n) - nominal) / nominal <= 1.01 * math.sqrt(n) * 2.0**-30 / sens + 1e-15


@pytest.mark.parametrize("n", [1, 5_000, 50_000])
@pytest.mark.parametrize(("sens", "nm"), [(1.0, 1.0), (0.37, 1.1), (3.0, 0.5), (1e3, 4.0)])
def test_opendp_map_is_within_the_accountants_charge(sens: float, nm: float, n: int) -> None:
    mech = GaussianMechanism(sensitivity=sens, noise_multiplier=nm)
    charged = 1.0 / (2.0 * nm**2)  # zCDP rho of GaussianEvent(nm): RDP alpha / (2 nm^2)
    rho = mech.rho(n)
    assert rho == mech.measurement(n).map(sens)  # it IS OpenDP's own map
    assert rho <= charged
    # and OpenDP's map is not the ideal formula: it is at least Δ²/(2 std²) (it charges the
    # rounding), so the scale increase above was needed and is what makes this hold
    assert rho >= sens**2 / (2 * mech.std(n) ** 2)
    assert GaussianMechanism(sensitivity=sens, noise_multiplier=nm).measurement(n).map(sens) == rho


@settings(max_examples=40, deadline=None)
@given(
    sens=st.floats(0.25, 1e6),
    nm=st.floats(0.05, 100.0),
    n=st.integers(1, 200_000),
)
def test_calibration_property(sens: float, nm: float, n: int) -> None:
    mech = GaussianMechanism(sensitivity=sens, noise_multiplier=nm)
    assert mech.std(n) >= nm * sens
    assert mech.rho(n) <= 0.5 / nm**2
    assert mech.std(n) / (nm * sens) - 1 <= 1.01 * math.sqrt(n) * 2.0**-30 / sens + 1e-14


def _rdp_epsilon(noise_multiplier: float, count: int) -> float:
    dp_accounting = pytest.importorskip("dp_accounting")  # a dev dependency
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(noise_multiplier), count)
    return acc.get_epsilon(DELTA)


@pytest.mark.parametrize("count", [1, 100])
@pytest.mark.parametrize("nm", [0.8, 1.1, 2.0, 5.0])
def test_opendp_guarantee_is_within_what_dp_accounting_charges(nm: float, count: int) -> None:
    """Cross-check with Google's dp-accounting and with the project's own accountant.

    OpenDP guarantees ``rho``-zCDP, i.e. RDP ``alpha * rho`` at every order. That is exactly
    the RDP curve of an ideal Gaussian with noise multiplier ``nm_eff = 1/sqrt(2 rho)``. The
    accountants charge ``GaussianEvent(nm)``, the curve ``alpha / (2 nm^2)``. Composing
    either curve ``count`` times and converting to (ε, δ) with the *same* accountant (same
    orders, same conversion) preserves the order of the curves, so ``rho <= 1/(2 nm^2)``
    must give ``eps(nm_eff) <= eps(nm)``: the guarantee OpenDP proves never exceeds the charge.

    (The comparison with the classic bound ``eps = rho + 2 sqrt(rho ln(1/δ))`` goes the other
    way: dp-accounting's conversion, Canonne–Kamath–Steinke 2020 Prop. 12, is *tighter* than
    it, e.g. 4.24 < 4.78 for nm = 1.1. So the classic bound of OpenDP's rho upper-bounds
    dp-accounting's ε for it, which is checked as a consistency test, not a soundness one.)
    """
    mech = GaussianMechanism(sensitivity=1.0, noise_multiplier=nm)
    rho = mech.rho(10_000)
    nm_eff = 1.0 / math.sqrt(2.0 * rho)
    rel = 1e-12  # float rounding of rho -> nm_eff -> eps
    # dp-accounting
    eps_charged = _rdp_epsilon(nm, count)
    eps_opendp = _rdp_epsilon(nm_eff, count)
    assert eps_opendp <= eps_charged * (1 + rel)
    # the project's accountant (what the ledger charges), same argument
    ours = accountant_from_events([mech.event(count=count)]).get_privacy_spent(delta=DELTA)
    ours_eff = accountant_from_events([GaussianEvent(nm_eff, count)]).get_privacy_spent(delta=DELTA)
    assert ours_eff.epsilon <= ours.epsilon * (1 + rel)
    # consistency: classic zCDP -> (ε, δ) bound of OpenDP's composed rho is looser
    classic = count * rho + 2 * math.sqrt(count * rho * math.log(1 / DELTA))
    assert eps_opendp <= classic


def test_event_is_the_gaussian_event_of_the_noise_multiplier(mech: GaussianMechanism) -> None:
    assert mech.event() == GaussianEvent(noise_multiplier=NM)
    assert mech.event(count=3) == GaussianEvent(noise_multiplier=NM, count=3)
    assert mech.target_rho == 0.5 / NM**2
    assert mech.nominal_std == NM * SENS


def test_measurement_is_cached_per_size(mech: GaussianMechanism) -> None:
    assert mech.measurement(123) is mech.measurement(123)
    assert mech.measurement(123) is not mech.measurement(124)


# -- types, shapes, devices ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_tensor_shape_dtype_device_preserved_and_no_autograd(
    mech: GaussianMechanism, dtype: torch.dtype
) -> None:
    x = torch.zeros(3, 4, 5, dtype=dtype, requires_grad=True)
    y = mech.release(x)
    assert isinstance(y, torch.Tensor)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert not y.requires_grad and y.grad_fn is None
    assert torch.isfinite(y).all()
    assert not torch.equal(y, torch.zeros_like(y))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_stays_on_its_device(mech: GaussianMechanism) -> None:
    x = torch.zeros(10, 10, device="cuda")
    y = mech.release(x)
    assert y.device == x.device and y.dtype == x.dtype and y.shape == x.shape


def test_integer_tensor_gives_float64(mech: GaussianMechanism) -> None:
    y = mech.release(torch.arange(6).reshape(2, 3))
    assert y.dtype == torch.float64 and y.shape == (2, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_numpy_array_gives_float64_of_same_shape(mech: GaussianMechanism, dtype: type) -> None:
    x = np.zeros((2, 3, 4), dtype=dtype)
    y = mech.release(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float64 and y.shape == x.shape
    assert np.isfinite(y).all()


def test_scalars_lists_and_empty_inputs(mech: GaussianMechanism) -> None:
    assert isinstance(mech.release(3.0), float)
    assert isinstance(mech.release(np.float32(3.0)), float)
    assert mech.release([1.0, 2.0]).shape == (2,)
    assert mech.release(np.array(1.0)).shape == ()
    assert mech.release(np.zeros((2, 0))).shape == (2, 0)
    assert mech.release(torch.zeros(0, 3)).shape == (0, 3)
    assert mech(np.zeros(2)).shape == (2,)  # __call__ is release


def test_release_many_is_one_release_of_the_concatenation(mech: GaussianMechanism) -> None:
    a, b, c = torch.zeros(2, 3), np.ones(4), torch.zeros(0, dtype=torch.float64)
    out = mech.release_many([a, b, c])
    assert [type(o) for o in out] == [torch.Tensor, np.ndarray, torch.Tensor]
    assert out[0].shape == (2, 3) and out[0].dtype == torch.float32
    assert out[1].shape == (4,) and out[2].shape == (0,) and out[2].dtype == torch.float64
    assert mech.release_many([]) == []
    assert not np.allclose(out[1], 1.0)


def test_gaussian_release_helper_uses_the_given_std() -> None:
    y = gaussian_release(np.zeros(20_000), std=3.0)
    assert y.shape == (20_000,) and y.dtype == np.float64
    assert abs(y.std(ddof=1) / 3.0 - 1) < Z_TOL / math.sqrt(2 * (y.size - 1))  # 5.7e-7
    assert gaussian_release(torch.zeros(2, 2), std=1.0).shape == (2, 2)
    with pytest.raises(PrivacyParameterError, match="std must be > 0"):
        gaussian_release(np.zeros(2), std=0.0)


# -- non-finite inputs ---------------------------------------------------------------------


@pytest.mark.statistical
def test_nan_is_treated_as_zero(mech: GaussianMechanism) -> None:
    n = 20_000
    y = mech.release(np.full(n, np.nan))
    assert np.isfinite(y).all()  # no NaN leaks through, no exception
    assert abs(y.mean()) < Z_TOL * mech.std(n) / math.sqrt(n)  # centred on 0: 5.7e-7
    assert abs(y.std(ddof=1) / mech.std(n) - 1) < Z_TOL / math.sqrt(2 * (n - 1))


def test_infinities_are_clamped_to_the_finite_bound(mech: GaussianMechanism) -> None:
    y = mech.release(np.array([np.inf, -np.inf, np.nan, 0.0]))
    assert np.isfinite(y).all()
    assert y[0] == pytest.approx(FINITE_BOUND) and y[1] == pytest.approx(-FINITE_BOUND)
    t = mech.release(torch.tensor([float("inf"), float("-inf"), float("nan")]))
    assert t.dtype == torch.float32 and torch.isfinite(t).all()
    h = mech.release(torch.tensor([float("inf"), 7e4], dtype=torch.float16))
    assert torch.isfinite(h).all()  # clipped to float16's range before the cast


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, "x", None])
@pytest.mark.parametrize("name", ["sensitivity", "noise_multiplier"])
def test_rejects_non_positive_or_non_finite_parameters(name: str, bad: object) -> None:
    kwargs: dict = {"sensitivity": 1.0, "noise_multiplier": 1.0, name: bad}
    with pytest.raises(PrivacyParameterError, match=f"{name} must be .*> 0"):
        GaussianMechanism(**kwargs)


def test_error_message_says_what_to_do() -> None:
    with pytest.raises(PrivacyParameterError) as info:
        GaussianMechanism(sensitivity=1.0, noise_multiplier=-1.0)
    assert str(info.value) == "noise_multiplier must be > 0 (got -1.0); pass a positive value"


@pytest.mark.parametrize("k", [True, 1.5, "-30", -2000, 2000])
def test_rejects_bad_granularity_exponent(k: object) -> None:
    with pytest.raises(PrivacyParameterError, match="granularity_exponent must be an integer"):
        GaussianMechanism(sensitivity=1.0, noise_multiplier=1.0, granularity_exponent=k)  # type: ignore[arg-type]


def test_rejects_a_grid_too_coarse_for_the_sensitivity() -> None:
    with pytest.raises(PrivacyParameterError, match="granularity_exponent <= -"):
        GaussianMechanism(sensitivity=1e-9, noise_multiplier=1.0)
    mech = GaussianMechanism(sensitivity=1e-9, noise_multiplier=1.0, granularity_exponent=-70)
    assert mech.std(1000) >= 1e-9
    coarse = GaussianMechanism(sensitivity=1e-5, noise_multiplier=1.0)  # fine for few coords
    with pytest.raises(PrivacyParameterError, match="too coarse"):
        coarse.std(10**6)


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_rejects_bad_sizes(mech: GaussianMechanism, size: object) -> None:
    with pytest.raises(PrivacyParameterError, match="size must be an integer"):
        mech.std(size)  # type: ignore[arg-type]


def test_rejects_non_numeric_values(mech: GaussianMechanism) -> None:
    with pytest.raises(PrivacyParameterError, match="value must be numeric"):
        mech.release(np.array(["a", "b"]))
    with pytest.raises(PrivacyParameterError, match="value must be numeric"):
        mech.release(np.array([True, False]))


def test_repr_shows_hyper_parameters() -> None:
    mech = GaussianMechanism(sensitivity=0.5, noise_multiplier=1.25, granularity_exponent=-40)
    assert repr(mech) == (
        "GaussianMechanism(sensitivity=0.5, noise_multiplier=1.25, granularity_exponent=-40)"
    )

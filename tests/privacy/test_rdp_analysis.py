"""Pure RDP functions: curves against their formulas, the conversion against dp_accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmugrep.errors import PrivacyParameterError
from fedmugrep.privacy.analysis.composition import compose_events, event_rdp
from fedmugrep.privacy.analysis.rdp import (
    DEFAULT_ORDERS,
    gaussian_rdp,
    laplace_rdp,
    laplace_rdp_reference,
    rdp_to_delta,
    rdp_to_epsilon,
)
from fedmugrep.privacy.events import (
    GaussianEvent,
    LaplaceEvent,
    SubsampledGaussianEvent,
    UnsupportedEventError,
)


def test_order_grid_covers_dp_accounting_defaults_and_reaches_1024() -> None:
    from dp_accounting.rdp.rdp_privacy_accountant import DEFAULT_RDP_ORDERS

    assert set(map(float, DEFAULT_RDP_ORDERS)) <= set(DEFAULT_ORDERS)
    assert max(DEFAULT_ORDERS) >= 1024
    assert any(not float(a).is_integer() for a in DEFAULT_ORDERS if a > 2)  # fractional too


@pytest.mark.parametrize("order", [1.05, 1.5, 2.0, 7.5, 32.0, 256.0])
@pytest.mark.parametrize("ratio", [0.5, 1.0, 10.0])
def test_laplace_rdp_equals_mironov_prop6_as_printed(order: float, ratio: float) -> None:
    assert laplace_rdp([order], ratio)[0] == pytest.approx(
        laplace_rdp_reference(order, ratio), rel=1e-9
    )


def test_laplace_rdp_hand_value_and_limits() -> None:
    # alpha = 2, b = 1: log(2/3 e + 1/3 e^-2)
    assert laplace_rdp([2.0], 1.0)[0] == pytest.approx(math.log(2 / 3 * math.e + math.exp(-2) / 3))
    big = laplace_rdp([4096.0], 2.0)[0]
    assert 0.49 < big <= 0.5  # -> pure epsilon 1/b as order -> inf
    assert np.all(np.diff(laplace_rdp(DEFAULT_ORDERS, 3.0)) >= -1e-15)  # non-decreasing


def test_laplace_rdp_matches_dp_accounting() -> None:
    from dp_accounting.rdp.rdp_privacy_accountant import _laplace_rdp

    for ratio in (0.1, 1.0, 10.0, 100.0):
        ours = laplace_rdp(DEFAULT_ORDERS, ratio)
        ref = np.array([_laplace_rdp(1.0 / ratio, a) for a in DEFAULT_ORDERS])
        np.testing.assert_allclose(ours, ref, rtol=1e-10)


@settings(max_examples=60, deadline=None)
@given(
    a=st.floats(0.01, 5.0),
    b=st.floats(0.01, 5.0),
    order=st.sampled_from([1.1, 2.0, 5.5, 32.0, 512.0]),
)
def test_laplace_curve_is_superadditive_in_epsilon(a: float, b: float, order: float) -> None:
    """Needed for vector releases: coordinates with eps_i summing to eps cost <= one at eps."""
    f = lambda e: laplace_rdp([order], 1.0 / e)[0]  # noqa: E731
    assert f(a) + f(b) <= f(a + b) * (1 + 1e-9) + 1e-15


def test_gaussian_rdp() -> None:
    np.testing.assert_allclose(gaussian_rdp([2.0, 10.0], 2.0), [0.25, 1.25])


def test_conversion_matches_dp_accounting() -> None:
    from dp_accounting.rdp.rdp_privacy_accountant import compute_delta, compute_epsilon

    orders = list(DEFAULT_ORDERS)
    rdp = 30 * laplace_rdp(orders, 5.0) + 100 * gaussian_rdp(orders, 20.0)
    for delta in (1e-3, 1e-5, 1e-9):
        ours = rdp_to_epsilon(orders, rdp, delta)
        ref = compute_epsilon(orders, rdp, delta)
        assert ours[0] == pytest.approx(ref[0], rel=1e-12) and ours[1] == ref[1]
    ours_d = rdp_to_delta(orders, rdp, 3.0)
    ref_d = compute_delta(orders, rdp, 3.0)
    assert ours_d[0] == pytest.approx(ref_d[0], rel=1e-9)


def test_conversion_edge_cases() -> None:
    orders = [2.0, 4.0]
    assert rdp_to_epsilon(orders, [0.0, 0.0], 0.0) == (0.0, 2.0)
    assert rdp_to_epsilon(orders, [0.1, 0.2], 0.0)[0] == math.inf
    assert rdp_to_epsilon(orders, [math.inf, math.inf], 1e-5)[0] == math.inf
    with pytest.raises(PrivacyParameterError, match="delta must be in"):
        rdp_to_epsilon(orders, [0.1, 0.2], 1.5)
    with pytest.raises(PrivacyParameterError, match="one value per order"):
        rdp_to_epsilon(orders, [0.1], 1e-5)


def test_subsampled_gaussian_matches_opacus_and_never_nan() -> None:
    from opacus.accountants.analysis.rdp import compute_rdp

    curve = event_rdp(SubsampledGaussianEvent(1.1, 0.01, 1))
    small = [i for i, a in enumerate(DEFAULT_ORDERS) if a <= 256]
    ref = compute_rdp(
        q=0.01, noise_multiplier=1.1, steps=1, orders=[DEFAULT_ORDERS[i] for i in small]
    )
    np.testing.assert_allclose(curve[small], ref, rtol=1e-12)
    assert not np.any(np.isnan(curve))
    assert np.all(np.isinf(curve[np.asarray(DEFAULT_ORDERS) > 1024]))


def test_compose_empty_and_plain_sum_choice() -> None:
    empty = compose_events([], delta=1e-5)
    assert empty.epsilon == 0.0 and empty.bound == "none"
    one = compose_events([LaplaceEvent(1.0, 2.0)], delta=1e-5)
    assert one.bound == "plain_sum" and one.epsilon == 0.5 and one.rdp_epsilon > 0.5
    many = compose_events([LaplaceEvent(1.0, 2.0, 200)], delta=1e-5)
    assert many.bound == "rdp" and many.epsilon < many.plain_sum_epsilon == 100.0
    gauss = compose_events([GaussianEvent(5.0)], delta=1e-5)
    assert gauss.plain_sum_epsilon is None and gauss.bound == "rdp"


def test_identical_events_merge() -> None:
    split = compose_events([LaplaceEvent(1.0, 3.0)] * 7, delta=1e-6)
    merged = compose_events([LaplaceEvent(1.0, 3.0, 7)], delta=1e-6)
    assert split == merged


def test_snapped_events_cost_a_hair_more() -> None:
    ideal = compose_events([LaplaceEvent(1.0, 10.0, 50)], delta=1e-5)
    snapped = compose_events([LaplaceEvent(1.0, 10.0, 50, bound=1e5, dimension=100)], delta=1e-5)
    assert ideal.epsilon < snapped.epsilon < ideal.epsilon * (1 + 1e-6)


def test_unsupported_event() -> None:
    with pytest.raises(UnsupportedEventError, match="cannot account for str"):
        compose_events(["laplace"], delta=1e-5)  # type: ignore[list-item]

"""L1 clipping and noisy sums/counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedmugrep.errors import PrivacyParameterError
from fedmugrep.privacy.clipping import (
    clip_l1_per_community,
    clip_l1_per_record,
    noisy_sum_and_count,
    per_community_sensitivity,
    per_record_sum_sensitivity,
)
from fedmugrep.privacy.events import LaplaceEvent


def test_clip_hand_case() -> None:
    x = np.array([[3.0, -1.0], [0.5, 0.25], [0.0, 0.0]])
    out = clip_l1_per_record(x, bound=2.0)
    np.testing.assert_allclose(out, [[1.5, -0.5], [0.5, 0.25], [0.0, 0.0]])


@settings(max_examples=50, deadline=None)
@given(
    x=arrays(
        np.float64, st.tuples(st.integers(1, 6), st.integers(1, 4)), elements=st.floats(-1e6, 1e6)
    ),
    bound=st.floats(0.01, 100.0),
)
def test_clipped_rows_within_bound_and_inside_rows_unchanged(x: np.ndarray, bound: float) -> None:
    out = clip_l1_per_record(x, bound=bound)
    assert np.all(np.abs(out).sum(axis=1) <= bound)
    inside = np.abs(x).sum(axis=1) <= bound
    np.testing.assert_array_equal(out[inside], x[inside])


@settings(max_examples=50, deadline=None)
@given(
    x=arrays(np.float64, st.tuples(st.integers(2, 8), st.just(3)), elements=st.floats(-50, 50)),
    groups=st.lists(st.integers(0, 2), min_size=8, max_size=8),
    drop=st.integers(0, 7),
)
def test_sum_sensitivity_is_the_clip_bound(x: np.ndarray, groups: list[int], drop: int) -> None:
    """Removing one record changes the (groups × d) sums by at most C in L1."""
    bound, n = 2.0, x.shape[0]
    g = np.array(groups[:n])
    drop = drop % n
    clipped = clip_l1_per_record(x, bound=bound)

    def sums(rows, idx):
        out = np.zeros((3, 3))
        np.add.at(out, idx, rows)
        return out

    keep = np.arange(n) != drop
    diff = np.abs(sums(clipped, g) - sums(clipped[keep], g[keep])).sum()
    assert diff <= per_record_sum_sensitivity(bound) + 1e-9


def test_per_community_sensitivity() -> None:
    assert per_community_sensitivity(1.5) == 3.0
    assert per_community_sensitivity(1.5, communities_per_record=4) == 12.0
    with pytest.raises(PrivacyParameterError, match="communities_per_record must be >= 1"):
        per_community_sensitivity(1.0, communities_per_record=0)
    # two points of the L1 ball of radius C differ by at most 2C
    reps = clip_l1_per_community(np.array([[10.0, 0.0], [0.0, -10.0]]), bound=1.0)
    assert np.abs(reps[0] - reps[1]).sum() == pytest.approx(per_community_sensitivity(1.0))


def test_clip_torch_is_differentiable() -> None:
    torch = pytest.importorskip("torch")
    x = torch.tensor([[3.0, -1.0], [0.5, 0.25]], requires_grad=True)
    out = clip_l1_per_record(x, bound=2.0)
    assert torch.allclose(out, torch.tensor([[1.5, -0.5], [0.5, 0.25]]))
    out.sum().backward()
    assert x.grad is not None


def test_clip_validates() -> None:
    with pytest.raises(PrivacyParameterError, match="bound must be > 0"):
        clip_l1_per_record(np.ones((2, 2)), bound=0.0)
    with pytest.raises(PrivacyParameterError, match="must be 2-D"):
        clip_l1_per_record(np.ones(3), bound=1.0)


def test_noisy_sum_and_count_shapes_events_and_values(seeded) -> None:
    values = np.array([[1.0, 1.0], [4.0, 0.0], [0.5, -0.5], [0.0, 3.0]])
    groups = np.array([0, 0, 2, 2])
    res = noisy_sum_and_count(
        values,
        groups=groups,
        n_groups=3,
        clip_bound=2.0,
        epsilon_sum=1e6,  # negligible noise: the snapped grid is 2**-19 here
        epsilon_count=1e6,
        max_records_per_group=100,
        source=seeded(4),
    )
    assert res.sums.shape == (3, 2) and res.counts.shape == (3,)
    np.testing.assert_allclose(res.sums, [[3.0, 1.0], [0.0, 0.0], [0.5, 1.5]], atol=1e-4)
    np.testing.assert_allclose(res.counts, [2.0, 0.0, 2.0], atol=1e-4)
    sum_event, count_event = res.events
    assert sum_event == LaplaceEvent(2.0, 2.0 / 1e6, 1, 200.0, 6)
    assert count_event == LaplaceEvent(1.0, 1.0 / 1e6, 1, 100.0, 3)
    ratio = res.ratio(min_count=1.0)
    assert ratio.shape == (3, 2) and np.all(np.isfinite(ratio))


@pytest.mark.statistical
def test_noisy_counts_have_the_stated_noise(seeded) -> None:
    res = noisy_sum_and_count(
        np.zeros((10, 1)),
        groups=np.zeros(10, dtype=int),
        n_groups=20_000,
        clip_bound=1.0,
        epsilon_sum=1.0,
        epsilon_count=0.25,  # counts ~ Laplace(4), snapped to a grid of 4
        max_records_per_group=10_000,
        source=seeded(8),
    )
    empty = res.counts[1:]
    # variance of snapped Laplace(4) on grid 4 is about 2*16 + 16/12
    assert abs(empty.var() - (32 + 16 / 12)) / 33.3 < 0.1


def test_noisy_sum_and_count_validates(seeded) -> None:
    with pytest.raises(PrivacyParameterError, match="group indices must lie in"):
        noisy_sum_and_count(
            np.ones((2, 2)),
            groups=[0, 5],
            n_groups=2,
            clip_bound=1.0,
            epsilon_sum=1.0,
            epsilon_count=1.0,
            max_records_per_group=10,
            source=seeded(1),
        )
    with pytest.raises(PrivacyParameterError, match="epsilon must be > 0"):
        noisy_sum_and_count(
            np.ones(2),
            clip_bound=1.0,
            epsilon_sum=0.0,
            epsilon_count=1.0,
            max_records_per_group=10,
        )

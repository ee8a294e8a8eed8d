from __future__ import annotations

import math

import pytest
import torch

from fedmugrep.compression import (
    SELECTION_POLICIES,
    ChannelLayout,
    NoisedNormPolicy,
    PublicAggregatePolicy,
    channel_layout,
    channel_norm_sensitivity,
    compress,
    resolve_policy,
    select_channels,
)
from fedmugrep.errors import ConfigError, PrivacyParameterError

from .conftest import TINY_NORMS


def _random_update(layout: ChannelLayout, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=gen) for n, s in layout.shapes.items()}


def test_public_policy_ignores_local_update(tiny_layout, tiny_update) -> None:
    policy = PublicAggregatePolicy(explore_fraction=0.0)
    picks = [
        policy.select(
            tiny_layout,
            upload_rate=0.5,
            round_index=3,
            local_update=local,
            previous_aggregate=tiny_update,
        ).tolist()
        for local in (_random_update(tiny_layout, 1), _random_update(tiny_layout, 2), None)
    ]
    assert picks[0] == picks[1] == picks[2] == [0, 2, 4]  # top-3 of norms [5, 0, 3, 1, 2, 2]
    # ... and it does follow the aggregate: a different aggregate, a different choice
    other = {n: t.flip(0) for n, t in tiny_update.items()}  # norms [1, 3, 0, 5, 2, 2]
    got = policy.select(tiny_layout, upload_rate=0.5, round_index=3, previous_aggregate=other)
    assert got.tolist() == [1, 3, 4]


def test_public_policy_accepts_sparse_aggregate(tiny_layout, tiny_update) -> None:
    sparse = compress(tiny_update, tiny_layout, [2, 3, 5])  # norms [0, 0, 3, 1, 0, 2]
    policy = PublicAggregatePolicy(explore_fraction=0.0)
    got = policy.select(tiny_layout, upload_rate=0.3, round_index=1, previous_aggregate=sparse)
    assert got.tolist() == [2, 5]


def test_public_policy_round_zero_rotation(tiny_layout) -> None:
    policy = PublicAggregatePolicy()
    windows = [
        policy.select(tiny_layout, upload_rate=0.5, round_index=r).tolist() for r in range(3)
    ]
    assert windows == [[0, 1, 2], [3, 4, 5], [0, 1, 2]]
    # k = ceil(0.6 * 6) = 4: windows wrap around
    assert policy.select(tiny_layout, upload_rate=0.6, round_index=1).tolist() == [0, 1, 4, 5]
    assert policy.select(tiny_layout, upload_rate=1.0, round_index=7).tolist() == list(range(6))


def test_public_policy_explores_every_channel() -> None:
    """Everyone sends the same channels, so the aggregate is zero elsewhere: pure top-k starves."""
    layout = channel_layout({"w": (20, 3)})
    n, rate = layout.n_channels, 0.2  # k = 4
    base = torch.arange(1.0, n + 1)[:, None].expand(n, 3)  # all channels matter

    def run(policy: PublicAggregatePolicy, rounds: int) -> set[int]:
        seen: set[int] = set()
        previous = None
        for r in range(rounds):
            chosen = policy.select(
                layout, upload_rate=rate, round_index=r, previous_aggregate=previous
            )
            assert chosen.numel() == 4 and chosen.unique().numel() == 4
            seen.update(chosen.tolist())
            mask = torch.zeros(n, 1)
            mask[chosen] = 1.0
            previous = {"w": base * mask}
        return seen

    assert run(PublicAggregatePolicy(explore_fraction=0.0), 40) == {0, 1, 2, 3}
    # k_explore = ceil(0.25 * 4) = 1: every channel within ceil(20 / 1) rounds after round 0
    assert run(PublicAggregatePolicy(explore_fraction=0.25), 21) == set(range(n))


def test_noised_policy_calls_noise_fn_with_stated_sensitivity(tiny_layout, tiny_update) -> None:
    calls: list[tuple[torch.Tensor, float]] = []
    offsets = torch.tensor([-10.0, 10.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64)

    def fake_laplace(values: torch.Tensor, sensitivity: float) -> torch.Tensor:
        calls.append((values.clone(), sensitivity))
        return values + offsets  # deterministic stand-in for the injected mechanism

    policy = NoisedNormPolicy(fake_laplace, sensitivity=2.5)
    got = policy.select(
        tiny_layout,
        upload_rate=0.5,
        round_index=0,
        local_update=tiny_update,
        previous_aggregate=_random_update(tiny_layout, 9),
    )
    assert len(calls) == 1
    values, sensitivity = calls[0]
    assert sensitivity == 2.5
    assert values.tolist() == TINY_NORMS
    # noisy scores [-5, 10, 3, 1, 2, 3]: top-3 = 1, then the tie 2 vs 5 -> 2, 5
    assert got.tolist() == [1, 2, 5]
    assert got.tolist() != select_channels(values, upload_rate=0.5).tolist()


def test_noised_policy_releases_nothing_when_all_channels_go(tiny_layout, tiny_update) -> None:
    def never(values: torch.Tensor, sensitivity: float) -> torch.Tensor:
        raise AssertionError("noise_fn must not be called when every channel is sent")

    policy = NoisedNormPolicy(never, sensitivity=1.0)
    got = policy.select(tiny_layout, upload_rate=0.9, round_index=0, local_update=tiny_update)
    assert got.tolist() == list(range(6))


def test_noised_policy_validation(tiny_layout, tiny_update) -> None:
    with pytest.raises(PrivacyParameterError, match="sensitivity must be > 0"):
        NoisedNormPolicy(lambda v, s: v, sensitivity=0.0)
    with pytest.raises(ConfigError, match="callable"):
        NoisedNormPolicy(None, sensitivity=1.0)  # type: ignore[arg-type]
    scalar = NoisedNormPolicy(lambda v, s: v.sum(), sensitivity=1.0)
    with pytest.raises(ConfigError, match=r"shape \(6,\)"):
        scalar.select(tiny_layout, upload_rate=0.5, round_index=0, local_update=tiny_update)
    with pytest.raises(ConfigError, match="needs local_update"):
        scalar.select(tiny_layout, upload_rate=0.5, round_index=0)
    with pytest.raises(ConfigError, match="round_index"):
        scalar.select(tiny_layout, upload_rate=0.5, round_index=-1, local_update=tiny_update)


def test_channel_norm_sensitivity() -> None:
    assert channel_norm_sensitivity(clip_norm=1.5, terms_per_record=3, n_channels=16) == 18.0
    assert (
        channel_norm_sensitivity(clip_norm=1.5, terms_per_record=3, n_channels=16, norm="l2") == 4.5
    )
    with pytest.raises(PrivacyParameterError, match="clip_norm"):
        channel_norm_sensitivity(clip_norm=-1.0, terms_per_record=1, n_channels=1)


def test_sensitivity_bound_holds_on_an_example(tiny_layout) -> None:
    """Remove one of several clipped terms: the norm vector moves <= C in L2, <= C sqrt(n) in L1."""
    clip = 1.0
    terms = []
    for seed in range(5):
        t = _random_update(tiny_layout, seed)
        scale = min(1.0, clip / math.sqrt(sum(float(v.square().sum()) for v in t.values())))
        terms.append({n: v * scale for n, v in t.items()})
    total = {n: sum(t[n] for t in terms) for n in tiny_layout.names}
    without = {n: sum(t[n] for t in terms[1:]) for n in tiny_layout.names}
    diff = tiny_layout.channel_norms(total) - tiny_layout.channel_norms(without)
    assert diff.norm(p=2) <= clip + 1e-9
    l1 = channel_norm_sensitivity(clip_norm=clip, terms_per_record=1, n_channels=6)
    assert diff.abs().sum() <= l1 + 1e-9


def test_registry_and_resolver() -> None:
    assert SELECTION_POLICIES == {
        "public_aggregate": PublicAggregatePolicy,
        "noised_norm": NoisedNormPolicy,
    }
    policy = resolve_policy("Public-Aggregate", explore_fraction=0.0)
    assert isinstance(policy, PublicAggregatePolicy) and policy.explore_fraction == 0.0
    assert resolve_policy(policy) is policy
    with pytest.raises(ConfigError) as info:
        resolve_policy("topk")
    assert str(info.value) == (
        "unknown selection policy 'topk'; valid choices: 'noised_norm', 'public_aggregate'"
    )
    with pytest.raises(ConfigError, match="cannot build selection policy 'noised_norm'"):
        resolve_policy("noised_norm")
    with pytest.raises(ConfigError, match="explore_fraction"):
        PublicAggregatePolicy(explore_fraction=1.5)


def test_repr_shows_hyper_parameters() -> None:
    def laplace(values: torch.Tensor, sensitivity: float) -> torch.Tensor:
        return values

    assert repr(PublicAggregatePolicy()) == "PublicAggregatePolicy(explore_fraction=0.1)"
    assert (
        repr(NoisedNormPolicy(laplace, sensitivity=2.0))
        == "NoisedNormPolicy(noise_fn=test_repr_shows_hyper_parameters.<locals>.laplace, sensitivity=2.0)"
    )
    assert PublicAggregatePolicy.reads_private_data is False
    assert NoisedNormPolicy.reads_private_data is True

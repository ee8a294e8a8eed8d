from __future__ import annotations

import pytest
import torch

from fedmugrep.compression import ChannelLayout, select_channels, selection_size
from fedmugrep.errors import ConfigError


@pytest.mark.parametrize(
    "rate, expected",
    [(1.0, [0, 1, 2, 3, 4, 5]), (0.5, [0, 2, 4]), (0.1, [0])],  # ceil(0.6) = 1
)
def test_selects_known_top_channels(
    tiny_layout: ChannelLayout, tiny_update, rate, expected
) -> None:
    # norms [5, 0, 3, 1, 2, 2]: at 0.5 the third slot is a tie between 4 and 5 -> 4
    chosen = select_channels(tiny_layout.channel_norms(tiny_update), upload_rate=rate)
    assert chosen.dtype == torch.int64
    assert chosen.tolist() == expected


def test_ties_broken_by_lower_index() -> None:
    scores = torch.tensor([1.0, 2.0, 2.0, 0.0, 2.0])
    assert select_channels(scores, upload_rate=0.4).tolist() == [1, 2]
    assert select_channels(torch.zeros(7), upload_rate=0.3).tolist() == [0, 1, 2]
    # -0.0 and 0.0 are equal scores: still index order
    assert select_channels(torch.tensor([0.0, -0.0, 0.0]), upload_rate=0.5).tolist() == [0, 1]


def test_ceil_uses_the_decimal_rate() -> None:
    assert 0.07 * 100 > 7  # the float trap: ceil would give 8
    assert selection_size(100, upload_rate=0.07) == 7
    assert selection_size(100, upload_rate=0.55) == 55
    assert selection_size(6, upload_rate=0.1) == 1
    assert selection_size(100, upload_rate=0.001) == 1
    assert selection_size(6, upload_rate=0.9) == 6


@pytest.mark.parametrize("rate", [1.5, 0.0, -0.1, float("nan"), True, "0.1"])
def test_bad_rate(rate) -> None:
    with pytest.raises(ConfigError, match=r"upload_rate must be in \(0, 1\]"):
        select_channels(torch.ones(3), upload_rate=rate)


def test_bad_rate_message_is_exact() -> None:
    with pytest.raises(ConfigError) as info:
        select_channels(torch.ones(3), upload_rate=1.5)
    assert str(info.value) == (
        "upload_rate must be in (0, 1] (got 1.5); pass e.g. 0.1 to send 10% of channels"
    )


def test_bad_scores() -> None:
    with pytest.raises(ConfigError, match="finite"):
        select_channels(torch.tensor([1.0, float("nan")]), upload_rate=0.5)
    with pytest.raises(ConfigError, match="1-D"):
        select_channels(torch.ones(2, 2), upload_rate=0.5)

"""Shared tiny cases: nn.Sequential(Linear(3, 4), ReLU, Linear(4, 2)) and a hand-built update."""

from __future__ import annotations

import pytest
import torch

from fedmugrep.compression import ChannelLayout, channel_layout


@pytest.fixture
def tiny_model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


@pytest.fixture
def tiny_layout(tiny_model: torch.nn.Sequential) -> ChannelLayout:
    return channel_layout({k: v.shape for k, v in tiny_model.named_parameters()})


@pytest.fixture
def tiny_update() -> dict[str, torch.Tensor]:
    """Channel norms, hand-checked: [5, 0, 3, 1, 2, 2].

    ch0 = (3,0,0 | 4) -> 5; ch1 = 0; ch2 = (1,2,2 | 0) -> 3; ch3 = (0,0,0 | 1) -> 1;
    ch4 = (1,1,1,1 | 0) -> 2; ch5 = (0,0,0,0 | 2) -> 2.
    """
    return {
        "0.weight": torch.tensor(
            [[3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 2.0], [0.0, 0.0, 0.0]]
        ),
        "0.bias": torch.tensor([4.0, 0.0, 0.0, 1.0]),
        "2.weight": torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]),
        "2.bias": torch.tensor([0.0, 2.0]),
    }


TINY_NORMS = [5.0, 0.0, 3.0, 1.0, 2.0, 2.0]

from __future__ import annotations

import pytest
import torch

from fedmugrep.compression import ChannelLayout, LayoutMismatchError, channel_layout
from fedmugrep.errors import ConfigError

from .conftest import TINY_NORMS


def test_tiny_layout_counts_output_units(tiny_layout: ChannelLayout) -> None:
    assert tiny_layout.n_channels == 6  # 4 + 2
    assert tiny_layout.n_values == 4 * 3 + 4 + 2 * 4 + 2
    assert tiny_layout.names == ("0.weight", "0.bias", "2.weight", "2.bias")
    assert [g.names for g in tiny_layout.groups] == [("0.weight", "0.bias"), ("2.weight", "2.bias")]
    assert [g.offset for g in tiny_layout.groups] == [0, 4]
    assert tiny_layout.channel_widths.tolist() == [4, 4, 4, 4, 5, 5]
    assert tiny_layout.describe_channel(5) == "2.weight[1] + 2.bias[1]"


def test_channel_norms_hand_checked(tiny_layout: ChannelLayout, tiny_update) -> None:
    norms = tiny_layout.channel_norms(tiny_update)
    assert norms.dtype == torch.float64
    assert norms.tolist() == TINY_NORMS


def test_channel_norms_match_row_norms_of_real_model(tiny_model, tiny_layout) -> None:
    p = dict(tiny_model.named_parameters())
    expected = torch.cat(
        [
            torch.cat([p["0.weight"], p["0.bias"][:, None]], 1).norm(dim=1),
            torch.cat([p["2.weight"], p["2.bias"][:, None]], 1).norm(dim=1),
        ]
    ).double()
    torch.testing.assert_close(tiny_layout.channel_norms(p), expected)


def test_layout_depends_only_on_names_and_shapes(tiny_layout: ChannelLayout) -> None:
    shapes = tiny_layout.shapes
    reversed_order = dict(reversed(list(shapes.items())))
    other = channel_layout({k: list(v) for k, v in reversed_order.items()})
    assert other == tiny_layout
    assert other.fingerprint == tiny_layout.fingerprint
    wider = channel_layout({**shapes, "2.weight": torch.Size([2, 5])})
    assert wider.fingerprint != tiny_layout.fingerprint


def test_numeric_name_parts_sort_as_numbers() -> None:
    layout = channel_layout({"10.weight": (1, 2), "2.weight": (3, 2)})
    assert layout.names == ("2.weight", "10.weight")


def test_other_tensor_kinds() -> None:
    layout = channel_layout(
        {
            "conv.weight": (5, 2, 3),  # 3-D: 5 channels of 6 values
            "conv.bias": (5,),  # paired with conv.weight
            "norm.scale": (3,),  # lone 1-D: 3 channels of 1 value
            "temperature": (),  # 0-d: one channel
            "odd.weight": (4, 2),
            "odd.bias": (3,),  # dim 0 mismatch: not paired, its own 3 channels
            "weight": (2, 2),  # un-prefixed module
            "bias": (2,),
        }
    )
    by_first = {g.names[0]: g for g in layout.groups}
    assert by_first["conv.weight"].names == ("conv.weight", "conv.bias")
    assert (by_first["conv.weight"].n_channels, by_first["conv.weight"].width) == (5, 7)
    assert (by_first["norm.scale"].n_channels, by_first["norm.scale"].width) == (3, 1)
    assert (by_first["temperature"].n_channels, by_first["temperature"].width) == (1, 1)
    assert by_first["odd.weight"].names == ("odd.weight",)
    assert by_first["odd.bias"].n_channels == 3
    assert by_first["weight"].names == ("weight", "bias")
    assert layout.n_channels == 5 + 3 + 1 + 4 + 3 + 2
    update = {n: torch.ones(s) for n, s in layout.shapes.items()}
    norms = layout.channel_norms(update)
    assert norms[by_first["temperature"].offset].item() == 1.0
    assert norms[by_first["conv.weight"].offset].item() == pytest.approx(7**0.5)


def test_update_mismatch_is_reported(tiny_layout: ChannelLayout, tiny_update) -> None:
    missing = {k: v for k, v in tiny_update.items() if k != "2.bias"}
    with pytest.raises(LayoutMismatchError, match=r"missing '2\.bias'"):
        tiny_layout.channel_norms(missing)
    with pytest.raises(LayoutMismatchError, match=r"unexpected 'extra'"):
        tiny_layout.channel_norms({**tiny_update, "extra": torch.zeros(1)})
    with pytest.raises(
        LayoutMismatchError, match=r"shape \(4, 4\) but the layout expects \(4, 3\)"
    ):
        tiny_layout.channel_norms({**tiny_update, "0.weight": torch.zeros(4, 4)})
    assert issubclass(LayoutMismatchError, ConfigError)


@pytest.mark.parametrize(
    "shapes, match",
    [({}, "shapes is empty"), ({"w": (2, -1)}, "non-negative"), ({"w": (0, 3)}, "no channel")],
)
def test_bad_shapes(shapes, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        channel_layout(shapes)

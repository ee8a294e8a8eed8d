from __future__ import annotations

import pytest
import torch

from fedmugrep.compression import (
    HEADER_BYTES,
    ChannelLayout,
    LayoutMismatchError,
    SparseUpdate,
    apply_sparse,
    channel_layout,
    compress,
    decompress,
    dense_nbytes,
    select_channels,
)
from fedmugrep.errors import ConfigError


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def test_round_trip_exact_on_selected_zero_elsewhere(tiny_layout: ChannelLayout) -> None:
    gen = torch.Generator().manual_seed(1)
    update = {n: torch.randn(s, generator=gen) for n, s in tiny_layout.shapes.items()}
    chosen = torch.tensor([4, 0, 2])  # any order in, sorted out
    sparse = compress(update, tiny_layout, chosen)
    assert sparse.channels.dtype == torch.int32 and sparse.channels.tolist() == [0, 2, 4]
    assert sparse.values.dtype == torch.float32 and sparse.values.numel() == 4 + 4 + 5
    # values: channel after channel, weight row then bias element
    assert torch.equal(sparse.values[:4], torch.cat([update["0.weight"][0], update["0.bias"][:1]]))

    payload = sparse.to_bytes()
    assert isinstance(payload, bytes) and len(payload) == sparse.nbytes
    assert len(payload) == HEADER_BYTES + 4 * 3 + 4 * 13
    received = SparseUpdate.from_bytes(payload)
    assert received == sparse
    dense = decompress(received, tiny_layout)
    assert list(dense) == list(tiny_layout.names)
    w0, b0, w2, b2 = (dense[n] for n in tiny_layout.names)
    for i in range(4):
        expect = i in (0, 2)
        assert torch.equal(w0[i], update["0.weight"][i] if expect else torch.zeros(3))
        assert torch.equal(b0[i], update["0.bias"][i] if expect else torch.zeros(()))
    assert torch.equal(w2[0], update["2.weight"][0]) and torch.equal(b2[0], update["2.bias"][0])
    assert torch.equal(w2[1], torch.zeros(4)) and b2[1].item() == 0.0


def test_round_trip_with_0d_and_lone_1d_tensors() -> None:
    layout = channel_layout({"t": (), "s": (3,), "w": (2, 2, 2)})
    update = {"t": torch.tensor(7.0), "s": torch.tensor([1.0, 2.0, 3.0]), "w": torch.ones(2, 2, 2)}
    names = [layout.describe_channel(i) for i in range(layout.n_channels)]
    keep = [names.index("t"), names.index("s[1]"), names.index("w[1]")]
    dense = decompress(SparseUpdate.from_bytes(compress(update, layout, keep).to_bytes()), layout)
    assert dense["t"].item() == 7.0
    assert dense["s"].tolist() == [0.0, 2.0, 0.0]
    assert dense["w"][1].eq(1).all() and dense["w"][0].eq(0).all()


def test_empty_selection_round_trips(tiny_layout, tiny_update) -> None:
    sparse = compress(tiny_update, tiny_layout, torch.zeros(0, dtype=torch.int64))
    assert sparse.nbytes == HEADER_BYTES
    dense = decompress(SparseUpdate.from_bytes(sparse.to_bytes()), tiny_layout)
    assert all(t.eq(0).all() for t in dense.values())


def test_apply_sparse_touches_only_selected_channels(tiny_model, tiny_layout) -> None:
    params = dict(tiny_model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    gen = torch.Generator().manual_seed(2)
    update = {n: torch.randn(s, generator=gen) for n, s in tiny_layout.shapes.items()}
    sparse = compress(update, tiny_layout, [1, 5])
    apply_sparse(params, sparse, tiny_layout, lr=0.5)

    def bits(t: torch.Tensor) -> torch.Tensor:
        return t.detach().contiguous().view(torch.int32)

    for name, selected in (("0.weight", [1]), ("0.bias", [1]), ("2.weight", [1]), ("2.bias", [1])):
        now, old = _rows(params[name]), _rows(before[name])
        for i in range(now.shape[0]):
            if i in selected:
                expect = old[i] + 0.5 * _rows(update[name])[i]
                assert torch.equal(now[i], expect), (name, i)
            else:
                assert torch.equal(bits(now[i]), bits(old[i])), (name, i)
    # only "0" channel 1 and "2" channel 1 (global 5) changed
    assert not torch.equal(params["0.weight"][1], before["0.weight"][1])


def test_apply_sparse_on_noncontiguous_param() -> None:
    base = torch.zeros(3, 4)
    weight = base.t()  # [4, 3], non-contiguous view
    layout = channel_layout({"weight": weight.shape})
    sparse = compress({"weight": torch.ones(4, 3)}, layout, [2])
    apply_sparse({"weight": weight}, sparse, layout)
    assert base[:, 2].eq(1).all() and base.sum().item() == 3.0


def test_nbytes_at_rate_point_one_is_about_ten_percent() -> None:
    layout = channel_layout({"lin.weight": (100, 99), "lin.bias": (100,)})  # 100 channels x 100
    gen = torch.Generator().manual_seed(3)
    update = {n: torch.randn(s, generator=gen) for n, s in layout.shapes.items()}
    chosen = select_channels(layout.channel_norms(update), upload_rate=0.1)
    sparse = compress(update, layout, chosen)
    dense = dense_nbytes(layout)
    assert dense == 4 * 100 * 100
    assert sparse.nbytes == HEADER_BYTES + 4 * 10 + 4 * 10 * 100 == len(sparse.to_bytes())
    assert 0.1 * dense < sparse.nbytes <= 0.1 * dense * (1 + 1 / 100) + HEADER_BYTES
    assert HEADER_BYTES == 32


def test_layout_mismatch_rejected(tiny_layout, tiny_update) -> None:
    sparse = compress(tiny_update, tiny_layout, [0, 1])
    other = channel_layout({"0.weight": (4, 3), "0.bias": (4,), "2.weight": (3, 4), "2.bias": (3,)})
    with pytest.raises(LayoutMismatchError, match="built for layout"):
        decompress(sparse, other)
    params = {n: torch.zeros(s) for n, s in other.shapes.items()}
    with pytest.raises(LayoutMismatchError, match="built for layout"):
        apply_sparse(params, sparse, other)
    assert all(p.eq(0).all() for p in params.values())  # nothing written
    with pytest.raises(LayoutMismatchError, match="missing"):
        compress({"0.weight": tiny_update["0.weight"]}, tiny_layout, [0])
    wrong_params = {n: torch.zeros(s) for n, s in tiny_layout.shapes.items()}
    wrong_params["2.bias"] = torch.zeros(3)
    with pytest.raises(LayoutMismatchError, match=r"params\['2\.bias'\]"):
        apply_sparse(wrong_params, sparse, tiny_layout)


def test_forged_value_count_rejected(tiny_layout, tiny_update) -> None:
    sparse = compress(tiny_update, tiny_layout, [0, 1])
    forged = SparseUpdate(sparse.channels, sparse.values[:-1], sparse.layout_fingerprint)
    with pytest.raises(LayoutMismatchError, match="carries 7 values"):
        decompress(forged, tiny_layout)
    out_of_range = SparseUpdate(
        torch.tensor([0, 9], dtype=torch.int32), sparse.values, sparse.layout_fingerprint
    )
    with pytest.raises(LayoutMismatchError, match="channel 9"):
        decompress(out_of_range, tiny_layout)


def test_bad_channels_rejected(tiny_layout, tiny_update) -> None:
    with pytest.raises(ConfigError, match="duplicates"):
        compress(tiny_update, tiny_layout, [1, 1])
    with pytest.raises(ConfigError, match=r"in \[0, 6\)"):
        compress(tiny_update, tiny_layout, [6])
    with pytest.raises(ConfigError, match="integer"):
        compress(tiny_update, tiny_layout, torch.tensor([0.0]))
    nan_update = {**tiny_update, "0.bias": torch.tensor([float("nan"), 0, 0, 0])}
    with pytest.raises(ConfigError, match="NaN"):
        compress(nan_update, tiny_layout, [0])


def test_corrupt_payloads_rejected(tiny_layout, tiny_update) -> None:
    payload = compress(tiny_update, tiny_layout, [0, 2]).to_bytes()
    with pytest.raises(ConfigError, match="magic"):
        SparseUpdate.from_bytes(b"XXXX" + payload[4:])
    with pytest.raises(ConfigError, match="truncated"):
        SparseUpdate.from_bytes(payload[:-1])
    with pytest.raises(ConfigError, match="shorter than"):
        SparseUpdate.from_bytes(payload[:10])
    with pytest.raises(ConfigError, match="version 2"):
        SparseUpdate.from_bytes(payload[:4] + b"\x02\x00" + payload[6:])
    swapped = bytearray(payload)  # indices [0, 2] -> [2, 0]
    swapped[32:40] = payload[36:40] + payload[32:36]
    with pytest.raises(ConfigError, match="strictly increasing"):
        SparseUpdate.from_bytes(bytes(swapped))


def test_apply_rejects_integer_params_and_bad_lr(tiny_layout, tiny_update) -> None:
    sparse = compress(tiny_update, tiny_layout, [0])
    params = {n: torch.zeros(s) for n, s in tiny_layout.shapes.items()}
    with pytest.raises(ConfigError, match="lr must be a finite"):
        apply_sparse(params, sparse, tiny_layout, lr=float("inf"))
    params["0.bias"] = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ConfigError, match="not floating point"):
        apply_sparse(params, sparse, tiny_layout)


def test_full_update_travels_densely_never_larger_than_header_plus_dense() -> None:
    layout = channel_layout({"lin.weight": (100, 99), "lin.bias": (100,)})
    gen = torch.Generator().manual_seed(4)
    update = {n: torch.randn(s, generator=gen) for n, s in layout.shapes.items()}
    everything = select_channels(layout.channel_norms(update), upload_rate=1.0)
    sparse = compress(update, layout, everything)
    payload = sparse.to_bytes()
    # no index list: header + the values, 400 bytes less than with 100 indices
    assert sparse.is_prefix and len(payload) == sparse.nbytes == HEADER_BYTES + dense_nbytes(layout)
    received = SparseUpdate.from_bytes(payload)
    assert received == sparse
    assert all(torch.equal(decompress(received, layout)[n], update[n]) for n in layout.names)


def test_prefix_selection_omits_indices_other_selections_keep_them(tiny_layout, tiny_update):
    prefix = compress(tiny_update, tiny_layout, [2, 0, 1])
    gap = compress(tiny_update, tiny_layout, [0, 1, 3])
    assert prefix.is_prefix and not gap.is_prefix
    assert len(prefix.to_bytes()) == HEADER_BYTES + 4 * prefix.values.numel()
    assert len(gap.to_bytes()) == HEADER_BYTES + 4 * 3 + 4 * gap.values.numel()
    for sparse in (prefix, gap):
        assert SparseUpdate.from_bytes(sparse.to_bytes()) == sparse


@pytest.mark.parametrize("flags, k", [(2, 3), (1, 0)])
def test_unknown_flags_and_empty_prefix_are_refused(tiny_layout, tiny_update, flags, k) -> None:
    payload = bytearray(compress(tiny_update, tiny_layout, [0, 1, 2]).to_bytes())
    payload[6:8] = flags.to_bytes(2, "little")
    payload[8:12] = k.to_bytes(4, "little")
    with pytest.raises(ConfigError, match="flags|prefix of length 0"):
        SparseUpdate.from_bytes(bytes(payload))

"""Sparse transport of channel-selected updates: compress, bytes, decompress, apply (C8).

Only the selected channels travel. The binary format (little-endian, no pickle) is::

    offset  size  field
    0       4     magic b"FMSU"
    4       2     format version (uint16, currently 1)
    6       2     flags (uint16): 0, or 1 = "the first k channels" (indices omitted)
    8       4     k: number of channels (uint32)
    12      4     v: number of values (uint32)
    16      16    layout fingerprint (ChannelLayout.fingerprint)
    32      4*k   channel indices, int32, strictly increasing (absent under flag 1)
    32+4k   4*v   values, float32, channel after channel; inside a channel the layout's
                  parameter order (weight row flattened, then the bias element)

so ``nbytes = 32 + 4*k + 4*v`` against :func:`dense_nbytes` ``= 4 * n_values`` for the
whole update. When the selection is channels ``0 .. k-1`` (in particular *every* channel, at
upload rate 1.0) the index list says nothing and is left out (flag 1): a full update then
travels densely, ``32 + 4 * n_values`` bytes, never more than the header above the dense size.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from fedmugrep.compression.channels import (
    FINGERPRINT_BYTES,
    ChannelGroup,
    ChannelLayout,
    LayoutMismatchError,
)
from fedmugrep.errors import ConfigError

__all__ = [
    "HEADER_BYTES",
    "SparseUpdate",
    "apply_sparse",
    "compress",
    "decompress",
    "dense_nbytes",
]

_MAGIC = b"FMSU"
_VERSION = 1
_HEADER = struct.Struct(f"<4sHHII{FINGERPRINT_BYTES}s")
#: Header flag: the update carries channels ``0 .. k-1`` and their indices are omitted.
_FLAG_PREFIX = 1
#: Size of the binary header of :meth:`SparseUpdate.to_bytes`.
HEADER_BYTES = _HEADER.size


@dataclass(frozen=True, eq=False)
class SparseUpdate:
    """The selected channels of one update, ready to send.

    Build with :func:`compress` or :meth:`from_bytes`. Validated at construction: indices
    strictly increasing and non-negative, values finite, fingerprint of the right length.
    Whether indices and value count fit a layout is checked by :func:`decompress` and
    :func:`apply_sparse`, which know the layout.

    Attributes:
        channels: selected channel indices, int32, strictly increasing.
        values: the values of exactly those channels, float32, flat (see module docstring).
        layout_fingerprint: :attr:`ChannelLayout.fingerprint` of the sender's layout.

    Shapes:
        channels: ``[k]``.
        values: ``[sum of the selected channels' widths]``.
    """

    channels: torch.Tensor
    values: torch.Tensor
    layout_fingerprint: bytes

    format_version: ClassVar[int] = _VERSION

    def __post_init__(self) -> None:
        for field, dtype in (("channels", torch.int32), ("values", torch.float32)):
            t = getattr(self, field)
            if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.dim() != 1:
                got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t)
                raise ConfigError(
                    f"SparseUpdate.{field} must be a 1-D {dtype} tensor (got {got}); "
                    "build it with compress() or SparseUpdate.from_bytes()"
                )
            if t.device.type != "cpu":
                raise ConfigError(f"SparseUpdate.{field} must be on the CPU (got {t.device})")
        if not isinstance(self.layout_fingerprint, bytes) or (
            len(self.layout_fingerprint) != FINGERPRINT_BYTES
        ):
            raise ConfigError(
                f"layout_fingerprint must be {FINGERPRINT_BYTES} bytes "
                f"(got {self.layout_fingerprint!r}); pass layout.fingerprint"
            )
        ch = self.channels
        if ch.numel() and (int(ch[0]) < 0 or bool((ch[1:] <= ch[:-1]).any())):
            raise ConfigError(
                "SparseUpdate.channels must be non-negative and strictly increasing; "
                "the payload is corrupt or was not built by compress()"
            )
        if not bool(torch.isfinite(self.values).all()):
            raise ConfigError(
                "SparseUpdate.values contain NaN/inf; refuse to send or apply them "
                "(check the update for divergence)"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseUpdate):
            return NotImplemented
        return (
            self.layout_fingerprint == other.layout_fingerprint
            and torch.equal(self.channels, other.channels)
            and torch.equal(self.values, other.values)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def n_channels(self) -> int:
        """Number of channels carried."""
        return int(self.channels.numel())

    @property
    def is_prefix(self) -> bool:
        """Whether the channels are exactly ``0 .. k-1`` (sent without their indices)."""
        k = self.channels.numel()
        # strictly increasing and non-negative (checked at construction): last == k-1 iff 0..k-1
        return k > 0 and int(self.channels[-1]) == k - 1

    @property
    def nbytes(self) -> int:
        """Size of :meth:`to_bytes`: header + 4 bytes per index (none for a prefix) + 4 per value."""
        n_idx = 0 if self.is_prefix else self.channels.numel()
        return HEADER_BYTES + 4 * n_idx + 4 * self.values.numel()

    def to_bytes(self) -> bytes:
        """Serialise to the compact binary format of the module docstring (no pickle)."""
        prefix = self.is_prefix
        header = _HEADER.pack(
            _MAGIC,
            _VERSION,
            _FLAG_PREFIX if prefix else 0,
            self.channels.numel(),
            self.values.numel(),
            self.layout_fingerprint,
        )
        idx = b"" if prefix else self.channels.numpy().astype("<i4", copy=False).tobytes()
        val = self.values.numpy().astype("<f4", copy=False).tobytes()
        return header + idx + val

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> SparseUpdate:
        """Parse :meth:`to_bytes` output; every field is checked before use.

        Raises:
            ConfigError: not a sparse update (magic), unsupported version or flags, wrong
                length, or invalid content (see the class validation).
        """
        buf = bytes(data)
        if len(buf) < HEADER_BYTES:
            raise ConfigError(
                f"payload is {len(buf)} bytes, shorter than the {HEADER_BYTES}-byte header; "
                "pass bytes produced by SparseUpdate.to_bytes()"
            )
        magic, version, flags, k, v, fingerprint = _HEADER.unpack_from(buf)
        if magic != _MAGIC:
            raise ConfigError(
                f"payload is not a fedmugrep sparse update (magic {magic!r}, expected {_MAGIC!r}); "
                "pass bytes produced by SparseUpdate.to_bytes()"
            )
        if version != _VERSION or flags not in (0, _FLAG_PREFIX):
            raise ConfigError(
                f"sparse update format version {version} flags {flags} is not supported "
                f"(this fedmugrep reads version {_VERSION}, flags 0 or {_FLAG_PREFIX}); use the "
                "same fedmugrep version on both sides"
            )
        prefix = flags == _FLAG_PREFIX
        if prefix and k == 0:
            raise ConfigError("sparse update flags a channel prefix of length 0; it is corrupt")
        n_idx = 0 if prefix else k
        expected = HEADER_BYTES + 4 * n_idx + 4 * v
        if len(buf) != expected:
            raise ConfigError(
                f"payload is {len(buf)} bytes but its header announces {k} channels and {v} "
                f"values ({expected} bytes); the payload is truncated or corrupt"
            )
        if prefix:
            idx = np.arange(k, dtype=np.int32)
        else:
            idx = np.frombuffer(buf, dtype="<i4", count=k, offset=HEADER_BYTES)
        val = np.frombuffer(buf, dtype="<f4", count=v, offset=HEADER_BYTES + 4 * n_idx)
        return cls(
            channels=torch.from_numpy(idx.astype(np.int32)),  # astype copies: writable
            values=torch.from_numpy(val.astype(np.float32)),
            layout_fingerprint=fingerprint,
        )

    def __repr__(self) -> str:
        return (
            f"SparseUpdate(n_channels={self.n_channels}, n_values={self.values.numel()}, "
            f"nbytes={self.nbytes}, layout={self.layout_fingerprint.hex()[:12]})"
        )


def dense_nbytes(layout: ChannelLayout) -> int:
    """Bytes of the same update sent densely as float32, without header: ``4 * n_values``."""
    return 4 * layout.n_values


def _check_channels(channels: torch.Tensor | Sequence[int], layout: ChannelLayout) -> torch.Tensor:
    ch = torch.as_tensor(channels)
    if ch.dim() != 1 or (ch.numel() and (ch.is_floating_point() or ch.is_complex())):
        raise ConfigError(
            f"channels must be a 1-D integer tensor (got {ch.dtype} {tuple(ch.shape)}); "
            "pass the output of select_channels()"
        )
    ch = torch.sort(ch.to("cpu", torch.int64)).values
    if ch.numel():
        if int(ch[0]) < 0 or int(ch[-1]) >= layout.n_channels:
            raise ConfigError(
                f"channels must be in [0, {layout.n_channels}) (got min {int(ch[0])}, "
                f"max {int(ch[-1])}); select channels with this layout"
            )
        if bool((ch[1:] == ch[:-1]).any()):
            raise ConfigError("channels contain duplicates; pass each channel index once")
    return ch


def _group_slices(
    layout: ChannelLayout, channels: torch.Tensor
) -> Iterator[tuple[ChannelGroup, torch.Tensor]]:
    """(group, local channel indices) for every group with a selected channel."""
    bounds = torch.tensor([g.offset for g in layout.groups] + [layout.n_channels])
    cuts = torch.searchsorted(channels, bounds).tolist()
    for g, lo, hi in zip(layout.groups, cuts[:-1], cuts[1:], strict=True):
        if hi > lo:
            yield g, channels[lo:hi] - g.offset


def compress(
    update: Mapping[str, torch.Tensor],
    layout: ChannelLayout,
    channels: torch.Tensor | Sequence[int],
) -> SparseUpdate:
    """Keep only ``channels`` of ``update`` (cast to float32) with their indices.

    Args:
        update: parameter name -> delta, exactly the layout's names and shapes.
        layout: the model's channel layout.
        channels: channel indices to keep (any order, no duplicates), e.g. from
            :func:`~fedmugrep.compression.channels.select_channels`.

    Returns:
        The sparse update (indices sorted ascending).

    Shapes:
        update[name]: ``layout.shapes[name]``.
        channels: ``[k]``.

    Raises:
        LayoutMismatchError: ``update`` does not match ``layout``.
        ConfigError: bad ``channels``, or a selected value is NaN/inf.
    """
    layout.check_tensors(update)
    ch = _check_channels(channels, layout)
    pieces: list[torch.Tensor] = []
    for g, local in _group_slices(layout, ch):
        rows = [
            update[name].detach().to("cpu", torch.float32).reshape(g.n_channels, width)[local]
            for name, width in zip(g.names, g.widths, strict=True)
        ]
        pieces.append(torch.cat(rows, dim=1).reshape(-1))
    values = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.float32)
    return SparseUpdate(
        channels=ch.to(torch.int32),
        values=values.contiguous(),
        layout_fingerprint=layout.fingerprint,
    )


def _segments(
    sparse: SparseUpdate, layout: ChannelLayout
) -> list[tuple[ChannelGroup, torch.Tensor, list[torch.Tensor]]]:
    """Validate ``sparse`` against ``layout``; split its values per group and parameter."""
    if not isinstance(sparse, SparseUpdate):
        raise ConfigError(f"expected a SparseUpdate (got {type(sparse).__name__})")
    if sparse.layout_fingerprint != layout.fingerprint:
        raise LayoutMismatchError(
            f"the sparse update was built for layout {sparse.layout_fingerprint.hex()[:12]} "
            f"but this layout is {layout.fingerprint.hex()[:12]}; build both layouts from the "
            "same model architecture"
        )
    ch = sparse.channels.to(torch.int64)
    if ch.numel() and int(ch[-1]) >= layout.n_channels:
        raise LayoutMismatchError(
            f"sparse update names channel {int(ch[-1])} but the layout has "
            f"{layout.n_channels} channels; the payload is corrupt"
        )
    expected = int(layout._channel_widths[ch].sum()) if ch.numel() else 0
    if sparse.values.numel() != expected:
        raise LayoutMismatchError(
            f"sparse update carries {sparse.values.numel()} values but its {ch.numel()} "
            f"channels hold {expected} in this layout; the payload is corrupt"
        )
    out = []
    pos = 0
    for g, local in _group_slices(layout, ch):
        k = local.numel()
        block = sparse.values[pos : pos + k * g.width].reshape(k, g.width)
        pos += k * g.width
        out.append((g, local, list(torch.split(block, list(g.widths), dim=1))))
    return out


def decompress(
    sparse: SparseUpdate, layout: ChannelLayout, *, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Dense update: the carried channels' values, zeros in every other channel.

    Args:
        sparse: the received update.
        layout: the receiver's layout (must have the sender's fingerprint).
        dtype: dtype of the returned tensors.

    Returns:
        Parameter name -> dense tensor, in layout order.

    Shapes:
        output[name]: ``layout.shapes[name]``.

    Raises:
        LayoutMismatchError: fingerprint, channel range or value count does not fit ``layout``.
    """
    segments = _segments(sparse, layout)
    out = {name: torch.zeros(shape, dtype=dtype) for name, shape in layout.shapes.items()}
    for g, local, parts in segments:
        for name, width, part in zip(g.names, g.widths, parts, strict=True):
            out[name].view(g.n_channels, width)[local] = part.to(dtype)
    return out


def apply_sparse(
    params: Mapping[str, torch.Tensor],
    sparse: SparseUpdate,
    layout: ChannelLayout,
    *,
    lr: float = 1.0,
) -> None:
    """In place: ``params[c] += lr * sparse[c]`` for every carried channel ``c``, nothing else.

    Every other channel stays bit-identical (``index_add_`` touches only the selected rows).
    Everything is validated before the first write, so on error no parameter changes.

    Args:
        params: parameter name -> floating-point tensor, exactly the layout's names and shapes
            (e.g. ``dict(model.named_parameters())``; updated under ``torch.no_grad()``).
        sparse: the update to apply (a delta: new minus old).
        layout: the receiver's layout (must have the sender's fingerprint).
        lr: multiplier of the delta (finite).

    Shapes:
        params[name]: ``layout.shapes[name]``.

    Raises:
        LayoutMismatchError: ``params`` or ``sparse`` does not match ``layout``.
        ConfigError: ``lr`` is not finite or a parameter is not floating point.
    """
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr):
        raise ConfigError(f"lr must be a finite number (got {lr!r}); pass e.g. 1.0")
    layout.check_tensors(params, what="params")
    for name in layout.names:
        if not params[name].is_floating_point():
            raise ConfigError(
                f"params[{name!r}] is {params[name].dtype}, not floating point; build the "
                "layout from floating-point parameters only, e.g. dict(model.named_parameters())"
            )
    segments = _segments(sparse, layout)
    with torch.no_grad():
        for g, local, parts in segments:
            for name, part in zip(g.names, parts, strict=True):
                p = params[name]
                src = part.to(p.device, p.dtype)
                if p.dim() == 0:
                    p.add_(src.reshape(()), alpha=lr)
                else:
                    p.index_add_(0, local.to(p.device), src.reshape(-1, *p.shape[1:]), alpha=lr)

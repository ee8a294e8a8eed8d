"""Channels of a model update, their L2 norms, and top-k selection by an upload rate (C8).

A model update is a ``dict[str, torch.Tensor]`` with the names and shapes of a torch
``state_dict`` (or of ``dict(model.named_parameters())``): parameter name -> delta.
A *channel* is one output unit of a parameter:

- a tensor with ``ndim >= 2`` (Linear ``[out, in]``, Conv1d ``[out, in, k]``, ...) has one
  channel per index along dim 0 (row ``i`` of a Linear weight);
- a 1-D tensor has one channel per element;
- ``<prefix>.bias`` of shape ``[n]`` is grouped with ``<prefix>.weight`` when the weight's
  dim 0 is also ``n``: channel ``i`` is then weight row ``i`` together with ``bias[i]``
  (for an un-prefixed module, ``bias`` pairs with ``weight``);
- a 0-d tensor is one channel.

The :class:`ChannelLayout` depends only on the architecture (names and shapes), so it is
public: every party and the coordinator build the same layout and can compare fingerprints.

Channel order: parameter groups are ordered by name, numeric parts compared as numbers
(``2.weight`` before ``10.weight``); inside a paired group the weight comes before the bias.
The order therefore never depends on dict insertion order.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import torch

from fedmugrep.errors import ConfigError

__all__ = [
    "FINGERPRINT_BYTES",
    "ChannelGroup",
    "ChannelLayout",
    "LayoutMismatchError",
    "channel_layout",
    "check_upload_rate",
    "select_channels",
    "select_top",
    "selection_size",
]

#: Length in bytes of :attr:`ChannelLayout.fingerprint`.
FINGERPRINT_BYTES = 16
_FINGERPRINT_DOMAIN = b"fedmugrep.compression.channel_layout.v1\n"
_MAX_CHANNELS = 2**31 - 1  # channel indices travel as int32


class LayoutMismatchError(ConfigError):
    """An update, parameter dict or sparse payload does not match the channel layout."""


@dataclass(frozen=True)
class ChannelGroup:
    """Parameters that share channels (a ``weight`` and its ``bias``, or one tensor alone).

    Attributes:
        names: parameter names, weight before bias.
        shapes: shape of each parameter.
        widths: values each parameter contributes to one channel (``prod(shape[1:])``;
            1 for 1-D and 0-d tensors).
        n_channels: channels of the group (``shape[0]``, or 1 for a 0-d tensor).
        offset: index of the group's first channel in the layout.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    widths: tuple[int, ...]
    n_channels: int
    offset: int

    @property
    def width(self) -> int:
        """Values in one channel of this group (sum of :attr:`widths`)."""
        return sum(self.widths)


@dataclass(frozen=True)
class ChannelLayout:
    """The channels of a model architecture, in a stable order. Build with :func:`channel_layout`.

    Attributes:
        groups: parameter groups in channel order; group ``g`` owns channels
            ``g.offset .. g.offset + g.n_channels - 1``.
    """

    groups: tuple[ChannelGroup, ...]

    def __post_init__(self) -> None:
        if not self.groups:
            raise ConfigError(
                "a ChannelLayout needs at least one group; build it with channel_layout()"
            )

    @property
    def n_channels(self) -> int:
        """Total number of channels."""
        last = self.groups[-1]
        return last.offset + last.n_channels

    @property
    def n_values(self) -> int:
        """Total number of scalar values (sum of the parameters' ``numel``)."""
        return sum(g.n_channels * g.width for g in self.groups)

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names in layout order."""
        return tuple(name for g in self.groups for name in g.names)

    @property
    def shapes(self) -> dict[str, torch.Size]:
        """Parameter name -> shape, in layout order."""
        return {
            n: torch.Size(s) for g in self.groups for n, s in zip(g.names, g.shapes, strict=True)
        }

    @cached_property
    def fingerprint(self) -> bytes:
        """16-byte BLAKE2b digest of the groups (names, shapes, order); equal iff layouts are equal."""
        h = hashlib.blake2b(_FINGERPRINT_DOMAIN, digest_size=FINGERPRINT_BYTES)
        for g in self.groups:
            h.update(b"[")
            for name, shape in zip(g.names, g.shapes, strict=True):
                h.update(f"{name!r}:{list(shape)};".encode())
            h.update(b"]")
        return h.digest()

    @cached_property
    def _channel_widths(self) -> torch.Tensor:
        return torch.cat(
            [torch.full((g.n_channels,), g.width, dtype=torch.int64) for g in self.groups]
        )

    @property
    def channel_widths(self) -> torch.Tensor:
        """Values per channel (a fresh copy).

        Shapes:
            output: ``[n_channels]``, int64.
        """
        return self._channel_widths.clone()

    def describe_channel(self, index: int) -> str:
        """Human-readable content of channel ``index``, e.g. ``"0.weight[2] + 0.bias[2]"``."""
        if not 0 <= index < self.n_channels:
            raise ConfigError(
                f"channel index must be in [0, {self.n_channels}) (got {index}); "
                "pass an index of this layout"
            )
        for g in self.groups:
            if index < g.offset + g.n_channels:
                local = index - g.offset
                parts = [
                    n if len(s) == 0 else f"{n}[{local}]"
                    for n, s in zip(g.names, g.shapes, strict=True)
                ]
                return " + ".join(parts)
        raise AssertionError("unreachable")  # pragma: no cover

    def check_tensors(self, tensors: Mapping[str, torch.Tensor], *, what: str = "update") -> None:
        """Raise :class:`LayoutMismatchError` unless ``tensors`` has exactly the layout's names and shapes.

        Args:
            tensors: parameter name -> tensor.
            what: how to call ``tensors`` in the message (``"update"``, ``"params"``).
        """
        expected = self.shapes
        missing = [n for n in expected if n not in tensors]
        extra = sorted(n for n in tensors if n not in expected)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {_preview(missing)}")
            if extra:
                parts.append(f"unexpected {_preview(extra)}")
            raise LayoutMismatchError(
                f"{what} does not match the channel layout ({'; '.join(parts)}); "
                "build the layout and the update from the same model"
            )
        for name, shape in expected.items():
            got = tensors[name]
            if not isinstance(got, torch.Tensor):
                raise LayoutMismatchError(
                    f"{what}[{name!r}] must be a torch.Tensor (got {type(got).__name__}); "
                    "pass tensors"
                )
            if got.shape != shape:
                raise LayoutMismatchError(
                    f"{what}[{name!r}] has shape {tuple(got.shape)} but the layout expects "
                    f"{tuple(shape)}; build the layout and the update from the same model"
                )

    def channel_norms(self, update: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """L2 norm of every channel of ``update`` (computed in float64 on the CPU).

        Channel ``i`` of a paired group is ``sqrt(||weight[i]||^2 + bias[i]^2)``.

        Args:
            update: parameter name -> delta, exactly the layout's names and shapes.

        Returns:
            The norms in channel order.

        Shapes:
            update[name]: ``layout.shapes[name]``.
            output: ``[n_channels]``, float64.

        Raises:
            LayoutMismatchError: ``update`` does not match the layout.
        """
        self.check_tensors(update)
        out = torch.zeros(self.n_channels, dtype=torch.float64)
        for g in self.groups:
            if g.n_channels == 0:
                continue
            sq = torch.zeros(g.n_channels, dtype=torch.float64)
            for name, width in zip(g.names, g.widths, strict=True):
                rows = update[name].detach().to("cpu", torch.float64).reshape(g.n_channels, width)
                sq += rows.square().sum(dim=1)
            out[g.offset : g.offset + g.n_channels] = sq.sqrt()
        return out


def _preview(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    more = len(names) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def _natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    return tuple(
        (0, int(part), "") if part.isascii() and part.isdigit() else (1, 0, part)
        for part in name.split(".")
    )


def _weight_name_of(bias_name: str) -> str | None:
    if bias_name == "bias":
        return "weight"
    if bias_name.endswith(".bias"):
        return bias_name[: -len("bias")] + "weight"
    return None


def _as_shape(name: str, shape: object) -> tuple[int, ...]:
    try:
        dims = tuple(shape)  # type: ignore[call-overload]
    except TypeError:
        raise ConfigError(
            f"shape of {name!r} must be a torch.Size or a sequence of ints (got {shape!r}); "
            "pass e.g. {k: v.shape for k, v in model.named_parameters()}"
        ) from None
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ConfigError(
                f"shape of {name!r} must contain non-negative ints (got {shape!r}); "
                "pass e.g. {k: v.shape for k, v in model.named_parameters()}"
            )
    return dims


def channel_layout(shapes: Mapping[str, torch.Size | Sequence[int]]) -> ChannelLayout:
    """Build the channel layout of an architecture from its parameter shapes.

    Args:
        shapes: parameter name -> shape, e.g.
            ``{k: v.shape for k, v in model.named_parameters()}``. Order does not matter.

    Returns:
        The layout (see the module docstring for the channel rules and order).

    Raises:
        ConfigError: ``shapes`` is empty, a name is not a non-empty string, a shape is not a
            sequence of non-negative ints, or the layout has no channel or more than
            ``2**31 - 1`` channels.
    """
    if not shapes:
        raise ConfigError(
            "shapes is empty; pass the parameter shapes of a model, "
            "e.g. {k: v.shape for k, v in model.named_parameters()}"
        )
    dims: dict[str, tuple[int, ...]] = {}
    for name, shape in shapes.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"parameter names must be non-empty strings (got {name!r}); "
                "pass the keys of a state_dict"
            )
        dims[name] = _as_shape(name, shape)

    paired: dict[str, str] = {}  # weight name -> bias name
    for name, shape in dims.items():
        weight = _weight_name_of(name)
        if weight is None or weight not in dims or len(shape) != 1:
            continue
        wshape = dims[weight]
        if len(wshape) >= 1 and wshape[0] == shape[0]:
            paired[weight] = name
    bias_names = set(paired.values())

    members: list[tuple[str, ...]] = []
    for name in sorted(dims, key=_natural_key):
        if name in bias_names:
            continue
        members.append((name, paired[name]) if name in paired else (name,))

    groups: list[ChannelGroup] = []
    offset = 0
    for names in members:
        group_shapes = tuple(dims[n] for n in names)
        first = group_shapes[0]
        n = first[0] if first else 1
        widths = tuple(math.prod(s[1:]) if s else 1 for s in group_shapes)
        groups.append(ChannelGroup(names, group_shapes, widths, n, offset))
        offset += n
    if offset == 0:
        raise ConfigError(
            "the layout has no channel (every parameter has a zero-length dim 0); "
            "pass the shapes of a model with parameters"
        )
    if offset > _MAX_CHANNELS:
        raise ConfigError(
            f"the layout has {offset} channels but at most {_MAX_CHANNELS} are supported "
            "(indices travel as int32); split the model"
        )
    return ChannelLayout(tuple(groups))


def check_upload_rate(upload_rate: float) -> float:
    """Validate an upload rate and return it as a float.

    Raises:
        ConfigError: ``upload_rate`` is not a number in ``(0, 1]``.
    """
    bad = isinstance(upload_rate, bool) or not isinstance(upload_rate, numbers.Real)
    value = math.nan if bad else float(upload_rate)
    if bad or not 0.0 < value <= 1.0:  # NaN fails the comparison
        raise ConfigError(
            f"upload_rate must be in (0, 1] (got {upload_rate!r}); "
            "pass e.g. 0.1 to send 10% of channels"
        )
    return value


def selection_size(n_channels: int, *, upload_rate: float) -> int:
    """Number of channels kept: ``ceil(upload_rate * n_channels)``, at least 1.

    The product is computed on the rate's decimal value (``Fraction(repr(rate))``) so that
    ``0.07 * 100`` keeps 7 channels, not ``ceil(7.000000000000001) = 8``.

    Raises:
        ConfigError: bad ``upload_rate`` or ``n_channels < 1``.
    """
    rate = check_upload_rate(upload_rate)
    if isinstance(n_channels, bool) or not isinstance(n_channels, int) or n_channels < 1:
        raise ConfigError(f"n_channels must be an integer >= 1 (got {n_channels!r})")
    k = math.ceil(Fraction(repr(rate)) * n_channels)
    return max(1, min(n_channels, k))


def _check_scores(scores: torch.Tensor) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1 or scores.numel() == 0:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ConfigError(
            f"scores must be a non-empty 1-D tensor [n_channels] (got {shape}); "
            "pass layout.channel_norms(update) or noised norms"
        )
    scores = scores.detach().to("cpu", torch.float64)
    bad = (~torch.isfinite(scores)).nonzero().flatten()
    if bad.numel():
        raise ConfigError(
            f"scores must be finite (got NaN/inf at channels {bad[:8].tolist()}); "
            "check the update for NaN/inf (diverged training?)"
        )
    return scores


def select_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest scores, ties broken by lower index, sorted ascending.

    Shapes:
        scores: ``[n_channels]``.
        output: ``[k]``, int64.
    """
    scores = _check_scores(scores)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= scores.numel():
        raise ConfigError(f"k must be an integer in [0, {scores.numel()}] (got {k!r})")
    # A stable ascending sort of -scores keeps equal scores in index order.
    order = torch.sort(-scores, stable=True).indices[:k]
    return torch.sort(order).values


def select_channels(scores: torch.Tensor, *, upload_rate: float) -> torch.Tensor:
    """Keep the ``ceil(upload_rate * n_channels)`` highest-scoring channels.

    Deterministic: equal scores are broken by the lower channel index.

    Args:
        scores: one score per channel (e.g. channel norms; higher = more important).
        upload_rate: fraction of channels to send, in ``(0, 1]``.

    Returns:
        The selected channel indices, sorted ascending.

    Shapes:
        scores: ``[n_channels]``.
        output: ``[selection_size(n_channels, upload_rate=upload_rate)]``, int64.

    Raises:
        ConfigError: bad ``upload_rate``, or ``scores`` is not a finite 1-D tensor.
    """
    rate = check_upload_rate(upload_rate)
    scores = _check_scores(scores)
    return select_top(scores, selection_size(scores.numel(), upload_rate=rate))

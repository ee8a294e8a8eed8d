"""Channel-selection policies that do not leak through the norms they read (ARCHITECTURE §3).

Choosing which channels to send is itself a release: the set of the top-k channel norms of a
private update depends on the private records. A policy must therefore read either

- public data only: :class:`PublicAggregatePolicy` scores channels by the norms of the
  previous round's public (already noised, aggregated) global update — free; or
- noised private norms: :class:`NoisedNormPolicy` adds noise from an injected mechanism to
  the current local channel norms; the caller charges that mechanism to the budget.

Policies share one interface (:meth:`SelectionPolicy.select`) and are registered by name in
:data:`SELECTION_POLICIES`; :func:`resolve_policy` builds one from its name.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, ClassVar, Literal, TypeVar

import torch

from fedmugrep.compression.channels import ChannelLayout, select_top, selection_size
from fedmugrep.compression.sparse import SparseUpdate, decompress
from fedmugrep.errors import ConfigError, PrivacyParameterError

__all__ = [
    "SELECTION_POLICIES",
    "NoiseFn",
    "NoisedNormPolicy",
    "PublicAggregatePolicy",
    "SelectionPolicy",
    "channel_norm_sensitivity",
    "register_policy",
    "resolve_policy",
    "rotation_window",
]

#: ``noise_fn(values, sensitivity) -> noised values`` (same shape): a mechanism calibrated to
#: ``sensitivity`` that returns the values *with* noise added (e.g. a snapped Laplace release).
NoiseFn = Callable[[torch.Tensor, float], torch.Tensor]

Update = Mapping[str, torch.Tensor]


def _check_round(round_index: int) -> int:
    if isinstance(round_index, bool) or not isinstance(round_index, int) or round_index < 0:
        raise ConfigError(
            f"round_index must be an integer >= 0 (got {round_index!r}); pass the round number"
        )
    return round_index


def _ceil_fraction(fraction: float, n: int) -> int:
    return math.ceil(Fraction(repr(float(fraction))) * n)


def rotation_window(n_channels: int, k: int, start: int) -> torch.Tensor:
    """The ``k`` channels ``start, start+1, ...`` taken cyclically, sorted ascending.

    Shapes:
        output: ``[k]``, int64.
    """
    return torch.sort((start + torch.arange(k)) % n_channels).values


def channel_norm_sensitivity(
    *,
    clip_norm: float,
    terms_per_record: int,
    n_channels: int,
    norm: Literal["l1", "l2"] = "l1",
) -> float:
    """Sensitivity of the vector of channel norms of a sum of clipped terms.

    Argument. The local update is ``U = sum_t c_t`` with every per-target term clipped,
    ``||c_t||_2 <= C``. Adding or removing one record changes only the terms it takes part
    in: a term that appears or disappears moves ``U`` by at most ``C``; a term that changes
    (``c_t -> c_t'``, both clipped) by at most ``2C``. With ``m`` = terms appearing or
    disappearing + 2 x terms changing, the triangle inequality gives ``||U - U'||_2 <= m C``.
    Channels partition the coordinates, and by the reverse triangle inequality
    ``| ||U_j|| - ||U'_j|| | <= ||U_j - U'_j||`` for every channel ``j``, so the norm vector
    ``N(U) = (||U_j||)_j`` satisfies ``||N(U) - N(U')||_2 <= ||U - U'||_2 <= m C`` and, by
    Cauchy-Schwarz, ``||N(U) - N(U')||_1 <= m C sqrt(n_channels)``.

    Examples of ``m``: per-record clipping where each record is only its own term (DP-SGD
    rows): ``m = 1``. Event graph with out-degree <= K where a record is a target and a
    neighbour of up to K other targets: ``m = 1 + 2K``.

    Args:
        clip_norm: per-term L2 clip bound ``C`` (> 0).
        terms_per_record: ``m`` as defined above (>= 1).
        n_channels: channels of the layout (>= 1).
        norm: ``"l1"`` (for a Laplace mechanism) or ``"l2"`` (for a Gaussian mechanism).

    Returns:
        ``m C sqrt(n_channels)`` for ``"l1"``, ``m C`` for ``"l2"``.
    """
    if (
        isinstance(clip_norm, bool)
        or not isinstance(clip_norm, numbers.Real)
        or not 0 < float(clip_norm) < math.inf
    ):
        raise PrivacyParameterError(
            f"clip_norm must be > 0 (got {clip_norm!r}); pass a positive value"
        )
    for name, value in (("terms_per_record", terms_per_record), ("n_channels", n_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PrivacyParameterError(
                f"{name} must be an integer >= 1 (got {value!r}); pass a positive count"
            )
    l2 = terms_per_record * float(clip_norm)
    if norm == "l2":
        return l2
    if norm == "l1":
        return l2 * math.sqrt(n_channels)
    raise ConfigError(f"norm must be 'l1' or 'l2' (got {norm!r})")


class SelectionPolicy(ABC):
    """Chooses the channels to upload in one round; see the module docstring.

    Attributes:
        name: registry name.
        reads_private_data: whether :meth:`select` reads the local update (then it must do so
            only through a charged mechanism).
    """

    name: ClassVar[str]
    reads_private_data: ClassVar[bool]

    @abstractmethod
    def select(
        self,
        layout: ChannelLayout,
        *,
        upload_rate: float,
        round_index: int,
        local_update: Update | None = None,
        previous_aggregate: Update | SparseUpdate | None = None,
    ) -> torch.Tensor:
        """Channels to upload this round.

        Args:
            layout: the model's channel layout.
            upload_rate: fraction of channels to send, in ``(0, 1]``.
            round_index: round number (>= 0).
            local_update: this party's update (name -> delta), private.
            previous_aggregate: the previous round's public global update, dense or sparse;
                ``None`` in round 0.

        Returns:
            ``selection_size(layout.n_channels, upload_rate=upload_rate)`` channel indices,
            sorted ascending.

        Shapes:
            output: ``[k]``, int64.
        """


SELECTION_POLICIES: dict[str, type[SelectionPolicy]] = {}
_P = TypeVar("_P", bound=type[SelectionPolicy])


def register_policy(cls: _P) -> _P:
    """Class decorator: add a policy to :data:`SELECTION_POLICIES` under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{cls.__name__} needs a non-empty class attribute `name`")
    if SELECTION_POLICIES.get(name, cls) is not cls:
        raise ConfigError(
            f"selection policy {name!r} is already registered by "
            f"{SELECTION_POLICIES[name].__name__}; choose another name"
        )
    SELECTION_POLICIES[name] = cls
    return cls


def resolve_policy(query: str | SelectionPolicy, **kwargs: Any) -> SelectionPolicy:
    """Build a registered policy from its name (``-``/``_`` and case ignored), or pass one through.

    Args:
        query: a registry name such as ``"public_aggregate"``, or a policy instance.
        **kwargs: constructor arguments of the named policy.

    Raises:
        ConfigError: unknown name (the message lists the valid choices), or arguments the
            policy does not accept.
    """
    if isinstance(query, SelectionPolicy):
        if kwargs:
            raise ConfigError(
                f"got a policy instance and arguments {sorted(kwargs)}; pass one or the other"
            )
        return query
    key = str(query).strip().lower().replace("-", "_")
    if key not in SELECTION_POLICIES:
        choices = ", ".join(repr(n) for n in sorted(SELECTION_POLICIES))
        raise ConfigError(f"unknown selection policy {query!r}; valid choices: {choices}")
    cls = SELECTION_POLICIES[key]
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot build selection policy {key!r}: {exc}") from None


@register_policy
class PublicAggregatePolicy(SelectionPolicy):
    """Score channels by the norms of the previous round's public global update. Costs no privacy.

    The previous aggregate has already been noised and released, so anything computed from it
    is post-processing. The local update is never read: every party with the same public
    inputs picks the same channels.

    Rules, with ``n`` channels and ``k = ceil(upload_rate * n)``:

    - ``k == n``: all channels.
    - No previous aggregate (round 0, or after a restart): the rotation window
      ``{(round_index * k + j) mod n : j < k}`` — consecutive rounds walk the channels in
      blocks of ``k``.
    - Otherwise ``k_explore = ceil(explore_fraction * k)`` slots (0 when
      ``explore_fraction == 0``) go to a rotation and the other ``k - k_explore`` to the
      highest previous-aggregate norms (ties by lower index). The rotation takes the first
      ``k_explore`` channels not already chosen, walking cyclically from
      ``round_index * k_explore``.

    Why explore: when every party sends the same channels, the aggregate is zero outside
    them, so pure top-norm selection would pick the same channels forever and never update
    the rest. With ``explore_fraction > 0`` every channel is sent at least once in any
    ``ceil(n / k_explore)`` consecutive rounds. ``explore_fraction=0`` is the plain
    top-k of the previous aggregate's norms.

    Args:
        explore_fraction: share of the ``k`` slots given to the rotation, in ``[0, 1]``.
    """

    name: ClassVar[str] = "public_aggregate"
    reads_private_data: ClassVar[bool] = False

    def __init__(self, *, explore_fraction: float = 0.1) -> None:
        if (
            isinstance(explore_fraction, bool)
            or not isinstance(explore_fraction, numbers.Real)
            or not 0.0 <= float(explore_fraction) <= 1.0
        ):
            raise ConfigError(
                f"explore_fraction must be in [0, 1] (got {explore_fraction!r}); "
                "pass e.g. 0.1 to rotate 10% of the selected channels"
            )
        self.explore_fraction = float(explore_fraction)

    def select(
        self,
        layout: ChannelLayout,
        *,
        upload_rate: float,
        round_index: int,
        local_update: Update | None = None,
        previous_aggregate: Update | SparseUpdate | None = None,
    ) -> torch.Tensor:
        """See :meth:`SelectionPolicy.select`; ``local_update`` is ignored by design."""
        del local_update  # never read: the choice must depend on public data only
        round_index = _check_round(round_index)
        n = layout.n_channels
        k = selection_size(n, upload_rate=upload_rate)
        if k == n:
            return torch.arange(n)
        if previous_aggregate is None:
            return rotation_window(n, k, (round_index * k) % n)
        if isinstance(previous_aggregate, SparseUpdate):
            previous_aggregate = decompress(previous_aggregate, layout, dtype=torch.float64)
        scores = layout.channel_norms(previous_aggregate)
        k_explore = min(k, _ceil_fraction(self.explore_fraction, k))
        exploit = select_top(scores, k - k_explore)
        if k_explore == 0:
            return exploit
        taken = torch.zeros(n, dtype=torch.bool)
        taken[exploit] = True
        order = ((round_index * k_explore) % n + torch.arange(n)) % n
        explore = order[~taken[order]][:k_explore]
        return torch.sort(torch.cat([exploit, explore])).values

    def __repr__(self) -> str:
        return f"{type(self).__name__}(explore_fraction={self.explore_fraction})"


def _callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


@register_policy
class NoisedNormPolicy(SelectionPolicy):
    """Score channels by the current local channel norms plus noise from an injected mechanism.

    ``scores = noise_fn(layout.channel_norms(local_update), sensitivity)``, then top-k. The
    noisy norms are a DP release (the caller's ``noise_fn`` is the mechanism and the caller
    charges it); the top-k choice is post-processing of that release.

    Sensitivity the caller must pass (see :func:`channel_norm_sensitivity` for the full
    argument): with per-record L2 clipping at ``C`` and one record able to influence ``m``
    clipped per-target terms (a term the record modifies counts twice), the vector of channel
    norms of the summed update changes by at most ``m C`` in L2, hence at most
    ``m C sqrt(n_channels)`` in L1. A Laplace ``noise_fn`` needs the L1 value; a Gaussian one
    the L2 value. The policy forwards ``sensitivity`` unchanged.

    When ``k == n`` (every channel is sent whatever the scores) ``noise_fn`` is not called:
    nothing is released, so nothing needs charging.

    If ``local_update`` is itself already the output of a charged mechanism (e.g. the
    Gaussian-noised DP-SGD update), selecting on its norms is post-processing; this policy
    is for reading the clipped update *before* its noise.

    Args:
        noise_fn: ``noise_fn(values, sensitivity) -> noised values`` of the same shape
            (values are float64, on the CPU).
        sensitivity: the sensitivity ``noise_fn`` calibrates to (> 0, finite).
    """

    name: ClassVar[str] = "noised_norm"
    reads_private_data: ClassVar[bool] = True

    def __init__(self, noise_fn: NoiseFn, *, sensitivity: float) -> None:
        if not callable(noise_fn):
            raise ConfigError(
                f"noise_fn must be callable (got {type(noise_fn).__name__}); pass a mechanism "
                "noise_fn(values, sensitivity) -> noised values"
            )
        if (
            isinstance(sensitivity, bool)
            or not isinstance(sensitivity, numbers.Real)
            or not 0.0 < float(sensitivity) < math.inf
        ):
            raise PrivacyParameterError(
                f"sensitivity must be > 0 (got {sensitivity!r}); pass a positive value, "
                "e.g. channel_norm_sensitivity(clip_norm=..., terms_per_record=..., n_channels=...)"
            )
        self.noise_fn = noise_fn
        self.sensitivity = float(sensitivity)

    def select(
        self,
        layout: ChannelLayout,
        *,
        upload_rate: float,
        round_index: int,
        local_update: Update | None = None,
        previous_aggregate: Update | SparseUpdate | None = None,
    ) -> torch.Tensor:
        """See :meth:`SelectionPolicy.select`; ``previous_aggregate`` is ignored.

        Raises:
            ConfigError: ``local_update`` is missing, or ``noise_fn`` returned something
                other than a finite tensor of shape ``[n_channels]``.
        """
        _check_round(round_index)
        n = layout.n_channels
        k = selection_size(n, upload_rate=upload_rate)
        if k == n:
            return torch.arange(n)
        if local_update is None:
            raise ConfigError(
                "NoisedNormPolicy needs local_update (its norms are what gets noised); "
                "pass the party's clipped update"
            )
        norms = layout.channel_norms(local_update)
        noised = self.noise_fn(norms, self.sensitivity)
        if not isinstance(noised, torch.Tensor) or noised.shape != norms.shape:
            got = tuple(noised.shape) if isinstance(noised, torch.Tensor) else type(noised)
            raise ConfigError(
                f"noise_fn must return a tensor of shape {tuple(norms.shape)} (got {got}); "
                "return the noised values, not a scalar or a copy of another shape"
            )
        return select_top(noised, k)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(noise_fn={_callable_name(self.noise_fn)}, "
            f"sensitivity={self.sensitivity})"
        )

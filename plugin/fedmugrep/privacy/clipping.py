"""L1 clipping and noisy sums/counts: the sensitivity bookkeeping behind Laplace releases.

Privacy unit: one transaction record, add or remove (ARCHITECTURE §3). The rules used here:

* **Per record.** After :func:`clip_l1_per_record` every record's contribution ``v`` has
  ``||v||_1 <= C``; a sum over records (in total, or split by group when each record belongs
  to exactly one group) then changes by at most ``C`` in L1 when one record is added or
  removed: **sensitivity C** (:func:`per_record_sum_sensitivity`).
* **Per community.** After :func:`clip_l1_per_community` every community's vector (e.g. an
  intra-region representation, a function of all records of that community) lies in the L1
  ball of radius ``C``; adding or removing one record can change the vectors of at most ``k``
  communities (``k = 1`` when only a record's own community sees it; with message passing
  bounded by degree ``K`` use the number of communities a record can reach), each by at most
  ``2C`` (two points of the ball): **sensitivity 2·C·k** (:func:`per_community_sensitivity`).
* **Never divide by a private count.** Means are released as a noisy sum and a noisy count
  (:func:`noisy_sum_and_count`); dividing the two *released* values afterwards is
  post-processing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from fedmugrep.errors import PrivacyParameterError
from fedmugrep.privacy.events import LaplaceEvent
from fedmugrep.privacy.laplace import LaplaceMechanism, RandomSource

__all__ = [
    "NoisySumCount",
    "clip_l1_per_community",
    "clip_l1_per_record",
    "noisy_sum_and_count",
    "per_community_sensitivity",
    "per_record_sum_sensitivity",
]

A = TypeVar("A")


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise PrivacyParameterError(f"{name} must be > 0 (got {value}); pass a positive value")
    return value


def _is_torch(x: object) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _clip_rows_l1(values: A, bound: float) -> A:
    bound = _positive("bound", bound)
    if _is_torch(values):
        import torch

        t: Any = values
        if t.dim() != 2:
            raise PrivacyParameterError(
                f"values must be 2-D (rows, features) (got shape {tuple(t.shape)}); reshape first"
            )
        t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)
        norms = t.abs().sum(dim=1, keepdim=True)
        factor = torch.clamp(bound / norms.clamp_min(1e-300), max=1.0)
        return t * factor  # type: ignore[return-value]
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise PrivacyParameterError(
            f"values must be 2-D (rows, features) (got shape {arr.shape}); reshape first"
        )
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    norms = np.abs(arr).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        factor = np.minimum(1.0, bound / np.maximum(norms, 1e-300))
    out = arr * factor
    # guard against rounding pushing a row a hair above the bound
    over = np.abs(out).sum(axis=1) > bound
    if np.any(over):
        out[over] *= np.nextafter(1.0, 0.0)
    return out  # type: ignore[return-value]


def clip_l1_per_record(values: A, *, bound: float) -> A:
    """Scale each record's row so its L1 norm is at most ``bound`` (rows already inside stay).

    Non-finite entries become 0 first. Works on NumPy arrays and torch tensors (differentiable).

    Shapes:
        values: ``(n_records, d)``; output: ``(n_records, d)``.
    """
    return _clip_rows_l1(values, bound)


def clip_l1_per_community(values: A, *, bound: float) -> A:
    """Scale each community's row (e.g. its representation) to L1 norm at most ``bound``.

    Same operation as :func:`clip_l1_per_record`, applied to per-community vectors; the
    sensitivity that follows is :func:`per_community_sensitivity`.

    Shapes:
        values: ``(n_communities, d)``; output: ``(n_communities, d)``.
    """
    return _clip_rows_l1(values, bound)


def per_record_sum_sensitivity(bound: float) -> float:
    """L1 sensitivity of (grouped) sums of per-record-clipped rows: ``bound``."""
    return _positive("bound", bound)


def per_community_sensitivity(bound: float, *, communities_per_record: int = 1) -> float:
    """L1 sensitivity of stacked per-community-clipped vectors: ``2 · bound · k``.

    Args:
        bound: per-community L1 clip bound ``C``.
        communities_per_record: ``k``, how many communities' vectors one record can change.
    """
    if isinstance(communities_per_record, bool) or communities_per_record < 1:
        raise PrivacyParameterError(
            f"communities_per_record must be >= 1 (got {communities_per_record}); "
            "pass the number of communities one record can influence"
        )
    return 2.0 * _positive("bound", bound) * int(communities_per_record)


@dataclass(frozen=True)
class NoisySumCount:
    """A released noisy sum and noisy count per group.

    Attributes:
        sums: noisy per-group sums. Shapes: ``(n_groups, d)``.
        counts: noisy per-group counts. Shapes: ``(n_groups,)``.
        events: the two Laplace events to charge (sums, counts).
    """

    sums: np.ndarray
    counts: np.ndarray
    events: tuple[LaplaceEvent, LaplaceEvent]

    def ratio(self, *, min_count: float = 1.0) -> np.ndarray:
        """Post-processed mean estimate ``sums / max(counts, min_count)`` of the *released* values.

        Shapes:
            output: ``(n_groups, d)``.
        """
        denom = np.maximum(self.counts, _positive("min_count", min_count))
        return self.sums / denom[:, None]


def noisy_sum_and_count(
    values: Any,
    *,
    groups: Any | None = None,
    n_groups: int = 1,
    clip_bound: float,
    epsilon_sum: float,
    epsilon_count: float,
    max_records_per_group: int,
    source: RandomSource | None = None,
) -> NoisySumCount:
    """Release per-group sums and counts of per-record-clipped rows, each with Laplace noise.

    Sensitivity argument: every record belongs to exactly one group and its row is clipped to
    L1 norm ``clip_bound``, so adding or removing one record changes the ``(n_groups, d)``
    matrix of sums by at most ``clip_bound`` in L1 and the ``(n_groups,)`` vector of counts by
    exactly 1 in L1. Sums get ``Laplace(clip_bound/epsilon_sum)`` noise, counts
    ``Laplace(1/epsilon_count)``, both with the snapping mechanism; the declared bounds are
    ``clip_bound · max_records_per_group`` for sums and ``max_records_per_group`` for counts
    (a public cap; groups beyond it are clamped, which keeps the sensitivity). Total pure
    cost: ``epsilon_sum + epsilon_count`` (plus the snapping excess); charge ``result.events``.
    Nothing is divided by a private count.

    Args:
        values: per-record rows (NumPy or torch). Shapes: ``(n_records, d)`` or ``(n_records,)``.
        groups: group index of each record in ``[0, n_groups)``; ``None``: one group.
            Shapes: ``(n_records,)``.
        n_groups: number of groups (public).
        clip_bound: per-record L1 clip bound ``C``.
        epsilon_sum: ε for the sums.
        epsilon_count: ε for the counts.
        max_records_per_group: public upper bound on records per group (sets the clamp bound).
        source: random bits (secure by default).

    Returns:
        :class:`NoisySumCount` with ``sums (n_groups, d)``, ``counts (n_groups,)``, ``events``.
    """
    if _is_torch(values):
        values = values.detach().to("cpu").double().numpy()  # type: ignore[attr-defined]
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise PrivacyParameterError(
            f"values must be (n_records,) or (n_records, d) (got shape {arr.shape}); reshape first"
        )
    if isinstance(n_groups, bool) or int(n_groups) < 1:
        raise PrivacyParameterError(f"n_groups must be >= 1 (got {n_groups}); pass the group count")
    if isinstance(max_records_per_group, bool) or int(max_records_per_group) < 1:
        raise PrivacyParameterError(
            f"max_records_per_group must be >= 1 (got {max_records_per_group}); "
            "pass a public upper bound"
        )
    n_groups = int(n_groups)
    if groups is None:
        idx = np.zeros(arr.shape[0], dtype=np.int64)
    else:
        if _is_torch(groups):
            groups = groups.detach().to("cpu").numpy()  # type: ignore[attr-defined]
        idx = np.asarray(groups).astype(np.int64).reshape(-1)
        if idx.shape[0] != arr.shape[0]:
            raise PrivacyParameterError(
                f"groups must have one entry per record (got {idx.shape[0]} for {arr.shape[0]} "
                "records)"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= n_groups):
            raise PrivacyParameterError(
                f"group indices must lie in [0, {n_groups}) (got {idx.min()}..{idx.max()}); "
                "pass n_groups large enough"
            )
    clipped = clip_l1_per_record(arr, bound=clip_bound)
    sums = np.zeros((n_groups, arr.shape[1]))
    np.add.at(sums, idx, clipped)
    counts = np.bincount(idx, minlength=n_groups).astype(np.float64)

    sum_mech = LaplaceMechanism(
        sensitivity=per_record_sum_sensitivity(clip_bound),
        bound=float(clip_bound) * int(max_records_per_group),
        epsilon=epsilon_sum,
        source=source,
    )
    count_mech = LaplaceMechanism(
        sensitivity=1.0,
        bound=float(max_records_per_group),
        epsilon=epsilon_count,
        source=sum_mech.source,
    )
    noisy_sums = sum_mech.release(sums)
    noisy_counts = count_mech.release(counts)
    events = (sum_mech.event(dimension=sums.size), count_mech.event(dimension=counts.size))
    return NoisySumCount(noisy_sums, noisy_counts, events)

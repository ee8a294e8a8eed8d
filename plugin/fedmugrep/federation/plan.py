"""The public federation plan: everything both sides agree on before any private data is touched.

It holds no private value: encoders and vocabularies are fitted on public (mock) data, and the
noise parameters are derived from the privacy targets by the accountant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import torch

from fedmugrep.checks import check_bool, check_choice, check_float, check_int
from fedmugrep.errors import ConfigError, PrivacyParameterError
from fedmugrep.models.mugrep import ModelConfig
from fedmugrep.privacy.calibration import laplace_scale_for_epsilon, noise_multiplier_for_epsilon
from fedmugrep.privacy.events import GaussianEvent, LaplaceEvent, PrivacyEvent
from fedmugrep.training.per_target import sum_sensitivity
from fedmugrep.training.prepare import Encoders, GraphConfig

#: Upper end of every epsilon and clip a plan may carry (far above any useful value).
MAX_EPSILON_OR_CLIP = 1e6

#: Ranges of the plan's integer fields (inclusive). ``k``, ``intra_dim``, ``intra_max_degree``
#: and ``region_hidden`` set sensitivities; a datasite also checks them against the graph and
#: model it really builds (:func:`fedmugrep.federation.admission.check_artefacts`).
PLAN_INT_RANGES: dict[str, tuple[int, int]] = {
    "rounds": (1, 100_000),
    "k": (1, 64),
    "hidden": (1, 4096),
    "event_hidden": (1, 4096),
    "region_hidden": (1, 4096),
    "intra_dim": (1, 4096),
    "pretrain_epochs": (0, 100_000),
    "intra_max_degree": (1, 1024),
    "seed": (-(2**63), 2**63 - 1),
    "retries": (0, 100),
}


@dataclass(frozen=True)
class PrivacyPlan:
    """Privacy targets and release parameters for each transaction datasite.

    Releases per transaction datasite (``K`` = event-graph degree bound):

    * once: intra-region sums (L1 sensitivity ``2 m (1 + D)``, ``m`` = intra width,
      ``D`` = intra degree cap) and counts (sensitivity 1), Laplace at ``intra_epsilon`` each;
      the number of training targets, Laplace at ``count_epsilon``; with the target channel,
      the community sums of the clipped price level (sensitivity 1), Laplace at
      ``level_epsilon``;
    * every round: the summed clipped ``theta`` gradient and the summed clipped ``z`` gradient,
      Gaussian with noise std ``noise_multiplier * (1 + 2K) * clip`` (resp. ``z_clip``); with
      ``joint_clip`` (default) each target's pair is clipped together at ``clip`` and the two
      sums are one Gaussian release.

    ``noise_multiplier`` is calibrated so the whole schedule costs ``epsilon`` at ``delta``.
    """

    epsilon: float = 8.0
    delta: float = 1e-5
    clip: float = 0.3
    z_clip: float = 0.3
    intra_epsilon: float = 0.2
    count_epsilon: float = 0.05
    level_epsilon: float = 0.5  # community price level (the target channel), once
    intra_bound: float = 1e6
    calibration_epsilon: float = 0.1
    evaluation_epsilon: float = 0.4  # each evaluation the data scientist receives (noised)
    # total epsilon of the region datasite's z releases over a run (None: z leaves exact,
    # which its owner must allow explicitly)
    region_epsilon: float | None = 8.0
    calibration_z2_max: float = 9.0  # squared standardised errors clipped at 3 sigma
    coordinator_noise: float = 0.0  # extra Gaussian std on the broadcast aggregate (C6)
    # clip each target's (theta, z) gradient pair jointly at ``clip`` and release both sums as
    # one Gaussian vector per round (half the releases of separate clipping; z_clip unused)
    joint_clip: bool = True
    # "gaussian" (DP-SGD, default) or "laplace": the patent's literal Laplace mechanism on the
    # model updates, L1 sensitivity (1 + 2K) clip sqrt(d) for d released coordinates (costly)
    update_mechanism: str = "gaussian"

    @classmethod
    def for_epsilon(cls, epsilon: float, **overrides: Any) -> PrivacyPlan:
        """A plan for a total ``epsilon`` whose one-off releases (intra, counts, levels,
        calibration) take the same share of it as the defaults take of 8 (scaled down below 8,
        unchanged above), so small targets still leave budget for training."""
        base = cls()
        f = min(1.0, epsilon / base.epsilon)
        shares = {
            n: getattr(base, n) * f
            for n in (
                "intra_epsilon",
                "count_epsilon",
                "level_epsilon",
                "calibration_epsilon",
                "evaluation_epsilon",
            )
        }
        return cls(epsilon=epsilon, **{**shares, **overrides})

    def __post_init__(self) -> None:
        # types and ranges first: a plan may arrive as JSON from the data scientist
        err = PrivacyParameterError
        for name in (
            "epsilon",
            "clip",
            "z_clip",
            "intra_epsilon",
            "count_epsilon",
            "level_epsilon",
            "calibration_epsilon",
            "evaluation_epsilon",
            "calibration_z2_max",
        ):
            check_float(self, name, 0.0, MAX_EPSILON_OR_CLIP, error=err)
        check_float(self, "delta", 0.0, 1.0, error=err)
        check_float(self, "intra_bound", 0.0, 1e12, error=err)
        check_float(self, "region_epsilon", 0.0, MAX_EPSILON_OR_CLIP, optional=True, error=err)
        check_float(self, "coordinator_noise", 0.0, 1e6, low_open=False, error=err)
        check_bool(self, "joint_clip")
        for name in (
            "epsilon",
            "delta",
            "clip",
            "z_clip",
            "intra_epsilon",
            "count_epsilon",
            "level_epsilon",
            "calibration_epsilon",
            "evaluation_epsilon",
        ):
            v = getattr(self, name)
            if not v > 0:
                raise PrivacyParameterError(f"{name} must be > 0 (got {v}); pass a positive value")
        if self.delta >= 1:
            raise PrivacyParameterError(f"delta must be < 1 (got {self.delta}); e.g. 1e-5")
        if self.update_mechanism not in ("gaussian", "laplace"):
            raise PrivacyParameterError(
                f"update_mechanism must be 'gaussian' or 'laplace' (got {self.update_mechanism!r})"
            )
        if self.update_mechanism == "laplace" and not self.joint_clip:
            raise PrivacyParameterError(
                "update_mechanism='laplace' needs joint_clip=True (its L1 bound is derived from "
                "the joint per-target clip)"
            )
        if self.region_epsilon is not None and not self.region_epsilon > 0:
            raise PrivacyParameterError(
                f"region_epsilon must be > 0 or None (got {self.region_epsilon}); pass a "
                "positive value, or None to release z exactly (the region owner must allow it)"
            )


@dataclass(frozen=True)
class FederationPlan:
    """Rounds, optimisation and privacy settings of one federated training run."""

    rounds: int = 40
    lr: float = 0.01
    region_lr: float = 0.01
    upload_rate: float = 1.0
    privacy: PrivacyPlan | None = field(default_factory=PrivacyPlan)
    # small K and small model 1: the update's sensitivity is (1 + 2K) clip and the noise norm
    # grows with the parameter count (docs/FEDERATION.md §6, "the defaults")
    k: int = 3
    hidden: int = 16
    event_hidden: int = 16
    region_hidden: int = 16
    intra_dim: int = 16
    pretrain_epochs: int = 150  # public pretraining on the mocks before any private release
    optimizer: str = "adam"  # "adam" or "sgd" (momentum 0.9) on the averaged noisy gradient
    # keep the round with the best validation score (the score is an exact owner-side metric,
    # so a private run keeps the last round unless asked: None = "only without privacy")
    select_best: bool | None = None
    intra_max_degree: int = 8
    target_channel: bool = True  # release and use the community price level (ModelConfig)
    seed: int = 0
    retries: int = 3  # per party call, with exponential backoff
    retry_backoff: float = 0.5  # seconds before the first retry
    on_unresponsive: str = "stop"  # "stop" the run, or "drop" the datasite and go on

    def __post_init__(self) -> None:
        for name, (low, high) in PLAN_INT_RANGES.items():
            check_int(self, name, low, high)
        check_float(self, "lr", 0.0, 100.0)
        check_float(self, "region_lr", 0.0, 100.0)
        check_float(self, "upload_rate", 0.0, 1.0)
        check_float(self, "retry_backoff", 0.0, 3600.0, low_open=False)
        check_bool(self, "select_best", optional=True)
        check_bool(self, "target_channel")
        check_choice(self, "optimizer", ("adam", "sgd"))
        check_choice(self, "on_unresponsive", ("stop", "drop"))
        if self.privacy is not None and not isinstance(self.privacy, PrivacyPlan):
            raise ConfigError(
                f"privacy must be a PrivacyPlan or None (got {type(self.privacy).__name__})"
            )
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be 'adam' or 'sgd' (got {self.optimizer!r})")
        if self.on_unresponsive not in ("stop", "drop"):
            raise ConfigError(
                f"on_unresponsive must be 'stop' or 'drop' (got {self.on_unresponsive!r})"
            )

    @property
    def selects_best(self) -> bool:
        return self.privacy is None if self.select_best is None else self.select_best

    def setup_events(self) -> list[PrivacyEvent]:
        """Events of the one-off releases (intra sums, intra counts, target count and, with the
        target channel, the community price levels), in that order."""
        p = self.privacy
        if p is None:
            return []
        intra_sens = 2.0 * self.intra_dim * (1 + self.intra_max_degree)
        level = [LaplaceEvent(sensitivity=1.0, scale=1.0 / p.level_epsilon, bound=p.intra_bound)]
        return [
            LaplaceEvent(
                sensitivity=intra_sens, scale=intra_sens / p.intra_epsilon, bound=p.intra_bound
            ),
            LaplaceEvent(sensitivity=1.0, scale=1.0 / p.intra_epsilon, bound=p.intra_bound),
            LaplaceEvent(sensitivity=1.0, scale=1.0 / p.count_epsilon, bound=p.intra_bound),
        ] + (level if self.target_channel else [])

    def calibration_events(self) -> list[PrivacyEvent]:
        """Events of the final per-district summary d~ (validation rows).

        Per district: sum of squared standardised errors clipped to ``[0, Z]``, sum of log errors
        clipped to ``[-1, 1]``, and the count. A record changes its own term and, as an
        event-graph neighbour, the terms of at most ``K`` others; so the L1 sensitivities over
        all districts are ``(1 + K) Z``, ``1 + 2K`` and 1.
        """
        p = self.privacy
        if p is None:
            return []
        e = p.calibration_epsilon
        s_z2 = (1 + self.k) * p.calibration_z2_max
        s_err = 1.0 + 2 * self.k
        return [
            LaplaceEvent(sensitivity=s_z2, scale=s_z2 / e, bound=p.intra_bound),
            LaplaceEvent(sensitivity=s_err, scale=s_err / e, bound=p.intra_bound),
            LaplaceEvent(sensitivity=1.0, scale=1.0 / e, bound=p.intra_bound),
        ]

    @property
    def region_releases(self) -> int:
        """``z`` releases of a run: one per model-2 state that is read (the forward of every
        round, then one final state for calibration and test evaluation)."""
        return self.rounds + 1

    def region_events(self, n_communities: int) -> list[PrivacyEvent]:
        """The Laplace event of one ``z`` release (see :class:`RegionParty`): L1 sensitivity
        ``2 * region_hidden * C``; the scale makes :attr:`region_releases` of them cost
        ``region_epsilon`` at ``delta``. Empty without privacy or without ``region_epsilon``."""
        p = self.privacy
        if p is None or p.region_epsilon is None:
            return []
        sens = 2.0 * self.region_hidden * n_communities
        scale = laplace_scale_for_epsilon(
            target_epsilon=p.region_epsilon,
            delta=p.delta,
            sensitivity=sens,
            count=self.region_releases,
            bound=1.0,
            dimension=self.region_hidden * n_communities,
        )
        return [LaplaceEvent(sensitivity=sens, scale=scale, bound=1.0)]

    def evaluation_events(self) -> list[PrivacyEvent]:
        """Events of one noised evaluation (:meth:`TransactionParty.evaluate`): sums of clipped
        relative errors, clipped log errors (terms in ``[0, 0.5]``), interval hits and the count;
        ``evaluation_epsilon`` is split 3 : 3 : 2 : 2 between them. L1 sensitivities
        ``0.5 (1 + K)``, ``0.5 (1 + K)``, ``1 + K``, 1 (own row + at most K neighbours' rows)."""
        p = self.privacy
        if p is None:
            return []
        sens = (0.5 * (1 + self.k), 0.5 * (1 + self.k), 1.0 + self.k, 1.0)
        share = (0.3, 0.3, 0.2, 0.2)
        return [
            LaplaceEvent(sensitivity=s, scale=s / (w * p.evaluation_epsilon), bound=p.intra_bound)
            for s, w in zip(sens, share, strict=True)
        ]

    @property
    def validation_rounds(self) -> frozenset[int]:
        """Rounds after which the coordinator evaluates on validation rows (every 5th round and
        the last), only when it selects the best round (:attr:`selects_best`)."""
        if not self.selects_best:
            return frozenset()
        return frozenset(r for r in range(self.rounds) if r % 5 == 4 or r == self.rounds - 1)

    @property
    def evaluations(self) -> int:
        """Evaluations released per run: the validation points plus the final test one."""
        return len(self.validation_rounds) + 1

    def planned_events(self) -> list[PrivacyEvent]:
        """Every Laplace release of a run besides the rounds (setup, calibration, evaluations)."""
        return (
            self.setup_events()
            + self.calibration_events()
            + self.evaluation_events() * self.evaluations
        )

    def noise_multiplier(self) -> float:
        """Gaussian noise multiplier for the per-round releases (two per round)."""
        p = self.privacy
        if p is None:
            return 0.0
        return noise_multiplier_for_epsilon(
            target_epsilon=p.epsilon,
            delta=p.delta,
            sample_rate=1.0,
            steps=self.releases_per_round * self.rounds,
            planned_events=self.planned_events(),
        )

    @property
    def releases_per_round(self) -> int:
        """Gaussian releases per round: one joint (theta, z) vector, or two sums."""
        return 1 if self.privacy is not None and self.privacy.joint_clip else 2

    def round_events(self, noise_multiplier: float) -> list[PrivacyEvent]:
        return [GaussianEvent(noise_multiplier=noise_multiplier, count=self.releases_per_round)]

    def laplace_update_event(self, n_coords: int) -> LaplaceEvent:
        """The per-round event of the patent-literal option (``update_mechanism="laplace"``).

        Each target's joint ``(theta, z)`` gradient is clipped to L2 norm ``clip``; it has at
        most ``n_coords`` non-zero coordinates (model-1 parameters + one community's ``z`` row),
        so its L1 norm is at most ``clip * sqrt(n_coords)`` and, as for the Gaussian sums, the
        summed update's L1 sensitivity is ``(1 + 2K) clip sqrt(n_coords)``. The scale makes
        ``rounds`` such releases plus :meth:`planned_events` cost ``epsilon`` at ``delta``.
        """
        p = self.privacy
        assert p is not None
        sens = sum_sensitivity(p.clip, self.k) * n_coords**0.5
        scale = laplace_scale_for_epsilon(
            target_epsilon=p.epsilon,
            delta=p.delta,
            sensitivity=sens,
            count=self.rounds,
            bound=p.intra_bound,
            dimension=n_coords,
            planned_events=self.planned_events(),
        )
        return LaplaceEvent(sensitivity=sens, scale=scale, bound=p.intra_bound)

    def theta_noise_std(self, noise_multiplier: float) -> float:
        assert self.privacy is not None
        return noise_multiplier * sum_sensitivity(self.privacy.clip, self.k)

    def z_noise_std(self, noise_multiplier: float) -> float:
        assert self.privacy is not None
        p = self.privacy
        return noise_multiplier * sum_sensitivity(p.clip if p.joint_clip else p.z_clip, self.k)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PublicArtefacts:
    """Agreed before training; contains no private value (fitted on mock / public data)."""

    encoders: Encoders
    model_config: ModelConfig
    graph_config: GraphConfig
    val_start: pd.Timestamp
    test_start: pd.Timestamp
    # optional public starting weights ({"event": ..., "region": ...}), e.g. mock pretraining
    init_state: dict[str, dict[str, torch.Tensor]] | None = None


#: The per-round releases in a party's ledger, and how many of them precede the end of round 0:
#: an agency's update is released during its round (the first one closes round 0); the region
#: releases the ``z`` of the initial state before round 0 and, with each round's update, the
#: ``z`` of the next state (so the second one closes round 0).
ROUND_RELEASES = {"gaussian:theta+z_grad": 1, "laplace:theta+z_grad": 1, "laplace:region_z": 2}


def epsilon_after_each_round(entries: Sequence[Any], dataset: str, rounds: int) -> list[float]:
    """A dataset's total epsilon at the end of each round, from its ledger ``entries`` (the
    running totals of the per-round releases, :data:`ROUND_RELEASES`); shorter when the run
    stopped early. The one-off releases before round 0 are included in the totals; those after
    the last round (calibration, evaluation) are not."""
    per_round = [
        e
        for e in entries
        if e.status == "charged" and e.dataset == dataset and e.mechanism in ROUND_RELEASES
    ]
    if not per_round:
        return []
    first = ROUND_RELEASES[per_round[0].mechanism] - 1
    return [float(e.total_epsilon) for e in per_round[first : first + rounds]]

"""The public federation plan: everything both sides agree on before any private data is touched.

It holds no private value: encoders and vocabularies are fitted on public (mock) data, and the
noise parameters are derived from the privacy targets by the accountant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fedmugrep.errors import ConfigError, PrivacyParameterError
from fedmugrep.privacy.calibration import noise_multiplier_for_epsilon
from fedmugrep.privacy.events import GaussianEvent, LaplaceEvent, PrivacyEvent
from fedmugrep.training.per_target import sum_sensitivity


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
    calibration_z2_max: float = 9.0  # squared standardised errors clipped at 3 sigma
    coordinator_noise: float = 0.0  # extra Gaussian std on the broadcast aggregate (C6)
    # clip each target's (theta, z) gradient pair jointly at ``clip`` and release both sums as
    # one Gaussian vector per round (half the releases of separate clipping; z_clip unused)
    joint_clip: bool = True

    @classmethod
    def for_epsilon(cls, epsilon: float, **overrides: float) -> PrivacyPlan:
        """A plan for a total ``epsilon`` whose one-off releases (intra, counts, levels,
        calibration) take the same share of it as the defaults take of 8 (scaled down below 8,
        unchanged above), so small targets still leave budget for training."""
        base = cls()
        f = min(1.0, epsilon / base.epsilon)
        shares = {
            n: getattr(base, n) * f
            for n in ("intra_epsilon", "count_epsilon", "level_epsilon", "calibration_epsilon")
        }
        return cls(epsilon=epsilon, **{**shares, **overrides})

    def __post_init__(self) -> None:
        for name in (
            "epsilon",
            "delta",
            "clip",
            "z_clip",
            "intra_epsilon",
            "count_epsilon",
            "level_epsilon",
            "calibration_epsilon",
        ):
            v = getattr(self, name)
            if not v > 0:
                raise PrivacyParameterError(f"{name} must be > 0 (got {v}); pass a positive value")
        if self.delta >= 1:
            raise PrivacyParameterError(f"delta must be < 1 (got {self.delta}); e.g. 1e-5")


@dataclass(frozen=True)
class FederationPlan:
    """Rounds, optimisation and privacy settings of one federated training run."""

    rounds: int = 40
    lr: float = 0.01
    region_lr: float = 0.01
    upload_rate: float = 1.0
    privacy: PrivacyPlan | None = field(default_factory=PrivacyPlan)
    # small K and small model 1: the update's sensitivity is (1 + 2K) clip and the noise norm
    # grows with the parameter count (docs/FEDERATION.md, "private utility")
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
            planned_events=self.setup_events() + self.calibration_events(),
        )

    @property
    def releases_per_round(self) -> int:
        """Gaussian releases per round: one joint (theta, z) vector, or two sums."""
        return 1 if self.privacy is not None and self.privacy.joint_clip else 2

    def round_events(self, noise_multiplier: float) -> list[PrivacyEvent]:
        return [GaussianEvent(noise_multiplier=noise_multiplier, count=self.releases_per_round)]

    def theta_noise_std(self, noise_multiplier: float) -> float:
        assert self.privacy is not None
        return noise_multiplier * sum_sensitivity(self.privacy.clip, self.k)

    def z_noise_std(self, noise_multiplier: float) -> float:
        assert self.privacy is not None
        p = self.privacy
        return noise_multiplier * sum_sensitivity(p.clip if p.joint_clip else p.z_clip, self.k)

    def to_dict(self) -> dict:
        return asdict(self)

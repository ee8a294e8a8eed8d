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
      the number of training targets, Laplace at ``count_epsilon``;
    * every round: the summed clipped ``theta`` gradient and the summed clipped ``z`` gradient,
      Gaussian with noise std ``noise_multiplier * (1 + 2K) * clip`` (resp. ``z_clip``).

    ``noise_multiplier`` is calibrated so the whole schedule costs ``epsilon`` at ``delta``.
    """

    epsilon: float = 8.0
    delta: float = 1e-5
    clip: float = 1.0
    z_clip: float = 1.0
    intra_epsilon: float = 0.2
    count_epsilon: float = 0.05
    intra_bound: float = 1e6
    calibration_epsilon: float = 0.1
    calibration_z2_max: float = 9.0  # squared standardised errors clipped at 3 sigma
    coordinator_noise: float = 0.0  # extra Gaussian std on the broadcast aggregate (C6)

    def __post_init__(self) -> None:
        for name in (
            "epsilon",
            "delta",
            "clip",
            "z_clip",
            "intra_epsilon",
            "count_epsilon",
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
    lr: float = 0.02
    region_lr: float = 0.02
    upload_rate: float = 1.0
    privacy: PrivacyPlan | None = field(default_factory=PrivacyPlan)
    k: int = 10
    hidden: int = 64
    intra_dim: int = 16
    intra_max_degree: int = 8
    seed: int = 0
    retries: int = 3  # per party call, with exponential backoff
    retry_backoff: float = 0.5  # seconds before the first retry
    on_unresponsive: str = "stop"  # "stop" the run, or "drop" the datasite and go on

    def __post_init__(self) -> None:
        if self.on_unresponsive not in ("stop", "drop"):
            raise ConfigError(
                f"on_unresponsive must be 'stop' or 'drop' (got {self.on_unresponsive!r})"
            )

    def setup_events(self) -> list[PrivacyEvent]:
        """Events of the one-off releases (intra sums, intra counts, target count)."""
        p = self.privacy
        if p is None:
            return []
        intra_sens = 2.0 * self.intra_dim * (1 + self.intra_max_degree)
        return [
            LaplaceEvent(
                sensitivity=intra_sens, scale=intra_sens / p.intra_epsilon, bound=p.intra_bound
            ),
            LaplaceEvent(sensitivity=1.0, scale=1.0 / p.intra_epsilon, bound=p.intra_bound),
            LaplaceEvent(sensitivity=1.0, scale=1.0 / p.count_epsilon, bound=p.intra_bound),
        ]

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
            steps=2 * self.rounds,
            planned_events=self.setup_events() + self.calibration_events(),
        )

    def round_events(self, noise_multiplier: float) -> list[PrivacyEvent]:
        return [GaussianEvent(noise_multiplier=noise_multiplier, count=2)]

    def theta_noise_std(self, noise_multiplier: float) -> float:
        assert self.privacy is not None
        return noise_multiplier * sum_sensitivity(self.privacy.clip, self.k)

    def z_noise_std(self, noise_multiplier: float) -> float:
        assert self.privacy is not None
        return noise_multiplier * sum_sensitivity(self.privacy.z_clip, self.k)

    def to_dict(self) -> dict:
        return asdict(self)

"""Remote appraisal on a transaction datasite with its private sales as neighbours: noised,
bounded and charged (the privacy argument is in :class:`PrivateAppraisal`)."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedmugrep.errors import PrivacyParameterError
from fedmugrep.federation.plan import PublicArtefacts
from fedmugrep.federation.valuation.inputs import (
    check_profile,
    profile_columns,
    validate_properties,
    with_regions,
)
from fedmugrep.federation.valuation.predict import (
    appraisal_table,
    check_z,
    max_influence,
    predict,
    query_edges,
)
from fedmugrep.models.mugrep import EventModel
from fedmugrep.privacy.events import LaplaceEvent
from fedmugrep.privacy.laplace import LaplaceMechanism, RandomSource
from fedmugrep.training.prepare import days_since_epoch

__all__ = [
    "APPRAISAL_MECHANISM",
    "AppraisalBounds",
    "PrivateAppraisal",
]

#: Ledger mechanism name of a remote appraisal.
APPRAISAL_MECHANISM = "laplace:appraisal"


# ============================================================================ remote appraisal
@dataclass(frozen=True)
class AppraisalBounds:
    """Public clipping of a remote appraisal (standardised log-price units,
    ``y_std = (log price - center) / scale``).

    Attributes:
        correction_clip: ``c``; the part of a median due to the datasite's sales (the prediction
            with neighbours minus the prediction without, which is public) is clipped to
            ``[-c, c]`` before noise, and the noised value is clamped there again.
        lo, hi: every released median is clipped to ``[lo, hi]`` (post-processing).
    """

    correction_clip: float = 0.5
    lo: float = -4.0
    hi: float = 4.0

    def __post_init__(self) -> None:
        for name in ("lo", "hi", "correction_clip"):
            if not math.isfinite(float(getattr(self, name))):
                raise PrivacyParameterError(f"{name} must be finite (got {getattr(self, name)})")
        if not self.lo < self.hi:
            raise PrivacyParameterError(
                f"lo must be < hi (got lo={self.lo}, hi={self.hi}); e.g. lo=-4, hi=4"
            )
        if not self.correction_clip > 0:
            raise PrivacyParameterError(
                f"correction_clip must be > 0 (got {self.correction_clip}); pass e.g. 0.5"
            )

    @property
    def per_property(self) -> float:
        """Most one released correction can move between neighbouring datasets: ``2c``."""
        return 2.0 * self.correction_clip


class PrivateAppraisal:
    """One remote appraisal on a transaction datasite: validation, sensitivity and release.

    **Released vector.** For properties ``q = 1..Q`` (public: the data scientist sends them)
    let ``p_q`` be the model's fused mean *without* neighbours (a function of ``theta``, ``z``
    and the property only: public) and ``m_q`` the mean with the datasite's sales as event-graph
    neighbours (:func:`recent_query_edges`, the training rule). The released vector is the
    clipped event-view correction ``d_q = clip(m_q - p_q, -c, c)`` plus Laplace noise; the
    median is ``clip(p_q + d~_q, lo, hi)`` (post-processing; :class:`AppraisalBounds`).

    **Sensitivity (add/remove one sale r).** ``m_q`` depends on the private table only through
    ``q``'s neighbours (their residuals ``y_j - mu2_j`` use ``j``'s own row only, the edge
    features ``q``'s own edges). ``q``'s neighbour window is computed from the history and ``q``
    alone (never from other queries), so ``r`` changes ``d_q`` only for queries of ``r``'s
    community dated in ``(t_r, t_r + max_days]``: at most ``M`` = :func:`max_influence` of
    them, computed from the public queries. (``build_query_edges``' per-batch out-degree cap
    ``K`` would not do: its greedy rule cascades, see :mod:`fedmugrep.graphs.event`; and a
    window rule bounds a row's *uses*, not the queries whose windows it shifts.) Each such
    ``d_q`` lies in ``[-c, c]`` before and after, so it moves by at most ``2c``. L1 sensitivity::

        Δ = M · 2c

    **Noise.** The snapped Laplace mechanism (clamp bound ``c``) with scale ``b`` chosen so the
    *charged* ε is at most ``epsilon`` (:meth:`LaplaceMechanism.for_budget`, ``b ≈ Δ/ε``),
    charged as one ``LaplaceEvent`` of dimension ``Q`` before anything is returned.

    **Interval.** The spread is the model's sigma *without* neighbours (public; the sigma with
    neighbours depends on private rows and is not released), widened for the noise:
    ``sigma' = sqrt(sigma^2 + min(2 b^2 + g^2/12, 4 c^2))`` in log units (Laplace variance
    ``2b^2`` plus rounding to the snapping grid ``g``; the clamped correction is never more than
    ``2c`` off); the 80% interval is ``median · exp(±1.2816 sigma')``. Column
    ``noise_scale_log`` holds ``b`` in log units. At small ε or large ``M`` the correction is
    mostly noise and the median falls back towards the public prediction ``p_q``: that is the
    honest cost, shown in ``noise_scale_log`` and the interval.

    Args:
        public: the public artefacts (encoders, configs).
        properties: the properties (transactions schema minus price, ``community`` and
            ``district`` included: the datasite derives nothing from its private rows).
        epsilon: ε charged for this release (> 0).
        bounds: the public clipping.
        id_column: identifier column.
        source: random bits (default: secure).

    Raises:
        PrivacyParameterError: on ``epsilon <= 0`` or non-finite.
        DataValidationError: on a bad property (row and column named).
    """

    def __init__(
        self,
        public: PublicArtefacts,
        properties: pd.DataFrame,
        *,
        epsilon: float,
        bounds: AppraisalBounds | None = None,
        id_column: str = "transaction_id",
        source: RandomSource | None = None,
    ) -> None:
        try:
            eps = float(epsilon)
        except (TypeError, ValueError):
            eps = float("nan")
        if not (math.isfinite(eps) and eps > 0):
            raise PrivacyParameterError(
                f"epsilon must be > 0 and finite (got {epsilon!r}); pass a positive value"
            )
        self.public, self.epsilon, self.id_column = public, eps, id_column
        self.bounds = bounds or AppraisalBounds()
        enc, gcfg = public.encoders, public.graph_config
        props = validate_properties(properties, id_column=id_column, required=profile_columns(enc))
        check_profile(props, enc)
        self.properties = with_regions(props, enc, None)
        groups = (
            enc.vocab.community_codes(self.properties["community"])
            if gcfg.event_within_community
            else np.zeros(len(self.properties), np.int64)
        )
        t = days_since_epoch(self.properties["date"])
        self.influence = max_influence(groups, t, gcfg.max_days)
        self.sensitivity = self.influence * self.bounds.per_property
        self.mechanism = LaplaceMechanism.for_budget(
            epsilon=eps,
            sensitivity=self.sensitivity,
            bound=self.bounds.correction_clip,
            dimension=len(self.properties),
            source=source,
        )

    @property
    def noise_scale(self) -> float:
        """Laplace scale ``b`` in standardised units."""
        return float(self.mechanism.scale)

    def event(self) -> LaplaceEvent:
        """The event this release charges."""
        return self.mechanism.event(dimension=len(self.properties))

    def digest(self, theta: Mapping[str, torch.Tensor], z: torch.Tensor) -> str:
        """SHA-256 of everything the release depends on besides the private table (the key of
        an idempotent release: the same request gets the same noised answer back)."""
        h = hashlib.sha256()
        buf = io.StringIO()
        self.properties.to_csv(buf, index=False, date_format="%Y-%m-%d")
        h.update(buf.getvalue().encode())
        for name in sorted(theta):
            h.update(name.encode() + b"\0" + theta[name].detach().cpu().float().numpy().tobytes())
        h.update(z.detach().cpu().float().numpy().tobytes())
        h.update(repr((self.epsilon, asdict(self.bounds), self.id_column)).encode())
        return h.hexdigest()[:32]

    def exact(
        self, model: EventModel, z: torch.Tensor, history: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(p, d, sigma)``: the public means without neighbours, the clipped corrections
        (before noise) and the public log-sigma's exponent, all in standardised units.

        Shapes:
            each ``[Q]``.
        """
        enc, gcfg, c = self.public.encoders, self.public.graph_config, self.bounds.correction_clip
        z = check_z(z, enc, self.public.model_config)
        props = self.properties
        edges = query_edges(history, props, enc, gcfg, "recent")
        with_n = predict(model, enc, z, props, history, edges)
        without = predict(model, enc, z, props, None, None)
        p = without.mu.double().numpy()
        d = np.clip(with_n.mu.double().numpy() - p, -c, c)
        return p, d, np.exp(without.log_sigma.double().numpy())

    def release(
        self, model: EventModel, z: torch.Tensor, history: pd.DataFrame
    ) -> tuple[pd.DataFrame, list[LaplaceEvent], list[float]]:
        """Noise the clipped corrections; returns ``(table, events to charge, payload)``. The
        caller charges the events *before* handing out the table."""
        enc, b = self.public.encoders, self.bounds
        p, d, sigma = self.exact(model, z, history)
        noisy = self.mechanism.release(d)  # clamped to [-c, c] by the mechanism
        mu = np.clip(p + noisy, b.lo, b.hi)
        scale_log = self.noise_scale * enc.y_scale
        noise_var = min(
            2 * self.noise_scale**2 + self.mechanism.grid**2 / 12, 4 * b.correction_clip**2
        )
        sigma_log = np.sqrt(sigma**2 + noise_var) * enc.y_scale
        mu_log = mu * enc.y_scale + enc.y_center
        ids = self.properties[self.id_column]
        table = appraisal_table(ids, self.id_column, mu_log, sigma_log, scale_log)
        table.attrs["appraisal"] = self.summary()
        return table, [self.event()], [float(x) for x in noisy]

    def summary(self) -> dict[str, Any]:
        """Public facts of this release (for the data scientist and the reviewer)."""
        return {
            "mechanism": APPRAISAL_MECHANISM,
            "epsilon": self.epsilon,
            "charged_epsilon": self.event().epsilon,
            "properties": len(self.properties),
            "max_influence": self.influence,
            "sensitivity": self.sensitivity,
            "noise_scale": self.noise_scale,
            "noise_scale_log": self.noise_scale * self.public.encoders.y_scale,
            "bounds": asdict(self.bounds),
        }

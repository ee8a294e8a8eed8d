"""fedmugrep.privacy: Laplace and Gaussian mechanisms, accountants, the privacy ledger, its audit.

Layout (math apart from bookkeeping apart from the user-facing layer):

* :mod:`~fedmugrep.privacy.analysis` — pure RDP curves, conversion and composition.
* :mod:`~fedmugrep.privacy.events` — immutable event records accountants consume.
* :mod:`~fedmugrep.privacy.laplace` — the patent's Laplace mechanism, snapped (Mironov 2012).
* :mod:`~fedmugrep.privacy.gaussian` — the float-safe Gaussian mechanism (OpenDP).
* :mod:`~fedmugrep.privacy.accountant` — Opacus-compatible accountants (imports opacus/torch).
* :mod:`~fedmugrep.privacy.calibration` — noise for a target ε given other releases (imports
  opacus/torch: it costs candidates with the accountant registered with Opacus).
* :mod:`~fedmugrep.privacy.ledger` — the per-datasite hash-chained budget filter.
* :mod:`~fedmugrep.privacy.audit` — what ``fedmugrep audit`` shows.

Names are imported lazily, so ``import fedmugrep.privacy`` does not pull in torch.
"""

from __future__ import annotations

from fedmugrep._lazy import lazy_getattr

_EXPORTS = {
    "LaplaceEvent": "events",
    "GaussianEvent": "events",
    "SubsampledGaussianEvent": "events",
    "UnsupportedEventError": "events",
    "snapping_epsilon": "events",
    "LaplaceMechanism": "laplace",
    "SecureRandomSource": "laplace",
    "SeededRandomSource": "laplace",
    "InsecureRandomnessWarning": "laplace",
    "laplace_noise": "laplace",
    "FedMugRepAccountant": "accountant",
    "BasicCompositionAccountant": "accountant",
    "noise_multiplier_for_epsilon": "calibration",
    "laplace_scale_for_epsilon": "calibration",
    "Ledger": "ledger",
    "LedgerEntry": "ledger",
    "LedgerHead": "ledger",
    "VerificationReport": "ledger",
    "compose_events": "analysis.composition",
    "PrivacySpent": "analysis.composition",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr("fedmugrep.privacy", _EXPORTS)


def __dir__() -> list[str]:
    return __all__

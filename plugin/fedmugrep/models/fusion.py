"""Fusion of the event-level and region-level price distributions (capability C7)."""

from __future__ import annotations

import math

import torch
from torch import nn


def gaussian_nll(y: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Per-example Gaussian negative log-likelihood (constant included).

    ``nll = log_sigma + 0.5 * ((y - mu) / sigma)^2 + 0.5 * log(2 pi)``.

    Shapes:
        all ``[n]`` -> ``[n]``.
    """
    return log_sigma + 0.5 * ((y - mu) * torch.exp(-log_sigma)) ** 2 + 0.5 * math.log(2 * math.pi)


class PrecisionGateFusion(nn.Module):
    """Precision-weighted product of two Gaussians with a learned per-district gate.

    With precisions ``tau_v = 1 / sigma_v^2`` and gate ``g_d = sigmoid(a_d)`` for the
    example's district ``d``::

        tau   = 2 g_d tau_1 + 2 (1 - g_d) tau_2
        mu    = (2 g_d tau_1 mu_1 + 2 (1 - g_d) tau_2 mu_2) / tau
        sigma = tau ** -0.5

    At ``g_d = 1/2`` this is the plain product of the two experts; the gate lets a
    district trust one view more (e.g. sparse event graphs in a rural district).

    Shapes:
        mu_v, log_sigma_v ``[n]``, district ``[n]`` -> mu ``[n]``, log_sigma ``[n]``.
    """

    def __init__(self, n_districts: int):
        super().__init__()
        self.n_districts = n_districts
        self.gate_logit = nn.Parameter(torch.empty(n_districts))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.gate_logit)

    def gate(self, district: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate_logit[district])

    def forward(
        self,
        mu1: torch.Tensor,
        log_sigma1: torch.Tensor,
        mu2: torch.Tensor,
        log_sigma2: torch.Tensor,
        district: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gate(district)
        t1 = 2 * g * torch.exp(-2 * log_sigma1)
        t2 = 2 * (1 - g) * torch.exp(-2 * log_sigma2)
        tau = t1 + t2
        mu = (t1 * mu1 + t2 * mu2) / tau
        return mu, -0.5 * torch.log(tau)

    def __repr__(self) -> str:
        return f"PrecisionGateFusion(districts={self.n_districts})"

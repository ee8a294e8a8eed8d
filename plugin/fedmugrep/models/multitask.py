"""District-partitioned multi-task heads (capability C2).

Each district is one task. All tasks share a trunk (hard parameter sharing) and the
shared part of the output layer; each district adds its own output weights and bias.
The output is a Gaussian price distribution on log-price: a mean and a log standard
deviation per example.
"""

from __future__ import annotations

import torch
from torch import nn

from fedmugrep.models.mlp import MLP


class DistrictMultiTaskHead(nn.Module):
    """Shared trunk + per-district output layers -> Gaussian on log-price.

    ``mu = (W_s + W_d) h + b_s + b_d`` and likewise ``log_sigma``, with ``h = trunk(x)``;
    ``W_s``/``b_s`` are shared by every district, ``W_d``/``b_d`` belong to district ``d``.

    Args:
        in_dim: input representation width.
        n_districts: number of tasks (districts).
        hidden: trunk width.
        min_log_sigma: floor on ``log_sigma`` (keeps the likelihood bounded).

    Shapes:
        x ``[n, in_dim]``, district ``[n]`` (long) -> mu ``[n]``, log_sigma ``[n]``.
    """

    def __init__(
        self, in_dim: int, n_districts: int, *, hidden: int = 64, min_log_sigma: float = -4.0
    ):
        super().__init__()
        self.in_dim, self.n_districts, self.hidden = in_dim, n_districts, hidden
        self.min_log_sigma = min_log_sigma
        self.trunk = MLP(in_dim, (hidden,), hidden)
        self.shared_out = nn.Linear(hidden, 2)
        self.district_weight = nn.Parameter(torch.empty(n_districts, hidden, 2))
        self.district_bias = nn.Parameter(torch.empty(n_districts, 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.trunk.reset_parameters()
        self.shared_out.reset_parameters()
        nn.init.zeros_(self.district_weight)
        nn.init.zeros_(self.district_bias)

    def forward(self, x: torch.Tensor, district: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.nn.functional.gelu(self.trunk(x))
        out = self.shared_out(h)
        out = out + torch.einsum("nh,nho->no", h, self.district_weight[district])
        out = out + self.district_bias[district]
        mu, log_sigma = out[:, 0], out[:, 1]
        return mu, log_sigma.clamp(min=self.min_log_sigma)

    def __repr__(self) -> str:
        return (
            f"DistrictMultiTaskHead(in={self.in_dim}, districts={self.n_districts}, "
            f"hidden={self.hidden})"
        )

"""Event-level representations over the transaction event graph (capability C1).

Every target transaction ``i`` receives messages from at most ``K`` earlier
transactions ``j`` near it in space and time (see :mod:`fedmugrep.graphs.event`).
A message carries the neighbour's *residual* ``r_j = y_j - mu_j`` (its realised log-price
minus the price level the region view expected for it; the neighbour's own label is
known because the sale happened before the target's date), the time lag, the distance
and the neighbour's recency rank among the target's neighbours. Attention weights
(softmax over the incoming edges of ``i``) decide which recent sales matter.

The representation of ``i`` is ``[sum_j a_ij m_ij, sum_j a_ij r_j, 1{deg>0}, deg/K]``.
A target never sees its own label: there are no self loops and edges only point
forward in time.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import scatter, softmax

from fedmugrep.models.mlp import MLP


def recency_rank(
    edge_index: torch.Tensor, delta_days: torch.Tensor, num_nodes: int
) -> torch.Tensor:
    """Rank of each edge among its target's incoming edges, most recent first (0-based).

    Shapes:
        edge_index ``[2, E]``, delta_days ``[E]`` -> ``[E]`` (long).
    """
    if edge_index.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=edge_index.device)
    dst = edge_index[1]
    # sort by (dst, delta_days): stable sort on delta, then stable sort on dst
    order = torch.argsort(delta_days, stable=True)
    order = order[torch.argsort(dst[order], stable=True)]
    sorted_dst = dst[order]
    first = torch.zeros(num_nodes, dtype=torch.long, device=dst.device)
    counts = torch.bincount(sorted_dst, minlength=num_nodes)
    first[1:] = torch.cumsum(counts, 0)[:-1]
    rank_sorted = torch.arange(order.numel(), device=dst.device) - first[sorted_dst]
    rank = torch.empty_like(rank_sorted)
    rank[order] = rank_sorted
    return rank


class EventEncoder(nn.Module):
    """Attention over earlier nearby sales.

    Args:
        k: degree bound of the event graph (ranks are one-hot encoded up to ``k``).
        max_days: time window used to scale lags.
        max_km: radius used to scale distances.
        hidden: message width.

    Shapes:
        residual ``[N]`` (per source node), edge_index ``[2, E]``, edge_attr ``[E, 2]``
        (delta days, km) -> ``[N, hidden + 3]``.
    """

    def __init__(self, *, k: int, max_days: float, max_km: float, hidden: int = 32):
        super().__init__()
        self.k, self.max_days, self.max_km, self.hidden = k, max_days, max_km, hidden
        edge_dim = 2 + k
        self.score = MLP(edge_dim, (hidden,), 1)
        self.message = MLP(edge_dim + 1, (hidden,), hidden)
        self.reset_parameters()

    @property
    def out_dim(self) -> int:
        return self.hidden + 3

    def reset_parameters(self) -> None:
        self.score.reset_parameters()
        self.message.reset_parameters()

    def edge_features(
        self, edge_index: torch.Tensor, edge_attr: torch.Tensor, num_nodes: int
    ) -> torch.Tensor:
        rank = recency_rank(edge_index, edge_attr[:, 0], num_nodes).clamp(max=self.k - 1)
        return torch.cat(
            [
                edge_attr[:, :1] / self.max_days,
                edge_attr[:, 1:2] / self.max_km,
                nn.functional.one_hot(rank, self.k).float(),
            ],
            dim=1,
        )

    def forward(
        self,
        residual: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        num_nodes: int,
        edge_feat: torch.Tensor | None = None,
    ) -> torch.Tensor:
        src, dst = edge_index
        if edge_feat is None:
            edge_feat = self.edge_features(edge_index, edge_attr, num_nodes)
        r = residual[src].unsqueeze(1)
        alpha = softmax(self.score(edge_feat).squeeze(1), dst, num_nodes=num_nodes)
        msg = self.message(torch.cat([edge_feat, r], dim=1))
        agg = scatter(alpha.unsqueeze(1) * msg, dst, dim=0, dim_size=num_nodes, reduce="sum")
        agg_r = scatter(alpha.unsqueeze(1) * r, dst, dim=0, dim_size=num_nodes, reduce="sum")
        deg = (
            torch.bincount(dst, minlength=num_nodes).float().unsqueeze(1)
            if dst.numel()
            else torch.zeros(num_nodes, 1, device=r.device)
        )
        return torch.cat([agg, agg_r, (deg > 0).float(), deg / self.k], dim=1)

    def forward_dense(
        self, nbr_residual: torch.Tensor, nbr_feat: torch.Tensor, nbr_mask: torch.Tensor
    ) -> torch.Tensor:
        """The same computation on padded per-target neighbour lists (for per-target gradients).

        Shapes:
            nbr_residual ``[B, K]``, nbr_feat ``[B, K, 2 + k]``, nbr_mask ``[B, K]`` (bool)
            -> ``[B, hidden + 3]``.
        """
        score = self.score(nbr_feat).squeeze(-1)
        score = score.masked_fill(~nbr_mask, float("-inf"))
        has = nbr_mask.any(dim=-1, keepdim=True)
        alpha = torch.softmax(torch.where(has, score, torch.zeros_like(score)), dim=-1)
        alpha = alpha * nbr_mask
        r = nbr_residual.unsqueeze(-1)
        msg = self.message(torch.cat([nbr_feat, r], dim=-1))
        agg = (alpha.unsqueeze(-1) * msg).sum(dim=-2)
        agg_r = (alpha.unsqueeze(-1) * r).sum(dim=-2)
        deg = nbr_mask.sum(dim=-1, keepdim=True).to(agg.dtype)
        return torch.cat([agg, agg_r, (deg > 0).to(agg.dtype), deg / self.k], dim=-1)

    def __repr__(self) -> str:
        return f"EventEncoder(k={self.k}, max_days={self.max_days}, max_km={self.max_km}, hidden={self.hidden})"

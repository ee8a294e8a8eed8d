"""Intra-region representations (capability C3).

Transactions are split by the residential community they belong to; inside each
community a small k-nearest-neighbour graph links nearby transactions (the *first
region graph*, :func:`fedmugrep.graphs.region.build_intra_region_graph`). A one-layer
mean-aggregation graph convolution maps each transaction's ``[log-price, features]`` and
its neighbours' mean to a bounded vector (``tanh``: every coordinate in ``[-1, 1]``), and
the community representation is the **sum** of those vectors together with the **count**
of transactions. Sums and counts (never means) are what a transaction datasite releases,
each with Laplace noise (see :mod:`fedmugrep.privacy`); the receiver divides noisy sum by
noisy count.

Sensitivity (add/remove one record, the privacy unit): the record changes its own vector
(``L1 <= 2 * out_dim``) and, through the mean aggregation, the vectors of at most
``max_degree`` neighbours (each ``L1 <= 2 * out_dim``), so the L1 sensitivity of the
community sums is ``2 * out_dim * (1 + max_degree)`` and that of the counts is 1. The
degree of the intra-region graph is capped at ``max_degree`` when it is built.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import scatter


class IntraRegionEncoder(nn.Module):
    """Bounded per-transaction encoder with intra-community mean aggregation.

    Shapes:
        u ``[n, in_dim]`` (log-price and features), edge_index ``[2, E]`` within communities,
        community ``[n]`` (long), n_communities -> sums ``[C, out_dim]``, counts ``[C]``.
    """

    def __init__(self, in_dim: int, out_dim: int = 16):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.self_lin = nn.Linear(in_dim, out_dim)
        self.nbr_lin = nn.Linear(in_dim, out_dim, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.self_lin.reset_parameters()
        self.nbr_lin.reset_parameters()

    def node_vectors(self, u: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        n = u.shape[0]
        if edge_index.numel():
            nbr = scatter(u[edge_index[0]], edge_index[1], dim=0, dim_size=n, reduce="mean")
        else:
            nbr = torch.zeros_like(u)
        return torch.tanh(self.self_lin(u) + self.nbr_lin(nbr))

    def forward(
        self, u: torch.Tensor, edge_index: torch.Tensor, community: torch.Tensor, n_communities: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.node_vectors(u, edge_index)
        sums = scatter(h, community, dim=0, dim_size=n_communities, reduce="sum")
        counts = torch.bincount(community, minlength=n_communities).to(h.dtype)
        return sums, counts

    def sensitivity(self, max_degree: int) -> float:
        """L1 sensitivity of the community sums for one added/removed record."""
        return 2.0 * self.out_dim * (1 + max_degree)

    def __repr__(self) -> str:
        return f"IntraRegionEncoder(in={self.in_dim}, out={self.out_dim})"

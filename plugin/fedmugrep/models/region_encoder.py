"""Region-level representations over the heterogeneous community graph (capability C5).

Input per community: its attributes (third feature set: POIs, demographics, ...) and its
pooled intra-region representation (noisy sum / noisy count). Two layers of
heterogeneous graph convolution over three relations — geographic neighbours, attribute
similarity and mobility flows (weighted) — with residual connections produce ``z_c``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GraphConv, HeteroConv, SAGEConv

RELATIONS = (
    ("community", "geo", "community"),
    ("community", "similar", "community"),
    ("community", "mobility", "community"),
)


class RegionEncoder(nn.Module):
    """Heterogeneous community GNN.

    Args:
        attr_dim: width of community attributes.
        intra_dim: width of the intra-region representation.
        hidden: representation width.
        layers: number of heterogeneous convolution layers.

    Shapes:
        attrs ``[C, attr_dim]``, intra ``[C, intra_dim]``, edge dicts per relation -> ``[C, hidden]``.
    """

    def __init__(self, attr_dim: int, intra_dim: int, *, hidden: int = 32, layers: int = 2):
        super().__init__()
        self.attr_dim, self.intra_dim, self.hidden, self.layers = (
            attr_dim,
            intra_dim,
            hidden,
            layers,
        )
        self.inp = nn.Linear(attr_dim + intra_dim, hidden)
        self.convs = nn.ModuleList(
            HeteroConv(
                {
                    RELATIONS[0]: SAGEConv(hidden, hidden),
                    RELATIONS[1]: SAGEConv(hidden, hidden),
                    RELATIONS[2]: GraphConv(hidden, hidden, aggr="add"),
                },
                aggr="mean",
            )
            for _ in range(layers)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.inp.reset_parameters()
        for conv in self.convs:
            conv.reset_parameters()

    def forward(
        self,
        attrs: torch.Tensor,
        intra: torch.Tensor,
        edge_index_dict: dict[tuple[str, str, str], torch.Tensor],
        edge_weight_dict: dict[tuple[str, str, str], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.inp(torch.cat([attrs, intra], dim=1)))
        ew = edge_weight_dict or {}
        for conv in self.convs:
            kwargs = {}
            if RELATIONS[2] in ew:
                kwargs["edge_weight_dict"] = {RELATIONS[2]: ew[RELATIONS[2]]}
            out = conv({"community": h}, edge_index_dict, **kwargs)["community"]
            h = h + torch.nn.functional.gelu(out)
        return h

    def __repr__(self) -> str:
        return (
            f"RegionEncoder(attr={self.attr_dim}, intra={self.intra_dim}, hidden={self.hidden}, "
            f"layers={self.layers})"
        )

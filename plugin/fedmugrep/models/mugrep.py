"""The fed-MugRep valuation model: event view + region view + fusion (C1, C2, C3, C5, C7).

The model is split the way the federation splits it:

* :class:`RegionModel` ("model 2") — the region encoder. It runs where the community
  table lives (the region datasite) and its parameters never leave it.
* :class:`EventModel` ("model 1") — everything that touches transactions: the feature
  encoder, the intra-region encoder, both district multi-task heads, the event encoder
  and the fusion. It runs on each transaction datasite and is averaged across them.

:class:`MugRepModel` holds both for centralized training and evaluation; the
federated coordinator calls the same two halves separately.

Targets are log-prices standardised with a public centre and scale
(``y_std = (log price - center) / scale``); the model works in those units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedmugrep.checks import check_bool, check_float, check_int
from fedmugrep.models.event_encoder import EventEncoder
from fedmugrep.models.fusion import PrecisionGateFusion, gaussian_nll
from fedmugrep.models.intra_region import IntraRegionEncoder
from fedmugrep.models.mlp import MLP
from fedmugrep.models.multitask import DistrictMultiTaskHead
from fedmugrep.models.region_encoder import RegionEncoder


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the fed-MugRep model."""

    feature_dim: int
    attr_dim: int
    n_districts: int
    k: int = 10
    max_days: float = 180.0
    max_km: float = 3.0
    hidden: int = 64
    intra_dim: int = 16
    region_hidden: int = 32
    event_hidden: int = 32
    dropout: float = 0.0
    # community price level: the mean of clip(y, -target_clip, target_clip) / target_clip per
    # community, released beside the intra-region sums and passed straight through model 2
    target_channel: bool = True
    target_clip: float = 2.5
    # tanh on model 2's output: every entry of z in [-1, 1] (bounds the sensitivity of z)
    bounded_z: bool = True

    def __post_init__(self) -> None:
        check_int(self, "feature_dim", 1, 100_000)
        check_int(self, "attr_dim", 0, 100_000)
        check_int(self, "n_districts", 1, 100_000)
        check_int(self, "k", 1, 64)
        for name in ("hidden", "intra_dim", "region_hidden", "event_hidden"):
            check_int(self, name, 1, 4096)
        check_float(self, "max_days", 0.0, 1e6)
        check_float(self, "max_km", 0.0, 1e5)
        check_float(self, "dropout", 0.0, 0.99, low_open=False)
        check_float(self, "target_clip", 0.0, 1e3)
        check_bool(self, "target_channel")
        check_bool(self, "bounded_z")

    @property
    def intra_width(self) -> int:
        """Columns of the pooled intra-region input of model 2 (level channel first)."""
        return self.intra_dim + int(self.target_channel)

    @property
    def z_dim(self) -> int:
        """Width of the region representation ``z`` (model 2's output, level channel last)."""
        return self.region_hidden + int(self.target_channel)


@dataclass
class TransactionGraph:
    """Everything the event model needs about one party's transactions.

    Shapes:
        x ``[N, feature_dim]``; y ``[N]`` standardised log-price (0 where unknown);
        known ``[N]`` bool (label may feed later targets as an event-graph neighbour);
        intra_mask ``[N]`` bool (row contributes to the intra-region representations);
        district, community ``[N]`` long; event_index ``[2, E]`` (earlier -> later);
        event_attr ``[E, 2]`` (delta days, km); intra_index ``[2, F]`` among ``known`` nodes.
    """

    x: torch.Tensor
    y: torch.Tensor
    known: torch.Tensor
    intra_mask: torch.Tensor
    district: torch.Tensor
    community: torch.Tensor
    event_index: torch.Tensor
    event_attr: torch.Tensor
    intra_index: torch.Tensor
    event_feat: torch.Tensor | None = None  # cache of EventEncoder.edge_features (no parameters)

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])


@dataclass
class CommunityGraph:
    """The community side: attributes and the heterogeneous graph's relations.

    Shapes:
        attrs ``[C, attr_dim]``; each edge index ``[2, E_r]``; mobility weight ``[E_m]``.
    """

    attrs: torch.Tensor
    edge_index_dict: dict[tuple[str, str, str], torch.Tensor]
    edge_weight_dict: dict[tuple[str, str, str], torch.Tensor]

    @property
    def num_communities(self) -> int:
        return int(self.attrs.shape[0])


@dataclass
class Prediction:
    """Per-node Gaussians on standardised log-price: fused and each view."""

    mu: torch.Tensor
    log_sigma: torch.Tensor
    mu_event: torch.Tensor
    log_sigma_event: torch.Tensor
    mu_region: torch.Tensor
    log_sigma_region: torch.Tensor

    def nll(self, y: torch.Tensor, mask: torch.Tensor, aux_weight: float = 0.5) -> torch.Tensor:
        """Fused NLL plus ``aux_weight`` x the two views' NLLs (multi-task), mean over mask."""
        fused = gaussian_nll(y[mask], self.mu[mask], self.log_sigma[mask])
        ev = gaussian_nll(y[mask], self.mu_event[mask], self.log_sigma_event[mask])
        rg = gaussian_nll(y[mask], self.mu_region[mask], self.log_sigma_region[mask])
        return fused.mean() + aux_weight * (ev.mean() + rg.mean())


class RegionModel(nn.Module):
    """Model 2: community attributes + pooled intra-region reps -> region-level reps ``z``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = RegionEncoder(cfg.attr_dim, cfg.intra_width, hidden=cfg.region_hidden)

    def forward(self, comm: CommunityGraph, intra: torch.Tensor) -> torch.Tensor:
        """``[C, z_dim]``: the encoder's output, then (``target_channel``) the community's
        pooled price level unchanged (a skip connection without parameters)."""
        z = self.encoder(comm.attrs, intra, comm.edge_index_dict, comm.edge_weight_dict)
        if self.cfg.bounded_z:
            z = torch.tanh(z)
        if self.cfg.target_channel:
            z = torch.cat([z, intra[:, :1]], dim=1)
        return z


class EventModel(nn.Module):
    """Model 1: everything that runs on a transaction datasite."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.x_encoder = MLP(cfg.feature_dim, (h,), h, dropout=cfg.dropout)
        self.intra = IntraRegionEncoder(cfg.feature_dim + 1, cfg.intra_dim)
        self.region_head = DistrictMultiTaskHead(h + cfg.z_dim, cfg.n_districts, hidden=h)
        self.event = EventEncoder(
            k=cfg.k, max_days=cfg.max_days, max_km=cfg.max_km, hidden=cfg.event_hidden
        )
        self.event_head = DistrictMultiTaskHead(
            h + cfg.z_dim + self.event.out_dim, cfg.n_districts, hidden=h
        )
        self.fusion = PrecisionGateFusion(cfg.n_districts)
        # log of a scale fitted on validation data after training (see calibrate_sigma)
        self.register_buffer("log_sigma_offset", torch.zeros(()))

    def intra_sums(
        self, g: TransactionGraph, n_communities: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Community sums and counts of the intra-region encoder over ``intra_mask`` rows.

        With ``target_channel`` the first column is the community sum of the clipped level
        ``clip(y, -b, b) / b`` (``b = target_clip``; each term in ``[-1, 1]``, no message
        passing: removing a record changes one community's sum by at most 1), then the
        encoder's ``intra_dim`` columns.
        """
        idx = torch.nonzero(g.intra_mask).squeeze(1)
        u = torch.cat([g.y[idx].unsqueeze(1), g.x[idx]], dim=1)
        # intra_index is expressed in global node ids; map to positions in idx
        pos = torch.full((g.num_nodes,), -1, dtype=torch.long, device=idx.device)
        pos[idx] = torch.arange(idx.numel(), device=idx.device)
        ei = pos[g.intra_index]
        ei = ei[:, (ei >= 0).all(dim=0)]  # drop edges touching unknown-label nodes
        sums, counts = self.intra(u, ei, g.community[idx], n_communities)
        if self.cfg.target_channel:
            b = self.cfg.target_clip
            level = torch.zeros(n_communities, dtype=sums.dtype, device=sums.device).index_add_(
                0, g.community[idx], g.y[idx].clamp(-b, b) / b
            )
            sums = torch.cat([level.unsqueeze(1), sums], dim=1)
        return sums, counts

    def forward(self, g: TransactionGraph, z: torch.Tensor) -> Prediction:
        ex = torch.nn.functional.gelu(self.x_encoder(g.x))
        zc = z[g.community]
        mu2, ls2 = self.region_head(torch.cat([ex, zc], dim=1), g.district)
        residual = torch.where(g.known, g.y - mu2.detach(), torch.zeros_like(mu2))
        if g.event_feat is None:
            g.event_feat = self.event.edge_features(g.event_index, g.event_attr, g.num_nodes)
        ev = self.event(residual, g.event_index, g.event_attr, g.num_nodes, edge_feat=g.event_feat)
        d1, ls1 = self.event_head(torch.cat([ex, zc, ev], dim=1), g.district)
        mu1 = mu2 + d1
        mu, ls = self.fusion(mu1, ls1, mu2, ls2, g.district)
        return Prediction(mu, ls + self.log_sigma_offset, mu1, ls1, mu2, ls2)

    def forward_targets(
        self,
        x: torch.Tensor,
        district: torch.Tensor,
        zc: torch.Tensor,
        nbr_residual: torch.Tensor,
        nbr_feat: torch.Tensor,
        nbr_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """Per-target forward on dense inputs; equals :meth:`forward` row by row.

        Shapes:
            x ``[B, d]``, district ``[B]``, zc ``[B, H]``, nbr_* ``[B, K, ...]`` ->
            six ``[B]`` tensors (mu, log_sigma, mu_event, log_sigma_event, mu_region, log_sigma_region).
        """
        ex = torch.nn.functional.gelu(self.x_encoder(x))
        mu2, ls2 = self.region_head(torch.cat([ex, zc], dim=-1), district)
        ev = self.event.forward_dense(nbr_residual, nbr_feat, nbr_mask)
        d1, ls1 = self.event_head(torch.cat([ex, zc, ev], dim=-1), district)
        mu1 = mu2 + d1
        mu, ls = self.fusion(mu1, ls1, mu2, ls2, district)
        return mu, ls + self.log_sigma_offset, mu1, ls1, mu2, ls2

    def dense_inputs(
        self, g: TransactionGraph, z: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Inputs of :meth:`forward_targets` for ``targets``; neighbour residuals use the
        current region view (no gradient), exactly as :meth:`forward` does."""
        with torch.no_grad():
            ex = torch.nn.functional.gelu(self.x_encoder(g.x))
            mu2, _ = self.region_head(torch.cat([ex, z[g.community]], dim=1), g.district)
            residual = torch.where(g.known, g.y - mu2, torch.zeros_like(mu2))
        if g.event_feat is None:
            g.event_feat = self.event.edge_features(g.event_index, g.event_attr, g.num_nodes)
        src, edge = dense_neighbours(g, targets, self.cfg.k)
        mask = edge >= 0
        feat = g.event_feat[edge.clamp(min=0)] * mask.unsqueeze(-1)
        return (
            g.x[targets],
            g.district[targets],
            z[g.community[targets]],
            residual[src] * mask,
            feat,
            mask,
        )

    @torch.no_grad()
    def calibrate_sigma(self, pred: Prediction, y: torch.Tensor, mask: torch.Tensor) -> float:
        """Rescale the fused sigma so held-out standardised errors have unit variance.

        The maximum-likelihood scale for held-out rows is ``s = sqrt(mean(((y - mu)/sigma)^2))``
        (temperature scaling for a Gaussian). Returns ``s``; later predictions use it.
        """
        base = pred.log_sigma[mask] - self.log_sigma_offset
        z2 = ((y[mask] - pred.mu[mask]) * torch.exp(-base)) ** 2
        s = float(torch.sqrt(z2.mean()))
        self.log_sigma_offset.fill_(float(torch.log(torch.tensor(s))))
        return s


def dense_neighbours(
    g: TransactionGraph, targets: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded incoming-edge lists of ``targets``: source node ids and edge ids.

    Shapes:
        targets ``[B]`` -> nbr_src ``[B, k]`` (0 where padded), nbr_edge ``[B, k]`` (-1 where padded).
    """
    dst = g.event_index[1]
    order = torch.argsort(dst, stable=True)
    counts = torch.bincount(dst, minlength=g.num_nodes)
    start = torch.zeros(g.num_nodes + 1, dtype=torch.long, device=dst.device)
    start[1:] = torch.cumsum(counts, 0)
    slot = torch.arange(k, device=dst.device)
    first = start[targets].unsqueeze(1)
    valid = slot.unsqueeze(0) < counts[targets].unsqueeze(1)
    pos = torch.where(valid, first + slot, torch.zeros_like(first + slot))
    edge = torch.where(
        valid, order[pos.clamp(max=max(order.numel() - 1, 0))], torch.full_like(pos, -1)
    )
    src = torch.where(valid, g.event_index[0][edge.clamp(min=0)], torch.zeros_like(edge))
    return src, edge


def pooled_mean(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean from (possibly noisy) sums and counts; counts floored at 1 (never divide by ~0)."""
    return sums / counts.clamp(min=1.0).unsqueeze(1)


class MugRepModel(nn.Module):
    """Both halves together, for centralized training and evaluation."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.event_model = EventModel(cfg)
        self.region_model = RegionModel(cfg)

    def forward(self, g: TransactionGraph, comm: CommunityGraph) -> Prediction:
        sums, counts = self.event_model.intra_sums(g, comm.num_communities)
        z = self.region_model(comm, pooled_mean(sums, counts))
        return self.event_model(g, z)

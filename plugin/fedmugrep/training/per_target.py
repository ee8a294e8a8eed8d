"""Per-target clipped gradient sums for DP training of the event model on the event graph.

For each training target ``i`` the loss ``l_i`` depends on the parameters ``theta`` of model 1,
on the region representation ``z_c`` of its community, and on its event-graph neighbours'
residuals (realised log-price minus the region view's prediction, treated as constants).
We compute every ``g_i = d l_i / d theta`` and ``h_i = d l_i / d z_c`` with
``torch.func.vmap``, clip them (``||g_i||_2 <= clip``, ``||h_i||_2 <= z_clip``) and sum.

Sensitivity (add/remove one transaction ``r``; event graph built with the cascade-free
``rule="recent"``): ``r``'s own term appears or disappears (norm ``<= clip``) and, as a
neighbour, it changes the terms of at most ``K`` other targets (each by ``<= 2 clip``); no
other term depends on ``r`` (``z`` comes from the region datasite). So the L2 sensitivity
of the summed ``theta`` gradient is ``(1 + 2K) clip``, and of the summed ``z`` gradient
``(1 + 2K) z_clip`` (each target's ``h_i`` lands in one community's rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call, grad, vmap

from fedmugrep.models.fusion import gaussian_nll
from fedmugrep.models.mugrep import EventModel, TransactionGraph


def sum_sensitivity(clip: float, k: int) -> float:
    """L2 sensitivity ``(1 + 2K) * clip`` of a sum of per-target clipped terms (module docstring)."""
    return (1 + 2 * k) * clip


@dataclass
class ClippedSums:
    """Sums over targets of clipped per-target gradients (not yet noised: never release as is).

    Shapes:
        theta: name -> same shape as the parameter; z ``[C, H]``.
    """

    theta: dict[str, torch.Tensor]
    z: torch.Tensor
    n_targets: int
    loss_sum: float
    clipped_fraction: float


class _TargetLoss(torch.nn.Module):
    """Wraps :meth:`EventModel.forward_targets` + the NLL so ``functional_call`` can drive it."""

    def __init__(self, model: EventModel, aux_weight: float):
        super().__init__()
        self.model = model
        self.aux_weight = aux_weight

    def forward(self, zc, x, district, nres, nfeat, nmask, y):  # one target, batched by vmap
        mu, ls, mu1, ls1, mu2, ls2 = self.model.forward_targets(
            x[None], district[None], zc[None], nres[None], nfeat[None], nmask[None]
        )
        y = y[None]
        loss = gaussian_nll(y, mu, ls) + self.aux_weight * (
            gaussian_nll(y, mu1, ls1) + gaussian_nll(y, mu2, ls2)
        )
        return loss.sum()


def clipped_gradient_sums(
    model: EventModel,
    g: TransactionGraph,
    z: torch.Tensor,
    targets: torch.Tensor,
    *,
    clip: float,
    z_clip: float,
    aux_weight: float = 0.5,
    chunk: int = 512,
    joint: bool = False,
) -> ClippedSums:
    """Per-target gradients, clipped and summed (see the module docstring for sensitivity).

    ``joint=True`` clips each target's concatenated ``(g_i, h_i)`` to L2 norm ``clip``
    (``z_clip`` is ignored): both sums then form one vector of sensitivity ``(1 + 2K) clip``,
    released by a single Gaussian mechanism per round instead of two.

    Shapes:
        z ``[C, H]``, targets ``[B]`` (node ids with labels) -> :class:`ClippedSums`.
    """
    wrapper = _TargetLoss(model, aux_weight)
    params = {f"model.{n}": p.detach() for n, p in model.named_parameters()}
    buffers = {f"model.{n}": b for n, b in model.named_buffers()}

    def loss_fn(p, zc, x, district, nres, nfeat, nmask, y):
        return functional_call(wrapper, {**p, **buffers}, (zc, x, district, nres, nfeat, nmask, y))

    per_target = vmap(grad(loss_fn, argnums=(0, 1)), in_dims=(None, 0, 0, 0, 0, 0, 0, 0))
    theta_sum = {n: torch.zeros_like(p) for n, p in params.items()}
    z_sum = torch.zeros_like(z)
    loss_sum, n_clipped = 0.0, 0
    for start in range(0, targets.numel(), chunk):
        tb = targets[start : start + chunk]
        x, district, zc, nres, nfeat, nmask = model.dense_inputs(g, z, tb)
        y = g.y[tb]
        gp, gz = per_target(params, zc, x, district, nres, nfeat, nmask, y)
        # a non-finite per-target gradient is dropped (norm 0 <= clip: the bound still holds)
        bad = ~torch.isfinite(gz).all(dim=1)
        for v in gp.values():
            bad |= ~torch.isfinite(v.reshape(v.shape[0], -1)).all(dim=1)
        if bad.any():
            gp = {
                n: torch.where(bad.view(-1, *[1] * (v.dim() - 1)), torch.zeros_like(v), v)
                for n, v in gp.items()
            }
            gz = torch.where(bad.unsqueeze(1), torch.zeros_like(gz), gz)
        norms = torch.sqrt(sum((v.reshape(v.shape[0], -1) ** 2).sum(1) for v in gp.values()))
        zn = gz.norm(dim=1)
        if joint:
            norms = torch.sqrt(norms**2 + zn**2)
            zn = norms
            z_clip = clip
        scale = (clip / (norms + 1e-12)).clamp(max=1.0)
        n_clipped += int((norms > clip).sum())
        for name, v in gp.items():
            theta_sum[name] += torch.einsum("b,b...->...", scale, v)
        gz = gz * (z_clip / (zn + 1e-12)).clamp(max=1.0).unsqueeze(1)
        z_sum.index_add_(0, g.community[tb], gz)
        with torch.no_grad():
            mu, ls, mu1, ls1, mu2, ls2 = model.forward_targets(x, district, zc, nres, nfeat, nmask)
            loss_sum += float(
                (
                    gaussian_nll(y, mu, ls)
                    + aux_weight * (gaussian_nll(y, mu1, ls1) + gaussian_nll(y, mu2, ls2))
                ).sum()
            )
    return ClippedSums(
        theta={n.removeprefix("model."): v for n, v in theta_sum.items()},
        z=z_sum,
        n_targets=int(targets.numel()),
        loss_sum=loss_sum,
        clipped_fraction=n_clipped / max(int(targets.numel()), 1),
    )

"""Per-target clipped gradients: equal to autograd one target at a time; clipping bound holds."""

from __future__ import annotations

import torch

from fedmugrep.models.fusion import gaussian_nll
from fedmugrep.models.mugrep import EventModel, ModelConfig, TransactionGraph
from fedmugrep.training.per_target import clipped_gradient_sums, sum_sensitivity


def _graph(n: int = 24, c: int = 3) -> TransactionGraph:
    g = torch.Generator().manual_seed(11)
    comm = torch.arange(n) % c
    src = [j for i in range(2, n) for j in (i - 2, i - 1)]
    dst = [i for i in range(2, n) for _ in (0, 1)]
    ei = torch.tensor([src, dst])
    return TransactionGraph(
        torch.randn(n, 4, generator=g),
        torch.randn(n, generator=g),
        torch.ones(n, dtype=torch.bool),
        torch.ones(n, dtype=torch.bool),
        comm % 2,
        comm,
        ei,
        torch.rand(ei.shape[1], 2, generator=g) * 30,
        torch.zeros(2, 0, dtype=torch.long),
    )


def _model() -> EventModel:
    torch.manual_seed(0)
    return EventModel(
        ModelConfig(feature_dim=4, attr_dim=2, n_districts=2, k=2, hidden=8, region_hidden=5)
    )


def test_unclipped_sums_equal_full_batch_autograd():
    g, m = _graph(), _model()
    z = torch.randn(3, 6, requires_grad=True)  # z_dim: region_hidden 5 + level
    targets = torch.arange(g.num_nodes)
    sums = clipped_gradient_sums(m, g, z.detach(), targets, clip=1e9, z_clip=1e9, chunk=7)
    p = m(g, z)
    loss = (
        gaussian_nll(g.y, p.mu, p.log_sigma)
        + 0.5
        * (
            gaussian_nll(g.y, p.mu_event, p.log_sigma_event)
            + gaussian_nll(g.y, p.mu_region, p.log_sigma_region)
        )
    ).sum()
    m.zero_grad()
    loss.backward()
    for name, prm in m.named_parameters():
        expected = (
            prm.grad if prm.grad is not None else torch.zeros_like(prm)
        )  # intra encoder: unused here
        assert torch.allclose(sums.theta[name], expected, atol=1e-4, rtol=1e-4), name
    assert torch.allclose(sums.z, z.grad, atol=1e-4, rtol=1e-4)
    assert abs(sums.loss_sum - float(loss)) < 1e-3
    assert sums.clipped_fraction == 0.0


def test_each_target_contributes_at_most_clip():
    g, m = _graph(), _model()
    z = torch.randn(3, 6)
    one = clipped_gradient_sums(m, g, z, torch.tensor([5]), clip=1e-3, z_clip=1e-3)
    norm = torch.sqrt(sum((v**2).sum() for v in one.theta.values()))
    assert norm <= 1e-3 * (1 + 1e-5)
    assert one.z.norm() <= 1e-3 * (1 + 1e-5)
    assert one.clipped_fraction == 1.0
    # sum over 10 targets is bounded by 10 * clip
    ten = clipped_gradient_sums(m, g, z, torch.arange(10, 20), clip=1e-3, z_clip=1e-3)
    assert torch.sqrt(sum((v**2).sum() for v in ten.theta.values())) <= 10e-3 * (1 + 1e-5)


def test_sum_sensitivity_formula():
    assert sum_sensitivity(0.5, 10) == 10.5


def test_non_finite_target_gradients_are_dropped_not_propagated():
    g, m = _graph(), _model()
    g.x[5] = float("inf")  # a corrupt row makes its own term non-finite
    s = clipped_gradient_sums(
        m, g, torch.randn(3, 6), torch.arange(g.num_nodes), clip=1.0, z_clip=1.0
    )
    assert all(torch.isfinite(v).all() for v in s.theta.values())
    assert torch.isfinite(s.z).all()

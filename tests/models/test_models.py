"""Unit tests of the model building blocks on tiny hand-built inputs."""

from __future__ import annotations

import math

import pytest
import torch

from fedmugrep.models.event_encoder import EventEncoder, recency_rank
from fedmugrep.models.fusion import PrecisionGateFusion, gaussian_nll
from fedmugrep.models.intra_region import IntraRegionEncoder
from fedmugrep.models.mugrep import (
    CommunityGraph,
    ModelConfig,
    MugRepModel,
    TransactionGraph,
    pooled_mean,
)
from fedmugrep.models.multitask import DistrictMultiTaskHead
from fedmugrep.models.region_encoder import RELATIONS, RegionEncoder


def test_reprs_show_hyper_parameters():
    assert (
        repr(DistrictMultiTaskHead(8, 3, hidden=16))
        == "DistrictMultiTaskHead(in=8, districts=3, hidden=16)"
    )
    assert repr(PrecisionGateFusion(4)) == "PrecisionGateFusion(districts=4)"
    assert repr(EventEncoder(k=5, max_days=90.0, max_km=2.0, hidden=8)) == (
        "EventEncoder(k=5, max_days=90.0, max_km=2.0, hidden=8)"
    )
    assert repr(IntraRegionEncoder(3, 4)) == "IntraRegionEncoder(in=3, out=4)"
    assert (
        repr(RegionEncoder(5, 4, hidden=8, layers=1))
        == "RegionEncoder(attr=5, intra=4, hidden=8, layers=1)"
    )


def test_gaussian_nll_matches_torch_distribution():
    y, mu, ls = torch.tensor([0.3, -1.0]), torch.tensor([0.0, 0.5]), torch.tensor([-0.2, 0.4])
    ref = -torch.distributions.Normal(mu, ls.exp()).log_prob(y)
    assert torch.allclose(gaussian_nll(y, mu, ls), ref, atol=1e-6)


def test_fusion_at_half_gate_is_product_of_experts():
    f = PrecisionGateFusion(2)
    mu1, ls1 = torch.tensor([1.0]), torch.tensor([math.log(1.0)])
    mu2, ls2 = torch.tensor([3.0]), torch.tensor([math.log(2.0)])
    mu, ls = f(mu1, ls1, mu2, ls2, torch.tensor([0]))
    # precisions 1 and 1/4 -> mean (1*1 + 0.25*3)/1.25 = 1.4, variance 1/1.25
    assert mu.item() == pytest.approx(1.4)
    assert torch.exp(2 * ls).item() == pytest.approx(0.8)


def test_fusion_gate_one_returns_first_view():
    f = PrecisionGateFusion(1)
    with torch.no_grad():
        f.gate_logit.fill_(50.0)
    mu, ls = f(
        torch.tensor([1.0]),
        torch.tensor([0.0]),
        torch.tensor([5.0]),
        torch.tensor([0.0]),
        torch.tensor([0]),
    )
    assert mu.item() == pytest.approx(1.0, abs=1e-6)
    assert ls.item() == pytest.approx(-0.5 * math.log(2.0), abs=1e-6)


def test_multitask_head_district_parameters_are_task_specific():
    torch.manual_seed(0)
    head = DistrictMultiTaskHead(4, 3, hidden=8)
    x = torch.randn(5, 4)
    mu, _ = head(x, torch.zeros(5, dtype=torch.long))
    mu.sum().backward()
    g = head.district_weight.grad
    assert g[0].abs().sum() > 0
    assert g[1].abs().sum() == 0 and g[2].abs().sum() == 0  # only district 0's task was touched
    assert head.trunk.net[0].weight.grad.abs().sum() > 0  # the trunk is shared


def test_recency_rank_hand_case():
    # target 3 has neighbours 0 (30 days ago), 1 (10), 2 (20); target 4 has neighbour 2 (5)
    ei = torch.tensor([[0, 1, 2, 2], [3, 3, 3, 4]])
    dt = torch.tensor([30.0, 10.0, 20.0, 5.0])
    assert recency_rank(ei, dt, 5).tolist() == [2, 0, 1, 0]


def test_event_encoder_uses_only_incoming_neighbours():
    torch.manual_seed(0)
    enc = EventEncoder(k=2, max_days=100.0, max_km=1.0, hidden=4)
    ei = torch.tensor([[0, 1], [2, 2]])  # 0 -> 2, 1 -> 2; node 3 has no neighbours
    ea = torch.tensor([[10.0, 0.1], [20.0, 0.2]])
    r = torch.tensor([1.0, -1.0, 5.0, 7.0], requires_grad=True)
    out = enc(r, ei, ea, 4)
    out[2].sum().backward()
    assert r.grad[0] != 0 and r.grad[1] != 0
    assert r.grad[2] == 0 and r.grad[3] == 0  # never its own label, never a later node
    assert out[3].abs().sum() == 0  # isolated node: zero message, indicator 0
    out = out.detach()
    assert out[2, -2] == 1 and out[2, -1].item() == pytest.approx(
        1.0
    )  # has neighbours, deg/K = 2/2
    # the attention-weighted residual is a convex combination of 1 and -1
    assert -1.0 <= out[2, enc.hidden].item() <= 1.0


def test_intra_region_sensitivity_bound_holds():
    torch.manual_seed(0)
    enc = IntraRegionEncoder(3, 4)
    u = torch.randn(6, 3) * 5
    comm = torch.tensor([0, 0, 0, 1, 1, 1])
    ei = torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]])  # max in-degree 2
    s_full, c_full = enc(u, ei, comm, 2)
    # remove record 1 (its edges go too)
    keep = torch.tensor([0, 2, 3, 4, 5])
    ei2 = torch.tensor([[2, 3], [3, 2]])  # edges 3->4, 4->3 relabelled after removing row 1
    s_less, c_less = enc(u[keep], ei2, comm[keep], 2)
    l1 = (s_full - s_less).abs().sum().item()
    assert l1 <= enc.sensitivity(max_degree=2)
    assert (c_full - c_less).abs().sum().item() == 1


def test_pooled_mean_never_divides_by_small_noisy_count():
    sums = torch.tensor([[2.0], [3.0]])
    counts = torch.tensor([4.0, -0.7])
    assert pooled_mean(sums, counts).tolist() == [[0.5], [3.0]]


def _tiny_graph(n: int = 12, c: int = 3) -> tuple[TransactionGraph, CommunityGraph]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    y = torch.randn(n, generator=g)
    comm = torch.arange(n) % c
    ei = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    ea = torch.rand(5, 2, generator=g)
    rel = {r: torch.zeros(2, 0, dtype=torch.long) for r in RELATIONS}
    rel[RELATIONS[0]] = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    tg = TransactionGraph(
        x,
        y,
        torch.ones(n, dtype=torch.bool),
        torch.arange(n) < 8,
        comm % 2,
        comm,
        ei,
        ea,
        torch.tensor([[0, 3], [3, 0]]),
    )
    return tg, CommunityGraph(torch.randn(c, 2, generator=g), rel, {})


def test_full_model_trains_on_a_tiny_graph():
    torch.manual_seed(0)
    tg, cg = _tiny_graph()
    m = MugRepModel(ModelConfig(feature_dim=4, attr_dim=2, n_districts=2, k=2, hidden=8))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    mask = torch.ones(tg.num_nodes, dtype=torch.bool)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = m(tg, cg).nll(tg.y, mask)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first - 0.5


def test_calibrate_sigma_gives_unit_variance_on_held_out_rows():
    tg, cg = _tiny_graph()
    m = MugRepModel(ModelConfig(feature_dim=4, attr_dim=2, n_districts=2, k=2, hidden=8))
    mask = torch.ones(tg.num_nodes, dtype=torch.bool)
    with torch.no_grad():
        s = m.event_model.calibrate_sigma(m(tg, cg), tg.y, mask)
        p = m(tg, cg)
    z = (tg.y - p.mu) / p.log_sigma.exp()
    assert s > 0
    assert float((z**2).mean()) == pytest.approx(1.0, rel=1e-4)


def test_dense_per_target_forward_equals_sparse_forward():
    torch.manual_seed(0)
    n, c = 30, 3
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 4, generator=g)
    comm = torch.arange(n) % c
    # every target i >= 3 gets up to 3 earlier sources
    src = [j for i in range(3, n) for j in range(max(0, i - 3), i) if (i + j) % 4]
    dst = [i for i in range(3, n) for j in range(max(0, i - 3), i) if (i + j) % 4]
    ei = torch.tensor([src, dst])
    ea = torch.rand(ei.shape[1], 2, generator=g) * 50
    tg = TransactionGraph(
        x,
        torch.randn(n, generator=g),
        torch.ones(n, dtype=torch.bool),
        torch.ones(n, dtype=torch.bool),
        comm % 2,
        comm,
        ei,
        ea,
        torch.zeros(2, 0, dtype=torch.long),
    )
    cfg = ModelConfig(feature_dim=4, attr_dim=2, n_districts=2, k=3, hidden=8, region_hidden=5)
    from fedmugrep.models.mugrep import EventModel

    em = EventModel(cfg)
    with torch.no_grad():
        em.fusion.gate_logit.normal_()
    z = torch.randn(c, cfg.z_dim)
    sparse = em(tg, z)
    targets = torch.arange(n)
    dense = em.forward_targets(*em.dense_inputs(tg, z, targets))
    for a, b in zip(
        dense,
        [
            sparse.mu,
            sparse.log_sigma,
            sparse.mu_event,
            sparse.log_sigma_event,
            sparse.mu_region,
            sparse.log_sigma_region,
        ],
        strict=True,
    ):
        assert torch.allclose(a, b, atol=1e-5)

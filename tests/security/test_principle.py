"""The principle behind the plan-injection fixes, as a property test.

For any plan, graph and model configuration and any model state a data scientist can send,
either the datasite refuses the request before touching data, or the noise it adds is at
least what the charged epsilon requires for the sensitivity *measured* by leave-one-out on the
real graph and gradient code:

    noise sd of the round release  >=  charged noise multiplier  x  max_r ||S(D) - S(D - r)||_2

(and likewise the intra-region sums' measured L1 change stays within the Laplace event's
sensitivity). ``S`` is :func:`~fedmugrep.training.per_target.clipped_gradient_sums`, the
function every round's release is computed from; ``D - r`` is the agency's table without one
sale, rebuilt through the same :class:`~fedmugrep.federation.parties.TransactionParty`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedmugrep.errors import ConfigError
from fedmugrep.federation.parties import TransactionParty
from fedmugrep.federation.wire import public_from_constant
from fedmugrep.training.per_target import clipped_gradient_sums
from tests.security.conftest import City

pytestmark = [pytest.mark.slow, pytest.mark.statistical]

HOSTILE_INTS = st.one_of(
    st.integers(-3, 12),
    st.sampled_from([-0.4999999, 0.5, 1e-6, 3.0000001, True, False, "4", None, 2**40]),
)


@st.composite
def crafted(draw: st.DrawFn, *, hostile: bool = True) -> dict:
    """Overrides of the public constant: a consistent K everywhere, then (when ``hostile``)
    fields replaced by crafted values."""
    k = draw(st.integers(1, 4))
    out: dict = {"plan": {}, "graph_config": {}, "model_config": {}, "privacy": {}}
    out["plan"]["k"] = out["graph_config"]["k"] = out["model_config"]["k"] = k
    for where, name in [
        ("plan", "k"),
        ("graph_config", "k"),
        ("model_config", "k"),
        ("plan", "intra_dim"),
        ("plan", "intra_max_degree"),
        ("graph_config", "intra_max_degree"),
        ("plan", "region_hidden"),
    ]:
        if hostile and draw(st.integers(0, 3)) == 0:
            out[where][name] = draw(HOSTILE_INTS)
    if hostile and draw(st.integers(0, 4)) == 0:
        out["graph_config"]["rule"] = "greedy"
    if hostile and draw(st.integers(0, 4)) == 0:
        out["graph_config"]["event_within_community"] = False
    out["privacy"]["clip"] = draw(st.sampled_from([0.05, 0.3, 1.0, 2.5]))
    out["theta_scale"] = draw(st.sampled_from([0.1, 1.0, 30.0]))
    out["z_scale"] = draw(st.sampled_from([0.0, 1.0]))
    out["seed"] = draw(st.integers(0, 2**16))
    return out


def _apply(public: dict, spec: dict) -> dict:
    crafted_public = json.loads(json.dumps(public))
    for where in ("plan", "graph_config", "model_config"):
        crafted_public[where].update(spec[where])
    crafted_public["plan"]["privacy"].update(spec["privacy"])
    crafted_public["plan"]["rounds"] = 2
    return crafted_public


def _frame(city: City):
    tx = city.transactions
    top = tx["community"].astype(str).value_counts().index[:2]
    return tx[tx["community"].astype(str).isin(top)].reset_index(drop=True)


def _flat(model, graph, z, targets, p) -> np.ndarray:
    sums = clipped_gradient_sums(
        model, graph, z, targets, clip=p.clip, z_clip=p.z_clip, joint=p.joint_clip
    )
    parts = [v.reshape(-1) for _, v in sorted(sums.theta.items())] + [sums.z.reshape(-1)]
    return torch.cat(parts).double().numpy()


def _out_degree(graph, n: int) -> np.ndarray:
    return np.bincount(graph.event_index[0].numpy(), minlength=n)


SETTINGS = settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _admit(city: City, home: Path, spec: dict) -> TransactionParty:
    """What a datasite does with the request: parse, check, build the party (or refuse)."""
    public, plan, _ = public_from_constant(_apply(city.public, spec))
    return TransactionParty("agency1", _frame(city), home / f"p{spec['seed']}", public, plan)


@SETTINGS
@given(spec=crafted(hostile=True))
def test_a_crafted_request_is_refused_or_its_noise_covers_the_measured_sensitivity(
    small_city: City, tmp_path: Path, spec: dict
) -> None:
    try:
        party = _admit(small_city, tmp_path, spec)
    except ConfigError:
        return  # refused before any release: nothing to measure
    _check_noise_covers_leave_one_out(party, spec)


@SETTINGS
@given(spec=crafted(hostile=False))
def test_an_admitted_request_adds_noise_for_its_measured_sensitivity(
    small_city: City, tmp_path: Path, spec: dict
) -> None:
    """Consistent plans (any K in 1..4, any clip, any model state) are admitted, and then the
    leave-one-out bound must hold: this runs the measurement on every example."""
    party = _admit(small_city, tmp_path, spec)
    _check_noise_covers_leave_one_out(party, spec)


def _check_noise_covers_leave_one_out(party: TransactionParty, spec: dict) -> None:
    public, plan, home = party.public, party.plan, party.home
    p = plan.privacy
    assert p is not None
    gen = torch.Generator().manual_seed(spec["seed"])  # the *attacker's* choice of state
    theta = {
        n: torch.randn(v.shape, generator=gen) * spec["theta_scale"]
        for n, v in party.model.state_dict().items()
    }
    party._load(theta)
    n_comm = len(public.encoders.vocab.communities)
    z = torch.randn(n_comm, public.model_config.z_dim, generator=gen) * spec["z_scale"]
    z = z.clamp(-1, 1)
    full = _flat(party.model, party.graph, z, party.targets, p)
    with torch.no_grad():
        intra_full = party.model.intra_sums(party.graph, n_comm)[0].numpy()
    n = len(party.frame)
    # the sales whose removal moves the most: the highest out-degrees, then a few others
    order = np.argsort(-_out_degree(party.graph, n), kind="stable")
    records = list(order[:6]) + list(np.random.default_rng(spec["seed"]).choice(n, 4))
    worst_l2 = worst_intra = 0.0
    for r in records:
        without = TransactionParty(
            "agency1", party.frame.drop(index=int(r)), home / "loo", public, plan
        )
        without._load(theta)
        worst_l2 = max(
            worst_l2,
            float(
                np.linalg.norm(full - _flat(without.model, without.graph, z, without.targets, p))
            ),
        )
        with torch.no_grad():
            loo = without.model.intra_sums(without.graph, n_comm)[0].numpy()
        # the encoder's columns of the intra release (the price level, column 0, and the
        # counts are separate releases of sensitivity 1)
        worst_intra = max(worst_intra, float(np.abs(intra_full - loo)[:, 1:].sum()))
    mech, z_mech = party._round_mechanisms()
    assert z_mech is None  # joint (theta, z) release: one vector, one sensitivity
    charged_nm = plan.round_events(party.nm)[0].noise_multiplier
    sd = mech.std(full.size)
    assert sd >= charged_nm * worst_l2 * (1 - 1e-9), (sd, charged_nm, worst_l2, plan)
    assert worst_l2 <= mech.sensitivity * (1 + 1e-6)
    assert worst_intra <= plan.setup_events()[0].sensitivity * (1 + 1e-6), worst_intra

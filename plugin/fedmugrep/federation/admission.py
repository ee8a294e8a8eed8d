"""What a datasite admits: the plan it will really run, checked, and the privacy it implies.

A data scientist's request pins a plan and public artefacts (encoders, graph and model
configurations). Every sensitivity — hence every noise scale — is computed from the plan's
``k``, ``intra_dim``, ``intra_max_degree``, ``region_hidden`` and clips, while the graph and
the model are built from the artefacts' :class:`~fedmugrep.training.prepare.GraphConfig` and
:class:`~fedmugrep.models.mugrep.ModelConfig`. If the two could differ, a plan claiming
``K = 0`` on a graph built with ``K = 4`` would release a gradient sum whose real reach is 9
clipped terms with the noise of one. So the datasite, not the data scientist, decides:

* every field is type- and range-checked when the dataclasses are built
  (:mod:`fedmugrep.checks`);
* :func:`check_artefacts` refuses artefacts that disagree with the plan on any value a
  sensitivity depends on, and graph options whose reach under add/remove of one sale is not
  the bound the noise assumes (``rule="greedy"`` cascades; ``event_within_community=False``);
* :func:`transaction_contract` / :func:`region_contract` derive the privacy contract from the
  checked plan; the datasite refuses a request whose pinned contract claims anything else
  (:func:`check_contract_claims`), and the owner's review sheet leads with
  :func:`privacy_summary` — computed here, from the plan the code will run, never from the
  data scientist's notes.

Nothing here imports syft or touches private data.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fedmugrep.errors import ConfigError
from fedmugrep.federation.contract import PrivacyContract
from fedmugrep.federation.plan import FederationPlan, PublicArtefacts
from fedmugrep.models.mugrep import EventModel, ModelConfig
from fedmugrep.privacy.analysis.composition import compose_events
from fedmugrep.training.prepare import Encoders, GraphConfig

__all__ = [
    "UNBOUNDED_EPSILON",
    "Release",
    "check_artefacts",
    "check_contract_claims",
    "derived_contract",
    "privacy_summary",
    "region_contract",
    "release_schedule",
    "transaction_contract",
    "update_coordinates",
]

#: Stated epsilon of a release without noise (a contract needs a finite positive number).
UNBOUNDED_EPSILON = sys.float_info.max

#: Graph rules whose reach under add/remove of one sale is the ``K`` bound the noise assumes.
BOUNDED_RULES = ("recent",)


def _refuse(what: str, fix: str) -> ConfigError:
    return ConfigError(f"this datasite refuses the plan: {what}; {fix}")


def check_artefacts(
    encoders: Encoders, model_config: ModelConfig, graph_config: GraphConfig, plan: FederationPlan
) -> None:
    """Refuse artefacts that would make the real sensitivity exceed the one the noise uses.

    Checked (each must hold exactly):

    * event graph: ``graph.rule`` is cascade-free (``"recent"``) and links within communities
      only, so removing one sale changes its own term and at most ``K`` others;
    * ``plan.k == graph.k == model.k`` (the ``K`` of ``(1 + 2K) clip``);
    * ``plan.intra_max_degree == graph.intra_max_degree`` (the ``D`` of ``2 m (1 + D)``);
    * ``plan.intra_dim == model.intra_dim`` (the ``m``), ``plan.region_hidden ==
      model.region_hidden`` (the ``2 H C`` of ``z``), ``plan.hidden``, ``plan.event_hidden``
      and ``plan.target_channel`` equal to the model's;
    * ``model.bounded_z`` (``z`` entries in ``[-1, 1]``, which ``2 H C`` assumes);
    * ``model.feature_dim`` and ``model.n_districts`` match the encoders.

    Raises:
        ConfigError: naming the first disagreement.
    """
    g, m = graph_config, model_config
    if g.rule not in BOUNDED_RULES:
        raise _refuse(
            f"event-graph rule {g.rule!r} has unbounded reach under add/remove of one sale "
            "(removing a source frees slots that later targets refill, a cascade), so the "
            "(1 + 2K)·clip sensitivity does not hold",
            "build the graph with rule='recent'",
        )
    if not g.event_within_community:
        raise _refuse(
            "event_within_community=False links sales across communities, which the "
            "per-community releases' sensitivities do not cover",
            "build the graph with event_within_community=True",
        )
    pairs = [
        ("k", plan.k, "graph_config.k", g.k),
        ("k", plan.k, "model_config.k", m.k),
        (
            "intra_max_degree",
            plan.intra_max_degree,
            "graph_config.intra_max_degree",
            g.intra_max_degree,
        ),
        ("intra_dim", plan.intra_dim, "model_config.intra_dim", m.intra_dim),
        ("region_hidden", plan.region_hidden, "model_config.region_hidden", m.region_hidden),
        ("hidden", plan.hidden, "model_config.hidden", m.hidden),
        ("event_hidden", plan.event_hidden, "model_config.event_hidden", m.event_hidden),
        ("target_channel", plan.target_channel, "model_config.target_channel", m.target_channel),
    ]
    for name, planned, where, built in pairs:
        if planned != built:
            raise _refuse(
                f"the plan's {name} is {planned!r} but {where} is {built!r}; the noise would be "
                f"computed from one and the release from the other",
                "derive the graph and model configurations from the plan",
            )
    if not m.bounded_z:
        raise _refuse(
            "model_config.bounded_z is False: z is then unbounded and its 2·H·C sensitivity "
            "does not hold",
            "keep bounded_z=True",
        )
    width = encoders.features.n_features + 2
    if m.feature_dim != width:
        raise _refuse(
            f"model_config.feature_dim is {m.feature_dim} but the encoders produce {width} "
            "features",
            "derive feature_dim from the encoders",
        )
    if m.n_districts != len(encoders.vocab.districts):
        raise _refuse(
            f"model_config.n_districts is {m.n_districts} but the vocabulary has "
            f"{len(encoders.vocab.districts)} districts",
            "derive n_districts from the vocabulary",
        )


def update_coordinates(model_config: ModelConfig) -> int:
    """Coordinates of one target's joint ``(theta, z)`` gradient: model-1 parameters plus one
    community's ``z`` row (the ``n_coords`` of the Laplace update option)."""
    with torch.random.fork_rng(devices=[]):
        model = EventModel(model_config)
    return sum(p.numel() for p in model.parameters()) + model_config.z_dim


# ============================================================================ contracts
def transaction_contract(
    plan: FederationPlan,
    *,
    package_dir: str | Path | None = None,
    n_coords: int | None = None,
) -> PrivacyContract:
    """The privacy contract of a transaction datasite's request.

    With privacy: mechanisms Laplace (one setup release: intra-region sums and counts, target
    count) and Gaussian (one release per round: summed clipped model-1 and ``z`` gradients);
    then a Laplace district summary (calibration) and the noised evaluations. ``rounds``
    counts releases and ``epsilon_per_release`` is the largest release's own epsilon at the
    plan's delta, so the contract's plain sum bounds the schedule; ``projected_epsilon`` is
    the accountant's total. Without privacy the contract says so (mechanism ``none``,
    unbounded epsilon).
    """
    p = plan.privacy
    evals = plan.evaluations
    if p is None:
        return PrivacyContract.for_installed(
            mechanisms=("none",),
            epsilon_per_release=UNBOUNDED_EPSILON,
            rounds=plan.rounds,
            projected_epsilon=UNBOUNDED_EPSILON,
            notes=(
                f"NO NOISE: exact model-1 and z gradients leave the datasite (1 setup release + 1 "
                f"per round + 1 district summary, {evals} evaluations with exact metrics); for "
                "synthetic data only, needs the owner's allow_exact_release"
            ),
            package_dir=package_dir,
        )
    if p.update_mechanism == "laplace":
        if n_coords is None:
            raise ConfigError(
                "the Laplace update option needs n_coords (model-1 parameters + z width) to "
                "state its noise; pass n_coords"
            )
        round_events: list = [plan.laplace_update_event(n_coords)]
        gauss = replace(plan, privacy=replace(p, update_mechanism="gaussian"))
        g_std = gauss.theta_noise_std(gauss.noise_multiplier())
        update_text = (
            f"patent-literal Laplace on the update (scale {round_events[0].scale:.4g}, std "
            f"{round_events[0].scale * 2**0.5:.4g} per coordinate, L1 sensitivity "
            f"{round_events[0].sensitivity:.4g}; the default Gaussian would add std {g_std:.4g})"
        )
    else:
        nm = plan.noise_multiplier()
        round_events = plan.round_events(nm)
        update_text = f"noise multiplier {nm:.4g}"
    setup = compose_events(plan.setup_events(), delta=p.delta).epsilon
    per_round = compose_events(round_events, delta=p.delta).epsilon
    calibration = compose_events(plan.calibration_events(), delta=p.delta).epsilon
    evaluation = compose_events(plan.evaluation_events(), delta=p.delta).epsilon
    total = compose_events(
        plan.planned_events() + round_events * plan.rounds, delta=p.delta
    ).epsilon
    n_eval = plan.evaluations
    releases = plan.rounds + 2 + n_eval
    return PrivacyContract.for_installed(
        mechanisms=(
            "laplace:intra_region",
            f"{p.update_mechanism}:theta+z_grad",
            "laplace:district_summary",
            "laplace:evaluation",
        ),
        epsilon_per_release=max(setup, per_round, calibration, evaluation),
        delta_per_release=p.delta,
        rounds=releases,
        projected_epsilon=total,
        projected_delta=p.delta,
        notes=(
            f"{releases} releases: 1 setup (Laplace, epsilon {setup:.4g}) + 1 "
            f"{p.update_mechanism.capitalize()} release per round for {plan.rounds} rounds "
            f"({update_text}, epsilon {per_round:.4g} alone) + 1 district summary "
            f"(Laplace, epsilon {calibration:.4g}) + {n_eval} noised evaluation(s) (Laplace, "
            f"epsilon {evaluation:.4g} each; exact metrics stay in the owner's home); "
            f"per-target L2 clip {p.clip}"
            f"{' on (theta, z) jointly' if p.joint_clip else f' (z: {p.z_clip})'}, event-graph "
            f"degree bound K={plan.k}, so L2 sensitivity (1+2K)*clip = "
            f"{(1 + 2 * plan.k) * p.clip:.4g}"
        ),
        package_dir=package_dir,
    )


def region_contract(
    plan: FederationPlan, *, n_communities: int, package_dir: str | Path | None = None
) -> PrivacyContract:
    """The region datasite's contract: ``z`` leaves noised (Laplace, :class:`RegionParty`) and
    charged, or exactly when the plan sets no ``region_epsilon``; model 2 never leaves."""
    events = plan.region_events(n_communities)
    if not events:
        return PrivacyContract.for_installed(
            mechanisms=("none",),
            epsilon_per_release=UNBOUNDED_EPSILON,
            rounds=plan.rounds,
            releases_per_round=1,
            projected_epsilon=UNBOUNDED_EPSILON,
            notes=(
                "NO NOISE on z (region representations per community, one per model-2 "
                "state); model-2 parameters stay on the datasite; needs the owner's "
                "allow_exact_release"
            ),
            package_dir=package_dir,
        )
    assert plan.privacy is not None
    ev = events[0]
    delta = plan.privacy.delta
    one = compose_events(events, delta=delta).epsilon
    total = compose_events(events * plan.region_releases, delta=delta).epsilon
    return PrivacyContract.for_installed(
        mechanisms=("laplace:region_z",),
        epsilon_per_release=one,
        delta_per_release=delta,
        rounds=plan.region_releases,
        projected_epsilon=total,
        projected_delta=delta,
        notes=(
            f"{plan.region_releases} releases of z (one per model-2 state read: every round "
            f"+ the final model), Laplace scale {ev.scale:.4g} on tanh-bounded entries, L1 "
            f"sensitivity 2 x region_hidden x communities = {ev.sensitivity:.4g} (privacy unit: "
            "one community row; every community's z may move); the price-level column is the "
            "agencies' own noised release, passed through; model-2 parameters stay here"
        ),
        package_dir=package_dir,
    )


def derived_contract(
    public: PublicArtefacts, plan: FederationPlan, *, role: str
) -> PrivacyContract:
    """The contract a ``role`` (``"transaction"`` or ``"region"``) datasite derives from the plan
    it will run (the Laplace update option's size comes from the public model)."""
    if role == "region":
        return region_contract(plan, n_communities=len(public.encoders.vocab.communities))
    laplace = plan.privacy is not None and plan.privacy.update_mechanism == "laplace"
    n_coords = update_coordinates(public.model_config) if laplace else None
    return transaction_contract(plan, n_coords=n_coords)


_CLAIMED_FIELDS = (
    "mechanisms",
    "epsilon_per_release",
    "delta_per_release",
    "rounds",
    "releases_per_round",
    "projected_epsilon",
    "projected_delta",
)


def check_contract_claims(claimed: PrivacyContract, derived: PrivacyContract) -> None:
    """Refuse a pinned contract whose privacy claims differ from what the datasite derives.

    Compares mechanisms, epsilons, deltas and release counts (floats to 1e-9 relative); the
    free-text notes are the data scientist's and are not trusted either way.

    Raises:
        ConfigError: naming the first field that differs, with both values.
    """
    for name in _CLAIMED_FIELDS:
        a, b = getattr(claimed, name), getattr(derived, name)
        same = (
            math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
            if isinstance(a, float) and isinstance(b, float)
            else a == b
        )
        if not same:
            raise ConfigError(
                f"the request's privacy contract claims {name} = {a!r}, but the plan it pins "
                f"gives {b!r} on this datasite; submit a request whose contract is built from "
                "its plan (transaction_contract / region_contract)"
            )


# ============================================================================ the review
@dataclass(frozen=True)
class Release:
    """One kind of release in a run, as the datasite computes it.

    Attributes:
        name: what is released.
        mechanism: ledger mechanism name.
        count: releases of this kind in the run.
        sensitivity: the sensitivity the noise is scaled to (L1 for Laplace, L2 for Gaussian).
        formula: how that sensitivity is computed, with the plan's values.
        noise: the noise, in words (scale or standard deviation).
        epsilon: epsilon of one release alone, at the plan's delta.
    """

    name: str
    mechanism: str
    count: int
    sensitivity: float
    formula: str
    noise: str
    epsilon: float


def release_schedule(plan: FederationPlan, *, role: str, n_communities: int) -> list[Release]:
    """The releases a run of ``plan`` makes on a ``"transaction"`` or ``"region"`` datasite,
    with the sensitivities and noise the datasite's party code will use (the same
    :class:`FederationPlan` methods). Empty without privacy."""
    p = plan.privacy
    if p is None:
        return []
    d = p.delta

    def eps(events: Sequence) -> float:
        return compose_events(list(events), delta=d).epsilon

    if role == "region":
        events = plan.region_events(n_communities)
        if not events:
            return []
        ev = events[0]
        return [
            Release(
                "region representations z",
                "laplace:region_z",
                plan.region_releases,
                ev.sensitivity,
                f"2·H·C = 2·{plan.region_hidden}·{n_communities}",
                f"Laplace scale {ev.scale:.4g}",
                eps(events),
            )
        ]
    setup = plan.setup_events()
    k, m, deg = plan.k, plan.intra_dim, plan.intra_max_degree
    out = [
        Release(
            "intra-region sums",
            "laplace:intra_region",
            1,
            setup[0].sensitivity,
            f"2·m·(1+D) = 2·{m}·(1+{deg})",
            f"Laplace scale {setup[0].scale:.4g}",
            eps(setup[:1]),
        ),
        Release(
            "community counts, target count" + (", price levels" if plan.target_channel else ""),
            "laplace:intra_region",
            1,
            1.0,
            "one sale per count",
            "Laplace scale " + ", ".join(f"{e.scale:.4g}" for e in setup[1:]),
            eps(setup[1:]),
        ),
    ]
    if p.update_mechanism == "laplace":
        raise ConfigError(
            "the review summary of the Laplace update option needs the model's size; use "
            "privacy_summary(..., n_coords=...)"
        )
    nm = plan.noise_multiplier()
    clip = p.clip
    out.append(
        Release(
            "clipped gradient sum (theta, z)" + (" jointly" if p.joint_clip else ""),
            "gaussian:theta+z_grad",
            plan.rounds,
            (1 + 2 * k) * clip,
            f"(1+2K)·C = (1+2·{k})·{clip:g}",
            f"Gaussian sd {plan.theta_noise_std(nm):.4g} (noise multiplier {nm:.4g})",
            eps(plan.round_events(nm)),
        )
    )
    cal = plan.calibration_events()
    out.append(
        Release(
            "district summary (calibration)",
            "laplace:district_summary",
            1,
            cal[0].sensitivity,
            f"(1+K)·Z, 1+2K, 1 = {cal[0].sensitivity:g}, {cal[1].sensitivity:g}, 1",
            "Laplace scales " + ", ".join(f"{e.scale:.4g}" for e in cal),
            eps(cal),
        )
    )
    ev = plan.evaluation_events()
    out.append(
        Release(
            "noised evaluation metrics",
            "laplace:evaluation",
            plan.evaluations,
            ev[0].sensitivity,
            f"0.5·(1+K), 0.5·(1+K), 1+K, 1 with K={k}",
            "Laplace scales " + ", ".join(f"{e.scale:.4g}" for e in ev),
            eps(ev),
        )
    )
    return out


def privacy_summary(
    plan: FederationPlan,
    *,
    role: str,
    n_communities: int,
    call_cap: int | None = None,
    cap_epsilon: float | None = None,
) -> list[str]:
    """The first lines of the owner's review sheet: what leaves, with which sensitivity and
    noise, epsilon per release and in total, rounds and call cap — computed on the datasite
    from the plan the approved code will run."""
    p = plan.privacy
    contract = (
        region_contract(plan, n_communities=n_communities)
        if role == "region"
        else transaction_contract(plan)
    )
    lines = [f"PRIVACY (computed by this datasite from the pinned plan; {role} datasite)"]
    if p is None or contract.mechanisms == ("none",):
        lines.append("  !! NO NOISE: releases leave this datasite exactly (needs your opt-in)")
    else:
        for r in release_schedule(plan, role=role, n_communities=n_communities):
            lines.append(
                f"  {r.count:>4} × {r.name}: {r.mechanism}, sensitivity {r.sensitivity:.4g} "
                f"[{r.formula}], {r.noise}, ε {r.epsilon:.4g} each"
            )
        lines.append(
            f"  total: ε {contract.projected_epsilon:.4g} at δ {contract.projected_delta:g} "
            f"over {plan.rounds} rounds (accountant composition)"
            + (f"; your cap for this data scientist: ε {cap_epsilon:g}" if cap_epsilon else "")
        )
    cap = f"{call_cap}" if call_cap is not None else "not set (unlimited)"
    lines.append(f"  call cap: {cap}")
    return lines


def plan_lines(plan: FederationPlan) -> list[str]:
    """The plan's values that set the noise, in two short lines (not the whole JSON)."""
    p = plan.privacy
    lines = [
        f"  plan: {plan.rounds} rounds, K={plan.k}, intra_dim={plan.intra_dim}, "
        f"intra_max_degree={plan.intra_max_degree}, region_hidden={plan.region_hidden}, "
        f"hidden={plan.hidden}, event_hidden={plan.event_hidden}, "
        f"target_channel={plan.target_channel}, upload_rate={plan.upload_rate:g}"
    ]
    if p is None:
        lines.append("  privacy: NONE (exact releases)")
    else:
        lines.append(
            f"  privacy: ε {p.epsilon:g}, δ {p.delta:g}, clip {p.clip:g}"
            f"{' (joint)' if p.joint_clip else f', z_clip {p.z_clip:g}'}, update "
            f"{p.update_mechanism}, region ε {p.region_epsilon}, one-off ε: intra "
            f"{p.intra_epsilon:g}, count {p.count_epsilon:g}, level {p.level_epsilon:g}, "
            f"calibration {p.calibration_epsilon:g}, evaluation {p.evaluation_epsilon:g}"
        )
    return lines


def review_summary(
    *,
    plan: FederationPlan | None,
    role: str,
    n_communities: int,
    call_cap: int | None,
    refusal: str | None = None,
    claimed: PrivacyContract | None = None,
) -> list[str]:
    """The lines that lead an owner's review sheet for a federation request.

    With ``refusal`` (the datasite's own admission refused the pinned plan or contract), the
    sheet says so first: approving such a request is pointless, every call would be refused.
    """
    if refusal is not None:
        return [
            "PRIVACY: this datasite REFUSES the pinned plan — every call would be refused:",
            f"  {refusal}",
        ]
    assert plan is not None
    lines = privacy_summary(plan, role=role, n_communities=n_communities, call_cap=call_cap)
    lines += plan_lines(plan)
    if claimed is not None:
        lines.append(
            "  the data scientist's contract matches these figures (checked on every call); "
            "its notes below are the data scientist's words"
        )
    return lines

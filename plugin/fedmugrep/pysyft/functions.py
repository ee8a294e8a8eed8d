"""What runs inside a PySyft datasite: the remote functions a data owner approves.

One approved request per datasite serves the whole run. The data scientist submits
:func:`transaction_call` to every transaction datasite and :func:`region_call` to the region
datasite, each pinning two ``sy.Constant`` values the data owner reviews once: ``contract`` (the
:class:`~fedmugrep.federation.contract.PrivacyContract`) and ``public`` (the public artefacts and
the plan, :func:`~fedmugrep.federation.wire.public_constant`). Each call passes ``method`` and a
JSON ``payload``.

Inside the datasite, :func:`transaction_call_impl` / :func:`region_call_impl` first *admit* the
request (:func:`_admit`: the pinned plan parsed and checked, the contract derived from it and
compared with the pinned one, every argument checked) without reading private data; then, in a
:func:`private_phase`, they rebuild the very same
:class:`~fedmugrep.federation.parties.TransactionParty` /
:class:`~fedmugrep.federation.parties.RegionParty` the local runtime uses (cached per process)
and dispatch the method. The party's ledger is the datasite's own and its data scientist is the
*verified* caller, so the owner's cap filters every release.

Releases that are *not* noised need the data owner's explicit opt-in on the datasite
(:func:`allow_exact_release`). :func:`review_lines` gives the owner's review sheet its first
lines, computed with the same admission code.

This module does not import ``syft`` (the datasite side needs only torch).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedmugrep.errors import (
    BudgetExceededError,
    ConfigError,
    FedMugRepError,
    LedgerIntegrityError,
    ReleaseRefusedError,
)
from fedmugrep.federation.admission import (
    check_contract_claims,
    derived_contract,
)
from fedmugrep.federation.contract import PrivacyContract
from fedmugrep.federation.parties import (
    PublicArtefacts,
    RegionParty,
    TransactionParty,
)
from fedmugrep.federation.plan import FederationPlan
from fedmugrep.federation.wire import (
    EXACT_RELEASE_FILE,
    PUBLIC_SCHEMA,
    Order,
    as_nanosecond_dates,
    decode_model_dict,
    pack_tensor,
    parameter_shapes,
    parse_payload,
    payload_arg,
    public_from_constant,
    public_hash,
    round_arg,
    tensor_arg,
    unpack_numeric,
)
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.pysyft.remote import RemoteContext

TRANSACTION_METHODS = ("release_intra", "step", "release_calibration", "evaluate")
REGION_METHODS = ("forward", "backward", "restore")


# ============================================================================ owner opt-in
def allow_exact_release(home: str | Path, *, by: str, reason: str) -> Path:
    """Data owner: accept releases *without noise* from this datasite (synthetic data, tests).

    Needed under a plan without privacy: by the region party when the plan releases its ``z``
    without noise, and by transaction parties for their model-1 gradients. Writes
    :data:`~fedmugrep.federation.wire.EXACT_RELEASE_FILE` in the datasite's home.

    Raises:
        ConfigError: on an empty ``by`` or ``reason``.
    """
    if not by.strip() or not reason.strip():
        raise ConfigError(
            "allow_exact_release needs who allows it and why; pass by=..., reason=..."
        )
    path = Path(home) / EXACT_RELEASE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"by": by, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}),
        encoding="utf-8",
    )
    return path


def _require_exact_release_allowed(home: Path, what: str) -> None:
    if not (home / EXACT_RELEASE_FILE).is_file():
        raise ConfigError(
            f"this request would release {what} without noise, and the data owner has not "
            f"allowed exact releases on this datasite; the owner may call "
            f"allow_exact_release('{home}', by=..., reason=...) for synthetic data, otherwise "
            "submit a plan with privacy"
        )


# ============================================================================ datasite side
_LOG = logging.getLogger("fedmugrep.datasite")
_CACHE: dict[tuple[str, ...], Any] = {}
_CACHE_LOCK = threading.Lock()


def clear_party_cache(home: str | Path | None = None) -> None:
    """Forget the parties this process built (what a datasite restart does).

    Args:
        home: only those of the datasite with this home folder (default: all).
    """
    with _CACHE_LOCK:
        if home is None:
            _CACHE.clear()
            return
        target = _home_key(home)
        for key in [k for k in _CACHE if k[1] == target]:
            del _CACHE[key]


def _home_key(home: str | Path) -> str:
    return str(Path(home).expanduser().resolve())


def _caller(ctx: RemoteContext) -> str:
    if not ctx.caller:
        raise ConfigError(
            "the datasite cannot tell who is calling; start it with launch_datasite so calls "
            "carry the verified caller"
        )
    return str(ctx.caller)


def transaction_call(data, contract, public, method, payload):
    from fedmugrep.pysyft.functions import transaction_call_impl  # shipped as source
    from fedmugrep.pysyft.remote import run_remote  # shipped as source

    return run_remote(
        transaction_call_impl,
        data=data,
        contract=contract,
        public=public,
        method=method,
        payload=payload,
    )


def region_call(data, mobility, contract, public, method, payload):
    from fedmugrep.pysyft.functions import region_call_impl  # shipped as source
    from fedmugrep.pysyft.remote import run_remote  # shipped as source

    return run_remote(
        region_call_impl,
        data=data,
        contract=contract,
        mobility=mobility,
        public=public,
        method=method,
        payload=payload,
    )


@dataclass(frozen=True)
class _Admission:
    """A request's pinned plan and artefacts as this datasite checked them (no data read)."""

    public: PublicArtefacts
    plan: FederationPlan
    run_id: str
    orders: dict[str, Order]
    key: str


def _admit(
    ctx: RemoteContext, public_d: Mapping, role: str, *, check_claims: bool = True
) -> _Admission:
    """Parse and check the pinned public constant, derive the privacy contract from its plan
    and refuse when the pinned contract claims anything else — all before any private data
    is read. Cached per (datasite, caller, public constant, contract).

    ``check_claims=False`` for requests whose contract is not the training run's (appraisal:
    its own contract, checked by its caller)."""
    caller = _caller(ctx)
    claimed = ctx.contract
    contract_d = claimed.to_dict() if hasattr(claimed, "to_dict") else claimed
    key = public_hash(
        {"public": public_d, "contract": contract_d, "role": role, "claims": check_claims}
    )
    cache_key = ("admission", _home_key(ctx.home), ctx.datasite, caller, key)
    with _CACHE_LOCK:
        hit = _CACHE.get(cache_key)
    if hit is not None:
        return hit
    public, plan, run_id = public_from_constant(public_d)
    n_comm = len(public.encoders.vocab.communities)
    derived = derived_contract(public, plan, role=role)
    if claimed is not None and check_claims:
        check_contract_claims(claimed, derived)
    if role == "region" and not plan.region_events(n_comm):
        _require_exact_release_allowed(ctx.home, "region representations z")
    if role == "transaction" and plan.privacy is None:
        _require_exact_release_allowed(ctx.home, "model-1 gradients")
    admission = _Admission(public, plan, run_id, parameter_shapes(public.model_config), key)
    with _CACHE_LOCK:
        _CACHE[cache_key] = admission
    return admission


@contextlib.contextmanager
def private_phase(ctx: RemoteContext, method: str) -> Iterator[None]:
    """Code that reads private data: a failure says nothing about the data.

    Whether a computation on private rows fails can depend on those rows (one sale in a
    community the vocabulary lacks, say), and an error message may quote them; so inside
    this block any error except the owner's budget and ledger refusals becomes one generic
    :class:`~fedmugrep.errors.ReleaseRefusedError` with a reference id, and the detail goes to
    the owner's log only (logger ``fedmugrep.datasite`` and ``<home>/logs/refusals.log``).
    Nothing is released and nothing is charged.
    """
    try:
        yield
    except (BudgetExceededError, LedgerIntegrityError):
        raise  # about the owner's budget and ledger, not about the data
    except Exception as exc:  # noqa: BLE001 - every data-dependent failure looks the same
        ref = uuid.uuid4().hex[:12]
        detail = f"{type(exc).__name__}: {exc}"
        _LOG.warning("refused %s for %s (ref %s): %s", method, ctx.caller, ref, detail)
        try:
            folder = Path(ctx.home) / "logs"
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            line = (
                f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\t{ref}\t{ctx.caller}\t{method}\t{detail}\n"
            )
            fd = os.open(folder / "refusals.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError:
            pass
        raise ReleaseRefusedError(
            f"the datasite could not compute {method!r} on its data; nothing was released or "
            f"charged. The data owner's log has the detail under reference {ref}"
        ) from None


def _transaction_party(
    ctx: RemoteContext, frame: pd.DataFrame, admission: _Admission
) -> TransactionParty:
    caller = _caller(ctx)
    key = ("transaction", _home_key(ctx.home), ctx.datasite, caller, admission.key)
    with _CACHE_LOCK:
        party = _CACHE.get(key)
        if party is None:
            with torch.random.fork_rng(devices=[]):
                party = TransactionParty(
                    ctx.datasite,
                    as_nanosecond_dates(frame),
                    ctx.home,
                    admission.public,
                    admission.plan,
                    data_scientist=caller,
                    request_id=admission.run_id,
                )
            _CACHE[key] = party
    return party


def transaction_call_impl(
    ctx: RemoteContext, data: pd.DataFrame, *, public: Mapping, method: str, payload: str
) -> dict[str, Any]:
    """Run one :class:`TransactionParty` method on the private transactions.

    Methods and payloads (arrays packed with :func:`pack_array`):

    * ``release_intra``: ``{"theta"}`` -> ``{"sums", "counts", "n"}``;
    * ``step``: ``{"round", "theta", "z", "previous"}`` (``previous`` ``""`` for none) ->
      ``{"theta" (base64 of SparseUpdate.to_bytes()), "z_grad", "loss_sum", "nbytes"}``;
    * ``release_calibration``: ``{"theta", "z"}`` -> ``{"z2", "err", "count"}``;
    * ``evaluate``: ``{"theta", "z", "split"}`` -> the metrics dict.

    ``theta`` and ``previous`` are :func:`encode_model_dict` strings (model 1's tensors in the
    public order). The plan, the contract and every argument are checked before the private
    frame is read (:func:`_admit`); what happens after that is a :func:`private_phase`.

    Shapes:
        z, z_grad: ``[C, H]``; sums: ``[C, m]``; counts: ``[C]``; z2, err, count: ``[D]``.

    Raises:
        ConfigError: on an unknown method, a malformed payload, or a plan or contract this
            datasite refuses.
        BudgetExceededError: when the owner's cap refuses the release (nothing released).
        ReleaseRefusedError: when the computation on private data failed (detail in the
            owner's log).
    """
    if not isinstance(method, str) or method not in TRANSACTION_METHODS:
        raise ConfigError(
            f"unknown method {method!r:.60}; choose one of {list(TRANSACTION_METHODS)}"
        )
    admission = _admit(ctx, public, "transaction")
    orders, cfg = admission.orders, admission.public.model_config
    args = parse_payload(payload)
    theta = decode_model_dict(payload_arg(args, "theta"), orders)
    n_comm = len(admission.public.encoders.vocab.communities)
    z = None if method == "release_intra" else tensor_arg(args, "z", (n_comm, cfg.z_dim))
    split, round_index, previous = "test", 0, None
    if method == "evaluate":
        split = args.get("split", "test")
        if split not in ("val", "test"):
            raise ConfigError(f"evaluate: split must be 'val' or 'test' (got {split!r:.40})")
    if method == "step":
        round_index = round_arg(args, low=0)
        prev_text = payload_arg(args, "previous")
        previous = decode_model_dict(prev_text, orders) if prev_text else None
    with private_phase(ctx, method):
        party = _transaction_party(ctx, data, admission)
        if method == "release_intra":
            sums, counts, n = party.release_intra(theta)
            return {"sums": pack_tensor(sums), "counts": pack_tensor(counts), "n": float(n)}
        assert z is not None
        if method == "release_calibration":
            z2, err, count = party.release_calibration(theta, z)
            return {
                "z2": pack_tensor(z2),
                "err": pack_tensor(err),
                "count": pack_tensor(count),
            }
        if method == "evaluate":
            metrics = party.evaluate(theta, z, split)
            return {k: (v if isinstance(v, str) else float(v)) for k, v in metrics.items()}
        reply = party.step(round_index, theta, z, previous)
        return {
            "theta": base64.b64encode(reply.theta.to_bytes()).decode("ascii"),
            "z_grad": pack_tensor(reply.z_grad),
            "loss_sum": float(reply.loss_sum),
            "nbytes": int(reply.nbytes),
        }


class _RegionState:
    """A region party plus where its state lives (``<home>/fedmugrep_region/<run id>``)."""

    def __init__(self, party: RegionParty, folder: Path) -> None:
        self.party, self.folder = party, folder
        self.last_round: int | None = None

    @property
    def model_file(self) -> Path:
        return self.folder / "region_model.pt"

    def snapshot_file(self, round_index: int) -> Path:
        return self.folder / f"model_round_{round_index}.pt"

    @property
    def intra_file(self) -> Path:
        return self.folder / "pooled_intra.npy"

    def reload(self) -> None:
        """Pick up the state a previous process of this datasite left (after a restart)."""
        if self.model_file.is_file():
            state = torch.load(self.model_file, weights_only=True)
            self.party.model.load_state_dict(state["model"])
            self.party.opt.load_state_dict(state["opt"])
            self.last_round = int(state["round"])
            self.party.version = int(state.get("version", self.last_round + 1))
        if self.intra_file.is_file():
            self.party._intra = torch.from_numpy(np.load(self.intra_file, allow_pickle=False))


def _region_state(
    ctx: RemoteContext, comms: pd.DataFrame, mobility: pd.DataFrame, admission: _Admission
) -> _RegionState:
    from fedmugrep.training.prepare import community_graph  # deferred: loads torch

    key = ("region", _home_key(ctx.home), ctx.datasite, _caller(ctx), admission.key)
    with _CACHE_LOCK:
        state = _CACHE.get(key)
        if state is None:
            public, plan, run_id = admission.public, admission.plan, admission.run_id
            cg = community_graph(public.encoders, public.graph_config, comms, mobility)
            width = int(cg.attrs.shape[1])
            if width != public.model_config.attr_dim:
                raise ConfigError(
                    f"the community table encodes to {width} attributes but the public "
                    f"ModelConfig says attr_dim={public.model_config.attr_dim}; derive attr_dim "
                    "from the region datasite's mock (same columns)"
                )
            folder = ctx.home / "fedmugrep_region" / run_id
            with torch.random.fork_rng(devices=[]):
                party = RegionParty(
                    cg,
                    public.model_config,
                    plan,
                    folder,
                    init_state=public.init_state["region"] if public.init_state else None,
                    name=ctx.datasite,
                    data_scientist=_caller(ctx),
                    request_id=run_id,
                    ledger=Ledger(ctx.home),
                )
            state = _RegionState(party, folder)
            state.reload()
            _CACHE[key] = state
    return state


def region_call_impl(
    ctx: RemoteContext,
    data: pd.DataFrame,
    *,
    mobility: pd.DataFrame,
    public: Mapping,
    method: str,
    payload: str,
) -> dict[str, Any]:
    """Run one :class:`RegionParty` method on the private community table and mobility.

    Methods and payloads:

    * ``forward``: ``{"round", "pooled"}`` -> ``{"z"}`` (``round`` -1: evaluation);
    * ``backward``: ``{"round", "z_grad"}`` -> ``{"round", "z"}``: updates model 2, saves
      ``region_model.pt`` (by :class:`RegionParty`) and a snapshot for ``restore``, and
      returns the ``z`` of the new state (the release the next ``forward`` would replay);
    * ``restore``: ``{"round"}`` -> ``{"round"}``: load that round's snapshot (the
      coordinator's best-validation model). Model 2's parameters never leave the datasite.

    As on a transaction datasite, the plan, contract and arguments are checked before the
    private tables are read; the rest is a :func:`private_phase`.

    Shapes:
        pooled: ``[C, m]``; z, z_grad: ``[C, H]``.

    Raises:
        ConfigError: on an unknown method, a malformed payload, a round without snapshot, a
            plan or contract this datasite refuses, or when the owner has not allowed exact
            releases and the plan releases ``z`` without noise.
    """
    if not isinstance(method, str) or method not in REGION_METHODS:
        raise ConfigError(f"unknown method {method!r:.60}; choose one of {list(REGION_METHODS)}")
    admission = _admit(ctx, public, "region")
    args = parse_payload(payload)
    round_index = round_arg(args, low=-1)
    n_comm, cfg = len(admission.public.encoders.vocab.communities), admission.public.model_config
    pooled = grad = None
    if method == "forward":
        pooled = tensor_arg(args, "pooled", (n_comm, cfg.intra_width))
    elif method == "backward":
        grad = tensor_arg(args, "z_grad", (n_comm, cfg.z_dim))
    state = _region_state(ctx, data, mobility, admission)
    party = state.party
    if method == "forward":
        assert pooled is not None
        state.folder.mkdir(parents=True, exist_ok=True)
        np.save(state.intra_file, pooled.numpy(), allow_pickle=False)
        with private_phase(ctx, method):
            return {"z": pack_tensor(party.forward(round_index, pooled))}
    if method == "backward":
        if party._intra is None:
            raise ConfigError("backward needs a forward first; call forward for this round")
        assert grad is not None
        with private_phase(ctx, method):
            z = party.backward(round_index, grad)
        torch.save(party.model.state_dict(), state.snapshot_file(round_index))
        state.last_round = round_index
        return {"round": round_index, "z": pack_tensor(z)}
    snap = state.snapshot_file(round_index)
    if not snap.is_file():
        raise ConfigError(f"no region model snapshot for round {round_index}; nothing restored")
    party.model.load_state_dict(torch.load(snap, weights_only=True))
    party.version = round_index + 1  # the state after round r's update (one update per round)
    torch.save(
        {
            "model": party.model.state_dict(),
            "opt": party.opt.state_dict(),
            "round": round_index,
            "version": party.version,
        },
        state.model_file,
    )
    return {"round": round_index}


# ============================================================================ owner's review
def review_lines(constants: Mapping[str, Any], *, role: str, call_cap: int | None) -> list[str]:
    """The privacy lines that lead a federation request's review sheet, computed with the
    datasite's own admission code (:func:`_admit`'s checks) from the pinned constants; empty
    when the request pins no federation plan."""
    from fedmugrep.federation.admission import review_summary  # deferred: loads torch

    public_d = next(
        (
            v
            for v in constants.values()
            if isinstance(v, Mapping) and v.get("schema") == PUBLIC_SCHEMA
        ),
        None,
    )
    if public_d is None:
        return []
    contract_d = next(
        (
            v
            for v in constants.values()
            if isinstance(v, Mapping)
            and str(v.get("schema", "")).startswith("fedmugrep.privacy-contract")
        ),
        None,
    )
    try:
        public, plan, _ = public_from_constant(public_d)
        n_comm = len(public.encoders.vocab.communities)
        claimed = PrivacyContract.from_dict(contract_d) if contract_d is not None else None
        if claimed is not None:
            check_contract_claims(claimed, derived_contract(public, plan, role=role))
    except FedMugRepError as exc:
        return review_summary(
            plan=None, role=role, n_communities=0, call_cap=call_cap, refusal=str(exc)
        )
    return review_summary(
        plan=plan, role=role, n_communities=n_comm, call_cap=call_cap, claimed=claimed
    )


def describe_public_constant(value: Mapping[str, Any]) -> str:
    """A few lines for the public constant instead of its JSON: its digest, the sizes of the
    vocabularies, the configs, and the initial region weights by size and digest."""
    enc = value.get("encoders", {}) if isinstance(value, Mapping) else {}
    init = value.get("init_region") if isinstance(value, Mapping) else None
    digest = public_hash(value)[:16]
    return "\n".join(
        [
            f"public artefacts (sha256 {digest}…): run id {value.get('run_id')!r}, "
            f"{len(enc.get('communities', []))} communities, "
            f"{len(enc.get('districts', []))} districts, split dates "
            f"{value.get('val_start')} / {value.get('test_start')}",
            f"  graph_config: {value.get('graph_config')}",
            f"  model_config: {value.get('model_config')}",
            f"  initial region weights: {_weights_label(init)}",
        ]
    )


def _weights_label(init: Any) -> str:
    """Packed tensors by count, number of values and digest (never their base64)."""
    if not init:
        return "none"
    if not isinstance(init, Mapping):
        return f"malformed ({type(init).__name__}); the datasite refuses it"
    text = json.dumps(init, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    try:
        values = sum(int(unpack_numeric(v, str(n)).size) for n, v in init.items())
    except ConfigError as exc:
        return f"{len(init)} tensors, malformed ({exc}); the datasite refuses them"
    return (
        f"{len(init)} tensors, {values:,} values, sha256 {digest}… (public, from mock pretraining)"
    )

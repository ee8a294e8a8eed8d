"""The federation's parties on real PySyft datasites: remote functions and their proxies.

One approved request per datasite serves the whole run. The data scientist submits
:func:`transaction_call` to every transaction datasite and :func:`region_call` to the region
datasite, each pinning two ``sy.Constant`` values the data owner reviews once:

* ``contract``: the :class:`~fedmugrep.federation.syft_contract.PrivacyContract` (mechanisms,
  epsilons, fedmugrep version and code hash);
* ``public``: the public artefacts and the plan (:func:`public_constant`): the encoders'
  ``state_dict``, ``ModelConfig``, ``GraphConfig``, ``FederationPlan`` (with its
  ``PrivacyPlan``, which sets the noise), the split dates and a run id. Pinning matters: the
  plan decides how much noise the datasite adds, so the data scientist must not be able to pass
  another one per call.

Each call then passes ``method`` (``"release_intra"``, ``"step"``, ``"evaluate"`` on a
transaction datasite; ``"forward"``, ``"backward"``, ``"restore"`` on the region datasite) and a
JSON ``payload`` whose arrays are packed with :func:`~fedmugrep.federation.syft_remote.pack_array`
(PySyft serialises lists element by element; one string is ~10x cheaper).

Inside the datasite, :func:`transaction_call_impl` / :func:`region_call_impl` rebuild the very
same :class:`~fedmugrep.federation.parties.TransactionParty` /
:class:`~fedmugrep.federation.parties.RegionParty` the local runtime uses (cached per process,
keyed by datasite home, datasite, caller and the hash of the public constant) and dispatch the
method. The transaction party's ledger is the datasite's own (``datasite_home()``), its data
scientist is the *verified* caller e-mail (:func:`~fedmugrep.federation.syft_remote.current_call`),
so the owner's cap (``Ledger(home).set_cap(email, datasite_name, ...)``) filters every release
and a :class:`~fedmugrep.errors.BudgetExceededError` reaches the data scientist by class.

On the data scientist's side, :class:`SyftTransactionParty` and :class:`SyftRegionParty` have
exactly the methods (and the ``layout``/``nm``/``model`` attributes) the
:class:`~fedmugrep.federation.coordinator.Coordinator` uses, so it runs unchanged over datasites.

Releases that are *not* noised need the data owner's explicit opt-in on the datasite
(:func:`allow_exact_release`): the region party's ``z`` (not yet noised, see
docs/FEDERATION.md) and, with ``plan.privacy=None``, every transaction release. Without the
opt-in the datasite refuses with a :class:`~fedmugrep.errors.ConfigError`.

Model 2 stays on the region datasite: its state lives under
``<home>/fedmugrep_region/<run id>/`` (``region_model.pt`` after every backward, plus one
model snapshot per round), a fresh process (datasite restart) reloads it, and the coordinator's
"keep the best model" bookkeeping (``region.model.state_dict()``/``load_state_dict``) handles
only a round tag; :meth:`_RegionModelHandle.load_state_dict` asks the datasite to restore that
round's snapshot.

This module does not import ``syft`` at import time (the datasite side needs only torch).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedmugrep.compression import ChannelLayout, SparseUpdate, channel_layout
from fedmugrep.errors import (
    BudgetExceededError,
    ConfigError,
    DatasiteUnresponsiveError,
    FedMugRepError,
    LedgerIntegrityError,
    ReleaseRefusedError,
)
from fedmugrep.federation.admission import (
    check_artefacts,
    check_contract_claims,
    region_contract,
    transaction_contract,
    update_coordinates,
)
from fedmugrep.federation.parties import (
    PublicArtefacts,
    RegionParty,
    StepReply,
    TransactionParty,
)
from fedmugrep.federation.plan import FederationPlan, PrivacyPlan
from fedmugrep.federation.syft_remote import RemoteContext, pack_array, unpack_array
from fedmugrep.models.mugrep import EventModel, ModelConfig
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.training.prepare import Encoders, GraphConfig

__all__ = [
    "EXACT_RELEASE_FILE",
    "PUBLIC_SCHEMA",
    "CallStat",
    "SyftRegionParty",
    "SyftTransactionParty",
    "allow_exact_release",
    "as_nanosecond_dates",
    "clear_party_cache",
    "decode_model_dict",
    "encode_model_dict",
    "model_orders",
    "pack_theta",
    "parameter_shapes",
    "public_constant",
    "public_from_constant",
    "public_hash",
    "region_call",
    "region_call_impl",
    "transaction_call",
    "transaction_call_impl",
    "unpack_theta",
]

#: Identifies the layout of :func:`public_constant`.
PUBLIC_SCHEMA = "fedmugrep.federation-public/1"

#: File in a datasite's home by which its owner accepts releases without noise.
EXACT_RELEASE_FILE = "fedmugrep_allow_exact_release.json"

TRANSACTION_METHODS = ("release_intra", "step", "release_calibration", "evaluate")
REGION_METHODS = ("forward", "backward", "restore")


# ============================================================================ public constant
def public_constant(public: PublicArtefacts, plan: FederationPlan, *, run_id: str) -> dict:
    """The JSON-able dict pinned as the ``public`` ``sy.Constant`` of every request of a run.

    Args:
        public: the public artefacts (fitted on mock / public data only).
        plan: the federation plan, including its privacy plan (which sets the noise).
        run_id: identifies the run; the datasites record it as the ledger's request id and
            keep the region model's state under it.

    Raises:
        ConfigError: on an empty ``run_id``.
    """
    check_run_id(run_id)
    return {
        "schema": PUBLIC_SCHEMA,
        "run_id": run_id,
        "encoders": public.encoders.state_dict(),
        "model_config": asdict(public.model_config),
        "graph_config": asdict(public.graph_config),
        "plan": asdict(plan),
        "val_start": public.val_start.isoformat(),
        "test_start": public.test_start.isoformat(),
        # public starting weights of model 2 (mock pretraining), or None; model 1's travel
        # with every call as theta
        "init_region": None
        if public.init_state is None
        else {n: _pack_tensor(v) for n, v in public.init_state["region"].items()},
    }


def public_from_constant(data: Mapping[str, Any]) -> tuple[PublicArtefacts, FederationPlan, str]:
    """Inverse of :func:`public_constant`: ``(public artefacts, plan, run id)``.

    Raises:
        ConfigError: on a wrong schema, or fields that do not fit this fedmugrep's classes.
    """
    if not isinstance(data, Mapping) or data.get("schema") != PUBLIC_SCHEMA:
        got = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
        raise ConfigError(
            f"the public constant has schema {got!r}, expected {PUBLIC_SCHEMA!r}; build it with "
            "public_constant(...)"
        )
    try:
        plan_d = dict(data["plan"])
        privacy = plan_d.pop("privacy", None)
        plan = FederationPlan(
            **plan_d, privacy=None if privacy is None else PrivacyPlan(**dict(privacy))
        )
        public = PublicArtefacts(
            Encoders.from_state_dict(json.loads(json.dumps(data["encoders"]))),
            ModelConfig(**dict(data["model_config"])),
            GraphConfig(**dict(data["graph_config"])),
            pd.Timestamp(data["val_start"]),
            pd.Timestamp(data["test_start"]),
        )
        init = data.get("init_region")
        if init is not None:
            public.init_state = {
                "region": {
                    n: torch.from_numpy(
                        _finite_float32(_unpack_numeric(v, f"init_region[{n}]"), n).copy()
                    )
                    for n, v in dict(init).items()
                }
            }
        run_id = check_run_id(data["run_id"])
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"the public constant does not fit this fedmugrep ({type(exc).__name__}: {exc}); "
            "build it with the same fedmugrep version as the datasite"
        ) from exc
    check_artefacts(public.encoders, public.model_config, public.graph_config, plan)
    return public, plan, run_id


#: Run ids: letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit (so never
#: ``.`` or ``..``), at most 128 characters. They name folders on the datasite.
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_id(run_id: Any) -> str:
    """``run_id`` if it matches :data:`RUN_ID_PATTERN`.

    Raises:
        ConfigError: otherwise (it names folders on the datasite: ``..`` would escape them).
    """
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
        raise ConfigError(
            f"run_id must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit (got {str(run_id)[:40]!r}); pass e.g. a uuid4().hex"
        )
    return run_id


def public_hash(data: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a public constant (the party cache key)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ============================================================================ packing
Order = list[tuple[str, tuple[int, ...]]]


def model_orders(model: torch.nn.Module) -> dict[str, Order]:
    """The public orders of model 1's tensors: ``"state"`` (``state_dict()``: parameters and
    buffers, what the coordinator broadcasts) and ``"params"`` (``named_parameters()``: what
    updates and aggregates cover)."""
    return {
        "state": [(n, tuple(v.shape)) for n, v in model.state_dict().items()],
        "params": [(n, tuple(v.shape)) for n, v in model.named_parameters()],
    }


def parameter_shapes(model_config: ModelConfig) -> dict[str, Order]:
    """:func:`model_orders` of ``EventModel(model_config)``, built under a forked RNG so the
    caller's random state is untouched."""
    with torch.random.fork_rng(devices=[]):
        model = EventModel(model_config)
    return model_orders(model)


def pack_theta(theta: Mapping[str, torch.Tensor], order: Order) -> str:
    """Model-1 tensors (parameters, buffers, or an update) as one packed float32 vector.

    Shapes:
        theta: ``{name: shape}`` for every name of ``order``; result: ``[sum of sizes]``.

    Raises:
        ConfigError: when a tensor is missing, has another shape, or is not floating point.
    """
    parts = []
    for name, shape in order:
        if name not in theta:
            raise ConfigError(f"tensor '{name}' is missing from theta; pass every one")
        value = theta[name].detach().cpu()
        if not value.is_floating_point():
            raise ConfigError(f"tensor '{name}' is {value.dtype}; only float tensors are packed")
        if tuple(value.shape) != shape:
            raise ConfigError(
                f"tensor '{name}' has shape {tuple(value.shape)}, the public model {shape}"
            )
        parts.append(value.to(torch.float32).reshape(-1).numpy())
    return pack_array(np.concatenate(parts) if parts else np.zeros(0, np.float32))


def unpack_theta(text: str, order: Order) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack_theta`.

    Raises:
        ConfigError: when ``text`` is not a packed numeric array, holds NaN or infinite values
            (also after the cast to float32), or its length does not match ``order``.
    """
    flat = _finite_float32(_unpack_numeric(text, "packed theta"), "packed theta").reshape(-1)
    total = sum(int(np.prod(shape)) for _, shape in order)
    if flat.size != total:
        raise ConfigError(
            f"packed theta has {flat.size} values, the public model {total}; use the same "
            "ModelConfig on both sides"
        )
    out, start = {}, 0
    for name, shape in order:
        size = int(np.prod(shape))
        out[name] = torch.from_numpy(flat[start : start + size].copy()).reshape(shape)
        start += size
    return out


def encode_model_dict(values: Mapping[str, torch.Tensor], orders: Mapping[str, Order]) -> str:
    """``"<kind>:<packed>"`` with the order (``state`` or ``params``) whose names ``values`` has.

    Raises:
        ConfigError: when the names match neither order.
    """
    for kind, order in orders.items():
        if set(values) == {n for n, _ in order}:
            return f"{kind}:{pack_theta(values, order)}"
    raise ConfigError(
        f"the tensors {sorted(values)[:4]}... match neither the public state_dict nor the "
        "parameters of model 1; use the public ModelConfig"
    )


def decode_model_dict(text: str, orders: Mapping[str, Order]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`encode_model_dict`."""
    kind, _, packed = str(text).partition(":")
    if kind not in orders:
        raise ConfigError(f"unknown tensor order {kind!r}; expected one of {sorted(orders)}")
    return unpack_theta(packed, orders[kind])


def _pack_tensor(t: torch.Tensor) -> str:
    return pack_array(t.detach().cpu().numpy())


def _unpack_tensor(text: str) -> torch.Tensor:
    return torch.from_numpy(np.array(unpack_array(text)))


def as_nanosecond_dates(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with every datetime column in ``datetime64[ns]``.

    PySyft 0.9.5 stores DataFrames through Arrow and hands them back with ``datetime64[us]``;
    :func:`~fedmugrep.training.prepare.temporal_split` reads dates as nanosecond integers, so
    every frame that came through PySyft goes through here first.
    """
    out = frame.copy()
    for col in out.columns:
        dtype = out[col].dtype
        if pd.api.types.is_datetime64_any_dtype(dtype) and not isinstance(
            dtype, pd.DatetimeTZDtype
        ):
            out[col] = out[col].astype("datetime64[ns]")
    return out


def _unpack_numeric(text: Any, what: str) -> np.ndarray:
    """A packed numeric array from a payload field; anything else is a :class:`ConfigError`.

    ``np.load`` raises many exception types on corrupt bytes (and opens an ``.npz`` archive);
    none of them may escape a remote function as a raw exception.
    """
    if not isinstance(text, str):
        raise ConfigError(
            f"{what} must be a packed array string (got {type(text).__name__}); build it with "
            "pack_array(x)"
        )
    try:
        arr = unpack_array(text)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt .npy bytes: EOFError, SyntaxError, ...
        raise ConfigError(
            f"{what} is not a packed array ({type(exc).__name__}); build it with pack_array(x)"
        ) from None
    if not isinstance(arr, np.ndarray):
        close = getattr(arr, "close", None)
        if callable(close):
            close()
        raise ConfigError(
            f"{what} must be one packed array (got {type(arr).__name__}); build it with "
            "pack_array(x)"
        )
    if arr.dtype.kind not in "fiu":
        raise ConfigError(
            f"{what} must hold integers or floats (got dtype {arr.dtype}); send a float array"
        )
    return arr


def _finite_float32(arr: np.ndarray, what: str) -> np.ndarray:
    """``arr`` as float32; NaN or infinite values (also from overflow in the cast) are refused."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ConfigError(
            f"{what} holds NaN or infinite values (or values beyond float32); send finite numbers"
        )
    return out


def _tensor_arg(data: Mapping[str, Any], key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The packed float tensor ``data[key]``, checked against the public ``shape``.

    Raises:
        ConfigError: when it is missing, not a packed numeric array, of another shape, or holds
            NaN or infinite values.
    """
    arr = _unpack_numeric(_arg(data, key), f"payload '{key}'")
    if tuple(arr.shape) != tuple(shape):
        raise ConfigError(
            f"payload '{key}' has shape {tuple(arr.shape)}, expected {tuple(shape)} (from the "
            "public ModelConfig and vocabulary); the proxies build it"
        )
    return torch.from_numpy(_finite_float32(arr, f"payload '{key}'").copy())


#: Largest round index a remote call accepts.
MAX_ROUND = 2**31 - 1


def _round_arg(data: Mapping[str, Any], *, low: int) -> int:
    """``data["round"]`` as an int in ``[low, MAX_ROUND]``.

    Raises:
        ConfigError: when it is missing, not a JSON integer, or out of range.
    """
    value = _arg(data, "round")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"payload 'round' must be an integer (got {type(value).__name__} {value!r:.40}); "
            "pass the round index"
        )
    if not low <= value <= MAX_ROUND:
        raise ConfigError(
            f"payload 'round' must be in [{low}, {MAX_ROUND}] (got {str(value)[:24]}); pass the "
            "round index"
        )
    return value


def _payload(text: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ConfigError(
            f"payload must be a JSON string (got {type(text).__name__}); the proxies build it"
        )
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"payload is not JSON ({exc}); the proxies build it") from exc
    except RecursionError:
        raise ConfigError("payload is nested too deeply to be JSON the proxies build") from None
    if not isinstance(data, dict):
        raise ConfigError(f"payload must be a JSON object (got {type(data).__name__})")
    return data


def _arg(data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise ConfigError(f"payload lacks '{key}'; the proxies build it")
    return data[key]


# ============================================================================ owner opt-in
def allow_exact_release(home: str | Path, *, by: str, reason: str) -> Path:
    """Data owner: accept releases *without noise* from this datasite (synthetic data, tests).

    Needed for the region party (its ``z`` is not noised yet) and for transaction parties under
    a plan without privacy. Writes :data:`EXACT_RELEASE_FILE` in the datasite's home.

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
    from fedmugrep.federation.syft_parties import transaction_call_impl
    from fedmugrep.federation.syft_remote import run_remote

    return run_remote(
        transaction_call_impl,
        data=data,
        contract=contract,
        public=public,
        method=method,
        payload=payload,
    )


def region_call(data, mobility, contract, public, method, payload):
    from fedmugrep.federation.syft_parties import region_call_impl
    from fedmugrep.federation.syft_remote import run_remote

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
    if role == "region":
        derived = region_contract(plan, n_communities=n_comm)
    else:
        laplace = plan.privacy is not None and plan.privacy.update_mechanism == "laplace"
        n_coords = update_coordinates(public.model_config) if laplace else None
        derived = transaction_contract(plan, n_coords=n_coords)
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
    args = _payload(payload)
    theta = decode_model_dict(_arg(args, "theta"), orders)
    n_comm = len(admission.public.encoders.vocab.communities)
    z = None if method == "release_intra" else _tensor_arg(args, "z", (n_comm, cfg.z_dim))
    split, round_index, previous = "test", 0, None
    if method == "evaluate":
        split = args.get("split", "test")
        if split not in ("val", "test"):
            raise ConfigError(f"evaluate: split must be 'val' or 'test' (got {split!r:.40})")
    if method == "step":
        round_index = _round_arg(args, low=0)
        prev_text = _arg(args, "previous")
        previous = decode_model_dict(prev_text, orders) if prev_text else None
    with private_phase(ctx, method):
        party = _transaction_party(ctx, data, admission)
        if method == "release_intra":
            sums, counts, n = party.release_intra(theta)
            return {"sums": _pack_tensor(sums), "counts": _pack_tensor(counts), "n": float(n)}
        assert z is not None
        if method == "release_calibration":
            z2, err, count = party.release_calibration(theta, z)
            return {
                "z2": _pack_tensor(z2),
                "err": _pack_tensor(err),
                "count": _pack_tensor(count),
            }
        if method == "evaluate":
            metrics = party.evaluate(theta, z, split)
            return {k: (v if isinstance(v, str) else float(v)) for k, v in metrics.items()}
        reply = party.step(round_index, theta, z, previous)
        return {
            "theta": base64.b64encode(reply.theta.to_bytes()).decode("ascii"),
            "z_grad": _pack_tensor(reply.z_grad),
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
    from fedmugrep.training.prepare import community_graph

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
    args = _payload(payload)
    round_index = _round_arg(args, low=-1)
    n_comm, cfg = len(admission.public.encoders.vocab.communities), admission.public.model_config
    pooled = grad = None
    if method == "forward":
        pooled = _tensor_arg(args, "pooled", (n_comm, cfg.intra_width))
    elif method == "backward":
        grad = _tensor_arg(args, "z_grad", (n_comm, cfg.z_dim))
    state = _region_state(ctx, data, mobility, admission)
    party = state.party
    if method == "forward":
        assert pooled is not None
        state.folder.mkdir(parents=True, exist_ok=True)
        np.save(state.intra_file, pooled.numpy(), allow_pickle=False)
        with private_phase(ctx, method):
            return {"z": _pack_tensor(party.forward(round_index, pooled))}
    if method == "backward":
        if party._intra is None:
            raise ConfigError("backward needs a forward first; call forward for this round")
        assert grad is not None
        with private_phase(ctx, method):
            z = party.backward(round_index, grad)
        torch.save(party.model.state_dict(), state.snapshot_file(round_index))
        state.last_round = round_index
        return {"round": round_index, "z": _pack_tensor(z)}
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


# ============================================================================ proxies
@dataclass(frozen=True)
class CallStat:
    """One remote call as the data scientist saw it.

    Attributes:
        party: datasite name.
        method: the remote method.
        seconds: wall time of the call (request, execution, reply).
        sent_bytes: characters of the per-call arguments (method and payload).
        received_bytes: characters of the reply's strings (packed arrays) plus 8 per number.
    """

    party: str
    method: str
    seconds: float
    sent_bytes: int
    received_bytes: int


def _reply_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(len(str(k)) + _reply_size(v) for k, v in value.items())
    return 8


class _Remote:
    """Calls one approved function on one datasite and records :class:`CallStat`.

    Made to survive datasite restarts and coordinator crashes without spending extra calls of
    the request's call cap:

    * **Dead datasite.** A server that is down or restarting makes the PySyft client raise
      ``requests``' connection errors (``OSError`` subclasses); they are raised as the
      built-in :class:`ConnectionError`, which the coordinator retries with backoff
      (``plan.retries``, ``plan.retry_backoff``); ``retries`` here does the same for calls the
      coordinator does not retry itself. The PySyft client object survives a server restart
      on the same URL (its user key is in the datasite's database), so no new login is needed.
    * **Journal** (``journal`` folder, on the data scientist's disk): every reply of a
      ``cacheable`` method is kept under a key of (method, payload, ``tag``); a *later process*
      (a resumed coordinator) making the same call again is answered from it without running
      anything remotely, so it replays the round after its checkpoint for free. The
      datasite's releases are idempotent per (run, key), so the journal holds exactly what the
      datasite would send again. Within one process every call is made (the call counts match
      :func:`~fedmugrep.federation.syft_federation.planned_calls`).
    * **Lost replies.** A call can run on the datasite, and count against its cap, while its
      reply is lost (server killed after running it, coordinator killed mid-call). Before each
      call an *intent* (key, executions so far) is written; after a connection error, or when a
      new process finds an intent, the datasite's execution history is read: one more output
      than the intent recorded is the lost reply, fetched instead of running the call again.
    """

    def __init__(
        self,
        name: str,
        client: Any,
        function_name: str,
        assets: Mapping[str, Any],
        *,
        journal: str | Path | None = None,
        cacheable: frozenset[str] = frozenset(),
        retries: int = 0,
        retry_backoff: float = 0.5,
        on_recovered: Any = None,
        call_timeout: float | None = None,
    ) -> None:
        self.name, self.client, self.function_name = name, client, function_name
        self.call_timeout = call_timeout
        self.assets = dict(assets)
        self.calls: list[CallStat] = []
        self.replayed = 0  # calls answered from the journal
        self.recovered = 0  # lost replies fetched from the datasite's execution history
        self.journal = None if journal is None else Path(journal)
        if self.journal is not None:
            self.journal.mkdir(parents=True, exist_ok=True)
        self.cacheable = frozenset(cacheable)
        self.retries, self.retry_backoff = int(retries), float(retry_backoff)
        self.on_recovered = on_recovered
        self._executions: int | None = None  # private executions on the datasite, when known
        self._written: set[str] = set()  # journaled by this process: calls it meant to make

    # ------------------------------------------------------------------ journal
    def _text_and_key(self, method: str, payload: Mapping[str, Any], tag: Any) -> tuple[str, str]:
        """The payload as sent (compact JSON) and the call's journal key."""
        text = json.dumps(payload, separators=(",", ":"))
        return text, self._key(method, text, tag)

    def prime(self, method: str, payload: Mapping[str, Any], value: Any, *, tag: Any) -> None:
        """Journal ``value`` as the reply of a call not made yet: a later call of ``method``
        with exactly ``payload`` and ``tag`` (in this process or a resumed one) reads it
        instead of running. Only for a cacheable method whose datasite would answer the same.
        """
        if self.journal is not None and method in self.cacheable:
            _, key = self._text_and_key(method, payload, tag)
            self._journal_put(key, method, value, mine=False)

    def _key(self, method: str, text: str, tag: Any) -> str:
        raw = json.dumps([self.function_name, method, text, tag], separators=(",", ":"))
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:40]

    @property
    def _intent_file(self) -> Path | None:
        return None if self.journal is None else self.journal / "intent.json"

    def _journal_get(self, key: str) -> Any:
        if self.journal is None or not (self.journal / f"{key}.json").is_file():
            return None
        return json.loads((self.journal / f"{key}.json").read_text(encoding="utf-8"))

    def _write(self, path: Path, value: Any) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)

    def _journal_put(self, key: str, method: str, value: Any, *, mine: bool = True) -> None:
        if self.journal is not None and method in self.cacheable:
            self._write(self.journal / f"{key}.json", value)
            if mine:  # a recovered reply stays available to the call it belongs to
                self._written.add(key)

    def _deadline(self, fn: Any, what: str) -> Any:
        from fedmugrep.federation.syft_runtime import with_deadline

        return with_deadline(fn, self.call_timeout, f"datasite '{self.name}', {what}")

    def _executions_now(self) -> int:
        from fedmugrep.federation.syft_runtime import execution_outputs

        return self._deadline(
            lambda: len(execution_outputs(self.client, self.function_name)), "execution history"
        )

    def resolve_pending(self) -> tuple[str, Any] | None:
        """Settle an intent left by a call whose reply was lost: ``(key, value)`` of that call
        when it ran on the datasite (its output is fetched from the execution history and
        journaled), else ``None``. Reaching the datasite is needed only when an intent exists.

        Raises:
            ConnectionError: when the datasite cannot be reached (yet).
        """
        intent_file = self._intent_file
        if intent_file is None or not intent_file.is_file():
            return None
        from fedmugrep.federation.syft_runtime import execution_outputs, fetch_output

        intent = json.loads(intent_file.read_text(encoding="utf-8"))
        try:
            outputs = self._deadline(
                lambda: execution_outputs(self.client, self.function_name), "execution history"
            )
            found = None
            if len(outputs) == int(intent["before"]) + 1:
                try:
                    found = self._deadline(
                        lambda: fetch_output(self.client, self.function_name, outputs[-1]),
                        "lost reply",
                    )
                except DatasiteUnresponsiveError:
                    raise
                except FedMugRepError:  # the lost call failed on the datasite: run it again
                    found = None
        except DatasiteUnresponsiveError:
            raise
        except OSError as exc:
            raise ConnectionError(
                f"datasite '{self.name}' is unreachable while checking a lost reply ({exc})"
            ) from exc
        self._executions = len(outputs)
        intent_file.unlink(missing_ok=True)
        if found is None:
            return None
        self.recovered += 1
        self._journal_put(intent["key"], intent["method"], found, mine=False)
        if self.on_recovered is not None:
            self.on_recovered(intent["method"], intent.get("round"))
        return str(intent["key"]), found

    # ------------------------------------------------------------------ calling
    def __call__(self, method: str, payload: Mapping[str, Any], *, tag: Any = None) -> Any:
        """Run ``method`` with ``payload`` (or answer from the journal / a lost reply).

        Raises:
            ConnectionError: the datasite is down (after ``retries`` retries).
        """
        delay = self.retry_backoff
        for attempt in range(self.retries + 1):
            try:
                return self._once(method, payload, tag)
            except DatasiteUnresponsiveError:
                raise  # hung, not down: retrying would wait another timeout for nothing
            except ConnectionError:
                if attempt == self.retries:
                    raise
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, method: str, payload: Mapping[str, Any], tag: Any) -> Any:
        from fedmugrep.federation.syft_runtime import call_remote

        text, key = self._text_and_key(method, payload, tag)
        if method in self.cacheable and key not in self._written:
            cached = self._journal_get(key)
            if cached is not None:
                self.replayed += 1
                return cached
        settled = self.resolve_pending()
        if settled is not None and settled[0] == key:
            return settled[1]
        intent_file = self._intent_file
        t0 = time.perf_counter()
        try:
            if intent_file is not None:
                if self._executions is None:
                    self._executions = self._executions_now()
                round_index = payload.get("round") if isinstance(payload, Mapping) else None
                self._write(
                    intent_file,
                    {
                        "key": key,
                        "method": method,
                        "before": self._executions,
                        "round": round_index,
                    },
                )
            value = self._deadline(
                lambda: call_remote(
                    self.client, self.function_name, **self.assets, method=method, payload=text
                ),
                f"'{method}'",
            )
        except DatasiteUnresponsiveError:  # the call may still run there: keep the intent
            self._executions = None
            raise
        except OSError as exc:  # requests' ConnectionError & co.; the reply may be lost
            self._executions = None
            raise ConnectionError(
                f"datasite '{self.name}' did not answer '{method}' ({type(exc).__name__}: "
                f"{str(exc)[:200]}); the coordinator retries"
            ) from exc
        except Exception:  # an answer came back (an error): nothing is lost
            self._executions = None
            if intent_file is not None:
                intent_file.unlink(missing_ok=True)
            raise
        if self._executions is not None:
            self._executions += 1
        self._journal_put(key, method, value)
        if intent_file is not None:
            intent_file.unlink(missing_ok=True)
        self.calls.append(
            CallStat(
                self.name,
                method,
                time.perf_counter() - t0,
                len(method) + len(text),
                _reply_size(value),
            )
        )
        return value


class SyftTransactionParty:
    """The data scientist's handle on one transaction datasite (same methods as
    :class:`~fedmugrep.federation.parties.TransactionParty`).

    Attributes:
        name: the datasite (agency) name.
        layout: channel layout of model 1 (public).
        nm: the plan's Gaussian noise multiplier (public).
        calls: every remote call made, with timings and sizes.

    ``journal``: a folder of the data scientist's where replies are kept (see :class:`_Remote`):
    a resumed run replays the calls after its checkpoint without spending the call cap.
    ``evaluate``, which the coordinator does not retry, is retried here (``plan.retries``).
    ``call_timeout``: seconds to wait for an HTTP datasite's answer before raising
    :class:`~fedmugrep.errors.DatasiteUnresponsiveError` (``None``: wait forever).
    """

    def __init__(
        self,
        name: str,
        *,
        client: Any,
        asset: Any,
        public: PublicArtefacts,
        plan: FederationPlan,
        function_name: str = "transaction_call",
        journal: str | Path | None = None,
        call_timeout: float | None = None,
    ) -> None:
        self.name = name
        self._orders = parameter_shapes(public.model_config)
        self.layout: ChannelLayout = channel_layout(dict(self._orders["params"]))
        self.nm = plan.noise_multiplier()
        self._retries, self._backoff = plan.retries, plan.retry_backoff
        self._remote = _Remote(
            name,
            client,
            function_name,
            {"data": asset},
            journal=journal,
            cacheable=frozenset(TRANSACTION_METHODS),
            retry_backoff=plan.retry_backoff,
            call_timeout=call_timeout,
        )

    @property
    def calls(self) -> list[CallStat]:
        return self._remote.calls

    def release_intra(
        self, theta: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """See :meth:`TransactionParty.release_intra`."""
        out = self._remote("release_intra", {"theta": encode_model_dict(theta, self._orders)})
        return _unpack_tensor(out["sums"]), _unpack_tensor(out["counts"]), float(out["n"])

    def step(
        self,
        round_index: int,
        theta: dict[str, torch.Tensor],
        z: torch.Tensor,
        previous_aggregate: dict[str, torch.Tensor] | None,
    ) -> StepReply:
        """See :meth:`TransactionParty.step`."""
        out = self._remote(
            "step",
            {
                "round": int(round_index),
                "theta": encode_model_dict(theta, self._orders),
                "z": _pack_tensor(z),
                "previous": ""
                if previous_aggregate is None
                else encode_model_dict(previous_aggregate, self._orders),
            },
        )
        sparse = SparseUpdate.from_bytes(base64.b64decode(out["theta"].encode("ascii")))
        return StepReply(
            sparse, _unpack_tensor(out["z_grad"]), float(out["loss_sum"]), int(out["nbytes"])
        )

    def release_calibration(
        self, theta: dict[str, torch.Tensor], z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """See :meth:`TransactionParty.release_calibration`."""
        out = self._remote(
            "release_calibration",
            {"theta": encode_model_dict(theta, self._orders), "z": _pack_tensor(z)},
        )
        return tuple(_unpack_tensor(out[k]) for k in ("z2", "err", "count"))  # type: ignore[return-value]

    def evaluate(
        self, theta: dict[str, torch.Tensor], z: torch.Tensor, split: str = "test"
    ) -> dict:
        """See :meth:`TransactionParty.evaluate` (the datasite allows ``val`` and ``test``)."""
        self._remote.retries = self._retries  # the coordinator calls evaluate without retries
        try:
            return dict(
                self._remote(
                    "evaluate",
                    {
                        "theta": encode_model_dict(theta, self._orders),
                        "z": _pack_tensor(z),
                        "split": split,
                    },
                )
            )
        finally:
            self._remote.retries = 0

    def __repr__(self) -> str:
        return f"SyftTransactionParty({self.name!r}, calls={len(self.calls)})"


class _RegionModelHandle:
    """Stands in for ``RegionParty.model`` on the data scientist's side.

    ``state_dict()`` returns only a round tag; ``load_state_dict(tag)`` asks the region datasite
    to restore its own snapshot of that round. The parameters never leave the datasite.
    """

    def __init__(self, owner: SyftRegionParty) -> None:
        self._owner = owner

    def state_dict(self) -> dict[str, Any]:
        return {"fedmugrep_region_round": self._owner.last_backward_round}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        round_index = state.get("fedmugrep_region_round") if isinstance(state, Mapping) else None
        if round_index is None:
            raise ConfigError(
                "the region model lives on the region datasite; pass a state_dict() of this "
                "handle (a round tag), not parameters"
            )
        self._owner.restore(int(round_index))


class SyftRegionParty:
    """The data scientist's handle on the region datasite (same methods as
    :class:`~fedmugrep.federation.parties.RegionParty`).

    Attributes:
        name: the datasite name.
        model: a :class:`_RegionModelHandle` (round tags, no parameters).
        calls: every remote call made.
        applied: the last round whose model-2 state the datasite holds (``None``: the initial
            state); kept in ``journal`` so a resumed run knows it.

    The coordinator does not retry region calls; this proxy does (``retries`` times, with
    exponential backoff from ``retry_backoff``): forwards are idempotent (journaled, and the
    datasite replays its ``z`` per model-2 state), a backward whose reply was lost is
    recovered from the datasite's execution history (:class:`_Remote`), never applied twice.
    A hung datasite (no answer within ``call_timeout`` s) is not retried.
    """

    def __init__(
        self,
        name: str,
        *,
        client: Any,
        communities: Any,
        mobility: Any,
        function_name: str = "region_call",
        journal: str | Path | None = None,
        retries: int = 0,
        retry_backoff: float = 0.5,
        call_timeout: float | None = None,
    ) -> None:
        self.name = name
        self._remote = _Remote(
            name,
            client,
            function_name,
            {"data": communities, "mobility": mobility},
            journal=journal,
            cacheable=frozenset({"forward"}),
            retries=retries,
            retry_backoff=retry_backoff,
            on_recovered=self._recovered,
            call_timeout=call_timeout,
        )
        self._state_file = None if journal is None else Path(journal) / "region_state.json"
        self.applied: int | None = None
        if self._state_file is not None and self._state_file.is_file():
            self.applied = json.loads(self._state_file.read_text(encoding="utf-8"))["applied"]
        self.model = _RegionModelHandle(self)
        self.last_backward_round: int | None = self.applied
        self._pooled: str | None = None  # packed pooled intra of the last forward

    @property
    def calls(self) -> list[CallStat]:
        return self._remote.calls

    def _set_applied(self, round_index: int) -> None:
        self.applied = int(round_index)
        if self._state_file is not None:
            tmp = self._state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"applied": self.applied}), encoding="utf-8")
            os.replace(tmp, self._state_file)

    def _recovered(self, method: str, round_index: Any) -> None:
        if method in ("backward", "restore") and isinstance(round_index, int):
            self._set_applied(round_index)

    def restore(self, round_index: int) -> None:
        """See :meth:`RegionParty.restore`: the region datasite rewinds model 2 to its snapshot
        of ``round_index`` (a resumed coordinator; the best round at the end). No call is made
        when the datasite already holds that state (the usual case: a crash before the next
        backward), so a resume costs no extra call of the cap."""
        round_index = int(round_index)
        if self._remote.journal is not None:
            self._remote.resolve_pending()  # a lost backward reply may have moved model 2
        if self.applied != round_index:
            self._remote("restore", {"round": round_index})
            self._set_applied(round_index)
        self.last_backward_round = round_index

    def _forward_payload(self, round_index: int, pooled: str) -> dict[str, Any]:
        return {"round": int(round_index), "pooled": pooled}

    def forward(self, round_index: int, pooled_intra: torch.Tensor) -> torch.Tensor:
        """See :meth:`RegionParty.forward` (journaled per model-2 state)."""
        self._pooled = _pack_tensor(pooled_intra)
        out = self._remote(
            "forward", self._forward_payload(round_index, self._pooled), tag=self.applied
        )
        return _unpack_tensor(out["z"])

    def backward(self, round_index: int, z_grad: torch.Tensor) -> torch.Tensor:
        """See :meth:`RegionParty.backward`: returns the ``z`` of the updated model 2.

        That ``z`` is also journaled as the reply of the forwards that could follow (the next
        round's and an evaluation's), so a coordinator resumed after this round reads it from
        the journal instead of spending a call of the cap on a forward.
        """
        out = self._remote(
            "backward",
            {"round": int(round_index), "z_grad": _pack_tensor(z_grad)},
            tag=self.applied,
        )
        self._set_applied(round_index)
        self.last_backward_round = int(round_index)
        self._journal_forwards(round_index, out)
        return _unpack_tensor(out["z"])

    def _journal_forwards(self, round_index: int, reply: Mapping[str, Any]) -> None:
        """Journal ``reply["z"]`` as the reply of forward ``round_index + 1`` and of the
        evaluation forward (round -1) of the state after ``round_index``."""
        if self._pooled is None or "z" not in reply:
            return
        for r in (int(round_index) + 1, -1):
            self._remote.prime(
                "forward",
                self._forward_payload(r, self._pooled),
                {"z": reply["z"]},
                tag=self.applied,
            )

    def __repr__(self) -> str:
        return f"SyftRegionParty({self.name!r}, calls={len(self.calls)})"


# ============================================================================ owner's review
def review_lines(constants: Mapping[str, Any], *, role: str, call_cap: int | None) -> list[str]:
    """The privacy lines that lead a federation request's review sheet, computed with the
    datasite's own admission code (:func:`_admit`'s checks) from the pinned constants; empty
    when the request pins no federation plan."""
    from fedmugrep.federation.admission import review_summary
    from fedmugrep.federation.syft_contract import PrivacyContract

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
        if role == "region":
            derived = region_contract(plan, n_communities=n_comm)
        else:
            laplace = plan.privacy is not None and plan.privacy.update_mechanism == "laplace"
            n_coords = update_coordinates(public.model_config) if laplace else None
            derived = transaction_contract(plan, n_coords=n_coords)
        if claimed is not None:
            check_contract_claims(claimed, derived)
    except FedMugRepError as exc:
        return review_summary(
            plan=None, role=role, n_communities=0, call_cap=call_cap, refusal=str(exc)
        )
    return review_summary(
        plan=plan, role=role, n_communities=n_comm, call_cap=call_cap, claimed=claimed
    )


def describe_public_constant(value: Mapping[str, Any]) -> str:
    """A few lines for the public constant instead of its JSON (weights and vocabularies are
    summarised by size and digest)."""
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
            "  initial region weights: "
            + ("none" if not init else f"{len(init)} tensors (public, from mock pretraining)"),
        ]
    )

"""The wire format of a federation: what crosses a party boundary, as plain strings and dicts.

Nothing here depends on a runtime: the local runtime, the PySyft adapter and any other transport
send the same values.

* :func:`public_constant` / :func:`public_from_constant`: the public artefacts and the plan of a
  run as one JSON-able dict (the datasite parses it strictly: types, ranges and the artefacts'
  agreement with the plan, :func:`~fedmugrep.federation.admission.check_artefacts`);
* :func:`pack_array` / :func:`unpack_array`: numeric arrays as base64 ``.npy`` strings (never
  pickled); :func:`pack_theta` / :func:`encode_model_dict`: model-1 tensors in the public order;
* the checked readers of a call's payload (:func:`parse_payload`, :func:`payload_arg`,
  :func:`tensor_arg`, :func:`round_arg`), which refuse anything malformed with a
  :class:`~fedmugrep.errors.ConfigError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedmugrep.errors import (
    ConfigError,
)
from fedmugrep.federation.admission import (
    check_artefacts,
)
from fedmugrep.federation.parties import (
    PublicArtefacts,
)
from fedmugrep.federation.plan import FederationPlan, PrivacyPlan
from fedmugrep.models.mugrep import EventModel, ModelConfig
from fedmugrep.training.prepare import Encoders, GraphConfig

#: Identifies the layout of :func:`public_constant`.
PUBLIC_SCHEMA = "fedmugrep.federation-public/1"

#: File in a datasite's home by which its owner accepts releases without noise.
EXACT_RELEASE_FILE = "fedmugrep_allow_exact_release.json"


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
        else {n: pack_tensor(v) for n, v in public.init_state["region"].items()},
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
                        finite_float32(unpack_numeric(v, f"init_region[{n}]"), n).copy()
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
    flat = finite_float32(unpack_numeric(text, "packed theta"), "packed theta").reshape(-1)
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


def pack_tensor(t: torch.Tensor) -> str:
    return pack_array(t.detach().cpu().numpy())


def unpack_tensor(text: str) -> torch.Tensor:
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


def unpack_numeric(text: Any, what: str) -> np.ndarray:
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


def finite_float32(arr: np.ndarray, what: str) -> np.ndarray:
    """``arr`` as float32; NaN or infinite values (also from overflow in the cast) are refused."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ConfigError(
            f"{what} holds NaN or infinite values (or values beyond float32); send finite numbers"
        )
    return out


def tensor_arg(data: Mapping[str, Any], key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The packed float tensor ``data[key]``, checked against the public ``shape``.

    Raises:
        ConfigError: when it is missing, not a packed numeric array, of another shape, or holds
            NaN or infinite values.
    """
    arr = unpack_numeric(payload_arg(data, key), f"payload '{key}'")
    if tuple(arr.shape) != tuple(shape):
        raise ConfigError(
            f"payload '{key}' has shape {tuple(arr.shape)}, expected {tuple(shape)} (from the "
            "public ModelConfig and vocabulary); the proxies build it"
        )
    return torch.from_numpy(finite_float32(arr, f"payload '{key}'").copy())


#: Largest round index a remote call accepts.
MAX_ROUND = 2**31 - 1


def round_arg(data: Mapping[str, Any], *, low: int) -> int:
    """``data["round"]`` as an int in ``[low, MAX_ROUND]``.

    Raises:
        ConfigError: when it is missing, not a JSON integer, or out of range.
    """
    value = payload_arg(data, "round")
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


def parse_payload(text: str) -> dict[str, Any]:
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


def payload_arg(data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise ConfigError(f"payload lacks '{key}'; the proxies build it")
    return data[key]


def pack_array(array: Any) -> str:
    """Encode a numpy array as an ASCII string (base64 of its ``.npy`` bytes) for a call argument.

    PySyft 0.9.5 serialises a python ``list`` element by element: a list of 10,000 floats costs
    about 1.5 s per call and 100,000 floats about 18 s, while the same numbers packed into one
    ``str`` cost about 0.3 s and 1.2 s. Declare such arguments as ``str`` in
    :func:`~fedmugrep.pysyft.runtime.make_remote_function`, pass ``pack_array(x)``,
    and call :func:`unpack_array` inside the datasite (and the other way round for results).

    Shapes:
        array: any shape; dtype must not be ``object``. The round trip keeps shape and dtype.
    """
    arr = np.asarray(array)
    if arr.dtype == object:
        raise ConfigError("pack_array needs a numeric array (got dtype=object); convert it first")
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def unpack_array(text: str) -> Any:
    """Inverse of :func:`pack_array` (never unpickles).

    Raises:
        ConfigError: when ``text`` is not a packed array.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (binascii.Error, ValueError, UnicodeEncodeError, AttributeError) as exc:
        raise ConfigError(f"not a packed array ({exc}); build it with pack_array(x)") from exc


# ============================================================================ mock tag
#: ``DataFrame.columns.name`` of an uploaded mock. It survives PySyft's parquet serialisation
#: (``DataFrame.attrs`` does not), and :func:`upload_dataset` strips it from private frames.
MOCK_MARKER = "fedmugrep:mock"


def mark_mock(frame: Any) -> Any:
    """A copy of a DataFrame tagged as mock (``columns.name = MOCK_MARKER``)."""
    tagged = frame.copy()
    tagged.columns.name = MOCK_MARKER
    return tagged


def strip_mock_marker(frame: Any) -> Any:
    """A copy of a DataFrame that cannot be mistaken for a mock."""
    clean = frame.copy()
    clean.columns.name = None
    return clean


def is_mock_frame(obj: Any) -> bool:
    """Whether ``obj`` is a DataFrame uploaded as an asset's mock by :func:`upload_dataset`.

    Anything else (including private frames and non-DataFrame assets) counts as private, which
    errs on the side of charging the budget.
    """
    columns = getattr(obj, "columns", None)
    return getattr(columns, "name", None) == MOCK_MARKER

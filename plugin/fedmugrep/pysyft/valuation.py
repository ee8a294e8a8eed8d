"""Remote appraisal (C7) on a PySyft transaction datasite: its own request, contract and cap.

Appraisal is a *separate* code request from training, so the training request's call cap and
contract stay untouched and the data owner reviews appraisal on its own terms:

* the function :func:`appraisal_call` pins the transactions asset and two ``sy.Constant``
  values: the privacy contract of :func:`appraisal_contract` (mechanism ``laplace:appraisal``,
  the epsilon charged per call, the number of calls) and the run's public constant
  (:func:`~fedmugrep.federation.wire.public_constant`, with its run id suffixed
  ``-appraisal`` so the datasite's ledger entries and release files say what they were);
* its output policy is :class:`~fedmugrep.pysyft.policy.CallCapPolicy` with the
  contract's number of calls;
* the epsilon of every call is the contract's ``epsilon_per_release``: the data scientist
  cannot pass another one per call.

Inside the datasite, :func:`appraisal_call_impl` builds (or reuses from the per-process cache)
the same :class:`~fedmugrep.federation.parties.TransactionParty` the training request uses and
calls :meth:`~fedmugrep.federation.parties.TransactionParty.appraise`, which charges the
datasite's ledger before anything is returned (the privacy argument is in
:class:`~fedmugrep.federation.valuation.PrivateAppraisal`). The owner approves it like any
request (:func:`~fedmugrep.pysyft.runtime.approve_request`).

Data scientist::

    name = submit_appraisal_request(ds, asset, constant, epsilon=1.0, max_calls=5)
    ...                                               # the owner approves
    table = appraise_remote(ds, name, properties, theta, z, asset=asset, geography=geo)

This module does not import ``syft`` at import time (the datasite side needs only torch).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedmugrep.data.regions import assign_regions
from fedmugrep.errors import ConfigError, PrivacyParameterError
from fedmugrep.federation.contract import PrivacyContract
from fedmugrep.federation.valuation import APPRAISAL_MECHANISM, OUTPUT_COLUMNS, PrivateAppraisal
from fedmugrep.federation.wire import (
    PUBLIC_SCHEMA,
    finite_float32,
    pack_array,
    pack_tensor,
    parse_payload,
    payload_arg,
    tensor_arg,
    unpack_numeric,
)
from fedmugrep.models.mugrep import EventModel
from fedmugrep.pysyft.functions import _admit, _transaction_party, private_phase
from fedmugrep.pysyft.quiet import quiet_syft
from fedmugrep.pysyft.remote import RemoteContext

__all__ = [
    "APPRAISAL_FUNCTION",
    "appraisal_call",
    "appraisal_call_impl",
    "appraisal_constant",
    "appraisal_contract",
    "appraise_remote",
    "submit_appraisal_request",
]

#: Default name of the appraisal function on a datasite.
APPRAISAL_FUNCTION = "appraisal_call"

#: Most properties one call may value (keeps the payload and the datasite's work bounded).
MAX_PROPERTIES = 100_000


# ============================================================================ contract
def appraisal_contract(
    epsilon: float,
    max_calls: int,
    *,
    package_dir: str | Path | None = None,
    notes: str = "",
) -> PrivacyContract:
    """The privacy contract of an appraisal request: ``max_calls`` Laplace releases of
    ``epsilon`` each (basic composition: ``epsilon * max_calls`` in all).

    Raises:
        PrivacyParameterError: on ``epsilon <= 0`` or ``max_calls < 1``.
    """
    eps = float(epsilon)
    if not (math.isfinite(eps) and eps > 0):
        raise PrivacyParameterError(f"epsilon must be > 0 (got {epsilon}); pass a positive value")
    if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
        raise PrivacyParameterError(f"max_calls must be an int >= 1 (got {max_calls!r})")
    text = (
        f"{max_calls} appraisal call(s), each one Laplace release of epsilon {eps:g} on the "
        "clipped event-view corrections of the properties sent (L1 sensitivity M * 2c, M = most "
        "properties of one community within max_days, c = correction clip); medians and "
        "intervals are post-processing; charged to this datasite's ledger before release"
    )
    return PrivacyContract.for_installed(
        mechanisms=(APPRAISAL_MECHANISM,),
        epsilon_per_release=eps,
        rounds=max_calls,
        projected_epsilon=eps * max_calls,
        notes=f"{text}. {notes}".strip() if notes else text,
        package_dir=package_dir,
    )


def appraisal_constant(public_constant: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a run's public constant whose run id ends in ``-appraisal`` (the ledger's
    request id of every appraisal release and the folder of its release files).

    Raises:
        ConfigError: when ``public_constant`` is not a fedmugrep public constant.
    """
    if not isinstance(public_constant, Mapping) or public_constant.get("schema") != PUBLIC_SCHEMA:
        raise ConfigError(
            "public_constant must be the dict of public_constant(public, plan, run_id=...)"
        )
    out = json.loads(json.dumps(dict(public_constant)))
    run_id = str(out.get("run_id", ""))
    if not run_id.endswith("-appraisal"):
        out["run_id"] = f"{run_id}-appraisal"
    return out


# ============================================================================ datasite side
def appraisal_call(data, contract, public, payload):
    from fedmugrep.pysyft.remote import run_remote  # shipped as source
    from fedmugrep.pysyft.valuation import appraisal_call_impl  # shipped as source

    return run_remote(
        appraisal_call_impl, data=data, contract=contract, public=public, payload=payload
    )


def _theta_arg(args: Mapping[str, Any], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``{name: packed tensor}`` checked against model 1's public state (names and shapes)."""
    raw = payload_arg(args, "theta")
    if not isinstance(raw, Mapping):
        raise ConfigError("payload 'theta' must map tensor names to packed arrays")
    state = model.state_dict()
    missing, extra = sorted(set(state) - set(raw)), sorted(set(raw) - set(state))
    if missing or extra:
        raise ConfigError(
            f"payload 'theta' does not match model 1 (missing {missing[:3]}, unknown "
            f"{extra[:3]}); send the model_state of a run with this public constant"
        )
    out = {}
    for name, ref in state.items():
        arr = finite_float32(unpack_numeric(raw[name], f"theta[{name}]"), f"theta[{name}]")
        if tuple(arr.shape) != tuple(ref.shape):
            raise ConfigError(
                f"theta[{name}] has shape {tuple(arr.shape)}, model 1 {tuple(ref.shape)}"
            )
        out[name] = torch.from_numpy(arr.copy())
    return out


def _properties_arg(args: Mapping[str, Any]) -> tuple[pd.DataFrame, str]:
    text = payload_arg(args, "properties")
    id_column = str(args.get("id_column", "transaction_id"))
    if not isinstance(text, str):
        raise ConfigError("payload 'properties' must be a JSON table (DataFrame.to_json split)")
    try:
        frame = pd.read_json(io.StringIO(text), orient="split", dtype=False, convert_dates=False)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"payload 'properties' is not a JSON table ({exc})") from None
    if len(frame) > MAX_PROPERTIES:
        raise ConfigError(f"at most {MAX_PROPERTIES} properties per call (got {len(frame)})")
    frame.attrs["source"] = "<properties sent by the data scientist>"
    return frame, id_column


def appraisal_call_impl(
    ctx: RemoteContext, data: pd.DataFrame, *, public: Mapping, payload: str
) -> dict[str, Any]:
    """Value the properties of ``payload`` with the private transactions as neighbours.

    Payload: ``{"theta": {name: packed}, "z": packed [C, z_dim], "properties": JSON table
    (``DataFrame.to_json(orient="split")``), "id_column": str}``. Returns ``{"table": JSON
    table of the noised valuations, "summary": public facts of the release}``.

    Raises:
        ConfigError: on a contract that is not an appraisal contract, or a malformed payload.
        DataValidationError: on a bad property (row and column named).
        BudgetExceededError: when the owner's cap refuses the release (nothing released).
    """
    contract = ctx.contract
    if tuple(contract.mechanisms) != (APPRAISAL_MECHANISM,):
        raise ConfigError(
            f"the pinned contract is not an appraisal contract (mechanisms "
            f"{list(contract.mechanisms)}); build it with appraisal_contract(...)"
        )
    # the plan and the arguments are checked before the private frame is read
    admission = _admit(ctx, public, "transaction", check_claims=False)
    args = parse_payload(payload)
    with torch.random.fork_rng(devices=[]):
        model = EventModel(admission.public.model_config)
    theta = _theta_arg(args, model)
    cfg = admission.public.model_config
    z = tensor_arg(args, "z", (len(admission.public.encoders.vocab.communities), cfg.z_dim))
    properties, id_column = _properties_arg(args)
    # the properties are the data scientist's: their errors are theirs to read
    PrivateAppraisal(
        admission.public, properties, epsilon=contract.epsilon_per_release, id_column=id_column
    )
    with private_phase(ctx, "appraise"):
        party = _transaction_party(ctx, data, admission)
        table = party.appraise(
            theta, z, properties, epsilon=contract.epsilon_per_release, id_column=id_column
        )
    return {
        "table": table.to_json(orient="split", index=False, double_precision=15),
        "summary": dict(table.attrs.get("appraisal", {})),
    }


# ============================================================================ data scientist
def submit_appraisal_request(
    ds_client: Any,
    tx_asset: Any,
    public_constant: Mapping[str, Any],
    *,
    epsilon: float,
    max_calls: int,
    function_name: str = APPRAISAL_FUNCTION,
    package_dir: str | Path | None = None,
) -> str:
    """Submit the appraisal request to one transaction datasite; returns its function name.

    Args:
        ds_client: the data scientist's client of the datasite.
        tx_asset: the datasite's transactions asset.
        public_constant: the run's public constant (its run id gets ``-appraisal``).
        epsilon: epsilon charged per call (pinned in the contract).
        max_calls: calls the owner approves (the output policy's cap).
        function_name: name of the function on the datasite (one per request).
        package_dir: stamp the contract with this fedmugrep copy (the datasite's).

    Raises:
        PrivacyParameterError: on a bad ``epsilon`` or ``max_calls``.
        ConfigError: when the function name is already used on the datasite.
    """
    import syft as sy  # deferred: loads syft, torch

    from fedmugrep.pysyft.policy import CallCapPolicy  # deferred: loads syft, torch
    from fedmugrep.pysyft.runtime import submit_request  # deferred: loads syft, torch

    contract = appraisal_contract(epsilon, max_calls, package_dir=package_dir)
    constant = appraisal_constant(public_constant)
    with quiet_syft():
        input_policy = sy.MixedInputPolicy(
            client=ds_client,
            data=tx_asset,
            contract=sy.Constant(val=contract.to_dict()),
            public=sy.Constant(val=constant),
            payload=str,
        )
        function = sy.syft_function(
            input_policy=input_policy,
            output_policy=CallCapPolicy(max_calls=int(max_calls)),
            name=function_name,
        )(appraisal_call)
    submit_request(ds_client, function)
    return function_name


def appraise_remote(
    ds_client: Any,
    function_name: str,
    properties: pd.DataFrame,
    theta: Mapping[str, torch.Tensor],
    z: torch.Tensor,
    *,
    asset: Any,
    geography: pd.DataFrame | None = None,
    id_column: str = "transaction_id",
) -> pd.DataFrame:
    """Noised valuations of ``properties`` by a transaction datasite (one approved call).

    Args:
        ds_client: the data scientist's client.
        function_name: as returned by :func:`submit_appraisal_request`.
        properties: transactions schema minus price.
        theta: model 1's state (``FederationResult.model_state``).
        z: the released region representations.
        asset: the datasite's transactions asset (pinned in the request).
        geography: public communities table; derives ``community``/``district`` here (the
            datasite derives nothing from its private rows) when ``properties`` lacks them.
        id_column: identifier column.

    Returns:
        One row per property (``id_column``, ``pred_median``, ``pred_lo80``, ``pred_hi80``,
        ``sigma_log``, ``noise_scale_log``); ``attrs["appraisal"]`` holds the release's public
        facts (epsilon, sensitivity, noise scale).

    Raises:
        BudgetExceededError: the owner's cap refused the release (nothing was released).
        FedMugRepError: the call cap is used up, the request is not approved, ...
    """
    from fedmugrep.pysyft.runtime import call_remote  # deferred: loads syft, torch

    if not isinstance(properties, pd.DataFrame):
        raise ConfigError(f"properties must be a DataFrame (got {type(properties).__name__})")
    props = properties.drop(columns=[c for c in ("price",) if c in properties.columns])
    if geography is not None and not {"community", "district"} <= set(props.columns):
        props = assign_regions(props, geography)
    payload = {
        "theta": {n: pack_array(v.detach().cpu().float().numpy()) for n, v in theta.items()},
        "z": pack_tensor(z.float()),
        "properties": props.to_json(orient="split", index=False, date_format="iso"),
        "id_column": id_column,
    }
    out = call_remote(
        ds_client,
        function_name,
        data=asset,
        payload=json.dumps(payload, separators=(",", ":")),
    )
    table = pd.read_json(
        io.StringIO(out["table"]), orient="split", dtype={id_column: str}, precise_float=True
    )
    table[id_column] = table[id_column].astype(str)
    for col in OUTPUT_COLUMNS:
        table[col] = table[col].astype(np.float64)
    table.attrs["appraisal"] = dict(out.get("summary") or {})
    return table

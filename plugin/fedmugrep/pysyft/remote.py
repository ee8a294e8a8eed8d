"""What approved code uses *inside* a datasite: its home folder, caller, mock detection, envelope.

Remote functions are tiny shims; the logic lives in the fedmugrep installed on the datasite::

    def toy_round(data, contract, round_no, payload):      # the syft function (no decorator)
        from fedmugrep.pysyft.remote import run_remote
        from fedmugrep.pysyft.toy import toy_round_impl
        return run_remote(toy_round_impl, data=data, contract=contract,
                          round_no=round_no, payload=payload)

:func:`run_remote` then

1. returns a placeholder at once when ``data`` is the asset's *mock* (PySyft 0.9.5 runs approved
   code twice per call on a twin asset, once on the private and once on the mock data; skipping
   the mock run halves the cost and keeps side effects such as ledger entries single);
2. refuses when the pinned privacy contract was made for another fedmugrep build
   (:func:`~fedmugrep.federation.contract.check_contract_installed`);
3. calls ``impl(ctx, data, **kwargs)`` with a :class:`RemoteContext` (home folder, datasite name,
   caller, contract);
4. wraps the value, or a :class:`~fedmugrep.errors.FedMugRepError`, in a small dict envelope
   that :func:`fedmugrep.pysyft.runtime.call_remote` unwraps on the data scientist's
   side. PySyft hides exception messages from data scientists ("contact the admin"), so a
   ``BudgetExceededError`` raised in the datasite could not otherwise reach them; other
   exceptions still propagate and are logged by the server only, so their messages (which could
   quote private values) never leave.

The home folder comes from a context variable that the datasite server sets around every API
call (:func:`bind_datasite_call`, installed by
:func:`fedmugrep.pysyft.server.build_datasite`), with the environment variable
``FEDMUGREP_DATASITE_HOME`` (set by the HTTP server launcher) as fallback. The context variable
makes several in-process datasites in one Python process each see their own home.

This module does not import ``syft``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmugrep.errors import ConfigError, FedMugRepError
from fedmugrep.federation.contract import check_contract_installed
from fedmugrep.federation.wire import MOCK_MARKER, is_mock_frame, mark_mock, strip_mock_marker

__all__ = [
    "ENVELOPE_KEY",
    "HOME_ENV",
    "MOCK_MARKER",
    "DatasiteCall",
    "RemoteContext",
    "bind_datasite_call",
    "datasite_home",
    "is_mock_frame",
    "mark_mock",
    "run_remote",
    "strip_mock_marker",
]

#: Environment variable the HTTP server launcher sets to the datasite's home folder.
HOME_ENV = "FEDMUGREP_DATASITE_HOME"
#: Environment variable the HTTP server launcher sets to the datasite's name.
NAME_ENV = "FEDMUGREP_DATASITE_NAME"

#: Key that identifies an envelope returned by :func:`run_remote`.
ENVELOPE_KEY = "fedmugrep_envelope"


@dataclass(frozen=True)
class DatasiteCall:
    """The datasite and caller of the API call being served (set by the server, not the caller).

    Attributes:
        name: datasite name.
        home: datasite home folder.
        caller_verify_key: hex verify key of the signed API call's sender (PySyft checks the
            signature before any code runs).
        caller_email_lookup: resolves the caller's e-mail from the server's user table on
            demand (see :attr:`caller_email`).
    """

    name: str
    home: Path
    caller_verify_key: str | None = None
    caller_email_lookup: Callable[[], str | None] | None = field(default=None, compare=False)

    @property
    def caller_email(self) -> str | None:
        """E-mail of the calling user, or ``None`` when unknown."""
        return self.caller_email_lookup() if self.caller_email_lookup is not None else None


_CURRENT_CALL: contextvars.ContextVar[DatasiteCall | None] = contextvars.ContextVar(
    "fedmugrep_datasite_call", default=None
)


@contextlib.contextmanager
def bind_datasite_call(call: DatasiteCall) -> Iterator[DatasiteCall]:
    """Make ``call`` the current datasite call for the duration of a block (server side)."""
    token = _CURRENT_CALL.set(call)
    try:
        yield call
    finally:
        _CURRENT_CALL.reset(token)


def datasite_home() -> Path:
    """Home folder of the datasite executing the current call.

    Raises:
        ConfigError: outside a datasite (no bound call and no ``FEDMUGREP_DATASITE_HOME``).
    """
    call = _CURRENT_CALL.get()
    if call is not None:
        return call.home
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env)
    raise ConfigError(
        "not running inside a fedmugrep datasite (no bound datasite call and no "
        f"{HOME_ENV}); start datasites with fedmugrep.pysyft.runtime.launch_datasite"
    )


@dataclass(frozen=True)
class RemoteContext:
    """What :func:`run_remote` hands to an implementation running in a datasite.

    Attributes:
        home: the datasite's home folder (ledger, accountant state live here).
        datasite: the datasite's name.
        caller: e-mail (or verify key) of the data scientist whose call this is.
        contract: the privacy contract pinned into the approved request.
    """

    home: Path
    datasite: str
    caller: str | None
    contract: Any


def run_remote(
    impl: Callable[..., Any],
    *,
    data: Any,
    contract: Mapping[str, Any],
    run_on_mock: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run ``impl(ctx, data, **kwargs)`` inside a datasite and wrap the outcome in an envelope.

    Args:
        impl: the installed implementation, ``impl(ctx: RemoteContext, data, **kwargs)``.
        data: the pinned asset as PySyft passes it (private or mock DataFrame).
        contract: the privacy contract dict pinned as ``sy.Constant``.
        run_on_mock: also compute on the mock (default: return a placeholder for the mock run).
        **kwargs: the call's non-pinned arguments.

    Returns:
        ``{"fedmugrep_envelope": 1, "ok": True, "mock": bool, "value": ...}`` or
        ``{"fedmugrep_envelope": 1, "ok": False, "mock": bool, "error": <class name>,
        "message": str}`` for a :class:`~fedmugrep.errors.FedMugRepError`.
    """
    mock = is_mock_frame(data)
    if mock and not run_on_mock:
        return {ENVELOPE_KEY: 1, "ok": True, "mock": True, "value": None}
    try:
        parsed = check_contract_installed(contract)
        call = _CURRENT_CALL.get()
        if call is not None:
            home, name = call.home, call.name
            caller = call.caller_email or call.caller_verify_key
        else:
            home, name, caller = datasite_home(), os.environ.get(NAME_ENV, ""), None
        ctx = RemoteContext(home=home, datasite=name, caller=caller, contract=parsed)
        value = impl(ctx, data, **kwargs)
    except FedMugRepError as exc:
        return {
            ENVELOPE_KEY: 1,
            "ok": False,
            "mock": mock,
            "error": type(exc).__name__,
            "message": str(exc),
        }
    return {ENVELOPE_KEY: 1, "ok": True, "mock": mock, "value": value}

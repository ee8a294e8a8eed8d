"""A toy remote function that exercises the datasite plumbing end to end.

``toy_round`` is what a data scientist submits (a plain function: no decorator, no globals, no
annotations, imports inside the body). Its body only forwards to :func:`toy_round_impl`, which is
part of the fedmugrep installed on the datasite and therefore covered by the contract's code
hash. The real federation functions (``transaction_step``, ``region_forward``...) follow the same
shape.

``toy_round_impl`` returns ``round_no * sum(price) + sum(payload)`` computed on the private
transactions, plus facts the tests check: the datasite's home folder, the caller, and the
process id (the HTTP server's, not the test's). It writes one line per call to
``home/toy_calls.log`` so tests can count private executions. ``toy_call`` has the
``(method, payload)`` shape of the federation's functions, for tests of the calling proxy
(:class:`~fedmugrep.pysyft.proxies._Remote`); it logs to ``home/toy_proxy_calls.log``.
``toy_charge`` releases a Laplace-noised row count charged to the datasite's ledger (for the
concurrent-budget test through a real datasite). It adds no noise: it is a test
fixture, never to be approved on real data.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fedmugrep.errors import ConfigError
from fedmugrep.privacy.laplace import LaplaceMechanism
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.pysyft.remote import RemoteContext

__all__ = [
    "toy_call",
    "toy_call_impl",
    "toy_charge",
    "toy_charge_impl",
    "toy_round",
    "toy_round_impl",
]


def toy_round(data, contract, round_no, payload):
    from fedmugrep.pysyft.remote import run_remote  # shipped as source
    from fedmugrep.pysyft.toy import toy_round_impl  # shipped as source

    return run_remote(
        toy_round_impl, data=data, contract=contract, round_no=round_no, payload=payload
    )


def toy_round_impl(
    ctx: RemoteContext, data: Any, *, round_no: int, payload: list[float]
) -> dict[str, Any]:
    """``round_no * sum(data.price) + sum(payload)`` plus where and for whom it ran.

    Raises:
        ConfigError: when ``round_no`` is negative (shows how errors reach the caller).
    """
    if round_no < 0:
        raise ConfigError(f"round_no must be >= 0 (got {round_no}); pass the round index")
    value = round_no * float(data["price"].sum()) + float(sum(payload))
    log = ctx.home / "toy_calls.log"
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"{round_no}\n")
    return {
        "value": value,
        "home": str(ctx.home),
        "datasite": ctx.datasite,
        "caller": ctx.caller,
        "pid": os.getpid(),
        "epsilon_per_release": ctx.contract.epsilon_per_release,
    }


def toy_call(data, contract, method, payload):
    from fedmugrep.pysyft.remote import run_remote  # shipped as source
    from fedmugrep.pysyft.toy import toy_call_impl  # shipped as source

    return run_remote(toy_call_impl, data=data, contract=contract, method=method, payload=payload)


def toy_call_impl(ctx: RemoteContext, data: Any, *, method: str, payload: str) -> dict[str, Any]:
    """``payload`` is JSON ``{"round": r}``; returns ``r * sum(data.price)`` (method ``"run"``).

    Raises:
        ConfigError: for another method.
    """
    if method != "run":
        raise ConfigError(f"toy_call knows method 'run' only (got {method!r})")
    round_no = int(json.loads(payload)["round"])
    with (ctx.home / "toy_proxy_calls.log").open("a", encoding="utf-8") as fh:
        fh.write(f"{round_no}\n")
    return {"value": round_no * float(data["price"].sum()), "pid": os.getpid()}


def toy_charge(data, contract, label):
    from fedmugrep.pysyft.remote import run_remote  # shipped as source
    from fedmugrep.pysyft.toy import toy_charge_impl  # shipped as source

    return run_remote(toy_charge_impl, data=data, contract=contract, label=label)


def toy_charge_impl(ctx: RemoteContext, data: Any, *, label: str) -> dict[str, Any]:
    """The row count with Laplace noise of the contract's epsilon per release (sensitivity 1),
    charged first to the datasite's ledger under request id ``label``.

    Raises:
        BudgetExceededError: when the caller's cap would be exceeded (the refusal is recorded).
    """
    mech = LaplaceMechanism.for_budget(
        epsilon=ctx.contract.epsilon_per_release, sensitivity=1.0, bound=1e6
    )
    noised = Ledger(ctx.home).charge_then(
        lambda: float(mech.release(float(len(data)))),
        data_scientist=str(ctx.caller),
        request_id=label,
        dataset=ctx.datasite,
        mechanism="laplace:toy_count",
        events=[mech.event()],
    )
    return {"label": label, "count": noised}

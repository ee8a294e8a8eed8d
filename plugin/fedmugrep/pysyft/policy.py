"""A PySyft output policy that really caps how often approved code may run.

PySyft 0.9.5 ignores the result of its own output policies' ``is_valid`` (upstream issue #9391):
``SingleExecutionExactOutput`` / ``OutputPolicyExecuteCount(limit=n)`` run any number of times.
It does, however, refuse a call when ``is_valid`` *raises*, and it stores the policy's state after
every private run. :class:`CallCapPolicy` uses both: it counts private runs and raises once the
owner-approved number is used up.

How PySyft handles this class: ``sy.syft_function(output_policy=CallCapPolicy(max_calls=n))``
sends the *source text* of the class (``inspect.getsource``, so it must live in a file, which
works outside notebooks) to the datasite; the owner sees it in the request; on approval the
datasite compiles it (it becomes a ``sy.UserOutputPolicy``) and keeps ``max_calls``/``calls`` in
its database, so the count survives restarts. PySyft's AST check requires the base class to be
written exactly as ``sy.CustomOutputPolicy`` and the class to be self-contained (the datasite
adds ``import syft as sy`` and the ``typing`` names itself).

This is defence in depth: the privacy budget itself is enforced by the datasite's ledger.
"""

from __future__ import annotations

from typing import Any

import syft as sy

__all__ = ["CallCapPolicy", "CALL_CAP_REFUSAL"]

#: Text PySyft shows a data scientist once the cap is used up (PySyft replaces our message).
CALL_CAP_REFUSAL = "Execution denied: Output policy is not valid"


class CallCapPolicy(sy.CustomOutputPolicy):
    """Allow at most ``max_calls`` private executions of the approved code."""

    max_calls: int = 1
    calls: int = 0

    def __init__(self, max_calls: int = 1) -> None:
        if not isinstance(max_calls, int) or isinstance(max_calls, bool) or max_calls < 1:
            raise ValueError(f"max_calls must be an int >= 1 (got {max_calls!r}); pass e.g. 10")
        self.max_calls = max_calls
        self.calls = 0

    def is_valid(self, context: Any) -> bool:
        if self.calls >= self.max_calls:
            # imported here: the datasite execs this class with module names out of reach
            from syft.types.errors import SyftException

            raise SyftException(
                public_message=f"call cap used up: {self.calls} of {self.max_calls} approved calls"
            )
        return True

    def apply_to_output(self, context: Any, outputs: Any, update_policy: bool = True) -> Any:
        if update_policy:
            self.calls += 1
        return outputs

    def public_state(self) -> Any:
        return {"calls": self.calls, "max_calls": self.max_calls}

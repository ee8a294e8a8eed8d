"""The data scientist's side of PySyft datasites: proxies with the parties' interface.

:class:`SyftTransactionParty` and :class:`SyftRegionParty` have exactly the methods (and the
``layout``/``nm``/``model`` attributes) the :class:`~fedmugrep.federation.coordinator.Coordinator`
uses, so it runs unchanged over datasites. Each call goes through :class:`_Remote`, which records
:class:`CallStat`, journals replies so a resumed coordinator spends no extra calls, and recovers
replies lost to a restart from the datasite's execution history.

Model 2 stays on the region datasite; :meth:`_RegionModelHandle.load_state_dict` asks the
datasite to restore a round's snapshot.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedmugrep.compression import ChannelLayout, SparseUpdate, channel_layout
from fedmugrep.errors import (
    ConfigError,
    DatasiteUnresponsiveError,
    FedMugRepError,
)
from fedmugrep.federation.parties import (
    PublicArtefacts,
    StepReply,
)
from fedmugrep.federation.plan import FederationPlan
from fedmugrep.federation.wire import (
    encode_model_dict,
    pack_tensor,
    parameter_shapes,
    unpack_tensor,
)
from fedmugrep.pysyft.functions import TRANSACTION_METHODS


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
      :func:`~fedmugrep.pysyft.run.planned_calls`).
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
        from fedmugrep.pysyft.runtime import with_deadline  # deferred: loads syft, torch

        return with_deadline(fn, self.call_timeout, f"datasite '{self.name}', {what}")

    def _executions_now(self) -> int:
        from fedmugrep.pysyft.runtime import execution_outputs  # deferred: loads syft, torch

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
        from fedmugrep.pysyft.runtime import (  # deferred: loads syft, torch
            execution_outputs,
            fetch_output,
        )

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
        from fedmugrep.pysyft.runtime import call_remote  # deferred: loads syft, torch

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
        return unpack_tensor(out["sums"]), unpack_tensor(out["counts"]), float(out["n"])

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
                "z": pack_tensor(z),
                "previous": ""
                if previous_aggregate is None
                else encode_model_dict(previous_aggregate, self._orders),
            },
        )
        sparse = SparseUpdate.from_bytes(base64.b64decode(out["theta"].encode("ascii")))
        return StepReply(
            sparse, unpack_tensor(out["z_grad"]), float(out["loss_sum"]), int(out["nbytes"])
        )

    def release_calibration(
        self, theta: dict[str, torch.Tensor], z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """See :meth:`TransactionParty.release_calibration`."""
        out = self._remote(
            "release_calibration",
            {"theta": encode_model_dict(theta, self._orders), "z": pack_tensor(z)},
        )
        return tuple(unpack_tensor(out[k]) for k in ("z2", "err", "count"))  # type: ignore[return-value]

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
                        "z": pack_tensor(z),
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
        self._pooled = pack_tensor(pooled_intra)
        out = self._remote(
            "forward", self._forward_payload(round_index, self._pooled), tag=self.applied
        )
        return unpack_tensor(out["z"])

    def backward(self, round_index: int, z_grad: torch.Tensor) -> torch.Tensor:
        """See :meth:`RegionParty.backward`: returns the ``z`` of the updated model 2.

        That ``z`` is also journaled as the reply of the forwards that could follow (the next
        round's and an evaluation's), so a coordinator resumed after this round reads it from
        the journal instead of spending a call of the cap on a forward.
        """
        out = self._remote(
            "backward",
            {"round": int(round_index), "z_grad": pack_tensor(z_grad)},
            tag=self.applied,
        )
        self._set_applied(round_index)
        self.last_backward_round = int(round_index)
        self._journal_forwards(round_index, out)
        return unpack_tensor(out["z"])

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

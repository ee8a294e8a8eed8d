"""The data scientist's side of a federated training over PySyft datasites.

:class:`DataScientistSession` is what a data scientist does, whoever runs the datasites: log
into each one (a URL, or a datasite launched in this process), read the mocks, derive the
public artefacts and pretrain on the mocks only, submit one request per datasite pinning its
privacy contract and the public constant, follow the owners' reviews, and train once they
approved, over :class:`~fedmugrep.pysyft.proxies.SyftTransactionParty` and
:class:`~fedmugrep.pysyft.proxies.SyftRegionParty` proxies with the shared
:func:`~fedmugrep.federation.run.train`. Everything it keeps lives in its ``home``
(``session.json``, ``public.pt``, the checkpoint and the journal of replies), so a crashed
training resumes from there with the same run id (nothing released is charged again).

:func:`~fedmugrep.pysyft.run.run_syft` uses it after playing every owner itself;
``fedmugrep federation`` uses it against datasites other organisations run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedmugrep.errors import ConfigError, RequestDeniedError
from fedmugrep.federation.admission import (
    UNBOUNDED_EPSILON,
    region_contract,
    transaction_contract,
    update_coordinates,
)
from fedmugrep.federation.contract import PrivacyContract
from fedmugrep.federation.coordinator import FederationResult
from fedmugrep.federation.local import coordinator_region
from fedmugrep.federation.parties import PublicArtefacts, RegionParty
from fedmugrep.federation.plan import FederationPlan
from fedmugrep.federation.run import prepare_public, train
from fedmugrep.federation.wire import public_constant
from fedmugrep.pysyft.budget_api import my_budget
from fedmugrep.pysyft.proxies import CallStat, SyftRegionParty, SyftTransactionParty
from fedmugrep.pysyft.quiet import quiet_syft
from fedmugrep.pysyft.remote import strip_mock_marker

__all__ = [
    "DEFAULT_DATA_SCIENTIST",
    "FUNCTIONS",
    "DataScientistSession",
    "function_name",
    "SiteState",
    "SyftFederationResult",
    "planned_calls",
]

#: The data scientist account the demo and :func:`~fedmugrep.pysyft.run.run_syft` use.
DEFAULT_DATA_SCIENTIST = "data-scientist@fedmugrep.example"

#: The remote function each role's request runs. Each run submits it under its own name
#: (:func:`function_name`), so a data scientist can resubmit after a denial.
FUNCTIONS = {"transactions": "transaction_call", "region": "region_call"}


def function_name(role: str, run_id: str) -> str:
    """The name run ``run_id``'s request for a ``role`` datasite has on the datasite, e.g.
    ``transaction_call_3f9a0c1b2d4e``."""
    return f"{FUNCTIONS[role]}_{run_id.removeprefix('run-')}"


def training_kind(function: str) -> str | None:
    """The role's function a training request's function name runs (``transaction_call`` for
    ``transaction_call_3f9a0c1b2d4e``), or ``None`` when the name is not a training request's."""
    for kind in FUNCTIONS.values():
        if function.startswith(f"{kind}_") and function[len(kind) + 1 :].isalnum():
            return kind
    return None


#: Files of a session in its home (besides the checkpoint and the journal of replies).
SESSION_FILE = "session.json"
PUBLIC_FILE = "public.pt"


@dataclass
class SyftFederationResult(FederationResult):
    """:class:`FederationResult` plus what the PySyft runtime measured.

    Attributes:
        calls: every remote call (party, method, seconds, bytes sent and received).
        setup_seconds: launching datasites, uploads, accounts, requests and approvals.
        train_seconds: the coordinator's run (setup release, rounds, evaluations).
        executions: datasite name -> private executions of this run's request so far, as the
            datasite counts them against the call cap (a resumed run's ``calls`` hold only its
            own calls; this counts the crashed part too).
    """

    calls: list[CallStat] = field(default_factory=list)
    setup_seconds: float = 0.0
    train_seconds: float = 0.0
    executions: dict[str, int] = field(default_factory=dict)


def planned_calls(plan: FederationPlan) -> tuple[int, int]:
    """Calls one run makes to ``(each transaction datasite, the region datasite)``.

    Transaction: 1 setup release + 1 step per round + 1 evaluation per validation point + 1
    calibration release + 1 test evaluation. Region: 1 forward (the first round), 1 backward
    per round (each returns the ``z`` of the updated model 2, which the next round, the
    validation points, the calibration and the test evaluation use), and, when the best round
    is selected, at most 1 restore of its model and 1 forward of the restored state. The call
    caps of the requests are these numbers; they follow :meth:`Coordinator.run`'s schedule (a
    test checks that they match).
    """
    n_val = len(plan.validation_rounds)
    return 1 + plan.rounds + n_val + 1 + 1, 1 + plan.rounds + 2 * int(plan.selects_best)


@dataclass(frozen=True)
class SiteState:
    """What the data scientist sees of one datasite.

    Attributes:
        name: the datasite.
        role: ``"transactions"`` or ``"region"``.
        schema: the mock's columns and dtypes (``{column: dtype}``) per dataset.
        mock_rows: rows of each dataset's mock.
        description: each dataset's description (what its mock is made from).
        request: the review state of this session's request: ``"not submitted"``,
            ``"pending"``, ``"approved"`` or ``"denied: <the owner's reason>"``.
        budget: this data scientist's own cap, spent and remaining epsilon per dataset, as
            the datasite publishes it (:func:`~fedmugrep.pysyft.budget_api.my_budget`; empty
            when the owner set no cap for this account, ``None`` when the datasite does not
            publish budgets).
        plan_epsilon: the most epsilon this session's plan spends on each of the datasite's
            datasets (its contract's projected total; ``None`` without privacy).
    """

    name: str
    role: str
    schema: dict[str, dict[str, str]]
    mock_rows: dict[str, int]
    description: dict[str, str]
    request: str
    budget: list[dict[str, Any]] | None = None
    plan_epsilon: float | None = None


class DataScientistSession:
    """One data scientist's federated training over datasites (see the module doc).

    Args:
        targets: datasite name -> an URL ``http://host:port`` or a
            :class:`~fedmugrep.pysyft.runtime.DatasiteHandle`.
        roles: datasite name -> ``"transactions"`` or ``"region"`` (at most one region; none
            runs model 2 at the coordinator over the public geography).
        email: the data scientist's account on every datasite.
        password: its password (never written to disk by this class).
        plan: the federation plan.
        home: the data scientist's folder for this training.
        geography: without a region datasite, the communities' public geography model 2 is
            built on at the coordinator (default: the communities the agencies' mocks name,
            with their districts and mean mock centres).

    Raises:
        ConfigError: on a bad role map.
    """

    def __init__(
        self,
        targets: Mapping[str, Any],
        roles: Mapping[str, str],
        *,
        email: str,
        password: str,
        plan: FederationPlan,
        home: str | Path,
        geography: Any = None,
    ) -> None:
        if set(targets) != set(roles):
            raise ConfigError("every datasite needs a role ('transactions' or 'region')")
        bad = {n: r for n, r in roles.items() if r not in FUNCTIONS}
        if bad:
            name, role = next(iter(bad.items()))
            raise ConfigError(
                f"datasite '{name}': role must be 'transactions' or 'region' (got {role!r})"
            )
        regions = [n for n, r in roles.items() if r == "region"]
        if len(regions) > 1:
            raise ConfigError(f"a federation has at most one region datasite (got {regions})")
        self.targets = dict(targets)
        self.roles = dict(roles)
        self.region_name: str | None = regions[0] if regions else None
        self.agency_names = [n for n, r in roles.items() if r == "transactions"]
        if not self.agency_names:
            raise ConfigError("a federation needs at least one transaction datasite")
        self.email, self._password = email, password
        self.plan = plan
        self.home = Path(home)
        self.clients: dict[str, Any] = {}
        self._assets: dict[str, dict[str, Any]] = {}
        self.public: PublicArtefacts | None = None
        self.run_id: str | None = None
        self.package_dir: Path | None = None
        self.geography = geography

    # ------------------------------------------------------------------ connect
    def connect(self) -> None:
        """Log into every datasite and find its datasets.

        Raises:
            ConfigError: a datasite does not answer, refuses the credentials, or lacks the
                dataset its role needs (each message names the datasite).
        """
        from fedmugrep.pysyft.runtime import get_asset, login  # deferred: loads syft, torch

        for name, target in self.targets.items():
            if name not in self.clients:
                try:
                    self.clients[name] = login(target, self.email, self._password)
                except ConfigError as exc:
                    where = f" ({target})" if isinstance(target, str) else ""
                    raise ConfigError(f"datasite '{name}'{where}: {exc}") from None
        for name, client in self.clients.items():
            wanted = (
                ("communities", "mobility") if self.roles[name] == "region" else ("transactions",)
            )
            try:
                self._assets[name] = {d: get_asset(client, d) for d in wanted}
            except ConfigError as exc:
                raise ConfigError(
                    f"datasite '{name}' (role {self.roles[name]}): {exc}; its owner uploads "
                    "the role's datasets with fedmugrep datasite start"
                ) from None

    def _need_connected(self) -> None:
        if not self._assets:
            self.connect()

    def mocks(self) -> dict[str, dict[str, Any]]:
        """Each datasite's mocks by dataset (public frames)."""
        self._need_connected()
        return {
            n: {d: strip_mock_marker(a.mock) for d, a in assets.items()}
            for n, assets in self._assets.items()
        }

    def sites(self) -> list[SiteState]:
        """What each datasite shows: its mocks' schemas, this session's review state and the
        data scientist's remaining budget."""
        mocks = self.mocks()
        run_id = self.run_id or self._saved_run_id()
        out = []
        for name in self.targets:
            out.append(
                SiteState(
                    name=name,
                    role=self.roles[name],
                    schema={
                        d: {c: str(t) for c, t in m.dtypes.items()} for d, m in mocks[name].items()
                    },
                    mock_rows={d: len(m) for d, m in mocks[name].items()},
                    description={
                        d: str(getattr(a, "description", "") or "")
                        for d, a in self._assets[name].items()
                    },
                    request=self._request_state(name, run_id),
                    budget=my_budget(self.clients[name]),
                    plan_epsilon=self._plan_epsilon(name, mocks[name]),
                )
            )
        return out

    def _plan_epsilon(self, name: str, mocks: Mapping[str, Any]) -> float | None:
        """The plan's projected epsilon on datasite ``name`` (``None`` without privacy)."""
        p = self.plan.privacy
        if p is None:
            return None
        if self.roles[name] == "region":
            contract = region_contract(self.plan, n_communities=len(mocks["communities"]))
        elif p.update_mechanism == "laplace":  # its size needs the model: known at submit
            return None
        else:
            contract = transaction_contract(self.plan)
        eps = float(contract.projected_epsilon)
        return eps if eps < UNBOUNDED_EPSILON else None

    # ------------------------------------------------------------------ submit
    def submit(self, *, package_dir: Path | None = None, progress: bool = False) -> str:
        """Derive the public artefacts from the mocks, pretrain on them (``progress``: with a
        bar), and submit one request per datasite; returns the run id.

        Raises:
            ConfigError: the agencies' schemas disagree, or the mocks lack dates or prices.
        """
        import syft as sy  # deferred: loads syft, torch

        from fedmugrep.pysyft.functions import region_call, transaction_call  # deferred: syft
        from fedmugrep.pysyft.runtime import submit_request  # deferred: loads syft, torch

        mocks = self.mocks()
        self.package_dir = package_dir
        if self.region_name is not None:
            region_mock = mocks[self.region_name]["communities"]
            mobility_mock = mocks[self.region_name]["mobility"]
        else:  # model 2 at the coordinator: the public geography of the agencies' mocks
            region_mock, mobility_mock = self._public_geography(), None
        public = prepare_public(
            region_mock,
            mobility_mock,
            {n: mocks[n]["transactions"] for n in self.agency_names},
            self.plan,
            progress=progress,
        )
        run_id = f"run-{uuid.uuid4().hex[:12]}"
        constant = public_constant(public, self.plan, run_id=run_id)
        self._clear()
        self._save(public, run_id)
        calls_t, calls_r = planned_calls(self.plan)
        if self.region_name is not None:
            name = self.region_name
            submit_request(
                self.clients[name],
                _party_function(
                    sy,
                    region_call,
                    function_name("region", run_id),
                    self.clients[name],
                    {
                        "data": self._assets[name]["communities"],
                        "mobility": self._assets[name]["mobility"],
                    },
                    region_contract(
                        self.plan,
                        n_communities=len(public.encoders.vocab.communities),
                        package_dir=package_dir,
                    ),
                    constant,
                    calls_r,
                ),
            )
        t_contract = transaction_contract(
            self.plan, package_dir=package_dir, n_coords=update_coordinates(public.model_config)
        )
        for name in self.agency_names:
            submit_request(
                self.clients[name],
                _party_function(
                    sy,
                    transaction_call,
                    function_name("transactions", run_id),
                    self.clients[name],
                    {"data": self._assets[name]["transactions"]},
                    t_contract,
                    constant,
                    calls_t,
                ),
            )
        self.public, self.run_id = public, run_id
        return run_id

    def _public_geography(self) -> Any:
        """Without a region datasite: the communities the agencies' mocks name, with their
        districts and mean mock centres (all public)."""
        import pandas as pd  # deferred: only this path needs it

        if self.geography is not None:
            return self.geography
        frames = [self.mocks()[n]["transactions"] for n in self.agency_names]
        pooled = pd.concat(frames, ignore_index=True).dropna(subset=["community"])
        cols = [c for c in ("district", "lat", "lon") if c in pooled.columns]
        agg = {c: ("first" if c == "district" else "mean") for c in cols}
        return pooled.groupby("community", as_index=False).agg(agg)

    def geography_for_model(self) -> Any:
        """The public geography an exported model values properties in: the region mock's
        geography columns, or the coordinator's geography without a region datasite."""
        if self.region_name is None:
            return self._public_geography()
        comms = self.mocks()[self.region_name]["communities"]
        return comms[[c for c in ("community", "district", "lat", "lon") if c in comms.columns]]

    # ------------------------------------------------------------------ review state
    def _latest_code(self, name: str, run_id: str | None) -> Any:
        """The datasite's newest code of run ``run_id``, or ``None`` (not submitted)."""
        from fedmugrep.pysyft.runtime import find_code, pinned_constant  # deferred: loads syft

        if run_id is None:
            return None
        with quiet_syft():
            codes = self._codes(name, run_id, find_code, pinned_constant)
        return codes[-1] if codes else None

    @staticmethod
    def _code_state(code: Any) -> str:
        if code is None:
            return "not submitted"
        with quiet_syft():
            status = code.status
            if status.denied:
                return f"denied: {status.first_denial_reason}"
            return "approved" if status.approved else "pending"

    def _request_state(self, name: str, run_id: str | None) -> str:
        return self._code_state(self._latest_code(name, run_id))

    def _request_id(self, name: str, code: Any) -> str | None:
        """The id of the request that submitted ``code`` (hex, no dashes), read from the data
        scientist's own requests on the datasite."""
        if code is None:
            return None
        with quiet_syft():
            for request in self.clients[name].requests.get_all():
                try:
                    linked = request.code_id
                except Exception:  # noqa: BLE001 - a request without code (not ours)
                    continue
                if linked == code.id:
                    return str(request.id).replace("-", "").lower()
        return None

    def _codes(self, name: str, run_id: str, find_code: Any, pinned_constant: Any) -> list[Any]:
        """The datasite's code of run ``run_id`` (its request's function, pinning the run)."""
        return [
            c
            for c in find_code(self.clients[name], function_name(self.roles[name], run_id))
            if isinstance(pinned_constant(c, "public"), dict)
            and pinned_constant(c, "public").get("run_id") == run_id
        ]

    def review_states(self) -> dict[str, str]:
        """Datasite name -> the review state of this session's request."""
        self._need_connected()
        run_id = self.run_id or self._saved_run_id()
        return {n: self._request_state(n, run_id) for n in self.targets}

    def review(self) -> dict[str, tuple[str, str | None]]:
        """Datasite name -> (review state, request id) of this session's request; the id is
        what ``fedmugrep requests show|approve|deny`` take (or a prefix of it), ``None`` where
        nothing was submitted. One lookup of the request's code per datasite serves both."""
        self._need_connected()
        run_id = self.run_id or self._saved_run_id()
        out = {}
        for name in self.targets:
            code = self._latest_code(name, run_id)
            out[name] = (self._code_state(code), self._request_id(name, code))
        return out

    def require_approved(self) -> None:
        """Raises:
        RequestDeniedError: an owner denied the request (the message has their reason).
        ConfigError: a request is pending or was never submitted (names the datasites).
        """
        states = self.review_states()
        denied = {n: s for n, s in states.items() if s.startswith("denied")}
        if denied:
            name, state = next(iter(denied.items()))
            raise RequestDeniedError(
                f"the data owner of datasite '{name}' denied the training request: "
                f"{state[len('denied: ') :]}; change what they object to and submit again"
            )
        waiting = [n for n, s in states.items() if s == "pending"]
        if waiting:
            raise ConfigError(
                f"the owners of {', '.join(repr(n) for n in waiting)} have not reviewed the "
                "request yet; ask them to (fedmugrep requests list/approve), then train again"
            )
        missing = [n for n, s in states.items() if s == "not submitted"]
        if missing:
            raise ConfigError(
                f"no training request of this session on {', '.join(repr(n) for n in missing)}; "
                "submit it first (fedmugrep federation submit)"
            )

    # ------------------------------------------------------------------ train
    def train(
        self,
        *,
        progress: bool = True,
        parallel: bool = False,
        call_timeout: float | None = None,
        resume: bool = False,
        t_start: float | None = None,
    ) -> SyftFederationResult:
        """Train once every owner approved (the submitted run, or the saved one).

        ``resume`` continues the saved run from its checkpoint; without it a fresh training
        of the submitted requests starts (their call caps allow exactly one run).

        Raises:
            RequestDeniedError, ConfigError: see :meth:`require_approved`; with ``resume``,
                when no run is saved or an approved request pins another plan.
            BudgetExceededError: an owner's cap refused a release.
        """
        from fedmugrep.pysyft.runtime import execution_outputs  # deferred: loads syft, torch

        t_start = time.perf_counter() if t_start is None else t_start
        self._need_connected()
        if self.public is None or resume:
            self.public, self.run_id = self._load()
        self.require_approved()
        self._check_pinned()
        public, run_id = self.public, self.run_id
        assert run_id is not None
        if not resume:
            (self.home / "checkpoint.pt").unlink(missing_ok=True)
        agencies = {
            n: SyftTransactionParty(
                n,
                client=self.clients[n],
                asset=self._assets[n]["transactions"],
                public=public,
                plan=self.plan,
                function_name=function_name("transactions", run_id),
                journal=self.home / "replies" / n,
                call_timeout=call_timeout,
            )
            for n in self.agency_names
        }
        region: SyftRegionParty | RegionParty
        if self.region_name is not None:
            name = self.region_name
            region = SyftRegionParty(
                name,
                client=self.clients[name],
                communities=self._assets[name]["communities"],
                mobility=self._assets[name]["mobility"],
                function_name=function_name("region", run_id),
                journal=self.home / "replies" / name,
                retries=self.plan.retries,
                retry_backoff=self.plan.retry_backoff,
                call_timeout=call_timeout,
            )
        else:  # model 2 here, over public inputs only: nothing to noise or charge
            region = coordinator_region(
                public, self._public_geography(), self.plan, self.home / "region", run_id
            )
        t_train = time.perf_counter()
        base = train(
            self.plan,
            public,
            agencies,
            region,
            self.home / "checkpoint.pt",
            parallel=parallel,
            progress=progress,
        )
        t_end = time.perf_counter()
        executions = {
            n: len(execution_outputs(c, function_name(self.roles[n], run_id)))
            for n, c in self.clients.items()
        }
        calls = [c for party in (*agencies.values(), region) for c in getattr(party, "calls", [])]
        return SyftFederationResult(
            **{
                f.name: getattr(base, f.name)
                for f in fields(FederationResult)
                if f.name not in ("data_scientist", "homes")
            },
            calls=sorted(calls, key=lambda c: c.party),
            setup_seconds=t_train - t_start,
            train_seconds=t_end - t_train,
            data_scientist=self.email,
            executions=executions,
        )

    # ------------------------------------------------------------------ saved session
    def _clear(self) -> None:
        """A fresh run: forget the last run's checkpoint, session and journal of replies."""
        for name in ("checkpoint.pt", "checkpoint.tmp", SESSION_FILE, PUBLIC_FILE, "run_id"):
            (self.home / name).unlink(missing_ok=True)
        shutil.rmtree(self.home / "replies", ignore_errors=True)
        shutil.rmtree(self.home / "region", ignore_errors=True)  # model 2 of a region-less run
        self.home.mkdir(parents=True, exist_ok=True)

    def _save(self, public: PublicArtefacts, run_id: str) -> None:
        import torch  # deferred: loads torch

        self.home.mkdir(parents=True, exist_ok=True)
        torch.save(public, self.home / PUBLIC_FILE)
        (self.home / "run_id").write_text(run_id, encoding="utf-8")
        path = self.home / SESSION_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(
                {"run_id": run_id, "data_scientist": self.email, "sites": self.roles}, fh, indent=2
            )

    def _saved_run_id(self) -> str | None:
        path = self.home / SESSION_FILE
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8")).get("run_id")

    def _load(self) -> tuple[PublicArtefacts, str]:
        import torch  # deferred: loads torch

        path = self.home / SESSION_FILE
        if not path.is_file() or not (self.home / PUBLIC_FILE).is_file():
            raise ConfigError(
                f"nothing submitted from {self.home}: no {SESSION_FILE} (submit the training "
                "request first; a run that stopped before submitting cannot be resumed)"
            )
        session = json.loads(path.read_text(encoding="utf-8"))
        if session.get("data_scientist") != self.email:
            raise ConfigError(
                f"the run in {self.home} belongs to {session.get('data_scientist')!r}, not "
                f"{self.email!r}; resume it as {session.get('data_scientist')!r}"
            )
        public: PublicArtefacts = torch.load(self.home / PUBLIC_FILE, weights_only=False)
        return public, str(session["run_id"])

    def _check_pinned(self) -> None:
        """Every approved request pins the public constant this session would use (so neither
        a resumed run nor an edited plan can change what the owners approved)."""
        from fedmugrep.federation.wire import public_hash  # deferred: loads torch
        from fedmugrep.pysyft.runtime import find_code, pinned_constant  # deferred: loads syft

        assert self.public is not None and self.run_id is not None
        expected = public_hash(public_constant(self.public, self.plan, run_id=self.run_id))
        for name in self.clients:
            with quiet_syft():
                codes = self._codes(name, self.run_id, find_code, pinned_constant)
            if public_hash(pinned_constant(codes[-1], "public")) != expected:
                raise ConfigError(
                    f"the approved request on datasite '{name}' pins another plan or public "
                    "artefacts than this training would use; train with the plan you submitted"
                )


def _party_function(
    sy: Any,
    func: Any,
    name: str,
    client: Any,
    assets: dict[str, Any],
    contract: PrivacyContract,
    constant: dict,
    max_calls: int,
) -> Any:
    """``func`` as the syft function ``name`` pinning ``assets``, the contract and the public
    constant; per call it takes ``method: str`` and ``payload: str``; capped at ``max_calls``
    private runs."""
    from fedmugrep.pysyft.policy import CallCapPolicy  # deferred: loads syft, torch

    if not math.isfinite(max_calls) or max_calls < 1:
        raise ConfigError(f"max_calls must be >= 1 (got {max_calls})")
    with quiet_syft():
        input_policy = sy.MixedInputPolicy(
            client=client,
            **assets,
            contract=sy.Constant(val=contract.to_dict()),
            public=sy.Constant(val=constant),
            method=str,
            payload=str,
        )
        return sy.syft_function(
            input_policy=input_policy,
            output_policy=CallCapPolicy(max_calls=int(max_calls)),
            name=name,
        )(func)

"""Federated training on real PySyft datasites: the PySyft twin of :func:`~.local.run_local`.

:func:`run_syft` plays every role of ARCHITECTURE §2 on one machine, with the same inputs and the same
party code as the local runtime:

1. **Data owners.** One datasite per agency (home ``home/transactions_<agency>``, the local
   runtime's party folder) and one region datasite (``home/region``). Each uploads its private
   table(s) with a *mock*: rows of a synthetic city drawn with another seed
   (``make_city(CityConfig(seed=mock_seed))``, split by the same agency names), never derived
   from the private rows. The region's mock keeps the public geography (community names,
   districts, centres) and takes its attributes from the mock city. Each owner registers the
   data scientist and, with a private plan, sets the data scientist's cap in the datasite's
   ledger; a release without noise needs the owner's
   :func:`~fedmugrep.pysyft.functions.allow_exact_release` (always for the region, whose
   ``z`` is not noised yet; for agencies only under ``privacy=None``).
2. **Data scientist.** Derives the public artefacts from the mocks only
   (:func:`~fedmugrep.federation.artefacts.public_artefacts`), submits one request per datasite
   (:func:`~fedmugrep.pysyft.functions.transaction_call` /
   :func:`~fedmugrep.pysyft.functions.region_call`) pinning the privacy contract and the
   public constant, with a call cap of exactly the calls the run makes.
3. **Owners review** (:func:`~fedmugrep.pysyft.runtime.describe_request`, printed when
   ``progress``) and approve.
4. The unchanged :class:`~fedmugrep.federation.coordinator.Coordinator` runs over
   :class:`~fedmugrep.pysyft.proxies.SyftTransactionParty` and
   :class:`~fedmugrep.pysyft.proxies.SyftRegionParty` proxies.

Every datasite is stopped at the end, also on failure; homes (ledgers, region model state,
PySyft databases) stay on disk.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from fedmugrep.data.loading import (
    assign_regions,
    load_communities,
    load_mobility,
    load_transactions,
)
from fedmugrep.data.synthetic import CityConfig, make_city
from fedmugrep.errors import ConfigError
from fedmugrep.federation.admission import (
    region_contract,
    transaction_contract,
    update_coordinates,
)
from fedmugrep.federation.artefacts import (
    public_from_mocks,
    public_geography,
    region_mocks,
    transaction_mock,
)
from fedmugrep.federation.contract import PrivacyContract
from fedmugrep.federation.coordinator import Coordinator, FederationResult
from fedmugrep.federation.local import coordinator_region
from fedmugrep.federation.owners import agency_files, owner_caps
from fedmugrep.federation.parties import PublicArtefacts, RegionParty
from fedmugrep.federation.plan import FederationPlan
from fedmugrep.federation.wire import as_nanosecond_dates, public_constant
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.pysyft.functions import (
    allow_exact_release,
    clear_party_cache,
    region_call,
    transaction_call,
)
from fedmugrep.pysyft.proxies import CallStat, SyftRegionParty, SyftTransactionParty
from fedmugrep.pysyft.quiet import quiet_syft
from fedmugrep.pysyft.remote import strip_mock_marker

__all__ = [
    "DEFAULT_DATA_SCIENTIST",
    "SyftFederationResult",
    "planned_calls",
    "region_contract",
    "region_mocks",
    "run_syft",
    "transaction_contract",
    "transaction_mock",
]

Mode = Literal["inprocess", "http"]

#: The data scientist account :func:`run_syft` creates on every datasite (the ledger identity).
DEFAULT_DATA_SCIENTIST = "data-scientist@fedmugrep.example"


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


# ============================================================================ plan -> requests
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


# ============================================================================ the run
def run_syft(
    city_dir: str | Path,
    plan: FederationPlan,
    home: str | Path,
    *,
    mode: Mode = "inprocess",
    progress: bool = True,
    cap_epsilon: float | None = None,
    mock_seed: int = 1000,
    data_scientist: str = DEFAULT_DATA_SCIENTIST,
    pythonpath: Sequence[str | Path] | None = None,
    startup_timeout: float = 120.0,
    resume: bool = False,
    call_timeout: float | None = 600.0,
    parallel: bool | None = None,
    region_datasite: bool = True,
) -> SyftFederationResult:
    """Federated training on a synthetic-city folder over PySyft datasites (see module doc).

    Args:
        city_dir: folder written by ``fedmugrep synth``.
        plan: the federation plan (same as for :func:`~fedmugrep.federation.local.run_local`).
        home: parent folder of the datasites' homes (``transactions_<agency>``, ``region``)
            and of ``coordinator/`` (the coordinator's checkpoint, the run's session, the
            journal of replies); existing datasites there are reset unless ``resume``.
        mode: ``"inprocess"`` (datasites in this process) or ``"http"`` (one server process
            each, on 127.0.0.1).
        progress: print the review sheets and approvals, and show the rounds' progress bar.
        cap_epsilon: each agency owner's cap for the data scientist (default: the plan's epsilon).
        mock_seed: seed of the mock city.
        data_scientist: the data scientist's e-mail (ledger identity).
        pythonpath: HTTP mode: folder(s) the servers import fedmugrep from (first one also
            stamps the contracts' code hash); default: this process's fedmugrep.
        startup_timeout: seconds to wait for each HTTP server.
        call_timeout: HTTP mode: seconds to wait for a datasite's answer to one training call
            before giving up on it as hung (:class:`~fedmugrep.errors.DatasiteUnresponsiveError`:
            not retried; the plan's ``on_unresponsive`` applies; the checkpoint lets the run
            resume once the owner has restarted the datasite). ``None``: wait forever. Not used
            in-process (the call runs in this process).
        parallel: call the agencies' datasites of a round at the same time (one thread each).
            Default: in HTTP mode only, where each call waits on another process.
        region_datasite: ``False``: no region datasite (ARCHITECTURE §2). Model 2 then runs at the
            coordinator (state in ``home/coordinator/region``) over the noised intra-region
            representations and the public geography of the communities (names, districts,
            centres) only; nothing is charged for it, and only the agencies' datasites start.
        resume: continue the last run in ``home`` from its checkpoint: the datasites restart
            with their state (no reset, no upload), the data scientist logs in with the same
            account, the requests the owners approved are reused (nothing is submitted), and
            the same run id makes every release already made replay instead of being charged
            again (see :func:`_resume_public`).

    Returns:
        A :class:`SyftFederationResult`.

    Raises:
        BudgetExceededError: an owner's cap refused a release (nothing was released).
        ConfigError: on a bad city folder, mode or plan; with ``resume``, when there is no run
            to resume in ``home`` or the plan differs from the approved one.
    """
    from fedmugrep.pysyft.runtime import (  # deferred: loads syft, torch
        DatasiteConfig,
        approve_request,
        describe_request,
        execution_outputs,
        get_asset,
        launch_datasite,
        list_requests,
        register_data_scientist,
        submit_request,
        upload_dataset,
    )

    if mode not in ("inprocess", "http"):
        raise ConfigError(f"mode must be 'inprocess' or 'http' (got {mode!r})")
    if call_timeout is not None and not call_timeout > 0:
        raise ConfigError(
            f"call_timeout must be a positive number of seconds or None (got {call_timeout!r})"
        )
    city_dir, home = Path(city_dir), Path(home)
    by_name = agency_files(city_dir)
    files = list(by_name.values())
    caps = owner_caps(plan, cap_epsilon)
    package_dir = None
    if pythonpath:
        package_dir = Path(pythonpath[0]) / "fedmugrep"
    t_start = time.perf_counter()
    comms = load_communities(city_dir / "communities.csv")
    mob = load_mobility(city_dir / "mobility.csv", comms)
    mock_city = make_city(CityConfig(seed=mock_seed))
    ds_password = secrets.token_urlsafe(18)
    handles: dict[str, Any] = {}
    admins: dict[str, Any] = {}
    agency_names = list(by_name)

    region_name = "region"
    site_homes = {region_name: home / region_name} if region_datasite else {}
    geography = public_geography(comms)
    site_homes.update({n: home / f.stem for n, f in zip(agency_names, files, strict=True)})
    ck_dir = home / "coordinator"
    session = _load_session(ck_dir, data_scientist) if resume else None
    if session is not None:
        ds_password = session["password"]
    else:
        _clear_coordinator(ck_dir)

    def start(name: str) -> Any:
        clear_party_cache(site_homes[name])
        config = DatasiteConfig(
            name=name,
            home=site_homes[name],
            admin_email=f"owner@{name}.example",
            admin_password=secrets.token_urlsafe(18),
        )
        return launch_datasite(
            config,
            mode=mode,
            reset=session is None,
            pythonpath=pythonpath,
            startup_timeout=startup_timeout,
        )

    def open_site(name: str) -> Any:
        admin = handles[name].login_admin()
        admins[name] = admin
        register_data_scientist(
            admin, email=data_scientist, name="Data scientist", password=ds_password
        )
        return admin

    # PySyft renders repr() and str() of a DataFrame asset every time it loads it from its
    # store (~20 times per call); with pandas' default of fitting columns to the terminal that
    # costs ~1/3 of an in-process run. Narrower display options make it ~3x cheaper.
    display = pd.option_context(
        "display.max_columns", 20, "display.max_rows", 10, "display.min_rows", 4
    )
    display.__enter__()
    try:
        # ---------------------------------------------------------------- data owners
        if mode == "http":  # server processes start in parallel (each takes seconds)
            errors: list[BaseException] = []
            with ThreadPoolExecutor(max_workers=len(site_homes)) as pool:
                futures = {n: pool.submit(start, n) for n in site_homes}
                for n, future in futures.items():
                    try:
                        handles[n] = future.result()
                    except BaseException as exc:  # noqa: BLE001 - re-raised below
                        errors.append(exc)
            if errors:
                raise errors[0]
        else:
            for n in site_homes:
                handles[n] = start(n)
        if session is None and region_datasite:  # a resumed run finds its datasites as they were
            region_home = site_homes[region_name]
            admin = open_site(region_name)
            comms_mock, mob_mock = region_mocks(comms, mob, mock_city)
            upload_dataset(
                admin,
                name="communities",
                private=comms,
                mock=comms_mock,
                description="community attributes (mock: public geography, synthetic attributes)",
            )
            upload_dataset(
                admin,
                name="mobility",
                private=mob,
                mock=mob_mock,
                description="mobility flows between communities (mock: synthetic flows)",
            )
            if caps.region is not None:
                Ledger(region_home).set_cap(
                    data_scientist, region_name, epsilon=caps.region, delta=caps.delta
                )
            else:
                allow_exact_release(
                    region_home, by=f"owner@{region_name}.example", reason="synthetic city; exact z"
                )
        if session is None:
            for name, f in zip(agency_names, files, strict=True):
                site_home = site_homes[name]
                df = assign_regions(load_transactions(f), comms)
                admin = open_site(name)
                upload_dataset(
                    admin,
                    name="transactions",
                    private=df,
                    mock=transaction_mock(df, mock_city, name),
                    description=f"{name}'s sales with prices (mock: synthetic city seed {mock_seed})",
                )
                if caps.agency is not None:
                    Ledger(site_home).set_cap(
                        data_scientist, name, epsilon=caps.agency, delta=caps.delta
                    )
                else:
                    allow_exact_release(
                        site_home, by=f"owner@{name}.example", reason="synthetic city, no privacy"
                    )

        # ---------------------------------------------------------------- data scientist
        clients = {n: h.login(data_scientist, ds_password) for n, h in handles.items()}
        region_assets = (
            (
                get_asset(clients[region_name], "communities"),
                get_asset(clients[region_name], "mobility"),
            )
            if region_datasite
            else None
        )
        # what model 2 is built and pretrained on: the region datasite's mocks, or the public
        # geography at the coordinator
        region_public = (
            (strip_mock_marker(region_assets[0].mock), strip_mock_marker(region_assets[1].mock))
            if region_assets is not None
            else (geography, None)
        )
        tx_assets = {n: get_asset(clients[n], "transactions") for n in agency_names}
        if session is not None:  # the approved requests pin the public constant
            run_id = session["run_id"]
            public = _resume_public(ck_dir, clients, plan, run_id)
        else:
            public = public_from_mocks(
                region_public[0], [tx_assets[n].mock for n in agency_names], plan
            )
            if plan.pretrain_epochs:  # public: the mocks only, before any private release
                from fedmugrep.federation.pretrain import pretrain_on_mocks  # deferred: loads torch

                public.init_state = pretrain_on_mocks(
                    public,
                    pd.concat(
                        [
                            as_nanosecond_dates(strip_mock_marker(tx_assets[n].mock))
                            for n in agency_names
                        ],
                        ignore_index=True,
                    ),
                    *region_public,
                    epochs=plan.pretrain_epochs,
                    seed=plan.seed,
                )
            run_id = f"run-{uuid.uuid4().hex[:12]}"
            constant = public_constant(public, plan, run_id=run_id)
            _save_session(
                ck_dir, public, run_id=run_id, data_scientist=data_scientist, password=ds_password
            )
            calls_t, calls_r = planned_calls(plan)
            if region_assets is not None:
                submit_request(
                    clients[region_name],
                    _party_function(
                        region_call,
                        clients[region_name],
                        {"data": region_assets[0], "mobility": region_assets[1]},
                        region_contract(
                            plan,
                            n_communities=len(public.encoders.vocab.communities),
                            package_dir=package_dir,
                        ),
                        constant,
                        calls_r,
                    ),
                )
            t_contract = transaction_contract(
                plan,
                package_dir=package_dir,
                n_coords=update_coordinates(public.model_config),
            )
            for n in agency_names:
                submit_request(
                    clients[n],
                    _party_function(
                        transaction_call,
                        clients[n],
                        {"data": tx_assets[n]},
                        t_contract,
                        constant,
                        calls_t,
                    ),
                )

        # ---------------------------------------------------------------- owners review
        for n, admin in admins.items():
            for request in list_requests(admin, status="pending"):
                if progress:
                    print(f"--- datasite '{n}': review ---\n{describe_request(request)}")
                approve_request(request)
                if progress:
                    print(f"--- datasite '{n}': approved ---")

        # ---------------------------------------------------------------- training
        timeout = call_timeout if mode == "http" else None
        if parallel is None:
            parallel = mode == "http"
        agencies = {
            n: SyftTransactionParty(
                n,
                client=clients[n],
                asset=tx_assets[n],
                public=public,
                plan=plan,
                journal=ck_dir / "replies" / n,
                call_timeout=timeout,
            )
            for n in agency_names
        }
        region: SyftRegionParty | RegionParty
        if region_assets is not None:
            region = SyftRegionParty(
                region_name,
                client=clients[region_name],
                communities=region_assets[0],
                mobility=region_assets[1],
                journal=ck_dir / "replies" / region_name,
                retries=plan.retries,
                retry_backoff=plan.retry_backoff,
                call_timeout=timeout,
            )
        else:  # model 2 here, over public inputs only: nothing to noise or charge
            region = coordinator_region(public, geography, plan, ck_dir / "region", run_id)
        t_train = time.perf_counter()
        coordinator = Coordinator(
            plan,
            public,
            agencies,
            region,
            checkpoint=ck_dir / "checkpoint.pt",
            parallel=parallel,
        )
        base = coordinator.run(progress=progress)
        t_end = time.perf_counter()
        executions = {
            n: len(execution_outputs(c, "region_call" if n == region_name else "transaction_call"))
            for n, c in clients.items()
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
            data_scientist=data_scientist,
            homes={n: h.config.home for n, h in handles.items()},
            executions=executions,
        )
    finally:
        display.__exit__(None, None, None)
        for handle in handles.values():
            try:
                handle.stop()
            except Exception:  # noqa: BLE001 - stop the others whatever happens
                pass
        for handle in handles.values():
            clear_party_cache(handle.config.home)


#: Files of a run in ``home/coordinator`` (besides the checkpoint and the journal of replies).
SESSION_FILE = "session.json"
PUBLIC_FILE = "public.pt"


def _clear_coordinator(ck_dir: Path) -> None:
    """A fresh run: forget the last run's checkpoint, session and journal of replies."""
    for name in ("checkpoint.pt", "checkpoint.tmp", SESSION_FILE, PUBLIC_FILE, "run_id"):
        (ck_dir / name).unlink(missing_ok=True)
    shutil.rmtree(ck_dir / "replies", ignore_errors=True)
    shutil.rmtree(ck_dir / "region", ignore_errors=True)  # model 2 of a region-less run
    ck_dir.mkdir(parents=True, exist_ok=True)


def _save_session(
    ck_dir: Path, public: PublicArtefacts, *, run_id: str, data_scientist: str, password: str
) -> None:
    """What a resumed run needs: the run id, the data scientist's account (its password in a
    file only this user can read) and the public artefacts the requests pin."""
    import torch  # deferred: loads torch

    ck_dir.mkdir(parents=True, exist_ok=True)
    torch.save(public, ck_dir / PUBLIC_FILE)
    (ck_dir / "run_id").write_text(run_id, encoding="utf-8")
    path = ck_dir / SESSION_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"run_id": run_id, "data_scientist": data_scientist, "password": password}, fh)


def _load_session(ck_dir: Path, data_scientist: str) -> dict[str, str]:
    """The session :func:`_save_session` left in ``ck_dir``.

    Raises:
        ConfigError: when there is none, or it belongs to another data scientist.
    """
    path = ck_dir / SESSION_FILE
    if not path.is_file() or not (ck_dir / PUBLIC_FILE).is_file():
        raise ConfigError(
            f"nothing to resume in {ck_dir.parent}: no {SESSION_FILE} (the run stopped before "
            "its requests were submitted); start a new run without resume"
        )
    session = json.loads(path.read_text(encoding="utf-8"))
    if session.get("data_scientist") != data_scientist:
        raise ConfigError(
            f"the run in {ck_dir.parent} belongs to {session.get('data_scientist')!r}, not "
            f"{data_scientist!r}; resume it with data_scientist={session.get('data_scientist')!r}"
        )
    return session


def _resume_public(
    ck_dir: Path, clients: dict[str, Any], plan: FederationPlan, run_id: str
) -> PublicArtefacts:
    """The public artefacts of the run being resumed, checked against what every datasite's
    owner approved: each datasite must hold an *approved* request of the party function whose
    pinned public constant has this run id and equals the one rebuilt from the saved
    artefacts and ``plan`` (so a resumed run cannot change the plan, hence the noise).

    Raises:
        ConfigError: when a request is missing, not approved, or pins another constant.
    """
    import torch  # deferred: loads torch

    from fedmugrep.federation.wire import public_hash  # deferred: loads torch
    from fedmugrep.pysyft.runtime import find_code, pinned_constant  # deferred: loads syft, torch

    public: PublicArtefacts = torch.load(ck_dir / PUBLIC_FILE, weights_only=False)
    expected = public_hash(public_constant(public, plan, run_id=run_id))
    for name, client in clients.items():
        fname = "region_call" if name == "region" else "transaction_call"
        codes = [
            c
            for c in find_code(client, fname)
            if isinstance(pinned_constant(c, "public"), dict)
            and pinned_constant(c, "public").get("run_id") == run_id
        ]
        if not codes:
            raise ConfigError(
                f"datasite '{name}' has no request '{fname}' of run {run_id}; the run cannot be "
                "resumed there, start a new run without resume"
            )
        code = codes[-1]
        if not code.status.approved:
            raise ConfigError(
                f"the request '{fname}' of run {run_id} on datasite '{name}' is not approved; "
                "ask its owner to approve it, or start a new run"
            )
        if public_hash(pinned_constant(code, "public")) != expected:
            raise ConfigError(
                f"the approved request on datasite '{name}' pins another plan or public "
                "artefacts than this resume would use; resume with the same plan"
            )
    return public


def _party_function(
    func: Any,
    client: Any,
    assets: dict[str, Any],
    contract: PrivacyContract,
    constant: dict,
    max_calls: int,
) -> Any:
    """A syft function pinning ``assets``, the contract and the public constant; per call it
    takes ``method: str`` and ``payload: str``; capped at ``max_calls`` private runs.

    Like :func:`~fedmugrep.pysyft.runtime.make_remote_function` (which pins a single
    asset and a single constant) with a second asset and a second constant.
    """
    import syft as sy  # deferred: loads syft, torch

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
            input_policy=input_policy, output_policy=CallCapPolicy(max_calls=int(max_calls))
        )(func)

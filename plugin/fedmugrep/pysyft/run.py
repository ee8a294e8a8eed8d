"""Federated training on real PySyft datasites: the PySyft twin of :func:`~.local.run_local`.

:func:`run_syft` plays every role of ARCHITECTURE §2 on one machine, with the same inputs and the same
party code as the local runtime:

1. **Data owners.** One datasite per agency (home ``home/transactions_<agency>``, the local
   runtime's party folder) and one region datasite (``home/region``). Each uploads its private
   table(s) with a *mock* made as ``mock`` says (the owners' public declaration, or the
   built-in synthetic city for the synthetic example data), never derived from the private
   rows. Each owner registers the data scientist and, with a private plan, sets the data
   scientist's cap in the datasite's ledger; a release without noise needs the owner's
   :func:`~fedmugrep.pysyft.functions.allow_exact_release` (only under ``privacy=None``).
2. **Data scientist** (:class:`~fedmugrep.pysyft.scientist.DataScientistSession`, the same
   code ``fedmugrep federation`` runs against other organisations' datasites): derives the
   public artefacts from the mocks only, submits one request per datasite pinning the privacy
   contract and the public constant, with a call cap of exactly the calls the run makes.
3. **Owners review** (:func:`~fedmugrep.pysyft.runtime.describe_request`, printed when
   ``progress``) and approve.
4. The data scientist trains: the shared :func:`~fedmugrep.federation.run.train` over
   :class:`~fedmugrep.pysyft.proxies.SyftTransactionParty` and
   :class:`~fedmugrep.pysyft.proxies.SyftRegionParty` proxies.

Every datasite is stopped at the end, also on failure; homes (ledgers, region model state,
PySyft databases) stay on disk.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from tqdm.auto import tqdm

from fedmugrep.errors import ConfigError
from fedmugrep.federation.admission import region_contract, transaction_contract
from fedmugrep.federation.artefacts import (
    public_from_mocks,
    region_mocks,
    transaction_mock,
)
from fedmugrep.federation.mocks import MockDeclaration
from fedmugrep.federation.owners import owner_caps
from fedmugrep.federation.plan import FederationPlan
from fedmugrep.federation.run import CityTables, city_declaration
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.pysyft.functions import allow_exact_release, clear_party_cache
from fedmugrep.pysyft.scientist import (
    DEFAULT_DATA_SCIENTIST,
    DataScientistSession,
    SyftFederationResult,
    planned_calls,
)

__all__ = [
    "DEFAULT_DATA_SCIENTIST",
    "SyftFederationResult",
    "planned_calls",
    "public_from_mocks",
    "region_contract",
    "region_mocks",
    "run_syft",
    "transaction_contract",
    "transaction_mock",
]

Mode = Literal["inprocess", "http"]

#: The data scientist's generated password, kept (0600) in the coordinator's folder so that
#: ``resume`` can log in again: only this harness, which plays every role, needs it.
HARNESS_FILE = "harness.json"


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
    mock: MockDeclaration | str | None = "synthetic",
    data_scientist: str = DEFAULT_DATA_SCIENTIST,
    pythonpath: Sequence[str | Path] | None = None,
    startup_timeout: float = 120.0,
    resume: bool = False,
    call_timeout: float | None = 600.0,
    parallel: bool | None = None,
    region_datasite: bool = True,
) -> SyftFederationResult:
    """Federated training on a city folder over PySyft datasites (see module doc).

    Args:
        city_dir: a city folder (one ``transactions_<agency>.csv`` per agency,
            ``communities.csv``, optional ``mobility.csv`` and ``public.toml``).
        plan: the federation plan (same as for :func:`~fedmugrep.federation.local.run_local`).
        home: parent folder of the datasites' homes (``transactions_<agency>``, ``region``)
            and of ``coordinator/`` (the data scientist's session: checkpoint, public
            artefacts, journal of replies); existing datasites there are reset unless ``resume``.
        mode: ``"inprocess"`` (datasites in this process) or ``"http"`` (one server process
            each, on 127.0.0.1).
        progress: print the review sheets and approvals, and show the rounds' progress bar.
        cap_epsilon: each agency owner's cap for the data scientist (default: the plan's epsilon).
        mock_seed: seed of the synthetic mock city (``mock="synthetic"``).
        mock: what the owners' mocks are made from
            (:func:`~fedmugrep.federation.run.city_declaration`): ``"synthetic"``,
            ``"declared"`` (the folder's ``public.toml``), ``None`` (whichever the folder has)
            or a declaration.
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
            again.

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
        launch_datasite,
        list_requests,
        register_data_scientist,
        upload_dataset,
    )

    if mode not in ("inprocess", "http"):
        raise ConfigError(f"mode must be 'inprocess' or 'http' (got {mode!r})")
    if call_timeout is not None and not call_timeout > 0:
        raise ConfigError(
            f"call_timeout must be a positive number of seconds or None (got {call_timeout!r})"
        )
    city_dir, home = Path(city_dir), Path(home)
    t_start = time.perf_counter()
    decl = city_declaration(city_dir, mock)
    if decl.kind == "synthetic":
        decl = MockDeclaration(kind="synthetic", seed=mock_seed, source=decl.source)
    city = CityTables(city_dir, decl)
    caps = owner_caps(plan, cap_epsilon)
    package_dir = Path(pythonpath[0]) / "fedmugrep" if pythonpath else None
    ck_dir = home / "coordinator"
    region_name = "region"
    site_homes = {region_name: home / region_name} if region_datasite else {}
    site_homes.update({n: home / f.stem for n, f in city.files.items()})
    ds_password = _harness_password(ck_dir, data_scientist) if resume else None
    if ds_password is None:
        if resume:
            raise ConfigError(
                f"nothing to resume in {home}: no session (the run stopped before its requests "
                "were submitted); start a new run without resume"
            )
        ds_password = secrets.token_urlsafe(18)
    handles: dict[str, Any] = {}
    admins: dict[str, Any] = {}

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
            reset=not resume,
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

    def cap_or_allow(site_home: Path, name: str, cap: float | None) -> None:
        if cap is not None:
            Ledger(site_home).set_cap(data_scientist, name, epsilon=cap, delta=caps.delta)
        else:
            allow_exact_release(site_home, by=f"owner@{name}.example", reason="no privacy plan")

    # PySyft renders repr() and str() of a DataFrame asset every time it loads it from its
    # store (~20 times per call); with pandas' default of fitting columns to the terminal that
    # costs ~1/3 of an in-process run. Narrower display options make it ~3x cheaper.
    display = pd.option_context(
        "display.max_columns", 20, "display.max_rows", 10, "display.min_rows", 4
    )
    display.__enter__()
    try:
        # ---------------------------------------------------------------- data owners
        bar = tqdm(
            total=len(site_homes),
            desc=f"starting datasites ({mode})",
            unit="datasite",
            disable=not progress,
        )
        if mode == "http":  # server processes start in parallel (each takes seconds)
            errors: list[BaseException] = []
            with ThreadPoolExecutor(max_workers=len(site_homes)) as pool:
                futures = {pool.submit(start, n): n for n in site_homes}
                for future in as_completed(futures):
                    try:
                        handles[futures[future]] = future.result()
                    except BaseException as exc:  # noqa: BLE001 - re-raised below
                        errors.append(exc)
                    bar.update()
            if errors:
                bar.close()
                raise errors[0]
        else:
            for n in site_homes:
                handles[n] = start(n)
                bar.update()
        bar.close()
        uploads = tqdm(
            total=0 if resume else len(site_homes),
            desc="uploading private data and mocks",
            unit="datasite",
            disable=not progress or resume,
        )
        if not resume:  # a resumed run finds its datasites as they were
            where = "; ".join(decl.describe())
            if region_datasite:
                admin = open_site(region_name)
                comms_mock, mob_mock = city.region_mocks()
                upload_dataset(
                    admin,
                    name="communities",
                    private=city.communities,
                    mock=comms_mock,
                    description=f"community attributes (mock: public geography; {where})",
                )
                upload_dataset(
                    admin,
                    name="mobility",
                    private=city.mobility_table(),
                    mock=mob_mock,
                    description="mobility flows between communities (mock: no flows)"
                    if decl.kind != "synthetic"
                    else "mobility flows (mock: synthetic flows)",
                )
                cap_or_allow(site_homes[region_name], region_name, caps.region)
                uploads.update()
            for name, df in city.agencies.items():
                admin = open_site(name)
                upload_dataset(
                    admin,
                    name="transactions",
                    private=df,
                    mock=city.agency_mock(name),
                    description=f"{name}'s sales with prices (mock: {where})",
                )
                cap_or_allow(site_homes[name], name, caps.agency)
                uploads.update()
            _save_harness(ck_dir, data_scientist, ds_password)
        uploads.close()

        # ---------------------------------------------------------------- data scientist
        roles = {n: ("region" if n == region_name else "transactions") for n in site_homes}
        session = DataScientistSession(
            handles,
            roles,
            email=data_scientist,
            password=ds_password,
            plan=plan,
            home=ck_dir,
            geography=None if region_datasite else city.geography,
        )
        session.connect()
        if not resume:
            session.submit(package_dir=package_dir, progress=progress)

        # ---------------------------------------------------------------- owners review
        for n, admin in admins.items():
            for request in list_requests(admin, status="pending"):
                if progress:
                    print(f"--- datasite '{n}': review ---\n{describe_request(request)}")
                approve_request(request)
                if progress:
                    print(f"--- datasite '{n}': approved ---")

        # ---------------------------------------------------------------- training
        if parallel is None:
            parallel = mode == "http"
        result = session.train(
            progress=progress,
            parallel=parallel,
            call_timeout=call_timeout if mode == "http" else None,
            resume=resume,
            t_start=t_start,
        )
        result.homes = {n: h.config.home for n, h in handles.items()}
        return result
    finally:
        display.__exit__(None, None, None)
        for handle in handles.values():
            try:
                handle.stop()
            except Exception:  # noqa: BLE001 - stop the others whatever happens
                pass
        for handle in handles.values():
            clear_party_cache(handle.config.home)


def _save_harness(ck_dir: Path, data_scientist: str, password: str) -> None:
    ck_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(ck_dir / HARNESS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"data_scientist": data_scientist, "password": password}, fh)


def _harness_password(ck_dir: Path, data_scientist: str) -> str | None:
    """The password :func:`_save_harness` kept, or ``None`` when there is none.

    Raises:
        ConfigError: when the run there belongs to another data scientist.
    """
    path = ck_dir / HARNESS_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("data_scientist") != data_scientist:
        raise ConfigError(
            f"the run in {ck_dir.parent} belongs to {saved.get('data_scientist')!r}, not "
            f"{data_scientist!r}; resume it with data_scientist={saved.get('data_scientist')!r}"
        )
    return str(saved["password"])

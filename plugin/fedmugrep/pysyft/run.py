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
from dataclasses import dataclass, field
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


#: Name of the region datasite (and of its home folder) in a one-process run.
REGION_NAME = "region"


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
    package_dir = Path(pythonpath[0]) / "fedmugrep" if pythonpath else None
    ck_dir = home / "coordinator"
    site_homes = {REGION_NAME: home / REGION_NAME} if region_datasite else {}
    site_homes.update({n: home / f.stem for n, f in city.files.items()})
    ds_password = _harness_password(ck_dir, data_scientist) if resume else None
    if ds_password is None:
        if resume:
            raise ConfigError(
                f"nothing to resume in {home}: no session (the run stopped before its requests "
                "were submitted); start a new run without resume"
            )
        ds_password = secrets.token_urlsafe(18)
    owners = _PlayedOwners(
        city=city,
        caps=owner_caps(plan, cap_epsilon),
        site_homes=site_homes,
        data_scientist=data_scientist,
        ds_password=ds_password,
        mode=mode,
        resume=resume,
        pythonpath=pythonpath,
        startup_timeout=startup_timeout,
        progress=progress,
    )

    # PySyft renders repr() and str() of a DataFrame asset every time it loads it from its
    # store (~20 times per call); with pandas' default of fitting columns to the terminal that
    # costs ~1/3 of an in-process run. Narrower display options make it ~3x cheaper.
    display = pd.option_context(
        "display.max_columns", 20, "display.max_rows", 10, "display.min_rows", 4
    )
    display.__enter__()
    try:
        owners.start_all()
        if not resume:  # a resumed run finds its datasites as they were
            owners.upload_all()
            _save_harness(ck_dir, data_scientist, ds_password)

        roles = {n: ("region" if n == REGION_NAME else "transactions") for n in site_homes}
        session = DataScientistSession(
            owners.handles,
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
        owners.approve_pending()

        if parallel is None:
            parallel = mode == "http"
        result = session.train(
            progress=progress,
            parallel=parallel,
            call_timeout=call_timeout if mode == "http" else None,
            resume=resume,
            t_start=t_start,
        )
        result.homes = {n: h.config.home for n, h in owners.handles.items()}
        return result
    finally:
        display.__exit__(None, None, None)
        owners.stop_all()


@dataclass
class _PlayedOwners:
    """The data owners :func:`run_syft` plays, one per datasite: each starts their datasite,
    uploads their private data with its mock, opens the data scientist's account with a cap
    (or, without a privacy plan, the opt-in to exact releases), and reviews and approves the
    pending requests."""

    city: CityTables
    caps: Any
    site_homes: dict[str, Path]
    data_scientist: str
    ds_password: str
    mode: Mode
    resume: bool
    pythonpath: Sequence[str | Path] | None
    startup_timeout: float
    progress: bool
    handles: dict[str, Any] = field(default_factory=dict)
    admins: dict[str, Any] = field(default_factory=dict)

    def _start(self, name: str) -> Any:
        from fedmugrep.pysyft.runtime import (  # deferred: loads syft, torch
            DatasiteConfig,
            launch_datasite,
        )

        clear_party_cache(self.site_homes[name])
        config = DatasiteConfig(
            name=name,
            home=self.site_homes[name],
            admin_email=f"owner@{name}.example",
            admin_password=secrets.token_urlsafe(18),
        )
        return launch_datasite(
            config,
            mode=self.mode,
            reset=not self.resume,
            pythonpath=self.pythonpath,
            startup_timeout=self.startup_timeout,
        )

    def start_all(self) -> None:
        """Start every datasite (HTTP servers in parallel: each takes seconds)."""
        bar = tqdm(
            total=len(self.site_homes),
            desc=f"starting datasites ({self.mode})",
            unit="datasite",
            disable=not self.progress,
        )
        try:
            if self.mode != "http":
                for n in self.site_homes:
                    self.handles[n] = self._start(n)
                    bar.update()
                return
            errors: list[BaseException] = []
            with ThreadPoolExecutor(max_workers=len(self.site_homes)) as pool:
                futures = {pool.submit(self._start, n): n for n in self.site_homes}
                for future in as_completed(futures):
                    try:
                        self.handles[futures[future]] = future.result()
                    except BaseException as exc:  # noqa: BLE001 - re-raised below
                        errors.append(exc)
                    bar.update()
            if errors:
                raise errors[0]
        finally:
            bar.close()

    def _open(self, name: str, cap: float | None) -> Any:
        """Log in as the owner, create the data scientist's account, set their cap."""
        from fedmugrep.pysyft.runtime import register_data_scientist  # deferred: loads syft

        admin = self.handles[name].login_admin()
        self.admins[name] = admin
        register_data_scientist(
            admin, email=self.data_scientist, name="Data scientist", password=self.ds_password
        )
        home = self.site_homes[name]
        if cap is not None:
            Ledger(home).set_cap(self.data_scientist, name, epsilon=cap, delta=self.caps.delta)
        else:
            allow_exact_release(home, by=f"owner@{name}.example", reason="no privacy plan")
        return admin

    def upload_all(self) -> None:
        """Every owner uploads their private data with its mock and opens the account."""
        from fedmugrep.pysyft.runtime import upload_dataset  # deferred: loads syft, torch

        city = self.city
        decl = city.declaration
        where = "; ".join(decl.describe())
        with tqdm(
            total=len(self.site_homes),
            desc="uploading private data and mocks",
            unit="datasite",
            disable=not self.progress,
        ) as bar:
            if REGION_NAME in self.site_homes:
                admin = self._open(REGION_NAME, self.caps.region)
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
                bar.update()
            for name, df in city.agencies.items():
                admin = self._open(name, self.caps.agency)
                upload_dataset(
                    admin,
                    name="transactions",
                    private=df,
                    mock=city.agency_mock(name),
                    description=f"{name}'s sales with prices (mock: {where})",
                )
                bar.update()

    def approve_pending(self) -> None:
        """Each owner reads the review sheet of every pending request and approves it."""
        from fedmugrep.pysyft.runtime import (  # deferred: loads syft, torch
            approve_request,
            describe_request,
            list_requests,
        )

        for n, admin in self.admins.items():
            for request in list_requests(admin, status="pending"):
                if self.progress:
                    print(f"--- datasite '{n}': review ---\n{describe_request(request)}")
                approve_request(request)
                if self.progress:
                    print(f"--- datasite '{n}': approved ---")

    def stop_all(self) -> None:
        """Stop every datasite that started, whatever happens, and drop the party caches."""
        for handle in self.handles.values():
            try:
                handle.stop()
            except Exception:  # noqa: BLE001 - stop the others whatever happens
                pass
        for handle in self.handles.values():
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

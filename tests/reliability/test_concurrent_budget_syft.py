"""50 concurrent requests from two data scientists through a real HTTP datasite: no overspend.

The ledger-level twin (``test_concurrent_budget.py``) races processes on one SQLite ledger.
Here the requests travel the way a data scientist's do: each of ten threads logs into a real
datasite server (a separate process on 127.0.0.1, serving a snapshot of fedmugrep) and calls
an approved remote function that releases a Laplace-noised count charged to the datasite's
ledger (:func:`~fedmugrep.pysyft.toy.toy_charge`). The server runs the calls
concurrently (uvicorn's thread pool), so the charges race inside the datasite process.
Identical releases per data scientist make the number that fits exact: fewer charged would be a
lost update, more an overspend.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("syft")

from fedmugrep.errors import BudgetExceededError  # noqa: E402
from fedmugrep.privacy.laplace import LaplaceMechanism  # noqa: E402
from fedmugrep.privacy.ledger import Ledger  # noqa: E402
from fedmugrep.pysyft.runtime import (
    DatasiteConfig,
    PrivacyContract,
    approve_request,
    call_remote,
    get_asset,
    launch_datasite,
    list_requests,
    login,
    make_remote_function,
    register_data_scientist,
    submit_request,
    upload_dataset,
)
from fedmugrep.pysyft.toy import toy_charge  # noqa: E402
from tests.conftest import package_snapshot  # noqa: E402
from tests.reliability.test_concurrent_budget import DELTA, fitting  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EPS = 0.5  # per release
CAPS = {"alice@uni.example": 3.0, "bob@lab.example": 2.0}
THREADS_PER_DS, CALLS_PER_THREAD = 5, 5  # 2 x 5 x 5 = 50 requests
PASSWORD = "a-long-enough-secret-1"


def test_fifty_concurrent_requests_through_a_datasite_never_overspend(tmp_path: Path) -> None:
    snap = tmp_path / "pkg"
    package_snapshot(snap)
    config = DatasiteConfig(
        name="agency-c",
        home=tmp_path / "agency-c",
        admin_email="owner@agency-c.example",
        admin_password="owner-secret-1",
    )
    handle = launch_datasite(config, mode="http", reset=True, pythonpath=[snap])
    try:
        admin = handle.login_admin()
        upload_dataset(
            admin,
            name="transactions",
            private=pd.DataFrame({"price": [100.0] * 40}),
            mock=pd.DataFrame({"price": [1.0] * 40}),
            description="toy sales",
        )
        ledger = Ledger(config.home)
        contract = PrivacyContract.for_installed(
            mechanisms=("laplace",),
            epsilon_per_release=EPS,
            rounds=50,
            projected_epsilon=50 * EPS,
            package_dir=snap / "fedmugrep",
        )
        for ds, cap in CAPS.items():
            register_data_scientist(admin, email=ds, name=ds.split("@")[0], password=PASSWORD)
            ledger.set_cap(ds, config.name, epsilon=cap, delta=DELTA)
            client = login(handle.url, ds, PASSWORD)  # type: ignore[arg-type]
            asset = get_asset(client, "transactions")
            submit_request(
                client,
                make_remote_function(
                    toy_charge, client=client, asset=asset, contract=contract, args={"label": str}
                ),
            )
        requests = list_requests(admin, status="pending", function_name="toy_charge")
        assert len(requests) == 2
        for request in requests:
            approve_request(request)

        event = LaplaceMechanism.for_budget(epsilon=EPS, sensitivity=1.0, bound=1e6).event()
        fit = {ds: fitting(event, cap) for ds, cap in CAPS.items()}
        assert fit == {"alice@uni.example": 6, "bob@lab.example": 4}

        # every thread logs in first, then all fire at once
        outcomes: list[tuple[str, str, str]] = []
        lock = threading.Lock()
        ready = threading.Barrier(2 * THREADS_PER_DS)

        def worker(ds: str, w: int) -> None:
            client = login(handle.url, ds, PASSWORD)  # type: ignore[arg-type]
            asset = get_asset(client, "transactions")
            ready.wait(timeout=300)
            for i in range(CALLS_PER_THREAD):
                label = f"{ds.split('@')[0]}-w{w}-{i}"
                try:
                    got = call_remote(client, "toy_charge", data=asset, label=label)
                    status = "charged" if got["label"] == label else f"wrong reply {got}"
                except BudgetExceededError:
                    status = "refused"
                except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
                    status = f"error {type(exc).__name__}: {exc}"
                with lock:
                    outcomes.append((label, ds, status))

        threads = [
            threading.Thread(target=worker, args=(ds, w))
            for ds in CAPS
            for w in range(THREADS_PER_DS)
        ]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        seconds = time.perf_counter() - t0
    finally:
        handle.stop()

    assert len(outcomes) == 50, outcomes
    errors = [o for o in outcomes if o[2] not in ("charged", "refused")]
    assert not errors, errors
    counts = Counter((ds, status) for _, ds, status in outcomes)
    entries = [e for e in ledger.entries() if e.status != "cap_set"]
    by_request = {e.request_id: e for e in entries}
    for ds, cap in CAPS.items():
        # zero overspend and zero lost updates, per data scientist
        assert counts[(ds, "charged")] == fit[ds], (ds, counts)
        status = ledger.budget(ds, config.name)
        assert status.spent.epsilon <= cap
        assert status.refusals == counts[(ds, "refused")] == 25 - fit[ds]
    # every request is on record exactly once, with the outcome its caller saw
    assert len(entries) == 50 and len(by_request) == 50
    for label, ds, status in outcomes:
        entry = by_request[label]
        assert (entry.status, entry.data_scientist) == (status, ds), (label, entry)
    report = ledger.verify()
    assert report.ok, report
    print(f"\n50 concurrent requests through the datasite in {seconds:.1f} s: {dict(counts)}")

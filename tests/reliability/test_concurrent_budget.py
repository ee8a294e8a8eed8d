"""Concurrent charge requests against one ledger cap: no overspend, every refusal on record.

Real processes (``spawn``), a real SQLite ledger in ``tmp_path``, two data scientists with their
own caps, 50 requests released at one barrier. Identical events per data scientist make the
number that fits independent of the interleaving, so the test asserts it exactly: fewer charged
would be a lost update, more an overspend.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from pathlib import Path

import pytest

from fedmugrep.privacy.analysis.composition import compose_events
from fedmugrep.privacy.events import GaussianEvent, LaplaceEvent, PrivacyEvent
from fedmugrep.privacy.ledger import Ledger
from tests.reliability._budget_workers import charge_requests

pytestmark = pytest.mark.slow

DELTA = 1e-5
N_WORKERS, PER_WORKER = 10, 5  # 50 requests in all
EVENTS: dict[str, PrivacyEvent] = {
    "alice": LaplaceEvent(1.0, 2.0, 1, bound=1000.0),  # ε = 0.5 per release
    "bob": GaussianEvent(noise_multiplier=4.0),
}
CAPS = {"alice": 3.0, "bob": 2.0}


def fitting(event: PrivacyEvent, cap: float) -> int:
    """How many releases of ``event`` fit under ``cap``, with the ledger's own composition."""
    n = 0
    while compose_events([event] * (n + 1), delta=DELTA).epsilon <= cap:
        n += 1
    return n


@pytest.mark.parametrize("mode", ["charge", "charge_then"])
def test_fifty_concurrent_requests_never_overspend(tmp_path: Path, mode: str) -> None:
    home = tmp_path / "site"
    ledger = Ledger(home)
    for ds, cap in CAPS.items():
        ledger.set_cap(ds, "sales", epsilon=cap, delta=DELTA)
    fit = {ds: fitting(EVENTS[ds], CAPS[ds]) for ds in CAPS}
    # every data scientist asks for more than fits, and not everything is refused
    assert all(2 <= fit[ds] < N_WORKERS * PER_WORKER // 2 for ds in CAPS), fit

    # every worker alternates between the two data scientists: both pairs are contended
    plans = [
        [
            (ds, f"{ds}-w{w}-{i}", EVENTS[ds].to_dict())
            for i in range(PER_WORKER)
            for ds in [("alice", "bob")[(w + i) % 2]]
        ]
        for w in range(N_WORKERS)
    ]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(N_WORKERS), ctx.Queue()
    procs = [
        ctx.Process(target=charge_requests, args=(str(home), w, plans[w], mode, barrier, results))
        for w in range(N_WORKERS)
    ]
    for p in procs:
        p.start()
    outcomes = [o for _ in procs for o in results.get(timeout=120)[1]]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(outcomes) == N_WORKERS * PER_WORKER == 50

    counts = Counter((ds, status) for _, ds, status in outcomes)
    for ds in CAPS:
        # zero overspend and zero lost updates, per data scientist
        assert counts[(ds, "charged")] == fit[ds], (ds, counts)
        assert ledger.spent(ds, "sales") <= CAPS[ds]
        status = ledger.budget(ds, "sales")
        assert status.spent.epsilon <= CAPS[ds] and status.refusals == counts[(ds, "refused")]
    assert sum(counts.values()) == 50

    entries = ledger.entries()
    requests = [e for e in entries if e.status != "cap_set"]
    assert len(entries) == 2 + 50 and len(requests) == 50
    # every request is on record exactly once, with the outcome its caller saw
    by_request = {e.request_id: e for e in requests}
    assert len(by_request) == 50
    for request_id, ds, status in outcomes:
        entry = by_request[request_id]
        assert entry.status == status and entry.data_scientist == ds, (request_id, entry)
        if status == "refused":
            assert entry.payload_sha256 is None and entry.total_epsilon > CAPS[ds]
        else:
            assert entry.payload_sha256 is not None and entry.total_epsilon <= CAPS[ds]
    # the running totals recorded in the chain only grow and stay under the cap
    for ds in CAPS:
        totals = [
            e.total_epsilon for e in requests if e.data_scientist == ds and e.status == "charged"
        ]
        assert totals == sorted(totals) and totals[-1] <= CAPS[ds]
    report = ledger.verify()
    assert report.ok, report
    assert report.entries == 52 and report.head == ledger.head()

"""One release key, one reply, one charge — and a lost ledger is noticed, not forgotten.

* Concurrent identical calls used to each draw fresh noise (each charged), and sometimes one
  raised a raw ``FileNotFoundError`` after its charge: budget spent, nothing delivered.
* Deleting the ledger file and setting the cap again used to forget everything spent.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fedmugrep.cli import main
from fedmugrep.federation.wire import (
    encode_model_dict,
    pack_array,
    parameter_shapes,
    public_from_constant,
)
from fedmugrep.models.mugrep import EventModel
from fedmugrep.privacy.ledger import LEDGER_FILENAME, Ledger
from fedmugrep.pysyft.functions import clear_party_cache
from tests.security.conftest import CALLER, PLAN, City

pytestmark = pytest.mark.slow


def _payload(public: dict) -> dict:
    pub, _, _ = public_from_constant(public)
    cfg = pub.model_config
    theta = encode_model_dict(EventModel(cfg).state_dict(), parameter_shapes(cfg))
    z = np.full((len(pub.encoders.vocab.communities), cfg.z_dim), 0.1, np.float32)
    return {"round": 0, "theta": theta, "z": pack_array(z), "previous": ""}


@pytest.mark.parametrize("threads", [8])
def test_concurrent_identical_calls_get_one_reply_charged_once(
    site_factory, small_city: City, threads: int
) -> None:
    site = site_factory()
    payload = _payload(site.public)
    with ThreadPoolExecutor(threads) as pool:
        outs = list(pool.map(lambda _: site.call("step", payload), range(threads)))
    assert all(o["ok"] for o in outs), [o for o in outs if not o["ok"]][:1]
    values = {o["value"]["z_grad"] for o in outs}
    assert len(values) == 1, "identical calls received different noise"
    assert site.charged() == 1


def test_concurrent_calls_of_two_keys_are_charged_once_each(site_factory) -> None:
    site = site_factory()
    base = _payload(site.public)
    payloads = [dict(base, round=r % 2) for r in range(8)]
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda p: site.call("step", p), payloads))
    assert all(o["ok"] for o in outs)
    assert len({o["value"]["z_grad"] for o in outs}) == 2
    assert site.charged() == 2


def test_a_deleted_ledger_makes_the_datasite_refuse_and_audit_fail(
    site_factory, small_city: City, capsys
) -> None:
    site = site_factory()
    assert site.call("step", _payload(site.public))["ok"]
    assert site.charged() == 1
    # the owner (or an intruder) deletes the ledger and sets the cap again
    for suffix in ("", "-wal", "-shm"):
        (site.home / f"{LEDGER_FILENAME}{suffix}").unlink(missing_ok=True)
    clear_party_cache(site.home)
    Ledger(site.home).set_cap(CALLER, site.name, epsilon=100.0, delta=PLAN.privacy.delta)
    payload = dict(_payload(site.public), round=1)
    out = site.call("step", payload)
    assert out["ok"] is False and out["error"] == "LedgerIntegrityError", out
    assert "lacks 1 of the 1 charged releases" in out["message"]
    assert Ledger(site.home).spent(CALLER, site.name) == 0.0  # nothing was charged either
    # the auditor's verify catches it without an expected head
    code = main(["audit", "--home", str(site.home), "--verify"])
    assert code == 4, capsys.readouterr()
    assert "lacks 1 of the 1" in capsys.readouterr().out


def test_a_datasite_with_a_lost_ledger_does_not_start(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from fedmugrep.pysyft.config import load_datasite_config
    from tests.commands.conftest import PASSWORD, PASSWORD_ENV, free_port, write_toml

    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    data = tmp_path / "sales.csv"
    data.write_text("transaction_id,date,price\n")
    toml = write_toml(tmp_path, "agency-lost", data={"transactions": data}, port=free_port())
    home = load_datasite_config(toml).home
    (home / "releases").mkdir(parents=True)
    (home / "releases" / "index.tsv").write_text("run-1\tagency-lost-step-0\t" + "ab" * 32 + "\n")
    code = main(["datasite", "start", "--config", str(toml)])
    err = capsys.readouterr().err
    assert code == 4, err
    assert "lacks 1 of the 1 charged releases" in err
    assert not (home / "syft").exists()  # nothing was launched

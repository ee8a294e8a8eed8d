"""Fuzzing the arguments of the remote functions a data owner approves.

The entry points are the very functions the data scientist submits, :func:`transaction_call`
and :func:`region_call` (their bodies call :func:`~fedmugrep.pysyft.remote.run_remote`,
which turns a :class:`~fedmugrep.errors.FedMugRepError` into an envelope the data scientist can
read and lets any other exception escape to the server log only). They run here in-process
inside a bound datasite call, on a real ledger in ``tmp_path``; no HTTP, so hundreds of cases
take seconds. Each rejected call must

* come back as an envelope naming a ConfigError / DataValidationError / PrivacyParameterError
  with a message (a raw exception escapes and fails the test),
* leave the ledger exactly as it was (same head: no entry lost or added), and
* leave the party able to serve valid calls (checked at the end of the module).

One smoke test sends a malformed call through a real in-process PySyft datasite.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedmugrep.federation.admission import region_contract, transaction_contract
from fedmugrep.federation.wire import (
    encode_model_dict,
    pack_array,
    parameter_shapes,
    public_from_constant,
    unpack_array,
)
from fedmugrep.models.mugrep import EventModel
from fedmugrep.privacy.ledger import Ledger
from fedmugrep.pysyft.functions import (
    REGION_METHODS,
    TRANSACTION_METHODS,
    clear_party_cache,
    region_call,
    transaction_call,
)
from fedmugrep.pysyft.remote import ENVELOPE_KEY, DatasiteCall, bind_datasite_call
from tests.reliability.conftest import AGENCY, CALLER, PLAN, City

pytestmark = pytest.mark.slow

CLEAR_ERRORS = {"ConfigError", "DataValidationError", "PrivacyParameterError"}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(repr=False)
class Party:
    """One datasite-side entry point with its home, bound as a datasite would bind it."""

    name: str
    home: Path
    entry: Callable[..., dict]
    assets: dict[str, Any]
    public: dict
    contract: dict

    def call(self, method: Any, payload: Any) -> dict:
        site = DatasiteCall(name=self.name, home=self.home, caller_email_lookup=lambda: CALLER)
        with bind_datasite_call(site):
            out = self.entry(
                **self.assets,
                contract=self.contract,
                public=self.public,
                method=method,
                payload=payload,
            )
        assert out[ENVELOPE_KEY] == 1 and out["mock"] is False
        return out

    def ok(self, method: str, **payload: Any) -> dict:
        out = self.call(method, json.dumps(payload))
        assert out["ok"], out
        return out["value"]


@dataclass(repr=False)
class Fixture:
    tx: Party
    region: Party
    theta: str  # valid model-1 state, packed in the public order
    total: int  # values in a packed state
    z_shape: tuple[int, int]
    pooled_shape: tuple[int, int]

    def z(self) -> str:
        return pack_array(np.full(self.z_shape, 0.1, np.float32))

    def pooled(self) -> str:
        return pack_array(np.full(self.pooled_shape, 0.1, np.float32))


@pytest.fixture(scope="module")
def fx(small_city: City, tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    # the contracts the datasites derive from the pinned plan (any other claim is refused)
    contract = transaction_contract(PLAN).to_dict()
    n_communities = len(small_city.public["encoders"]["communities"])
    region_contract_d = region_contract(PLAN, n_communities=n_communities).to_dict()
    tx_home = tmp_path_factory.mktemp("fuzz-agency")
    Ledger(tx_home).set_cap(CALLER, AGENCY, epsilon=100.0, delta=PLAN.privacy.delta)
    tx = Party(
        AGENCY,
        tx_home,
        transaction_call,
        {"data": small_city.transactions},
        small_city.public,
        contract,
    )
    region_home = tmp_path_factory.mktemp("fuzz-region")
    # the region's z is noised and charged under privacy: its owner caps the caller too
    Ledger(region_home).set_cap(CALLER, "region", epsilon=100.0, delta=PLAN.privacy.delta)
    region = Party(
        "region",
        region_home,
        region_call,
        {"data": small_city.communities, "mobility": small_city.mobility},
        small_city.public,
        region_contract_d,
    )
    public, _, _ = public_from_constant(small_city.public)
    cfg = public.model_config
    orders = parameter_shapes(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = EventModel(cfg).state_dict()
    n_comm = len(public.encoders.vocab.communities)
    f = Fixture(
        tx,
        region,
        encode_model_dict(state, orders),
        sum(int(np.prod(s)) for _, s in orders["state"]),
        (n_comm, cfg.z_dim),
        (n_comm, cfg.intra_width),
    )
    # both parties serve a valid call first (builds and caches them, as the first round does)
    out = tx.ok("release_intra", theta=f.theta)
    assert unpack_array(out["counts"]).shape == (n_comm,)
    out = region.ok("forward", round=0, pooled=f.pooled())
    assert unpack_array(out["z"]).shape == f.z_shape
    yield f
    clear_party_cache(tx_home)
    clear_party_cache(region_home)


def assert_rejected(party: Party, method: Any, payload: Any) -> str:
    """The call is refused with a clear fedmugrep error and the ledger is untouched."""
    ledger = Ledger(party.home)
    before = ledger.head()
    out = party.call(method, payload)  # a raw exception escapes here and fails the test
    assert out["ok"] is False, f"accepted: method={method!r:.80} payload={payload!r:.200}"
    assert out["error"] in CLEAR_ERRORS, out
    message = out["message"]
    assert len(message) > 20 and any(
        w in message for w in ("method", "payload", "theta", "packed", "tensor", "round")
    ), message
    assert ledger.head() == before, "a rejected call changed the ledger"
    return message


# ============================================================================ strategies
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
NOT_A_STRING = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.binary(max_size=10),
    st.lists(st.integers(), max_size=3),
)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npz(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.npy", _npy(arr))
    return _b64(buf.getvalue())


WRONG_DTYPES = st.sampled_from(["?", "c16", "<U3", "S4", "M8[D]", "m8[s]", "V8"])


@st.composite
def bad_packed(draw: st.DrawFn, shape: tuple[int, ...]) -> str:
    """A packed array that must not pass for a float array of ``shape``."""
    size = int(np.prod(shape))
    kind = draw(
        st.sampled_from(
            ["shape", "nan", "overflow", "dtype", "junk", "bytes", "truncated", "npz", "empty"]
        )
    )
    if kind == "shape":
        other = draw(
            hnp.array_shapes(min_dims=0, max_dims=3, max_side=12).filter(lambda s: s != shape)
        )
        if int(np.prod(other)) == size and len(shape) == 1:
            other = (size + 1,)
        return pack_array(np.zeros(other, np.float32))
    if kind == "nan":
        arr = np.zeros(size, np.float32)
        arr[draw(st.integers(0, size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return pack_array(arr.reshape(shape))
    if kind == "overflow":  # finite in float64, infinite once cast to float32
        arr = np.zeros(size, np.float64)
        arr[draw(st.integers(0, size - 1))] = draw(st.sampled_from([1e39, -1e300, 3.5e38]))
        return pack_array(arr.reshape(shape))
    if kind == "dtype":
        return pack_array(np.zeros(shape, draw(WRONG_DTYPES)))
    if kind == "junk":
        return draw(st.text(max_size=60))
    if kind == "bytes":
        return _b64(draw(st.binary(max_size=200)))
    if kind == "truncated":
        raw = _npy(np.zeros(shape, np.float32))
        return _b64(raw[: draw(st.integers(0, len(raw) - 1))])
    if kind == "npz":
        return _npz(np.zeros(shape, np.float32))
    return ""


# ============================================================================ transaction party
@FUZZ
@given(
    method=st.one_of(
        st.text(max_size=30).filter(lambda m: m not in TRANSACTION_METHODS + REGION_METHODS),
        st.sampled_from(["Step", "step ", "release_intra\x00", "__init__", "_load", "frame"]),
        NOT_A_STRING,
    )
)
def test_unknown_methods_are_refused(fx: Fixture, method: Any) -> None:
    assert "unknown method" in assert_rejected(fx.tx, method, json.dumps({"theta": fx.theta}))
    assert "unknown method" in assert_rejected(fx.region, method, json.dumps({"round": 0}))


MALFORMED_PAYLOADS = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        ["[", "{", "null", "[]", "1", '"theta"', "NaN", '{"theta": NaN}', "[" * 20000, "{}"]
    ),
    st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
    st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4).map(json.dumps),
    NOT_A_STRING,
)


@FUZZ
@given(method=st.sampled_from(TRANSACTION_METHODS), payload=MALFORMED_PAYLOADS)
def test_malformed_transaction_payloads_are_refused(fx: Fixture, method: str, payload: Any) -> None:
    assert_rejected(fx.tx, method, payload)


@FUZZ
@given(
    method=st.sampled_from(TRANSACTION_METHODS),
    order=st.sampled_from(["state", "params", "", "weights", "state:params"]),
    data=st.data(),
)
def test_bad_theta_is_refused(fx: Fixture, method: str, order: str, data: st.DataObject) -> None:
    packed = data.draw(bad_packed((fx.total,)))
    theta = f"{order}:{packed}" if order else packed
    payload = {"theta": theta, "z": fx.z(), "round": 0, "previous": "", "split": "test"}
    assert_rejected(fx.tx, method, json.dumps(payload))


@FUZZ
@given(method=st.sampled_from(["step", "release_calibration", "evaluate"]), data=st.data())
def test_bad_z_is_refused(fx: Fixture, method: str, data: st.DataObject) -> None:
    z = data.draw(st.one_of(bad_packed(fx.z_shape), JSON_SCALARS.filter(lambda v: v is not None)))
    payload = {"theta": fx.theta, "z": z, "round": 0, "previous": ""}
    if data.draw(st.booleans(), label="drop z"):
        del payload["z"]
    assert_rejected(fx.tx, method, json.dumps(payload))


BAD_ROUNDS = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=2**31),
    st.floats(),
    st.text(max_size=10),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@FUZZ
@given(round_index=BAD_ROUNDS, drop=st.booleans())
def test_bad_round_index_is_refused(fx: Fixture, round_index: Any, drop: bool) -> None:
    payload: dict[str, Any] = {"theta": fx.theta, "z": fx.z(), "previous": ""}
    if not drop:
        payload["round"] = round_index
    assert_rejected(fx.tx, "step", json.dumps(payload))


@FUZZ
@given(data=st.data())
def test_bad_previous_aggregate_is_refused(fx: Fixture, data: st.DataObject) -> None:
    prev = data.draw(
        st.one_of(
            bad_packed((fx.total,)).map(lambda p: f"params:{p}"),
            bad_packed((fx.total,)).map(lambda p: f"state:{p}"),
            st.text(min_size=1, max_size=30),
            st.integers(min_value=1),
        )
    )
    payload = {"theta": fx.theta, "z": fx.z(), "round": 0, "previous": prev}
    assert_rejected(fx.tx, "step", json.dumps(payload))


# ============================================================================ region party
@FUZZ
@given(method=st.sampled_from(REGION_METHODS), payload=MALFORMED_PAYLOADS)
def test_malformed_region_payloads_are_refused(fx: Fixture, method: str, payload: Any) -> None:
    assert_rejected(fx.region, method, payload)


@FUZZ
@given(method=st.sampled_from(REGION_METHODS), round_index=BAD_ROUNDS, data=st.data())
def test_bad_region_rounds_are_refused(
    fx: Fixture, method: str, round_index: Any, data: st.DataObject
) -> None:
    if isinstance(round_index, int) and not isinstance(round_index, bool) and round_index == -1:
        round_index = -2  # -1 is the evaluation forward
    payload = {"round": round_index, "pooled": fx.pooled(), "z_grad": fx.z()}
    assert_rejected(fx.region, method, json.dumps(payload))


@FUZZ
@given(method=st.sampled_from(["forward", "backward"]), data=st.data())
def test_bad_region_tensors_are_refused(fx: Fixture, method: str, data: st.DataObject) -> None:
    key, shape = ("pooled", fx.pooled_shape) if method == "forward" else ("z_grad", fx.z_shape)
    bad = data.draw(st.one_of(bad_packed(shape), JSON_SCALARS.filter(lambda v: v is not None)))
    assert_rejected(fx.region, method, json.dumps({"round": 0, key: bad}))


# ============================================================================ still serving
def test_parties_keep_serving_and_the_ledger_stays_exact(fx: Fixture) -> None:
    """After every rejection above (and a few more here) valid calls still work and only they
    reach the ledger."""
    ledger = Ledger(fx.tx.home)
    for method, payload in (
        ("step", "{"),
        ("step", json.dumps({"theta": fx.theta, "z": fx.z(), "round": -3, "previous": ""})),
        ("evaluate", json.dumps({"theta": fx.theta, "z": pack_array(np.full(fx.z_shape, np.nan))})),
    ):
        assert_rejected(fx.tx, method, payload)
    before = ledger.entries()
    out = fx.tx.ok("step", theta=fx.theta, z=fx.z(), round=0, previous="")
    z_grad = unpack_array(out["z_grad"])  # loss_sum is not released under privacy (NaN)
    assert z_grad.shape == fx.z_shape and np.isfinite(z_grad).all()
    after = ledger.entries()
    assert after[: len(before)] == before  # nothing lost or rewritten
    (new,) = after[len(before) :]  # exactly one entry added, by the valid call
    assert new.status == "charged" and new.mechanism == "gaussian:theta+z_grad"
    assert new.data_scientist == CALLER
    # the only charged entries: the fixture's setup release and this round
    assert [e.mechanism for e in after if e.status == "charged"] == [
        "laplace:intra_region",
        "gaussian:theta+z_grad",
    ]
    assert not [e for e in after if e.status == "refused"]
    report = ledger.verify()
    assert report.ok, report
    metrics = fx.tx.ok("evaluate", theta=fx.theta, z=fx.z(), split="val")
    assert metrics["n"] > 0

    z = unpack_array(fx.region.ok("forward", round=1, pooled=fx.pooled())["z"])
    assert z.shape == fx.z_shape and np.isfinite(z).all()
    # the backward returns the z of the updated model 2 (what the next forward would release)
    back = fx.region.ok("backward", round=1, z_grad=fx.z())
    assert set(back) == {"round", "z"} and back["round"] == 1
    z_next = unpack_array(back["z"])
    assert z_next.shape == fx.z_shape and np.isfinite(z_next).all()
    replay = unpack_array(fx.region.ok("forward", round=2, pooled=fx.pooled())["z"])
    assert np.array_equal(replay, z_next)  # same model-2 state: the same release, replayed
    assert fx.region.ok("restore", round=1) == {"round": 1}

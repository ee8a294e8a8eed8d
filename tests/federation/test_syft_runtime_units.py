"""Fast tests of the syft plumbing pieces that do not need a datasite (no ``import syft``)."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

import fedmugrep
from fedmugrep.errors import BudgetExceededError, ConfigError, PrivacyParameterError
from fedmugrep.federation.contract import (
    CONTRACT_SCHEMA,
    PrivacyContract,
    check_contract_installed,
    fedmugrep_code_hash,
)
from fedmugrep.federation.wire import pack_array, unpack_array
from fedmugrep.pysyft.config import DatasiteConfig, load_datasite_config
from fedmugrep.pysyft.quiet import quiet_syft
from fedmugrep.pysyft.remote import (
    ENVELOPE_KEY,
    DatasiteCall,
    bind_datasite_call,
    datasite_home,
    is_mock_frame,
    mark_mock,
    run_remote,
    strip_mock_marker,
)

SAMPLE_TOML = """
[datasite]
name = "agency-a"
home = "sites/agency-a"
port = 8081

[admin]
email = "owner@agency-a.example"
name = "Agency A"
password_env = "AGENCY_A_PW"

[data]
transactions = "data/tx.csv"

[budget]
epsilon_cap = 8.0
delta_cap = 1e-5
"""


# ----------------------------------------------------------------------------- config
def test_config_loads_toml_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(SAMPLE_TOML)
    cfg = load_datasite_config(tmp_path / "a.toml")
    assert cfg.name == "agency-a"
    assert cfg.home == (tmp_path / "sites" / "agency-a").resolve()
    assert cfg.port == 8081 and cfg.host == "127.0.0.1"
    assert cfg.url == "http://127.0.0.1:8081"
    assert cfg.data_files["transactions"] == tmp_path / "data" / "tx.csv"
    assert (cfg.epsilon_cap, cfg.delta_cap) == (8.0, 1e-5)
    assert cfg.admin_password is None
    assert cfg.resolve_admin_password({"AGENCY_A_PW": "s3cret-pass"}) == "s3cret-pass"
    with pytest.raises(ConfigError, match="AGENCY_A_PW"):
        cfg.resolve_admin_password({})


def test_config_round_trips_through_to_toml_without_the_password(tmp_path: Path) -> None:
    cfg = DatasiteConfig(
        name="agency-b",
        home=tmp_path / "b",
        admin_email="o@b.example",
        admin_password="top-secret-pw",
        port=9000,
        data_files={"tx": tmp_path / "tx.csv"},
        epsilon_cap=2.5,
    )
    text = cfg.to_toml()
    assert "top-secret-pw" not in text
    assert "top-secret-pw" not in repr(cfg)
    again = load_datasite_config(cfg.write_toml(tmp_path / "b.toml"))
    assert again.replace(admin_password="top-secret-pw") == cfg


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"name": "bad name!"}, ConfigError, "datasite name"),
        ({"admin_email": "nobody"}, ConfigError, "admin_email"),
        ({"port": 70000}, ConfigError, "port must be in"),
        ({"admin_password": "changethis"}, ConfigError, "PySyft's public default"),
        ({"admin_password": "short"}, ConfigError, "at least 8"),
        ({"epsilon_cap": -1.0}, PrivacyParameterError, "epsilon_cap must be > 0"),
        ({"delta_cap": 1.0}, PrivacyParameterError, r"delta_cap must be in \[0, 1\)"),
    ],
)
def test_config_rejects_bad_values(
    tmp_path: Path, changes: dict, error: type[Exception], match: str
) -> None:
    base = {"name": "ok", "home": tmp_path, "admin_email": "o@x.example"}
    with pytest.raises(error, match=match):
        DatasiteConfig(**{**base, **changes})


def test_config_rejects_unknown_keys(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text(SAMPLE_TOML.replace("port = 8081", "prot = 8081"))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['prot'\]"):
        load_datasite_config(tmp_path / "x.toml")


# ----------------------------------------------------------------------------- code hash
def _fake_package(root: Path) -> Path:
    pkg = root / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "sub" / "m.py").write_text("y = 2\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"junk")
    return pkg


def test_code_hash_depends_on_content_not_location_or_caches(tmp_path: Path) -> None:
    a = _fake_package(tmp_path / "a")
    b = tmp_path / "b" / "pkg"
    shutil.copytree(a, b)
    (b / "__pycache__" / "other.pyc").write_bytes(b"more junk")
    h_a = fedmugrep_code_hash(a, refresh=True)
    assert len(h_a) == 64
    assert fedmugrep_code_hash(b, refresh=True) == h_a
    (b / "sub" / "m.py").write_text("y = 3\n")
    assert fedmugrep_code_hash(b, refresh=True) != h_a
    (b / "sub" / "m.py").write_text("y = 2\n")
    (b / "sub" / "new.py").write_text("")
    assert fedmugrep_code_hash(b, refresh=True) != h_a


def test_code_hash_is_cached_until_refresh(tmp_path: Path) -> None:
    pkg = _fake_package(tmp_path)
    first = fedmugrep_code_hash(pkg, refresh=True)
    (pkg / "__init__.py").write_text("x = 2\n")
    assert fedmugrep_code_hash(pkg) == first
    assert fedmugrep_code_hash(pkg, refresh=True) != first


# ----------------------------------------------------------------------------- contract
def _contract(**changes: object) -> PrivacyContract:
    base = dict(
        mechanisms=("laplace",),
        epsilon_per_release=0.1,
        rounds=4,
        releases_per_round=2,
        projected_epsilon=0.6,
        fedmugrep_version="0.1.0",
        fedmugrep_code_hash="ab" * 32,
    )
    return PrivacyContract(**{**base, **changes})  # type: ignore[arg-type]


def test_contract_round_trips_and_reports_plain_sum() -> None:
    c = _contract()
    d = c.to_dict()
    assert d["schema"] == CONTRACT_SCHEMA and d["mechanisms"] == ["laplace"]
    assert PrivacyContract.from_dict(d) == c
    assert c.total_releases == 8
    assert c.plain_sum_epsilon == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"epsilon_per_release": 0.0}, PrivacyParameterError),
        ({"projected_delta": 1.0}, PrivacyParameterError),
        ({"rounds": 0}, PrivacyParameterError),
        ({"mechanisms": ()}, ConfigError),
        ({"fedmugrep_code_hash": "xyz"}, ConfigError),
    ],
)
def test_contract_rejects_bad_values(changes: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        _contract(**changes)


def test_contract_check_refuses_other_builds() -> None:
    good = PrivacyContract.for_installed(
        mechanisms=("laplace",), epsilon_per_release=0.1, rounds=1, projected_epsilon=0.1
    )
    assert good.fedmugrep_version == fedmugrep.__version__
    assert check_contract_installed(good.to_dict()) == good
    with pytest.raises(ConfigError, match="submit a new request"):
        check_contract_installed(_contract(fedmugrep_code_hash="0" * 64).to_dict())
    with pytest.raises(ConfigError, match="schema"):
        check_contract_installed({"mechanisms": ["laplace"]})


# ----------------------------------------------------------------------------- remote side
def test_mock_marker_survives_copy_and_is_stripped_from_private() -> None:
    df = pd.DataFrame({"price": [1.0]})
    mock = mark_mock(df)
    assert is_mock_frame(mock) and not is_mock_frame(df)
    assert not is_mock_frame(strip_mock_marker(mock))
    assert not is_mock_frame([1, 2]) and not is_mock_frame(None)


def _impl(ctx, data, *, k):  # noqa: ANN001, ANN202
    if k < 0:
        raise BudgetExceededError("budget used up: 1.0 of 1.0")
    return {"home": ctx.home, "caller": ctx.caller, "value": k * float(data["price"].sum())}


def test_run_remote_envelopes_value_error_and_skips_mock(tmp_path: Path) -> None:
    contract = PrivacyContract.for_installed(
        mechanisms=("laplace",), epsilon_per_release=0.1, rounds=1, projected_epsilon=0.1
    ).to_dict()
    data = pd.DataFrame({"price": [1.0, 2.0]})
    call = DatasiteCall(
        name="s", home=tmp_path, caller_verify_key="k", caller_email_lookup=lambda: "ds@x"
    )
    with bind_datasite_call(call):
        assert datasite_home() == tmp_path
        ok = run_remote(_impl, data=data, contract=contract, k=2)
        err = run_remote(_impl, data=data, contract=contract, k=-1)
        mock = run_remote(_impl, data=mark_mock(data), contract=contract, k=2)
        bad = run_remote(
            _impl, data=data, contract={**contract, "fedmugrep_code_hash": "0" * 64}, k=2
        )
    assert ok == {
        ENVELOPE_KEY: 1,
        "ok": True,
        "mock": False,
        "value": {"home": tmp_path, "caller": "ds@x", "value": 6.0},
    }
    assert err["ok"] is False and err["error"] == "BudgetExceededError"
    assert err["message"] == "budget used up: 1.0 of 1.0"
    assert mock == {ENVELOPE_KEY: 1, "ok": True, "mock": True, "value": None}
    assert bad["ok"] is False and bad["error"] == "ConfigError"


def test_datasite_home_outside_a_datasite_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDMUGREP_DATASITE_HOME", raising=False)
    with pytest.raises(ConfigError, match="not running inside a fedmugrep datasite"):
        datasite_home()
    monkeypatch.setenv("FEDMUGREP_DATASITE_HOME", "/srv/site")
    assert datasite_home() == Path("/srv/site")


# ----------------------------------------------------------------------------- quiet
def test_quiet_syft_swallows_prints_and_syft_logs_but_restores_everything() -> None:
    syft_logger = logging.getLogger("syft.server.server")
    before_level = logging.getLogger("syft").level
    out_before, err_before = sys.stdout, sys.stderr
    with quiet_syft() as captured:
        print("Logged into <agency-a> as <owner@x>")
        print("Uploading: 100%", file=sys.stderr)
        syft_logger.critical("Hash of the signing key")
    assert "Logged into" in captured.stdout
    assert "Uploading" in captured.stderr
    assert "Hash of the signing key" not in captured.text  # dropped by level, not printed
    assert (sys.stdout, sys.stderr) == (out_before, err_before)
    assert logging.getLogger("syft").level == before_level


def test_quiet_syft_keeps_fedmugrep_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fedmugrep"), quiet_syft():
        logging.getLogger("fedmugrep.federation").info("round 3 released")
    assert "round 3 released" in caplog.text


def test_pack_array_round_trips_shape_and_dtype_and_rejects_garbage() -> None:
    import numpy as np

    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    text = pack_array(x)
    assert isinstance(text, str) and text.isascii()
    y = unpack_array(text)
    assert y.dtype == np.float32 and y.shape == (3, 4)
    assert np.array_equal(x, y)
    with pytest.raises(ConfigError, match="not a packed array"):
        unpack_array("definitely not base64 npy!")
    with pytest.raises(ConfigError, match="dtype=object"):
        pack_array(np.array([{"a": 1}], dtype=object))


def test_sample_datasite_toml_in_the_repository_loads() -> None:
    sample = Path(__file__).resolve().parents[2] / "datasites" / "agency-a.toml"
    cfg = load_datasite_config(sample)
    assert (cfg.name, cfg.port, cfg.host) == ("agency-a", 8081, "127.0.0.1")
    assert cfg.home == sample.parent / "agency-a"
    assert cfg.admin_password is None and cfg.admin_password_env == "FEDMUGREP_ADMIN_PASSWORD"
    assert cfg.data_files["transactions"] == sample.parent / "data" / "transactions_agency1.csv"
    assert (cfg.epsilon_cap, cfg.delta_cap) == (8.0, 1e-5)


def test_quiet_syft_blocks_overlapping_across_threads_leave_the_streams_restored(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import threading

    real_stdout = sys.stdout
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    got: dict[str, str] = {}

    def thread_a() -> None:  # enters first, leaves first
        with quiet_syft() as cap:
            print("noise A")
            a_in.set()
            b_in.wait(5)
        a_out.set()
        got["a"] = cap.stdout

    def thread_b() -> None:  # enters second, leaves last
        a_in.wait(5)
        with quiet_syft() as cap:
            b_in.set()
            a_out.wait(5)
            print("noise B")
        got["b"] = cap.stdout

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    b_in.wait(5)
    print("main thread is not muted")
    for t in threads:
        t.join(5)
    assert got == {"a": "noise A\n", "b": "noise B\n"}
    assert sys.stdout is real_stdout
    out = capsys.readouterr().out
    assert "main thread is not muted" in out and "noise" not in out


def test_training_kind_names_a_resubmissions_family_only() -> None:
    from fedmugrep.pysyft.scientist import function_name, training_kind

    assert training_kind(function_name("transactions", "run-3f9a0c1b2d4e")) == "transaction_call"
    assert training_kind(function_name("region", "3f9a0c1b")) == "region_call"
    # not a training request: an owner's approval supersedes nothing
    for other in ("toy_round", "toy_round_b", "transaction_call", "transaction_call_a-b", "x"):
        assert training_kind(other) is None

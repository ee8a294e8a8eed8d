"""The notebooks in ``notebooks/`` run top to bottom on a tiny synthetic city and show what they
promise.

Each notebook is executed with nbclient in a fresh kernel of this interpreter (a kernelspec
written to a temporary ``JUPYTER_PATH``), with small sizes injected after its ``parameters``
cell (papermill-style) and its other defaults as they are. All three run in one temporary
folder, in the order a user runs them (data owner, data scientist, auditor): the auditor's
notebook audits the ledgers the data scientist's run left there. The checks read the cells'
outputs.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("syft")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = "fedmugrep-notebook-test"

#: Tiny sizes for CI: ~1,200 sales, 2 rounds, few pretraining epochs.
SMALL = {"N_TRANSACTIONS": 1200, "ROUNDS": 2, "PRETRAIN_EPOCHS": 10}


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec that starts this interpreter (the venv's python), whatever is on PATH."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "fedmugrep tests",
                "language": "python",
            }
        )
    )
    return root


def run_notebook(
    name: str, workdir: Path, kernel_path: Path, monkeypatch: pytest.MonkeyPatch, **params: Any
) -> tuple[Any, str]:
    """Execute ``notebooks/<name>`` in ``workdir`` with ``params`` injected; return the executed
    notebook (also saved next to the work folder) and the text of all its outputs."""
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # 2 shared cores: more threads spin
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    defined = set(re.findall(r"^([A-Z_]+)\s*=", nb.cells[tagged[0]].source, re.M))
    unknown = set(params) - defined
    assert not unknown, f"{name} has no parameters {sorted(unknown)} (has {sorted(defined)})"
    injected = nbformat.v4.new_code_cell(
        "# injected by the test\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    )
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(tagged[0] + 1, injected)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=600,
        resources={"metadata": {"path": str(workdir)}},
    )
    try:
        client.execute()
    finally:
        nbformat.write(nb, workdir / f"executed-{name}")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{name}: error outputs {errors}"
    return nb, outputs_text(nb)


def outputs_text(nb: Any) -> str:
    """Every stream, result and display output of the notebook as plain text."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def has_png(nb: Any) -> bool:
    return any(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.output_type == "display_data"
    )


def test_notebooks_are_stored_without_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


@dataclass
class Executed:
    """A notebook run: the executed notebook and the text of its outputs."""

    nb: Any
    text: str


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder a user runs the notebooks from (the notebooks' own folder in a checkout):
    the data scientist's and the auditor's notebooks share it, with their default work
    folders under ``notebook-runs/``."""
    return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="module")
def data_scientist_run(user_folder: Path, kernel_path: Path) -> Executed:
    """``data_scientist.ipynb`` with its defaults (sizes aside), once for the module: the
    auditor's notebook then audits the ledgers it left, as a user running them in order."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        nb, text = run_notebook(
            "data_scientist.ipynb", user_folder, kernel_path, monkeypatch, **SMALL
        )
    return Executed(nb, text)


@pytest.mark.slow
@pytest.mark.integration
def test_data_owner_notebook(
    user_folder: Path, kernel_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb, text = run_notebook(
        "data_owner.ipynb",
        user_folder,
        kernel_path,
        monkeypatch,
        N_TRANSACTIONS=SMALL["N_TRANSACTIONS"],
    )
    assert (user_folder / "notebook-runs" / "data-owner").is_dir()  # its default WORK
    assert "'district_counts': approved" in text
    assert "'district_counts_greedy': denied" in text
    # the data scientist sees the owner's reason, word for word
    assert "Dana sees: the data owner of datasite 'agency-a' denied" in text
    assert "epsilon 5 per release is above my cap of 1.2 in total" in text
    # the review sheet shows the contract and that it was built for this fedmugrep
    assert "per release       : epsilon 0.5" in text and "matches local fedmugrep: yes" in text
    # two releases fit the cap of 1.2, the third is refused by the ledger
    assert len(re.findall(r"call \d: noised counts", text)) == 2
    assert "call 3: refused by the ledger (budget exceeded)" in text
    spent = float(re.search(r"spent epsilon ([0-9.]+) of cap 1.2", text).group(1))
    assert 0.9 < spent <= 1.2
    assert "within cap: True" in text and "ledger OK" in text
    assert has_png(nb)


@pytest.mark.slow
@pytest.mark.integration
def test_data_scientist_notebook(data_scientist_run: Executed, user_folder: Path) -> None:
    nb, text = data_scientist_run.nb, data_scientist_run.text
    work = user_folder / "notebook-runs" / "data-scientist"  # the notebook's default WORK
    # the data owners' exact test predictions (in their homes): a working model
    owner = pd.concat(
        pd.read_csv(f) for f in sorted((work / "datasites").rglob("*-test-predictions.csv"))
    )
    assert set(owner["agency"]) == {"agency1", "agency2", "agency3"}
    ape = (owner["pred_median"] - owner["price"]).abs() / owner["price"]
    assert 0.02 < ape.mean() < 0.6
    # released (noised) test MAPE: clamped to the range of its clipped terms, with the noise's
    # sd, and within a few sd of the exact mean of the clipped terms (Laplace tails: a miss at
    # 6 sd has probability < 1e-3)
    got = re.search(r"released MAPE: (-?[0-9.]+) \+- ([0-9.]+) \(noise sd\)", text)
    mape, sd = float(got.group(1)), float(got.group(2))
    assert 0.0 <= mape <= 0.5 and sd > 0
    assert abs(mape - float(ape.clip(upper=0.5).mean())) <= 6 * sd
    # epsilon spent per datasite never above its cap
    rows = re.findall(r"^(\S+): epsilon spent ([0-9.]+) of cap ([0-9.]+)", text, re.M)
    assert {r[0] for r in rows} == {"agency1", "agency2", "agency3", "region"}
    for _site, spent, cap in rows:
        assert 0 < float(spent) <= float(cap)
    # appraisals with 80% intervals around the median
    table = json.loads((work / "appraisals.json").read_text())
    assert len(table) >= 5
    for row in table:
        assert 0 < row["pred_lo80"] < row["pred_median"] < row["pred_hi80"]
    own = float(re.search(r"MAPE of your appraisals: ([0-9.]+)", text).group(1))
    assert 0.02 < own < 0.6 and math.isfinite(own)
    assert (work / "model.pt").is_file() and (work / "report" / "index.html").is_file()
    assert has_png(nb)


@pytest.mark.slow
@pytest.mark.integration
def test_auditor_notebook_audits_the_data_scientists_run(
    data_scientist_run: Executed,
    user_folder: Path,
    kernel_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # after the data scientist's notebook, in the same folder, with the auditor's defaults
    # (sizes are injected only so that a fallback to a run of its own would stay small)
    nb, text = run_notebook("auditor.ipynb", user_folder, kernel_path, monkeypatch, **SMALL)
    work = user_folder / "notebook-runs" / "auditor"  # the notebook's default WORK
    homes = user_folder / "notebook-runs" / "data-scientist" / "datasites"
    assert f"auditing the ledgers in {homes.resolve()}" in text
    assert "made a run of our own" not in text and not (work / "datasites").exists()
    assert "example datasite: agency1" in text
    # every real ledger verifies
    sites = {"agency1", "agency2", "agency3", "region"}
    assert set(re.findall(r"^(\S+): ledger OK", text, re.M)) == sites
    # an edited epsilon is caught and the entry named
    seq = re.search(r"changed entry #(\d+)", text).group(1)
    assert f"[edited] entry {seq} (charged " in text
    assert "edited copy, audit --verify exit code: 4" in text
    # a consistent rewrite passes the chain check but not the recorded head
    assert "rewritten copy, chain check alone: ledger OK" in text
    assert "[expected_head]" in text
    assert "rewritten copy, audit --expected-head exit code: 4" in text
    assert (work / "audit" / "agency1.csv").is_file() and (
        work / "audit" / "agency1.json"
    ).is_file()
    assert has_png(nb)

"""Shared helpers of the benchmark scripts: arguments, machine info, JSON and PNG output.

Every script is run as ``.venv/bin/python benchmarks/<name>.py [--quick] [--out DIR]`` and
writes ``DIR/<name>.json`` and ``DIR/<name>.png``. ``DIR`` defaults to ``benchmarks/results``
(``benchmarks/results/quick`` with ``--quick``, so a quick run never overwrites full results).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"


def parse_args(
    description: str,
    argv: list[str] | None = None,
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """``--quick`` (tiny sizes, for the test), ``--out DIR`` and what ``configure`` adds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes (seconds; used by the tests)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output folder (default {RESULTS.relative_to(REPO)}, or its quick/ subfolder)",
    )
    if configure is not None:
        configure(parser)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = RESULTS / "quick" if args.quick else RESULTS
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def one_torch_thread() -> None:
    """One intra-op thread: on the shared 2-core machine two threads spin and slow rounds down."""
    import torch

    torch.set_num_threads(1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, Python/torch/numpy versions, load, date and commit."""
    import numpy as np
    import torch

    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": git_commit(),
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("syft", "dp-accounting", "opacus"):
        try:  # metadata only: importing syft takes seconds
            info[dist.replace("-", "_")] = version(dist)
        except PackageNotFoundError:
            pass
    return info


def training_job(job: dict[str, Any]) -> dict[str, Any]:
    """One benchmark training run (in a worker process), as ``job`` describes it.

    ``job["kind"]`` is ``"central"`` (``central_reference`` on the city's
    ``job["pattern"]`` files, default ``transactions_agency*.csv``, with ``mobility.csv`` unless
    ``job["mobility"]`` is false; ``epochs`` default 400) or ``"federated"`` (``run_local``
    with ``rounds``, ``epsilon`` per datasite, the region one included, or ``None`` for no
    privacy, the ``seed``, an optional ``pretrain_epochs`` and ``mock``, default
    ``"synthetic"``). Returns ``job`` with the MAPE, MAE-log and coverage (the owners' exact
    figures), the baselines / Bayes floor or the released MAPE, and the seconds taken.
    """
    one_torch_thread()
    import tempfile
    import time

    from fedmugrep.federation.local import run_local
    from fedmugrep.federation.plan import FederationPlan, PrivacyPlan
    from fedmugrep.training.central import TrainConfig, central_reference

    city = Path(job["city"])
    t0 = time.perf_counter()
    if job["kind"] == "central":
        rep = central_reference(
            sorted(city.glob(job.get("pattern", "transactions_agency*.csv"))),
            city / "communities.csv",
            city / "mobility.csv" if job.get("mobility", True) else None,
            tcfg=TrainConfig(seed=job["seed"], epochs=job.get("epochs", 400)),
            progress=False,
        )
        return {
            **job,
            "mape": rep["model"]["mape"],
            "mae_log": rep["model"]["mae_log"],
            "coverage80": rep["model"]["coverage80"],
            "baselines": {k: v["mape"] for k, v in rep.get("baselines", {}).items()},
            "bayes_floor": rep.get("bayes_floor"),
            "seconds": time.perf_counter() - t0,
        }
    eps = job["epsilon"]
    privacy = None if eps is None else PrivacyPlan.for_epsilon(eps, region_epsilon=eps)
    extra = (
        {} if job.get("pretrain_epochs") is None else {"pretrain_epochs": job["pretrain_epochs"]}
    )
    plan = FederationPlan(rounds=job["rounds"], privacy=privacy, seed=job["seed"], **extra)
    with tempfile.TemporaryDirectory() as home:
        res = run_local(city, plan, Path(home), mock=job.get("mock", "synthetic"), progress=False)
    own = res.owner_metrics
    return {
        **job,
        "mape": own["mape"],
        "mae_log": own["mae_log"],
        "coverage80": own["coverage80"],
        "released_mape": res.metrics.get("mape"),
        "noise_multiplier": res.noise_multiplier,
        "seconds": time.perf_counter() - t0,
    }


def write_json(out: Path, name: str, data: dict[str, Any]) -> Path:
    path = Path(out) / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return float(s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2]))


def quick_plan_overrides(quick: bool) -> dict[str, Any]:
    """Plan fields a quick run turns off: public pretraining on the mocks (seconds per run, and
    not part of a round). Only fields the installed ``FederationPlan`` has."""
    import dataclasses

    from fedmugrep.federation.plan import FederationPlan

    names = {f.name for f in dataclasses.fields(FederationPlan)}
    return {"pretrain_epochs": 0} if quick and "pretrain_epochs" in names else {}

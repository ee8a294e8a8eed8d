"""Suite-wide settings: one torch thread per test worker (the suite runs 2 workers on 2 cores;
more threads oversubscribe the cores and slow training tests by an order of magnitude)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


def package_snapshot(dest: os.PathLike[str] | str) -> Path:
    """A frozen copy of the installed fedmugrep under ``dest/fedmugrep`` for HTTP datasite
    servers to import (``pythonpath=[dest]``): edits to the working tree while a test runs
    cannot change the code the servers run, nor the code hash their contracts bind."""
    import shutil

    import fedmugrep

    root = Path(dest)
    shutil.copytree(
        Path(fedmugrep.__file__).resolve().parent,
        root / "fedmugrep",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return root


#: The longest test files (seconds on 2 cores, measured), longest first. The suite runs with
#: ``pytest -n 2 --dist loadfile``, which hands files to the two workers in collection order:
#: starting the long files first keeps one worker from finishing its share while the other is
#: still inside a long file (longest-first scheduling). Files not listed keep their order after.
LONGEST_FIRST = (
    "reliability/test_organisations_by_url.py",
    "reliability/test_datasite_restart.py",
    "federation/test_syft_federation.py",
    "federation/test_local_federation.py",
    "notebooks/test_notebooks.py",
    "training/test_demo.py",
    "federation/test_syft_runtime_http.py",
    "commands/test_datasite_http.py",
)


def pytest_collection_modifyitems(items: list) -> None:
    """Put the longest files first (a stable sort: the order inside each file is kept)."""
    here = Path(__file__).resolve().parent
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item: object) -> int:
        try:
            rel = Path(str(item.path)).resolve().relative_to(here).as_posix()  # type: ignore[attr-defined]
        except ValueError:
            return len(rank)
        return rank.get(rel, len(rank))

    items.sort(key=key)

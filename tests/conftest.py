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

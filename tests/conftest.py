"""Suite-wide settings: one torch thread per test worker (the suite runs 2 workers on 2 cores;
more threads oversubscribe the cores and slow training tests by an order of magnitude)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

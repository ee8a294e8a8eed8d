"""A datasite server's pid file, and whether a pid is alive: light (no syft, no torch), so
``fedmugrep datasite stop`` and ``status`` start in well under a second."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["pid_alive", "read_pid_file"]


def read_pid_file(path: Path) -> int | None:
    """The pid in a pid file, or ``None`` when it is missing or unreadable."""
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie, on Linux)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return True
    return True

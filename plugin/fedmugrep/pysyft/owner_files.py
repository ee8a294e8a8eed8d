"""Keep a data owner's datasite home private: folders 0700, files 0600.

A datasite's home holds secrets: PySyft's database ``syft/db/syft.db`` (with ``-wal``/``-shm``)
stores every account's signing key, so whoever can read it can act as the admin and fetch the
private data; the blob store, the privacy ledger ``privacy_ledger.sqlite``, the owner's reports
under ``evaluations/`` (predictions with prices), the release files under ``releases/`` and the
region model files hold private data too. With the usual umask ``022`` all of them would be
readable by every local user of a shared machine.

Two defences, used wherever fedmugrep starts a datasite:

* :func:`private_umask` / :func:`set_private_umask`: everything a datasite process creates is
  created private (umask ``077``); the HTTP server process sets it before PySyft creates
  anything;
* :func:`secure_home`: walks a home at every start and repairs what is readable, writable or
  enterable by other users (created before this protection, copied in, or restored from a
  backup); :func:`enforce_private_home` also warns, naming what it repaired.

Example::

    from fedmugrep.pysyft.owner_files import private_umask, secure_home

    repaired = secure_home(Path("datasites/agency-a"))   # [] when everything was private
    with private_umask():
        ...                                               # files created here are 0600
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from fedmugrep.errors import FedMugRepError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "PRIVATE_UMASK",
    "enforce_private_home",
    "make_private",
    "private_umask",
    "repair_message",
    "secure_home",
    "set_private_umask",
]

#: Permission bits of every folder under a datasite home (the home included).
DIR_MODE = 0o700
#: Permission bits of every file under a datasite home.
FILE_MODE = 0o600
#: The umask of a process hosting a datasite: nothing for group or others.
PRIVATE_UMASK = 0o077

_LOG = logging.getLogger("fedmugrep.federation")

_MAX_NAMED = 10  # paths named in a warning; the rest are counted

_umask_lock = threading.Lock()
_umask_depth = 0
_umask_saved = 0


def set_private_umask() -> int:
    """Make this process create files 0600 and folders 0700 from now on (for good).

    Bits already masked stay masked (a stricter umask is kept). Meant for processes that host
    a datasite, before anything is created (e.g. ``python -m fedmugrep.pysyft.server``).

    Returns:
        The previous umask.
    """
    global _umask_saved
    with _umask_lock:
        old = os.umask(PRIVATE_UMASK)
        os.umask(old | PRIVATE_UMASK)
        if _umask_depth:  # inside private_umask(): stay private after it ends too
            _umask_saved |= PRIVATE_UMASK
        return old


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """While inside, files and folders this process creates get no group or other permissions.

    The umask belongs to the whole process, so other threads' new files are private too while
    any thread is inside (never less private). Nested and concurrent uses are counted; the
    previous umask comes back when the last one leaves.
    """
    global _umask_depth, _umask_saved
    with _umask_lock:
        if _umask_depth == 0:
            _umask_saved = os.umask(PRIVATE_UMASK)
            os.umask(_umask_saved | PRIVATE_UMASK)
        _umask_depth += 1
    try:
        yield
    finally:
        with _umask_lock:
            _umask_depth -= 1
            if _umask_depth == 0:
                os.umask(_umask_saved)


def make_private(path: str | os.PathLike[str]) -> bool:
    """Give one file mode 0600 (a folder 0700) when group or others have any permission on it.

    Symbolic links are left alone (their target may be outside the datasite's home). An entry
    no other user can access keeps its mode (a read-only 0400 copy stays read-only).

    Args:
        path: the file or folder.

    Returns:
        Whether the mode had to be changed (``False`` also for a missing path or a link).

    Raises:
        PermissionError: when the mode cannot be changed (the entry belongs to another user).
    """
    p = Path(path)
    try:
        st = p.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & PRIVATE_UMASK:
        return False
    want = DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
    try:
        os.chmod(p, want)
    except FileNotFoundError:  # removed meanwhile (e.g. SQLite's -shm when a connection closes)
        return False
    return True


def secure_home(home: str | os.PathLike[str]) -> list[Path]:
    """Make a datasite home private: the home and every folder below 0700, every file 0600.

    Only entries that group or others can access are changed. Symbolic links are neither
    followed nor changed, so nothing outside the home is touched. A missing home is fine
    (nothing to do).

    Args:
        home: the datasite's home folder.

    Returns:
        The paths whose mode was repaired, home first, then in walking order.

    Raises:
        FedMugRepError: when some entries cannot be repaired (they belong to another user); the
            message names them and says what to do. Everything else is repaired first.
    """
    root = Path(home)
    repaired: list[Path] = []
    failed: list[tuple[Path, str]] = []

    def fix(path: Path) -> None:
        try:
            if make_private(path):
                repaired.append(path)
        except OSError as exc:
            failed.append((path, exc.strerror or type(exc).__name__))

    try:
        if stat.S_ISLNK(root.lstat().st_mode):
            raise FedMugRepError(
                f"datasite home {root} is a symbolic link; point the config's home at the real "
                "folder so its permissions can be checked"
            )
    except FileNotFoundError:
        return []
    fix(root)
    for folder, dirs, files in os.walk(root, followlinks=False):
        base = Path(folder)
        for name in (*dirs, *files):
            fix(base / name)
    if failed:
        shown = ", ".join(f"{p} ({why})" for p, why in failed[:_MAX_NAMED])
        more = f" and {len(failed) - _MAX_NAMED} more" if len(failed) > _MAX_NAMED else ""
        raise FedMugRepError(
            f"cannot make {len(failed)} path(s) under datasite home {root} private: "
            f"{shown}{more}; they are readable by other users. Make them yours "
            f"(chown -R $(id -un) {root}) and start again"
        )
    return repaired


def repair_message(home: str | os.PathLike[str], repaired: list[Path]) -> str:
    """The warning for what :func:`secure_home` repaired (``""`` when nothing was).

    Example: ``repaired permissions of 2 files under /srv/agency-a: syft/db/syft.db,
    privacy_ledger.sqlite (were accessible to other users: group/other bits removed)``.
    """
    if not repaired:
        return ""
    root = Path(home)
    names = []
    for p in repaired[:_MAX_NAMED]:
        try:
            names.append(str(p.relative_to(root)) if p != root else f"{root} (the home itself)")
        except ValueError:
            names.append(str(p))
    more = f", and {len(repaired) - _MAX_NAMED} more" if len(repaired) > _MAX_NAMED else ""
    return (
        f"repaired permissions of {len(repaired)} files under {root}: {', '.join(names)}{more} "
        "(were accessible to other users: folders are now 0700, files 0600). Anyone who could "
        "read syft/db/syft.db may hold the datasite's keys: if other people use this machine, "
        "consider the admin password and accounts exposed"
    )


def enforce_private_home(
    home: str | os.PathLike[str], *, stream: TextIO | None = None
) -> list[Path]:
    """:func:`secure_home`, then warn about what was repaired.

    The warning is written to ``stream`` as a ``warning: ...`` line when given (e.g. a
    command's ``sys.stderr``), else to the ``fedmugrep.federation`` logger.

    Returns:
        The repaired paths (``[]`` when everything was private already).
    """
    repaired = secure_home(home)
    message = repair_message(home, repaired)
    if message:
        if stream is not None:
            print(f"warning: {message}", file=stream, flush=True)
        else:
            _LOG.warning(message)
    return repaired

"""Silence PySyft's console noise while keeping fedmugrep's own messages.

PySyft 0.9.5 talks a lot on a plain console: ``print`` calls ("Logged into ...", "Approving
request ..."), IPython ``display()`` of ``SyftSuccess`` / ``SyftInfo`` / ``SyftWarning`` objects
(which fall back to ``print`` outside a notebook), tqdm upload bars on ``stderr``, server
tracebacks printed with ``print``, log records from the ``syft`` / ``uvicorn`` loggers (emitted
through :data:`logging.lastResort`, i.e. the *current* ``sys.stderr``) and Python warnings from
its rich/IPython helpers. :func:`quiet_syft` swallows all of them for the duration of a block and
restores everything afterwards; the swallowed text is kept on the yielded object so a failure can
still be diagnosed.

Our own messages stay visible because fedmugrep logs through the ``fedmugrep`` logger, whose
level is never touched here, and because the helpers in
:mod:`fedmugrep.pysyft.runtime` only print *outside* their quiet blocks.

Thread safety: while any block is active, ``sys.stdout``/``sys.stderr`` are replaced by proxies
that send text to the innermost block *of the writing thread*; threads outside a block keep
writing to the real streams. The real streams, logger levels and warning filters are restored
when the last block in the process exits, so blocks may overlap across threads (a coordinator
talking to several datasites at once) without leaving the process muted.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["QuietCapture", "quiet_syft"]

_LOG = logging.getLogger("fedmugrep.federation")

#: Loggers PySyft (and the web stack it drags in) writes to.
NOISY_LOGGERS: tuple[str, ...] = (
    "syft",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "fastapi",
    "httpx",
    "urllib3",
    "asyncio",
)


@dataclass
class QuietCapture:
    """What a :func:`quiet_syft` block swallowed.

    Attributes:
        stdout: text written to ``sys.stdout`` by the block's thread inside the block.
        stderr: text written to ``sys.stderr`` by the block's thread inside the block.
    """

    stdout: str = ""
    stderr: str = ""
    _out: io.StringIO = field(default_factory=io.StringIO, repr=False)
    _err: io.StringIO = field(default_factory=io.StringIO, repr=False)

    @property
    def text(self) -> str:
        """Everything swallowed, stdout first."""
        return self.stdout + self.stderr


class _State:
    lock = threading.RLock()
    depth = 0
    real: tuple[TextIO, TextIO] | None = None
    levels: dict[str, int] = {}
    filters: list[Any] = []
    local = threading.local()


class _Proxy(io.TextIOBase):
    """Stands in for ``sys.stdout`` (index 0) or ``sys.stderr`` (index 1) while blocks run."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self._index = index

    def _target(self) -> TextIO:
        stack: list[QuietCapture] = getattr(_State.local, "stack", [])
        if stack:
            top = stack[-1]
            return top._out if self._index == 0 else top._err
        real = _State.real
        if real is not None:
            return real[self._index]
        return sys.__stdout__ if self._index == 0 else sys.__stderr__  # type: ignore[return-value]

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


@contextlib.contextmanager
def quiet_syft(*, enabled: bool = True) -> Iterator[QuietCapture]:
    """Swallow PySyft's console output inside a ``with`` block.

    Args:
        enabled: ``False`` turns this into a no-op (handy for debugging: ``quiet_syft(enabled=False)``).

    Yields:
        A :class:`QuietCapture`; its ``stdout``/``stderr`` are filled when the block exits.
        If the block raises, the swallowed text is logged at DEBUG level on the
        ``fedmugrep.federation`` logger before the exception propagates.

    Example:
        >>> with quiet_syft() as captured:
        ...     print("Logged into <agency-a> as <owner@agency-a.example>")
        >>> "Logged into" in captured.stdout
        True
    """
    capture = QuietCapture()
    if not enabled:
        yield capture
        return
    _enter()
    stack: list[QuietCapture] = getattr(_State.local, "stack", None) or []
    _State.local.stack = stack
    stack.append(capture)
    failed = False
    try:
        yield capture
    except BaseException:
        failed = True
        raise
    finally:
        stack.pop()
        _leave()
        capture.stdout = capture._out.getvalue()
        capture.stderr = capture._err.getvalue()
        if failed and capture.text.strip():
            _LOG.debug("syft output before the failure:\n%s", capture.text)


def _enter() -> None:
    with _State.lock:
        if _State.depth == 0:
            _State.real = (sys.stdout, sys.stderr)
            sys.stdout, sys.stderr = _Proxy(0), _Proxy(1)  # type: ignore[assignment]
            _State.levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
            for name in NOISY_LOGGERS:
                logging.getLogger(name).setLevel(logging.CRITICAL + 1)
            _State.filters = list(warnings.filters)
            warnings.simplefilter("ignore")
        _State.depth += 1


def _leave() -> None:
    with _State.lock:
        _State.depth -= 1
        if _State.depth == 0:
            assert _State.real is not None
            sys.stdout, sys.stderr = _State.real
            _State.real = None
            for name, level in _State.levels.items():
                logging.getLogger(name).setLevel(level)
            warnings.filters[:] = _State.filters
            warnings._filters_mutated()  # type: ignore[attr-defined]

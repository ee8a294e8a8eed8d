"""A second record of what a datasite has spent: the release index beside the ledger.

Every charged release also appends one line ``run<TAB>release<TAB>payload sha256`` to
``releases/index.tsv`` under the releasing party's home. The ledger's hash chain catches an
edited entry, but not a ledger that was deleted (a new empty one is created and the owner sets
the cap again, forgetting the spend) or truncated and re-headed. The index catches both: each
of its digests must belong to a charged ledger entry. It is not tamper-proof against an owner
who deletes both; it stops accidents and casual resets, and ``fedmugrep audit --verify`` reports
it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fedmugrep.errors import LedgerIntegrityError

__all__ = ["INDEX_NAME", "WitnessReport", "check_witness", "read_witness", "record_release"]

#: Name of the release index file inside each ``releases/`` folder.
INDEX_NAME = "index.tsv"


@dataclass(frozen=True)
class WitnessReport:
    """What the release index says against a ledger.

    Attributes:
        recorded: distinct payload digests the index lists.
        missing: those the ledger has no charged entry for.
        files: the index files read.
    """

    recorded: int
    missing: int
    files: tuple[Path, ...]

    @property
    def ok(self) -> bool:
        return self.missing == 0


def record_release(releases: str | Path, *, run: str, release: str, digest: str) -> None:
    """Append one charged release to ``releases/index.tsv`` (created owner-only, 0600)."""
    path = Path(releases) / INDEX_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(f"{run}\t{release}\t{digest}\n")


def read_witness(home: str | Path) -> tuple[set[str], tuple[Path, ...]]:
    """Digests recorded by every ``releases/index.tsv`` below ``home``."""
    files = tuple(sorted(Path(home).rglob(f"releases/{INDEX_NAME}")))
    digests: set[str] = set()
    for path in files:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and len(parts[2]) == 64:
                digests.add(parts[2])
    return digests, files


def check_witness(ledger, *, raise_on_missing: bool = True) -> WitnessReport:
    """Compare the release index below ``ledger.home`` with the ledger's charged entries.

    Raises:
        LedgerIntegrityError: (with ``raise_on_missing``) when the ledger lacks recorded
            releases: it was deleted, replaced or truncated.
    """
    recorded, files = read_witness(ledger.home)
    if not recorded:
        return WitnessReport(0, 0, files)
    charged = {e.payload_sha256 for e in ledger.entries() if e.status == "charged"}
    missing = len(recorded - charged)
    report = WitnessReport(len(recorded), missing, files)
    if missing and raise_on_missing:
        raise LedgerIntegrityError(
            f"the privacy ledger {ledger.path} lacks {missing} of the {len(recorded)} charged "
            f"releases recorded in {len(files)} release index file(s) under {ledger.home} (was "
            "the ledger deleted, replaced or truncated?); this datasite releases nothing until "
            "its owner restores the ledger from a backup (check it with fedmugrep audit --verify)"
        )
    return report

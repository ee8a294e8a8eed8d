"""Every cross-reference in a docstring names something that exists.

Sphinx-style references (``:func:`~fedmugrep.x.y```, ``:class:`Name <fedmugrep.x.Name>```)
outlive renames silently; this resolves each one by importing its module and walking its
attributes (dataclass fields and annotated attributes count).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import fedmugrep

PACKAGE = Path(fedmugrep.__file__).resolve().parent
ROLE = r":(?:func|class|mod|meth|data|attr|exc):"
PLAIN = re.compile(ROLE + r"`~?(fedmugrep(?:\.\w+)+)(?:\(\))?`")
TITLED = re.compile(ROLE + r"`[^`<]*<(fedmugrep(?:\.\w+)+)>`")


def resolves(path: str) -> bool:
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                fields = {**getattr(obj, "__annotations__", {})}
                fields.update(getattr(obj, "__dataclass_fields__", {}))
                return attr in fields and attr == parts[-1]
            obj = getattr(obj, attr)
        return True
    return False


def references() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in [*PLAIN.finditer(text), *TITLED.finditer(text)]:
            line = text[: match.start()].count("\n") + 1
            found.append((str(path.relative_to(PACKAGE.parent)), line, match.group(1)))
    return found


def test_every_docstring_reference_resolves() -> None:
    refs = references()
    assert len(refs) > 100  # the scan finds the package's references
    assert [r for r in refs if not resolves(r[2])] == []


def test_a_stale_reference_is_caught() -> None:
    assert resolves("fedmugrep.federation.parties.TransactionParty.step")
    assert not resolves("fedmugrep.federation.parties.TransactionParty.no_such_method")
    assert not resolves("fedmugrep.federation.no_such_module.thing")

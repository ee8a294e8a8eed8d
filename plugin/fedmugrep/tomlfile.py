"""Reading TOML configuration files with errors that name the file and line.

Used by every TOML the user writes (datasite configs, city configs).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from fedmugrep.errors import ConfigError, ConfigFileError

__all__ = ["read_toml", "toml_string"]

_TOML_ERROR_AT = re.compile(r"^(?P<what>.*?) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def read_toml(path: str | os.PathLike[str], *, what: str = "config") -> dict[str, Any]:
    """Read a TOML file, with errors that name the file (and the line of a syntax error).

    Args:
        path: the file.
        what: what the file is, for the messages (e.g. ``"datasite config"``).

    Returns:
        The parsed TOML document.

    Raises:
        ConfigError: when the file cannot be read.
        ConfigFileError: when it is not UTF-8 text or not valid TOML.
    """
    src = Path(path)
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {what} {src} ({exc.strerror or exc}); pass the path of a readable "
            ".toml file"
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigFileError(
            file=str(src),
            problem=f"the {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line "
            f"{line} cannot be decoded)",
            fix="save the file as UTF-8 (most editors: 'Save with encoding' > UTF-8)",
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_ERROR_AT.match(str(exc))
        line = int(found["line"]) if found else None
        detail = found["what"] if found else str(exc)
        where = f"line {line}, column {found['col']}: " if found else ""
        raise ConfigFileError(
            file=str(src),
            problem=f"the {what} is not valid TOML ({where}{detail})",
            fix=f"fix the TOML syntax{f' on line {line}' if line else ''} (key = value, strings in "
            "double quotes, [section] headers)",
        ) from None


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string (quotes and backslashes escaped)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'

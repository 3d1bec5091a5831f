"""Reading TOML files so that every later error can name the file and the line it is about."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """One or more problems in a file an admin wrote; str() is ready to print."""

    def __init__(self, problems: Iterable[str]):
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


_TABLE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+))*)\s*=""")


def _key_parts(dotted: str) -> tuple[str, ...]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_\-]+)', dotted)
    return tuple(a or b or c for a, b, c in parts)


@dataclass
class Locator:
    """Line numbers of tables and keys in one TOML file, found by a light scan of its text.

    Tables are addressed as ("list", 2) for the third ``[[list]]`` or ("server", 0) for ``[server]``;
    keys by their dotted path inside that table, e.g. ("match", "body", "words").
    """

    path: Path
    tables: dict[tuple[str, int], int] = field(default_factory=dict)
    keys: dict[tuple[str, int, tuple[str, ...]], int] = field(default_factory=dict)

    @classmethod
    def scan(cls, path: Path, text: str) -> Locator:
        loc = cls(path)
        counts: dict[str, int] = {}
        current = ("", 0)
        for number, line in enumerate(text.splitlines(), start=1):
            table = _TABLE.match(line)
            if table:
                name = ".".join(_key_parts(table.group(2)))
                index = counts.get(name, -1) + 1 if table.group(1) == "[[" else 0
                counts[name] = index
                current = (name, index)
                loc.tables.setdefault(current, number)
                continue
            key = _KEY.match(line)
            if key:
                loc.keys.setdefault((current[0], current[1], _key_parts(key.group(1))), number)
        return loc

    def line(self, table: str, index: int = 0, key: tuple[str, ...] = ()) -> int:
        """The line of a key (or the closest enclosing key, or the table header, or 1)."""
        for n in range(len(key), 0, -1):
            found = self.keys.get((table, index, key[:n]))
            if found:
                return found
            # a prefix may be written as an inline table or a nested [table.sub] header
        for (t, i, k), number in self.keys.items():
            if t == table and i == index and k and key and k[0] == key[0]:
                return number
        sub = ".".join((table,) + key[:1]) if table else ".".join(key[:1])
        return self.tables.get((table, index)) or self.tables.get((sub, 0)) or 1

    def where(self, table: str, index: int = 0, key: tuple[str, ...] = ()) -> str:
        return f"{self.path}:{self.line(table, index, key)}"


def load(path: Path, shown_as: Path | None = None) -> tuple[dict[str, Any], Locator]:
    """Parse one TOML file; syntax errors become a ConfigError that names file:line.

    `shown_as` is the name errors and sources use (e.g. rules/10-security.toml), so that the
    audit trail does not depend on the directory the daemon was started from."""
    shown = shown_as or path
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError([f"{shown}: cannot read the file ({err.strerror})"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError([f"{shown}:{line}: the file is not UTF-8; save it as UTF-8"]) from None
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        where = found.group(1) if found else "1"
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise ConfigError(
            [f"{shown}:{where}: TOML syntax error: {message}; see https://toml.io for the syntax"]
        ) from None
    return parsed, Locator.scan(shown, text)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(value: Any) -> int:
    """'10MB', '512KB', '2 MiB' or a plain number of bytes -> bytes (1 KB = 1024 bytes)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 10MB, 512KB or a number of bytes")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        found = _SIZE.match(value)
        if found:
            prefix = (found.group(2) or "").upper()[:1]
            return int(float(found.group(1)) * _SIZE_UNITS[prefix])
    raise ValueError(f"{value!r} is not a size; write it like 10MB, 512KB or a number of bytes")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.ASCII)  # ASCII digits only
_DURATION_UNITS = {"ms": 0.001, "s": 1, "": 1, "m": 60, "h": 3600, "d": 86400}


def format_duration(seconds: float) -> str:
    """A span as people read it in digests and notices: the largest whole unit, "3h", "2d", "45s"."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def parse_duration(value: Any) -> float:
    """'30s', '5m', '1h', '2d', '250ms' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 1h or 2d")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        found = _DURATION.match(value)
        if found and len(found.group(1)) <= 12:  # no astronomical spans (float('9' * 400) is inf)
            return float(found.group(1)) * _DURATION_UNITS[found.group(2) or ""]
    raise ValueError(f"{value!r} is not a duration; write it like 30s, 5m, 1h or 2d")

"""The rule set in force, and hot reload: a changed rules_dir is validated and swapped in whole."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from ..oplog import count
from ..tomlfile import ConfigError
from .loader import load_rules
from .model import RuleSet

log = logging.getLogger("listmod.rules")


def stamp(rules_dir: Path) -> tuple:
    """What changes when any file in rules_dir changes: names, sizes, modification times."""
    try:
        entries = sorted(rules_dir.iterdir())
    except OSError:
        return ()
    out = []
    for path in entries:
        try:
            st = path.stat()
        except OSError:
            continue
        if path.is_file():
            out.append((path.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


class RuleBook:
    """Holds the current RuleSet. Each message takes `current` once, so it is judged by exactly one
    complete set; a reload replaces the reference in one assignment."""

    def __init__(self, rules_dir: Path, initial: RuleSet,
                 on_refused: Callable[[ConfigError], None] = lambda err: None,
                 on_swapped: Callable[[RuleSet], None] = lambda new: None):
        self.rules_dir = rules_dir
        self.on_swapped = on_swapped
        self.current = initial
        self.on_refused = on_refused
        self._seen = stamp(rules_dir)
        self._refused: tuple[str, ...] = ()

    def __call__(self) -> RuleSet:
        return self.current

    async def watch(self, stopping: asyncio.Event, every: float) -> None:
        pending = None
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), timeout=every)
            except TimeoutError:
                pass
            now = stamp(self.rules_dir)
            if now == self._seen:
                pending = None
                continue
            if now != pending:  # wait until the files stop changing (an editor mid-save)
                pending = now
                continue
            self._seen, pending = now, None
            await self.reload()

    async def reload(self) -> bool:
        try:
            new = await asyncio.to_thread(load_rules, self.rules_dir)
        except ConfigError as err:
            log.error("the changed rules were refused; the rule set %s stays in force:\n%s",
                      self.current.digest[:12], err)
            count("rules-reload", result="refused")
            if err.problems != self._refused:  # tell the owners once per broken version
                self._refused = err.problems
                self.on_refused(err)
            return False
        self._refused = ()
        if new.digest != self.current.digest:
            log.info("rules reloaded: rule set %s (%d rules) replaces %s", new.digest[:12],
                     len(new.rules), self.current.digest[:12])
            self.current = new
            self.on_swapped(new)
            count("rules-reload", result="ok")
        return True

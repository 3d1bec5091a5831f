"""Supervision of the daemon's long-lived tasks: a task that fails is logged with its context and
started again, and a failure that repeats is logged at most once a minute (with a count)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("listmod.supervise")


class QuietLog:
    """Logs one line per key at most once per `every` seconds; says how many were held back."""

    def __init__(self, logger: logging.Logger, every: float = 60.0):
        self.logger = logger
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, key: str, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self.every) < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        suffix = f" ({held} more like this in the last {self.every:.0f}s)" if held else ""
        self.logger.log(level, message + suffix, *args, exc_info=exc_info)


async def supervised(name: str, run: Callable[[asyncio.Event], Awaitable[None]],
                     stopping: asyncio.Event, quiet: QuietLog | None = None) -> None:
    """Run `run(stopping)` until it returns or `stopping` is set; restart it after any failure,
    waiting longer after each one in a row (1 s doubling to 60 s)."""
    quiet = quiet or QuietLog(log)
    delay = 1.0
    while not stopping.is_set():
        started = time.monotonic()
        try:
            await run(stopping)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            quiet(name, logging.ERROR, "the %s task failed; it starts again in %.0fs", name, delay,
                  exc_info=True)
        if time.monotonic() - started > 300:
            delay = 1.0  # it had run well for a while: this is a new failure, not a loop
        try:
            await asyncio.wait_for(stopping.wait(), timeout=delay)
        except TimeoutError:
            pass
        delay = min(delay * 2, 60.0)

"""Logging set-up shared by every process, and a throttle so bad input cannot flood a log."""

from __future__ import annotations

import logging
import sys
import time


def setup(process: str, level: int = logging.INFO, stream=None) -> logging.Logger:
    logging.basicConfig(
        level=level,
        stream=stream or sys.stdout,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        force=True,
    )
    return logging.getLogger(process)


class Throttle:
    """Lets a log line per key through at most once per `interval` seconds.

    `ready(key)` returns how many were held back since the last line (or None when this one
    should be held back), so the line that does go out can say "(+12 more)".
    """

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self._last: dict[object, float] = {}
        self._held: dict[object, int] = {}

    def ready(self, key: object) -> int | None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.interval:
            self._last[key] = now
            return self._held.pop(key, 0)
        self._held[key] = self._held.get(key, 0) + 1
        return None


def warn_throttled(log: logging.Logger, throttle: Throttle, key: object, text: str) -> None:
    held = throttle.ready(key)
    if held is not None:
        log.warning("%s%s", text, f" (+{held} more since last report)" if held else "")

"""HealthReporter: the `health/<process>` stream every process publishes once a second."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bus import topics
from bus.publisher import Publisher


class HealthReporter:
    """Calls `collect()` and publishes the result at most every `interval` seconds.

    Call `tick()` from the process's loop; it is cheap when nothing is due. Every report
    carries the process name, its uptime and the last error (if any) besides what `collect`
    returns.
    """

    def __init__(
        self,
        pub: Publisher,
        process: str,
        collect: Callable[[], dict[str, Any]],
        interval: float = 1.0,
    ):
        self.pub = pub
        self.process = process
        self.collect = collect
        self.interval = interval
        self.started = time.monotonic()
        self.last_error: str | None = None
        self._next = 0.0

    def error(self, text: str) -> None:
        self.last_error = text

    def tick(self, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now < self._next:
            return False
        self._next = now + self.interval
        report = {
            "process": self.process,
            "uptime_s": round(now - self.started, 1),
            "last_error": self.last_error,
            **self.collect(),
        }
        self.pub.publish(topics.health(self.process), data=report)
        return True

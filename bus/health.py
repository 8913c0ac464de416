"""HealthReporter: the `health/<process>` stream every process publishes once a second."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bus import topics
from bus.publisher import Publisher


class HealthReporter:
    """Calls `collect()` and publishes the result at most every `interval` seconds.

    Call `tick()` from the process's loop; it is cheap when nothing is due. Every report has
    the same envelope, which the dashboard reads without guessing: `process`, `uptime_s`,
    `rate_hz` (the process's main rate, None when it has none), `drops` (counters by cause:
    what it dropped, skipped, refused or ran late), `errors`, `last_error`; whatever else
    `collect` returns follows as the process's own extras.
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

    def report(self) -> dict[str, Any]:
        extras = dict(self.collect())
        rate = extras.pop("rate_hz", None)
        drops = extras.pop("drops", None) or {}
        return {
            "process": self.process,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "rate_hz": None if rate is None else round(float(rate), 2),
            "drops": {str(k): v for k, v in drops.items() if isinstance(v, int | float)},
            "errors": int(extras.pop("errors", 0) or 0),
            "last_error": self.last_error,
            **extras,
        }

    def tick(self, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now < self._next:
            return False
        self._next = now + self.interval
        self.pub.publish(topics.health(self.process), data=self.report())
        return True

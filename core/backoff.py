"""Exponential backoff for reopening a device that went away (a camera, a serial port)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Backoff:
    """When the next attempt is due: at once after `reset()`, then `initial_s`, doubling up to
    `max_s` after each failure. Polled from a loop (`due()`), so it never sleeps by itself and a
    loop waiting on a device keeps publishing its health."""

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"backoff needs 0 < initial ({initial_s}) <= max ({max_s})")
        self.initial_s = initial_s
        self.max_s = max_s
        self._clock = clock
        self._delay = initial_s
        self._next = 0.0
        self.failures = 0  # consecutive failed attempts

    def due(self) -> bool:
        return self._clock() >= self._next

    def wait_s(self) -> float:
        """Seconds until the next attempt is due (0 when it already is)."""
        return max(0.0, self._next - self._clock())

    def failed(self) -> float:
        """Record a failed attempt; returns the delay until the next one."""
        delay = self._delay
        self._next = self._clock() + delay
        self._delay = min(self._delay * 2, self.max_s)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """The device works again: the next outage retries at once, then from `initial_s`."""
        self._delay = self.initial_s
        self._next = 0.0
        self.failures = 0

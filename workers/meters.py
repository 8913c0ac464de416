"""Rate and timing meters for the health reports of loops (camera frames, servo ticks)."""

from __future__ import annotations

import time
from collections import deque

import numpy as np


class RateMeter:
    """Events per second since the previous `rate()` call."""

    def __init__(self) -> None:
        self.count = 0
        self._count_then = 0
        self._t_then = time.monotonic()

    def add(self, n: int = 1) -> None:
        self.count += n

    def rate(self) -> float:
        now = time.monotonic()
        dt = now - self._t_then
        rate = (self.count - self._count_then) / dt if dt > 0 else 0.0
        self._count_then, self._t_then = self.count, now
        return round(rate, 2)


class MillisWindow:
    """Percentiles of the newest `window` durations, reported in ms under `prefix`."""

    def __init__(self, prefix: str, window: int = 1000):
        self.prefix = prefix
        self._ms: deque[float] = deque(maxlen=window)

    def add(self, seconds: float) -> None:
        self._ms.append(seconds * 1000.0)

    def summary(self) -> dict[str, float | None]:
        keys = [f"{self.prefix}_{q}_ms" for q in ("p50", "p99", "max")]
        if not self._ms:
            return dict.fromkeys(keys)
        ms = np.fromiter(self._ms, dtype=np.float64)
        values = (np.percentile(ms, 50), np.percentile(ms, 99), ms.max())
        return {k: round(float(v), 3) for k, v in zip(keys, values, strict=True)}

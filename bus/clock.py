"""The one clock every message is stamped with, and a watch for it stepping.

Wall-clock seconds (CLOCK_REALTIME) rather than a monotonic clock: every process on a host reads
the same value, and hosts kept in step by NTP/PTP stay comparable. Loops that need steady pacing
use `time.monotonic()` for their own scheduling and this clock only for stamps.

The price: the wall clock can step. NTP/chrony set it at once when it is far off (a Raspberry
Pi without a real-time clock boots hours wrong and steps when the network comes up), and a
paused machine (a VM snapshot, a suspend) resumes with the wall clock moved on and the
monotonic one not. A loop that maps its monotonic schedule onto bus stamps must notice and
re-anchor: `ClockSteps`.
"""

from __future__ import annotations

import time


def now() -> float:
    return time.time()


def describe_step(step: float, digits: int = 3) -> str:
    """One wording of a clock step for every process's log and report: what moved, by how
    much, and the likely causes (each caller adds what it did about it)."""
    return (
        f"the wall clock stepped {step:+.{digits}f} s against the monotonic clock (set by "
        "NTP/chrony, or the machine was paused: a VM snapshot, a suspend)"
    )


class ClockSteps:
    """Notices the wall clock moving against the monotonic clock by `tolerance` seconds or
    more. Slow slewing below the tolerance is let through (and reported once it adds up to
    it); a step is reported once, at the next `check()`."""

    def __init__(self, tolerance: float = 0.05):
        if not tolerance > 0:
            raise ValueError(f"tolerance must be > 0 s, got {tolerance!r}")
        self.tolerance = tolerance
        self.offset = self._offset()

    def check(self) -> float:
        """Seconds the wall clock stepped since the last report (+ forward), or 0.0."""
        offset = self._offset()
        moved = offset - self.offset
        if abs(moved) < self.tolerance:
            return 0.0
        self.offset = offset
        return moved

    def _offset(self) -> float:
        """Wall minus monotonic, read between two monotonic reads that are close together:
        a process preempted between the reads (tens of ms on a loaded machine) would
        otherwise look like a step."""
        best, width = 0.0, float("inf")
        for _ in range(5):
            before = time.monotonic()
            wall = time.time()
            after = time.monotonic()
            if after - before < width:
                best, width = wall - (before + after) / 2, after - before
            if width < 0.001:
                break
        return best

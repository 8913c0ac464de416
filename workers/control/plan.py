"""The action plan: chunk actions placed on the control clock, blended where chunks overlap.

Pure logic (no bus, no clock of its own), so the scheduling rules are unit-tested directly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

BLENDS = ("latest", "weighted", "average")


@dataclass
class Slot:
    action: np.ndarray
    intended: float  # when the policy meant it to run (t_obs + i * dt, bus clock)
    chunks: int = 1


class ActionPlan:
    """Tick k runs at `epoch + k * dt`. Action i of a chunk observed at `t_obs` belongs to the
    tick nearest `t_obs + i * dt`; actions whose tick has already run are skipped (counted).

    Where a new chunk overlaps planned actions: `latest` takes the new one, `average` the mean
    of every chunk that covered the tick, `weighted` moves `weight` of the way to the new one
    (a smooth hand-over, no jump at chunk boundaries)."""

    def __init__(self, dt: float, epoch: float, blend: str = "weighted", weight: float = 0.5):
        if blend not in BLENDS:
            raise ValueError(f"blend {blend!r}: expected one of {BLENDS}")
        self.dt = dt
        self.epoch = epoch
        self.blend = blend
        self.weight = weight
        self.slots: dict[int, Slot] = {}
        self.last_run = -1  # the last tick taken
        self.skipped = 0

    def tick_of(self, t: float) -> int:
        return int(round((t - self.epoch) / self.dt))

    def time_of(self, tick: int) -> float:
        return self.epoch + tick * self.dt

    def add(self, actions: np.ndarray, t_obs: float, first_tick: int | None = None) -> int:
        """Merge a chunk; returns how many of its actions were stale and skipped.

        `first_tick` places action 0 at that tick instead of at t_obs (the synchronous
        baseline, which runs a chunk from its first action whenever it arrives)."""
        stale = 0
        for i, action in enumerate(actions):
            intended = t_obs + i * self.dt
            tick = self.tick_of(intended) if first_tick is None else first_tick + i
            if tick <= self.last_run:
                stale += 1
                continue
            old = self.slots.get(tick)
            if old is None or self.blend == "latest":
                self.slots[tick] = Slot(np.array(action, np.float32), intended)
            elif self.blend == "average":
                n = old.chunks
                old.action = (old.action * n + action) / (n + 1)
                old.chunks, old.intended = n + 1, intended
            else:
                old.action = old.action + self.weight * (action - old.action)
                old.chunks, old.intended = old.chunks + 1, intended
        self.skipped += stale
        return stale

    def take(self, tick: int) -> Slot | None:
        """The action for `tick` (None: nothing planned); forgets everything up to it."""
        for old in [k for k in self.slots if k < tick]:
            del self.slots[old]
        self.last_run = max(self.last_run, tick)
        return self.slots.pop(tick, None)

    def ahead(self, tick: int) -> int:
        """Planned actions after `tick` without a gap: how long the arm is covered."""
        n = 0
        while tick + 1 + n in self.slots:
            n += 1
        return n

    def clear(self) -> None:
        self.slots.clear()


class LatencyEstimate:
    """Recent request-to-reply times; the estimate is a high percentile, so requests go out
    early enough for most replies, not just the average one."""

    def __init__(self, window: int = 20, percentile: float = 90, initial: float = 0.5):
        self.samples: deque[float] = deque(maxlen=window)
        self.percentile = percentile
        self.initial = initial

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def value(self) -> float:
        if not self.samples:
            return self.initial
        return float(np.percentile(self.samples, self.percentile))


def stall_bound_fraction(latency: float, horizon: int, dt: float) -> float:
    """The least share of time without a fresh action with one policy worker.

    A chunk observed at t is usable from t + L to t + H*dt, and the next request cannot start
    before this one returns; back to back, each cycle of L brings H*dt - L of new actions."""
    chunk = horizon * dt
    return min(1.0, max(0.0, (2 * latency - chunk) / latency)) if latency > 0 else 0.0

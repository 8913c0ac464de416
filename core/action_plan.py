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
        # At each chunk's first tick still to run: how far (max over joints) the merge moved
        # the planned action. What the arm feels at a chunk switch; 0 for a seamless join.
        self.seams: deque[float] = deque(maxlen=1000)

    def tick_of(self, t: float) -> int:
        return int(round((t - self.epoch) / self.dt))

    def time_of(self, tick: int) -> float:
        return self.epoch + tick * self.dt

    def add(self, actions: np.ndarray, t_obs: float, first_tick: int | None = None) -> int:
        """Merge a chunk; returns how many of its actions were stale and skipped.

        `first_tick` places action 0 at that tick instead of at t_obs (the synchronous
        baseline, which runs a chunk from its first action whenever it arrives)."""
        stale = 0
        seam_tick, before = None, None
        for i, action in enumerate(actions):
            intended = t_obs + i * self.dt
            tick = self.tick_of(intended) if first_tick is None else first_tick + i
            if tick <= self.last_run:
                stale += 1
                continue
            old = self.slots.get(tick)
            if seam_tick is None:
                seam_tick = tick
                before = None if old is None else old.action.copy()
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
        if before is not None:
            self.seams.append(float(np.abs(self.slots[seam_tick].action - before).max()))
        return stale

    def prefix(
        self, t_obs: float, committed_until: float, limit: int, soft: bool = True
    ) -> tuple[np.ndarray, int, int] | None:
        """What a request observed at `t_obs` should continue: (actions, start, committed).

        The planned actions from the next tick to run on, without a gap, at most up to chunk
        index `limit`; `start` is the chunk index of the first (index 0 = `t_obs`), the first
        `committed` run before `committed_until` (when the reply is expected) whatever the
        policy answers. `soft=False` sends only those. None when nothing is planned."""
        base = self.tick_of(t_obs)
        first = max(base, self.last_run + 1)
        ticks = []
        while first + len(ticks) in self.slots and first + len(ticks) - base < limit:
            ticks.append(first + len(ticks))
        committed = sum(1 for k in ticks if self.time_of(k) <= committed_until)
        if not soft:
            ticks = ticks[:committed]
        if not ticks:
            return None
        return np.stack([self.slots[k].action for k in ticks]), ticks[0] - base, committed

    def planned_until(self, tick: int) -> float:
        """The time of the last action planned without a gap after `tick`."""
        return self.time_of(tick + self.ahead(tick))

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

    def shift_clock(self, step: float) -> None:
        """The bus clock stepped `step` s: every tick, and every planned action, keeps its
        place on the schedule and takes the new time."""
        self.epoch += step
        for slot in self.slots.values():
            slot.intended += step


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


def stall_bound_fraction(latency: float, horizon: int, dt: float, workers: int = 1) -> float:
    """The least share of time without a fresh action, with `workers` policy workers.

    A chunk observed at t is usable from t + L to t + H*dt. Each worker takes one request at
    a time, so at best requests go out every s = L/N (staggered); the chunk in use then was
    observed at most L + s ago, and the arm stalls for L + s - H*dt of every s. No stall while
    L <= N * H*dt / (N + 1): half a chunk with one worker, two thirds with two."""
    if latency <= 0:
        return 0.0
    spacing = latency / workers
    return min(1.0, max(0.0, (latency + spacing - horizon * dt) / spacing))


def max_latency_without_stall(horizon: int, dt: float, workers: int = 1) -> float:
    """The largest policy latency that runs without stalls (the bound above)."""
    return workers * horizon * dt / (workers + 1)


def too_slow_report(latency: float, horizon: int, dt: float, workers: int) -> dict | None:
    """The `policy too slow` verdict with its numbers and what would fix it; None while the
    latency is within what `workers` workers can hide."""
    chunk = horizon * dt
    limit = max_latency_without_stall(horizon, dt, workers)
    if latency <= limit + 1e-9:
        return None
    bound = stall_bound_fraction(latency, horizon, dt, workers)
    # L <= N*C/(N+1)  <=>  N >= L / (C - L), and H*dt >= L*(N+1)/N.
    # (less a hair: 0.4 / (0.5333 - 0.4) is 3, not 3.0000001)
    needed = f"{int(np.ceil(latency / (chunk - latency) - 1e-9))}" if chunk > latency else "more"
    longer = int(np.ceil(latency * (workers + 1) / workers / dt - 1e-9))
    text = (
        f"policy too slow: latency {latency * 1000:.0f} ms vs chunk {chunk * 1000:.0f} ms "
        f"({horizon} actions at {1 / dt:g} Hz); {workers} worker(s) run without stalls only "
        f"while latency <= N*chunk/(N+1) = {limit * 1000:.0f} ms. Expect at least "
        f"{bound * 60000:.0f} ms of stall per minute. Fix: a faster policy (fewer diffusion "
        f"steps, a GPU), a longer horizon (>= {longer} actions), or {needed} policy workers "
        "(SO101_POLICY_WORKERS)."
    )
    return {
        "text": text,
        "latency_ms": latency * 1000,
        "chunk_ms": chunk * 1000,
        "stall_bound_ms_per_min": bound * 60000,
        "horizon": horizon,
        "workers": workers,
        "max_latency_ms": limit * 1000,
    }

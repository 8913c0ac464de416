"""The control loop's settings and its per-episode statistics."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from bus import BusConfig

JOINS = ("auto", "inpaint", "blend", "latest")


@dataclass
class ControlConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    task: str = "lift"
    # Episodes to run (0 = until stopped) and their length.
    episodes: int = 0
    episode_s: float = 20.0
    fps: float = 30.0
    # ahead: request the next chunk while the current one covers the latency; sync: baseline.
    schedule: str = "ahead"
    # How a new chunk joins the plan: inpaint (send the committed actions; the policy continues
    # them), blend (average with `blend`), latest (the new chunk wins); auto = inpaint when the
    # policy says it accepts a prefix (diffusion), else blend.
    join: str = "auto"
    # Inpaint: also send the plan beyond the committed actions, weighted down (RTC's soft prefix).
    prefix_soft: bool = True
    # Blend: weighted | average (| latest, the same as --join=latest).
    blend: str = "weighted"
    blend_weight: float = 0.5
    # Policy workers to use at once: up to one request in flight per live worker (the hub says
    # how many are live), staggered.
    policy_workers: int = 1
    # Every part of an observation within this many seconds of the observation time.
    max_skew: float = 0.1
    # A request without an answer after this long counts as failed.
    policy_timeout: float = 1.5
    # Request this many ticks earlier than the latency estimate alone says.
    margin_ticks: int = 2
    # Cameras to send (empty = the task's).
    cameras: list[str] = field(default_factory=list)
    name: str = "control"
    # Episode k carries seed `seed + k` in its start marker (the simulator builds the scene from
    # it, so any episode can be replayed exactly).
    seed: int = 0
    # End an episode when the simulator reports its outcome (event/sim), not at episode_s.
    end_on_outcome: bool = True
    # Seconds to wait at start for someone (recorder, dashboard) to hear event/episode.
    wait_for_listeners: float = 2.0

    def check(self) -> None:
        """ValueError naming the first setting that cannot work."""
        if self.schedule not in ("ahead", "sync"):
            raise ValueError(f"--schedule={self.schedule!r}: expected ahead or sync")
        if self.join not in JOINS:
            raise ValueError(f"--join={self.join!r}: expected one of {', '.join(JOINS)}")
        if self.policy_workers < 1:
            raise ValueError(f"--policy_workers={self.policy_workers}: expected >= 1")
        if self.fps <= 0 or self.episode_s <= 0:
            raise ValueError("--fps and --episode_s must be > 0")


@dataclass
class LoopStats:
    ticks: int = 0
    stall_ticks: int = 0  # ticks without a fresh action, once the episode's first one ran
    startup_ticks: int = 0  # ticks before an episode's first action (connecting, first chunk)
    actions: int = 0
    requests: int = 0
    replies: int = 0
    errors: int = 0
    timeouts: int = 0
    holds: int = 0
    clock_steps: int = 0  # wall-clock steps re-anchored (bus.clock.ClockSteps)
    clock_step_s: float = 0.0  # their sum, + forward
    jitter_ms: deque = field(default_factory=lambda: deque(maxlen=3000))
    lateness_ms: deque = field(default_factory=lambda: deque(maxlen=3000))
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=200))
    skew_ms: deque = field(default_factory=lambda: deque(maxlen=200))
    started: float = field(default_factory=time.monotonic)

    def summary(self, dt: float) -> dict:
        def p(values: deque, q: float) -> float | None:
            return round(float(np.percentile(values, q)), 3) if values else None

        minutes = max((self.ticks - self.startup_ticks) * dt / 60, 1e-9)
        return {
            "ticks": self.ticks,
            "loop_hz": round(self.ticks / max(1e-9, time.monotonic() - self.started), 2),
            "jitter_p99_ms": p(self.jitter_ms, 99),
            "stall_ticks": self.stall_ticks,
            "startup_ticks": self.startup_ticks,
            "stall_ms_per_min": round(self.stall_ticks * dt * 1000 / minutes, 1),
            "actions": self.actions,
            "lateness_p50_ms": p(self.lateness_ms, 50),
            "requests": self.requests,
            "replies": self.replies,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "holds": self.holds,
            "clock_steps": self.clock_steps,
            "clock_step_s": round(self.clock_step_s, 3),
            "chunk_latency_p50_ms": p(self.latency_ms, 50),
            "obs_skew_p50_ms": p(self.skew_ms, 50),
        }

"""Streams onto a dataset's frame clock: one value per stream per frame, from capture times.

An episode's clock starts at t0, the first time every required stream has delivered a sample
inside the episode; frame k is due at t0 + k / fps, and the last frame is the one whose window
holds the stop time, so every sample of the episode lands in some frame. Frame k takes, from
each stream, the newest sample captured at or before t0 + (k + slack) / fps: the slack (half a
frame by default) centres each frame's window on its nominal time, so a camera running at the
frame rate with a little capture jitter lands one sample in each frame instead of flickering
between neighbours. (diffusion_policy's real-world runner aligns the same way: the last sample
before the target time.)

Per stream and episode the clock counts what the alignment did:
- `dropped`: samples superseded inside one frame (several new ones; only the newest is used);
- `duplicated`: frames with no new sample (the previous one is repeated);
- `late`: samples that arrived after their frame had been handed out (not used);
- `missing`: frames of an optional stream (actions) before its first sample.

A frame is handed out once every required stream (and every optional one that has delivered
in the episode) has been seen past the frame's window, or `max_latency` seconds (bus clock)
after the window closed when a stream lags or stopped, so a dead camera stalls nothing.
Knows nothing of ZeroMQ or LeRobot: samples are (stream, time, value).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    t: float
    value: Any


@dataclass
class Tick:
    """One frame of the episode: the sample each stream contributes (None: none yet)."""

    index: int
    t: float  # nominal time t0 + index / fps (bus clock)
    samples: dict[str, Sample | None]


@dataclass
class StreamCounts:
    received: int = 0  # samples inside the episode's time window
    used: int = 0  # samples that became a frame's value
    dropped: int = 0
    duplicated: int = 0
    late: int = 0
    missing: int = 0
    first_t: float | None = None
    last_t: float | None = None

    def rate_hz(self) -> float | None:
        """The rate the stream really delivered at inside the episode."""
        if self.first_t is None or self.last_t is None or self.last_t <= self.first_t:
            return None
        return (self.received - 1) / (self.last_t - self.first_t)


@dataclass
class _Stream:
    required: bool
    pending: list[Sample] = field(default_factory=list)  # sorted by t, not yet in a frame
    current: Sample | None = None  # the value of the last frame handed out
    seen: float = float("-inf")  # newest capture time seen, even past the episode's end
    counts: StreamCounts = field(default_factory=StreamCounts)


class EpisodeClock:
    """Aligns the samples of one episode; `ready(now)` hands out the frames that are due."""

    def __init__(
        self,
        fps: float,
        required: Iterable[str],
        optional: Iterable[str] = (),
        t_start: float = float("-inf"),
        max_latency: float = 1.0,
        slack: float = 0.5,
    ):
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if not 0.0 <= slack < 1.0:
            raise ValueError(f"slack must be in [0, 1) frames, got {slack}")
        self.fps = float(fps)
        self.period = 1.0 / self.fps
        self.slack = slack * self.period
        self.max_latency = max_latency
        self.t_start = t_start
        self.t_stop: float | None = None
        self.t0: float | None = None
        self.next_index = 0
        self._streams = {name: _Stream(True) for name in required}
        if not self._streams:
            raise ValueError("an episode clock needs at least one required stream")
        for name in optional:
            self._streams.setdefault(name, _Stream(False))

    # ------------------------------------------------------------------ input

    @property
    def streams(self) -> list[str]:
        return list(self._streams)

    def offer(self, stream: str, t: float, value: Any) -> bool:
        """A sample captured at bus time `t`. True if it belongs to this episode."""
        s = self._streams.get(stream)
        if s is None:
            return False
        s.seen = max(s.seen, t)
        if t < self.t_start or (self.t_stop is not None and t > self.t_stop):
            return False
        s.counts.received += 1
        c = s.counts
        c.first_t = t if c.first_t is None else min(c.first_t, t)
        c.last_t = t if c.last_t is None else max(c.last_t, t)
        if (
            self.t0 is not None
            and self.next_index > 0
            and t <= self._window_end(self.next_index - 1)
        ):
            s.counts.late += 1  # its frame has been handed out already
            return True
        bisect.insort(s.pending, Sample(t, value), key=lambda x: x.t)
        if self.t0 is None:
            self._try_start()
        return True

    def stop(self, t_stop: float) -> None:
        """No frame after `t_stop`; samples captured later are not part of the episode."""
        self.t_stop = t_stop if self.t_stop is None else min(self.t_stop, t_stop)
        for s in self._streams.values():
            while s.pending and s.pending[-1].t > self.t_stop:
                s.pending.pop()
                s.counts.received -= 1

    def shift_clock(self, step: float) -> None:
        """The bus clock stepped `step` s (NTP setting it, a paused machine resuming): what
        this clock holds moves with it, so samples stamped after the step continue the frames
        of those before it instead of opening a gap (forward) or arriving late (backward)."""
        self.t_start += step
        self.t_stop = None if self.t_stop is None else self.t_stop + step
        self.t0 = None if self.t0 is None else self.t0 + step
        for s in self._streams.values():
            for sample in s.pending:
                sample.t += step
            s.seen += step
            c = s.counts
            c.first_t = None if c.first_t is None else c.first_t + step
            c.last_t = None if c.last_t is None else c.last_t + step

    # ------------------------------------------------------------------ output

    def _try_start(self) -> None:
        firsts = [s.pending[0].t for s in self._streams.values() if s.required and s.pending]
        if len(firsts) == sum(s.required for s in self._streams.values()):
            self.t0 = max(firsts)

    def _window_end(self, index: int) -> float:
        assert self.t0 is not None
        return self.t0 + index * self.period + self.slack

    def nominal(self, index: int) -> float:
        assert self.t0 is not None
        return self.t0 + index * self.period

    def _past_stop(self, index: int) -> bool:
        """The last frame is the one whose window holds the stop time."""
        return self.t_stop is not None and index > 0 and self._window_end(index - 1) >= self.t_stop

    def _due(self, index: int, now: float) -> bool:
        if self._past_stop(index):
            return False
        end = self._window_end(index)
        if self.t_stop is None and self.nominal(index) > max(
            s.seen for s in self._streams.values() if s.required
        ):
            return False  # no frame ahead of every stream before the episode has ended
        if now > end + self.max_latency:
            return True
        # Optional streams (actions) are waited for too once they have delivered in this
        # episode: a command published right after its state is not missed by a few ms.
        return all(s.seen > end for s in self._streams.values() if s.required or s.counts.received)

    def ready(self, now: float) -> list[Tick]:
        """Frames whose every required stream is complete (or waited for long enough)."""
        ticks: list[Tick] = []
        while self.t0 is not None and self._due(self.next_index, now):
            ticks.append(self._emit(self.next_index))
            self.next_index += 1
        return ticks

    def _emit(self, index: int) -> Tick:
        end = self._window_end(index)
        samples: dict[str, Sample | None] = {}
        for name, s in self._streams.items():
            new = 0
            while s.pending and s.pending[0].t <= end:
                s.current = s.pending.pop(0)
                new += 1
            c = s.counts
            if new:
                c.used += 1
                c.dropped += new - 1
            elif s.current is not None:
                c.duplicated += 1
            else:
                c.missing += 1
            samples[name] = s.current
        return Tick(index, self.nominal(index), samples)

    def finished(self, now: float) -> bool:
        """Stopped, and every frame up to the stop has been handed out (or none ever can)."""
        if self.t_stop is None:
            return False
        if self.t0 is None:
            return now > self.t_stop + self.max_latency or self.t_stop < self.t_start
        return self._past_stop(self.next_index)

    # ------------------------------------------------------------------ report

    @property
    def frames(self) -> int:
        return self.next_index

    def report(self) -> dict[str, Any]:
        """What the alignment did, per stream, for the episode so far."""
        frames = self.next_index
        duration = frames * self.period
        streams = {}
        for name, s in self._streams.items():
            c = s.counts
            rate = c.rate_hz()
            streams[name] = {
                "received": c.received,
                "used": c.used,
                "dropped": c.dropped,
                "duplicated": c.duplicated,
                "late": c.late,
                "missing": c.missing,
                "rate_hz": None if rate is None else round(rate, 3),
            }
        # The rate of new information the frames carry: the required stream that repeated
        # itself most sets it (a 25 Hz camera on a 30 fps clock: 25).
        fresh = [s.counts.used / frames for s in self._streams.values() if s.required and frames]
        return {
            "frames": frames,
            "fps": self.fps,
            "t0": self.t0,
            "duration_s": round(duration, 4),
            "achieved_fps": round(min(fresh) * self.fps, 3) if fresh else 0.0,
            "streams": streams,
        }

"""Observations built from the newest camera frames and arm states, aligned in time."""

from __future__ import annotations

from collections import Counter

import numpy as np

from bus import Message, topics


class ObservationBuilder:
    """Every part of an observation must be at most `max_skew` older than the observation
    time; otherwise it is not sent and the cause is counted by name ("camera/front lags")."""

    def __init__(self, cameras: list[str], arms: list[str], max_skew: float):
        self.cameras = cameras
        self.arms = arms
        self.max_skew = max_skew
        self.skipped: Counter[str] = Counter()
        self.last_skew = 0.0
        self.not_before = 0.0  # parts captured earlier wait for fresh ones (see `fresh_after`)
        self.since = "the episode start"

    def fresh_after(self, t: float, event: str) -> None:
        """Parts captured before `t` (the bus clock at `event`) are not used."""
        self.not_before, self.since = t, event

    def topics(self) -> list[str]:
        return [topics.camera(c) for c in self.cameras] + [topics.state(a) for a in self.arms]

    def build(
        self, newest: dict[str, Message], t_obs: float
    ) -> tuple[dict[str, np.ndarray], str | None]:
        """(arrays for the policy request, None) or ({}, why not)."""
        parts = {}
        for topic in self.topics():
            msg = newest.get(topic)
            if msg is None:
                self.skipped[f"{topic} missing"] += 1
                return {}, f"no {topic} received yet"
            if msg.t_cap < self.not_before:
                self.skipped[f"{topic} before {self.since}"] += 1
                return {}, f"waiting for {topic} from after {self.since}"
            age = t_obs - msg.t_cap
            if age > self.max_skew:
                self.skipped[f"{topic} lags"] += 1
                return {}, (
                    f"{topic} lags {age * 1000:.0f} ms behind the observation time "
                    f"(max skew {self.max_skew * 1000:.0f} ms)"
                )
            parts[topic] = msg
        stamps = [m.t_cap for m in parts.values()]
        self.last_skew = max(stamps) - min(stamps)
        arrays = {}
        for c in self.cameras:
            arrays[f"image.{c}"] = parts[topics.camera(c)].arrays["image"]
        for a in self.arms:
            arrays[f"state.{a}"] = parts[topics.state(a)].arrays["position"]
        return arrays, None

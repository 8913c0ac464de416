"""The recorder's frame clock: which sample of each stream makes each frame."""

from __future__ import annotations

import numpy as np
import pytest

from core.frame_clock import EpisodeClock


def feed(clock: EpisodeClock, stream: str, times) -> None:
    for t in times:
        clock.offer(stream, float(t), round(float(t), 6))


def test_clock_takes_the_newest_sample_per_frame_and_counts_what_it_did() -> None:
    rng = np.random.default_rng(0)
    clock = EpisodeClock(30, ["cam", "state"], t_start=10.0)
    cam = 10.0 + np.arange(60) / 30 + rng.uniform(-0.012, 0.012, 60)  # jittery 30 Hz
    state = 10.001 + np.arange(200) / 100  # 100 Hz: about 3 per frame
    feed(clock, "cam", cam)
    feed(clock, "state", state)
    clock.stop(cam[-1] + 0.002)  # the stop marker follows the last frame
    ticks = clock.ready(now=1e12)
    assert clock.finished(1e12)
    assert clock.t0 == pytest.approx(max(cam[0], state[0]))
    rep = clock.report()["streams"]
    # A jittery camera at the frame rate: one sample per frame, none dropped or repeated.
    assert [t.samples["cam"].t for t in ticks] == list(cam)
    assert rep["cam"]["dropped"] == rep["cam"]["duplicated"] == 0
    # Every frame takes the newest state at or before the end of its window (half a frame on),
    # and nothing captured after the stop.
    for t in ticks:
        end = min(t.t + 0.5 / 30, clock.t_stop)
        assert t.samples["state"].t == max(s for s in state if s <= end)
    # Every sample of the episode is accounted for: used once, or dropped for a newer one.
    s = rep["state"]
    assert s["used"] + s["dropped"] == s["received"] == 196  # the 196 before the stop


def test_clock_repeats_a_slow_camera_and_moves_on_without_a_dead_one() -> None:
    clock = EpisodeClock(30, ["cam", "state"], t_start=0.0, max_latency=1.0)
    feed(clock, "cam", np.arange(50) / 25)  # 25 Hz for 2 s
    feed(clock, "state", np.arange(60) / 30)
    clock.stop(59 / 30)
    clock.ready(now=1e12)
    rep = clock.report()
    assert rep["frames"] == 60
    assert rep["streams"]["cam"]["duplicated"] == 10 and rep["streams"]["cam"]["dropped"] == 0
    assert rep["achieved_fps"] == pytest.approx(25.0)

    clock = EpisodeClock(30, ["cam", "state"], t_start=0.0, max_latency=1.0)
    feed(clock, "cam", np.arange(10) / 30)  # the camera dies after 10 frames
    feed(clock, "state", np.arange(90) / 30)
    # Frames wait for the camera while it may still come ...
    assert len(clock.ready(now=0.5)) == 9
    # ... and go on without it once it is max_latency late; never ahead of the data.
    ticks = clock.ready(now=100.0)
    assert len(ticks) == 81 and ticks[-1].t == pytest.approx(89 / 30)
    assert clock.report()["streams"]["cam"]["duplicated"] == 80
    # A sample that arrives after its frame was handed out is counted, not used.
    clock.offer("cam", 0.5, "late")
    assert clock.report()["streams"]["cam"]["late"] == 1


def test_clock_actions_are_optional_until_they_come_then_awaited() -> None:
    clock = EpisodeClock(30, ["state"], ["action"], t_start=0.0)
    feed(clock, "state", np.arange(10) / 30)
    first = clock.ready(now=0.2)
    assert first and all(t.samples["action"] is None for t in first)
    n = len(first)
    feed(clock, "action", [n / 30, (n + 1) / 30])  # actions start: frames now wait for them
    feed(clock, "state", np.arange(10, 20) / 30)
    more = clock.ready(now=0.0)
    assert len(more) == 1 and more[0].samples["action"].t == pytest.approx(n / 30)
    assert clock.report()["streams"]["action"]["missing"] == n


@pytest.mark.parametrize("step", [100.0, -100.0])
def test_a_clock_step_mid_episode_continues_the_frames(step: float) -> None:
    """NTP setting the clock, or a paused machine resuming, mid-episode: samples stamped after
    the step continue the frames (unshifted, a forward step opened 3,000 repeated frames and a
    backward one made every later sample late)."""
    clock = EpisodeClock(30, ["cam", "state"], t_start=0.0)
    before, after = np.arange(30) / 30, step + np.arange(30, 60) / 30
    feed(clock, "cam", before)
    feed(clock, "state", before)
    first = clock.ready(now=1.0)
    clock.shift_clock(step)
    feed(clock, "cam", after)
    feed(clock, "state", after)
    clock.stop(after[-1])
    ticks = first + clock.ready(now=1e12)
    assert clock.finished(1e12)
    assert [t.samples["cam"].value for t in ticks] == [
        round(float(t), 6) for t in (*before, *after)
    ]
    for counts in clock.report()["streams"].values():
        assert counts["duplicated"] == counts["late"] == counts["dropped"] == 0

"""Episode films run on the frames' capture times: a slow camera still plays in real time."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from bus import BusConfig, Message, topics
from workers.episode_video import EpisodeVideos

T_START = 1000.0
CAMERA_FPS = 15  # half the film's 30: the count of frames alone would play it twice as fast


def shot(camera: str, gray: int, t_cap: float) -> Message:
    image = np.full((24, 32, 3), gray, np.uint8)
    return Message(topics.camera(camera), {"image": image}, t_cap=t_cap)


def sim_event(phase: str, t_cap: float, **data) -> Message:
    return Message(topics.event("sim"), data={"phase": phase, "episode": 0, **data}, t_cap=t_cap)


def test_a_15_fps_camera_films_in_real_time_with_the_episode_clock(tmp_path: Path) -> None:
    videos = EpisodeVideos(BusConfig(), tmp_path, ("front", "wrist"), first=1, label="expert")
    videos.on_message(sim_event("start", T_START, seed=7))
    videos.on_message(shot("front", 255, T_START - 0.05))  # the scene before: not filmed
    for i in range(45):  # 3 s; shot i is gray 5 * i
        t_cap = T_START + 0.01 + i / CAMERA_FPS
        videos.on_message(shot("wrist", 5 * i, t_cap))
        videos.on_message(shot("front", 5 * i, t_cap))
    videos.on_message(sim_event("outcome", T_START + 3.0, success=True))

    assert videos.written == {0: tmp_path / "expert_seed7.mp4"}
    with av.open(str(videos.written[0])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # 3 s of episode at 30 fps (frames 0..90), then the verdict held 1 s.
    assert len(frames) == 91 + 30
    for k in (0, 30, 60, 90):
        newest = max(0, int((k / 30 - 0.01) * CAMERA_FPS))  # captured by the frame's time
        gray = frames[k][36:60, 150:190].mean()
        assert abs(gray - 5 * newest) < 6, (k, gray, newest)

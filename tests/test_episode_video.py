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


def test_the_film_is_encoded_as_it_runs_and_an_unfinished_one_leaves_nothing(
    tmp_path: Path,
) -> None:
    videos = EpisodeVideos(BusConfig(), tmp_path, ("front",), first=2, label="checkpoint/sync")
    videos.on_message(sim_event("start", T_START, seed=3))
    for i in range(60):
        videos.on_message(shot("front", 4 * i, T_START + 0.01 + i / 30))
    # Encoded while the episode runs (not kept in memory until its outcome)...
    part = tmp_path / "checkpoint-sync_seed3.mp4.part"
    assert videos.film is not None and videos.film.k == 60 and part.is_file()
    # ...and the outcome never came: the next episode's start drops the half film.
    videos.on_message(
        Message(
            topics.event("sim"), data={"phase": "start", "episode": 1, "seed": 4}, t_cap=T_START + 5
        )
    )
    assert list(tmp_path.iterdir()) == [] and videos.written == {}
    videos.on_message(shot("front", 9, T_START + 5.1))
    videos.stop.set()
    videos.run()  # the thread's end (here, with nothing queued) drops an open film too
    assert list(tmp_path.iterdir()) == [] and videos.written == {}

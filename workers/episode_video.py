"""Videos of evaluated episodes: the task's cameras side by side, the verdict written on the end.

    videos = EpisodeVideos(bus, folder, ("front", "wrist"), first=2, label="checkpoint")
    videos.start()       # its own thread and subscriber: nothing it does delays the evaluation
    ...
    videos.close()       # videos.written: {episode: path of its MP4}

The simulator's start event opens an episode's film (only the first `first` episodes: frames
are kept in memory until the end, ~40 kB a camera frame at 96x128), its outcome event closes
and writes it. The film runs on the frames' capture times, not on their count: a camera that
delivers 19 frames a second with the policy running still makes a film that plays in real
time, its clock reading what the evaluation's JSON says. H.264 through PyAV, the encoder the
recorder uses, so browsers and the README play it. Camera frames it cannot keep up with are
dropped by its own subscriber, never the evaluation's events.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from bus import BusConfig, Message, Subscriber, topics

VERDICT_S = 1.0  # the last frame, held this long with the verdict written on it
WHITE = (255, 255, 255)


class EpisodeVideos(threading.Thread):
    def __init__(
        self,
        bus: BusConfig,
        folder: Path,
        cameras: tuple[str, ...],
        first: int,
        label: str,
        fps: int = 30,
        scale: int = 3,
    ):
        super().__init__(name="episode-videos", daemon=True)
        self.bus, self.folder, self.first, self.label = bus, folder, first, label
        self.fps, self.scale = fps, scale
        self.topics = [topics.camera(c) for c in cameras]
        self.stop = threading.Event()
        self.written: dict[int, Path] = {}
        self.error: Exception | None = None
        self.episode: int | None = None
        self.seed: int | None = None
        self.verdict = ""
        self.latest: dict[str, np.ndarray] = {}
        self.t_start = 0.0  # the start event's capture time: the film's zero
        # (seconds after t_start, the cameras side by side at their own size), in arrival order
        self.shots: list[tuple[float, np.ndarray]] = []

    def run(self) -> None:
        sub = Subscriber(self.bus, [topics.event("sim"), *self.topics], mode="every")
        try:
            while True:  # after a stop, until what is queued is read (the last outcome)
                msg = sub.recv(0.2)
                if msg is not None:
                    self.on_message(msg)
                elif self.stop.is_set():
                    break
        except Exception as exc:  # a video is not worth an evaluation: the caller says so
            self.error = exc
        finally:
            sub.close()

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=30)

    def on_message(self, msg: Message) -> None:
        if msg.topic == topics.event("sim"):
            phase, episode = msg.data.get("phase"), msg.data.get("episode")
            if phase == "start" and isinstance(episode, int) and episode < self.first:
                self.episode, self.seed, self.verdict = episode, msg.data.get("seed"), ""
                self.t_start, self.latest, self.shots = msg.t_cap, {}, []
            elif phase == "outcome" and episode == self.episode:
                self.verdict = "SUCCESS" if msg.data.get("success") else "FAILURE"
                if (path := self._write(msg.t_cap - self.t_start)) is not None:
                    self.written[episode] = path
            return
        if self.episode is None or msg.topic not in self.topics:
            return
        image = msg.arrays.get("image")
        if image is None or image.ndim != 3 or image.shape[2] != 3:
            return
        if msg.t_cap < self.t_start:
            return  # rendered before this episode's scene
        self.latest[msg.topic] = image
        # One shot per frame of the first camera, once every camera has sent one.
        if msg.topic == self.topics[0] and len(self.latest) == len(self.topics):
            self.shots.append((msg.t_cap - self.t_start, self._side_by_side()))

    def _write(self, end_s: float) -> Path | None:
        shots, self.shots, self.episode = self.shots, [], None
        if not shots:  # no camera frame came in time: nothing to film
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.label.replace('/', '-')}_seed{self.seed}.mp4"
        write_mp4(path, self._frames(shots, end_s), self.fps)
        return path

    def _frames(self, shots: list[tuple[float, np.ndarray]], end_s: float) -> Iterator[np.ndarray]:
        """Until the outcome (`end_s`), frame k shows the newest shot captured by k / fps, with
        that clock on it; then the last shot with the verdict, held VERDICT_S."""
        newest = 0
        for k in range(int(max(end_s, shots[-1][0]) * self.fps) + 1):
            while newest + 1 < len(shots) and shots[newest + 1][0] <= k / self.fps:
                newest += 1
            frame = self._film_frame(shots[newest][1], k / self.fps)
            yield frame
        frame = frame.copy()
        _text(frame, self.verdict, (8, frame.shape[0] - 12), 1.0)
        for _ in range(int(VERDICT_S * self.fps)):
            yield frame

    def _side_by_side(self) -> np.ndarray:
        height = self.latest[self.topics[0]].shape[0]
        parts = []
        for topic in self.topics:
            image = self.latest[topic]
            if image.shape[0] != height:
                width = round(image.shape[1] * height / image.shape[0])
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            parts.append(image)
        return np.hstack(parts)

    def _film_frame(self, shot: np.ndarray, clock_s: float) -> np.ndarray:
        tile = cv2.resize(shot, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_LINEAR)
        # H.264 with yuv420p wants even sides.
        tile = tile[: tile.shape[0] // 2 * 2, : tile.shape[1] // 2 * 2]
        _text(tile, f"{self.label}  seed {self.seed}  {clock_s:4.1f} s", (8, 22), 0.6)
        return tile


def _text(image: np.ndarray, text: str, at: tuple[int, int], scale: float) -> None:
    """White with a black outline: readable on the yellow arm and the light table alike."""
    thick = max(1, round(scale * 2))
    for colour, width in (((0, 0, 0), thick + 2), (WHITE, thick)):
        cv2.putText(image, text, at, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, width, cv2.LINE_AA)


def write_mp4(path: Path, frames: Iterable[np.ndarray], fps: int) -> None:
    """RGB frames of one size (at least one) into an H.264 MP4."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", fps, options={"crf": "28", "preset": "veryfast"})
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i, image in enumerate(frames):
            if i == 0:
                stream.height, stream.width = image.shape[:2]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

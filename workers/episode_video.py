"""Videos of evaluated episodes: the task's cameras side by side, the verdict written on the end.

    videos = EpisodeVideos(bus, folder, ("front", "wrist"), first=2, label="checkpoint")
    videos.start()       # its own thread and subscriber: nothing it does delays the evaluation
    ...
    videos.close()       # videos.written: {episode: path of its MP4}

The simulator's start event opens an episode's film (only the first `first` episodes), its
camera frames are encoded as they come (only the newest is kept), its outcome event writes the
verdict and closes it. The film runs on the frames' capture times, not on their count: a camera that
delivers 19 frames a second with the policy running still makes a film that plays in real
time, its clock reading what the evaluation's JSON says. H.264 through PyAV, the encoder the
recorder uses, so browsers and the README play it. Camera frames it cannot keep up with are
dropped by its own subscriber, never the evaluation's events.
"""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from bus import BusConfig, Message, Subscriber, topics

VERDICT_S = 1.0  # the last frame, held this long with the verdict written on it
# Small shots are enlarged by a whole factor to about this height (96 -> 288: readable text);
# large ones are filmed as they are (a 480x640 shot enlarged 3x would cost a core to encode).
FILM_HEIGHT = 288
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
        scale: int = 0,  # 0: whole-factor enlargement to about FILM_HEIGHT
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
        self.latest: dict[str, np.ndarray] = {}
        self.t_start = 0.0  # the start event's capture time: the film's zero
        self.film: Film | None = None  # the open episode's, from its first shot

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
            self._abandon()

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=30)

    def on_message(self, msg: Message) -> None:
        if msg.topic == topics.event("sim"):
            phase, episode = msg.data.get("phase"), msg.data.get("episode")
            if phase == "start" and isinstance(episode, int) and episode < self.first:
                self._abandon()  # an episode whose outcome never came
                self.episode, self.seed = episode, msg.data.get("seed")
                self.t_start, self.latest = msg.t_cap, {}
            elif phase == "outcome" and episode == self.episode:
                verdict = "SUCCESS" if msg.data.get("success") else "FAILURE"
                if self.film is not None:  # else no camera frame came in time: no film
                    self.written[episode] = self.film.finish(msg.t_cap - self.t_start, verdict)
                self.film, self.episode = None, None
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
            if self.film is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                name = f"{self.label.replace('/', '-')}_seed{self.seed}.mp4"
                caption = f"{self.label}  seed {self.seed}"
                height = self.latest[self.topics[0]].shape[0]
                scale = self.scale or max(1, FILM_HEIGHT // height)
                self.film = Film(self.folder / name, caption, self.fps, scale)
            self.film.add(msg.t_cap - self.t_start, self._side_by_side())

    def _abandon(self) -> None:
        if self.film is not None:
            self.film.abandon()
            self.film = None

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


class Film:
    """One episode's MP4, encoded as its shots arrive: only the newest shot is kept, so its
    memory does not grow with the episode's length. Frame k shows the
    newest shot captured by k / fps, with that clock on it. Written under a temporary name,
    renamed when finished: an interrupted episode leaves no half film behind."""

    def __init__(self, path: Path, caption: str, fps: int, scale: int):
        self.path, self.caption, self.fps, self.scale = path, caption, fps, scale
        self.part = path.with_name(path.name + ".part")
        self.writer = Mp4Writer(self.part, fps)
        self.k = 0  # the next film frame
        self.shot: tuple[float, np.ndarray] | None = None  # the newest, not yet shown to its end
        self.last: np.ndarray | None = None  # the last film frame written

    def add(self, t: float, image: np.ndarray) -> None:
        """A shot captured t seconds into the episode (shots come in capture order)."""
        if self.shot is not None:
            while self.k / self.fps < t:
                self._write_frame()
        self.shot = (t, image)

    def finish(self, end_s: float, verdict: str) -> Path:
        """Frames until the outcome (end_s), then the last with the verdict, held VERDICT_S."""
        while self.k <= int(max(end_s, self.shot[0]) * self.fps):
            self._write_frame()
        last = self.last.copy()
        _text(last, verdict, (8, last.shape[0] - 12), 1.0)
        for _ in range(int(VERDICT_S * self.fps)):
            self.writer.add(last)
        self.writer.close()
        self.part.replace(self.path)
        return self.path

    def abandon(self) -> None:
        self.writer.close()
        self.part.unlink(missing_ok=True)

    def _write_frame(self) -> None:
        self.last = self._film_frame(self.shot[1], self.k / self.fps)
        self.writer.add(self.last)
        self.k += 1

    def _film_frame(self, shot: np.ndarray, clock_s: float) -> np.ndarray:
        tile = cv2.resize(shot, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_LINEAR)
        # H.264 with yuv420p wants even sides.
        tile = tile[: tile.shape[0] // 2 * 2, : tile.shape[1] // 2 * 2]
        _text(tile, f"{self.caption}  {clock_s:4.1f} s", (8, 22), 0.6)
        return tile


def _text(image: np.ndarray, text: str, at: tuple[int, int], scale: float) -> None:
    """White with a black outline: readable on the yellow arm and the light table alike."""
    thick = max(1, round(scale * 2))
    for colour, width in (((0, 0, 0), thick + 2), (WHITE, thick)):
        cv2.putText(image, text, at, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, width, cv2.LINE_AA)


class Mp4Writer:
    """RGB frames of one size into an H.264 MP4, one at a time."""

    def __init__(self, path: Path, fps: int):
        self.fps = fps
        self.container = av.open(str(path), "w", format="mp4")  # named .part until done
        self.stream = None
        self.frames = 0

    def add(self, image: np.ndarray) -> None:
        if self.stream is None:
            options = {"crf": "28", "preset": "veryfast"}
            self.stream = self.container.add_stream("h264", self.fps, options=options)
            self.stream.pix_fmt = "yuv420p"
            self.stream.time_base = Fraction(1, self.fps)
            self.stream.height, self.stream.width = image.shape[:2]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frames
        frame.time_base = Fraction(1, self.fps)
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        if self.stream is not None:
            self.container.mux(self.stream.encode(None))
        self.container.close()

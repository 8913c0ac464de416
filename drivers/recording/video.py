"""Video encoding while the episode is recorded: one encoder thread per camera, no frame dropped."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class EncoderSettings:
    """libx264 by default: real time for three 480x640 cameras on two loaded cores (see the
    benchmark); lerobot's default AV1 encoder is several times slower."""

    vcodec: str = "h264"
    crf: int = 30
    gop: int = 10
    preset: str | None = "superfast"
    threads: int | None = 1  # per camera; the cameras already encode in parallel
    stats_every: int = 4  # image statistics from every n-th frame (lerobot samples too)
    queue_frames: int = 15  # per camera, ahead of the encoder

    def lerobot_config(self):
        from lerobot.configs.video import RGBEncoderConfig

        return RGBEncoderConfig(vcodec=self.vcodec, crf=self.crf, g=self.gop, preset=self.preset)


class _CameraEncoder(threading.Thread):
    """One camera of one episode: frames from a queue into an mp4, plus image statistics."""

    def __init__(
        self,
        path: Path,
        fps: int,
        codec: str,
        options: dict[str, str],
        maxsize: int,
        stats_every: int,
    ):
        super().__init__(name=f"encode-{path.stem}", daemon=True)
        self.path = path
        self.fps = fps
        self.codec = codec
        self.options = options
        self.frames: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self.stats_every = max(1, stats_every)
        self.cancelled = threading.Event()
        self.error: BaseException | None = None
        self.stats: dict | None = None
        self.count = 0
        self.busy_s = 0.0

    def run(self) -> None:
        import av
        from lerobot.datasets.compute_stats import (
            RunningQuantileStats,
            auto_downsample_height_width,
        )

        container = stream = None
        tracker = RunningQuantileStats()
        sampled = 0
        try:
            while True:
                try:
                    image = self.frames.get(timeout=0.2)
                except queue.Empty:
                    if self.cancelled.is_set():
                        return
                    continue
                if image is None or self.cancelled.is_set():
                    break
                t = time.perf_counter()
                if container is None:
                    container = av.open(str(self.path), "w")
                    stream = container.add_stream(self.codec, self.fps, options=self.options)
                    stream.pix_fmt = "yuv420p"
                    stream.height, stream.width = image.shape[:2]
                    stream.time_base = Fraction(1, self.fps)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = self.count
                frame.time_base = Fraction(1, self.fps)
                for packet in stream.encode(frame):
                    container.mux(packet)
                if self.count % self.stats_every == 0:
                    small = auto_downsample_height_width(image.transpose(2, 0, 1))
                    tracker.update(small.transpose(1, 2, 0).reshape(-1, small.shape[0]))
                    sampled += 1
                self.count += 1
                self.busy_s += time.perf_counter() - t
            if self.cancelled.is_set():
                return
            if container is not None:
                t = time.perf_counter()
                for packet in stream.encode(None):
                    container.mux(packet)
                container.close()
                container = None
                self.busy_s += time.perf_counter() - t
            if sampled:
                self.stats = tracker.get_statistics()
        except BaseException as exc:  # handed to the writer thread, raised there
            self.error = exc
        finally:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.close()

"""The replay's video side: one episode's frames out of a many-episode mp4, decoded in order
with PyAV, and a thread that runs such a generator ahead of its consumer.

Sequential decoding, because lerobot's `__getitem__` seeks and decodes per timestamp: one
episode of a 30 fps camera costs a seek per frame there, one seek per episode here.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)


class VideoDamaged(Exception):
    """The video cannot give this episode's frames."""


class Prefetcher[T]:
    """Runs a generator in a thread, ahead of the consumer, into a bounded queue."""

    _END = object()

    def __init__(self, source: Iterator[T], depth: int, name: str):
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        # Timed puts so a stop request is noticed even when the consumer has gone away.
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for step in self._source:
                if not self._put(step):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            # After close(), a step the producer put while close() was draining is not handed out.
            if item is self._END or self._stop.is_set():
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        self._stop.set()
        self._drain()  # unblock a producer waiting on a full queue
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._drain()  # a put that was in flight during the first drain
        try:  # wake a consumer blocked in another thread; it ends its iteration
            self._queue.put_nowait(self._END)
        except queue.Full:
            pass


def episode_frames(path: Path, from_ts: float, n: int, fps: int) -> Iterator[np.ndarray]:
    """The n frames of one episode inside a many-episode mp4, in order, as RGB uint8: a gap is
    filled with the previous picture, a short video with its last one (both logged)."""
    try:
        yield from _frames(path, from_ts, n, fps)
    except av.FFmpegError as e:
        raise VideoDamaged(f"{path} cannot be decoded ({e}): the video is damaged") from e


def _frames(path: Path, from_ts: float, n: int, fps: int) -> Iterator[np.ndarray]:
    last: np.ndarray | None = None
    produced = held = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg frame threads: decoding overlaps the consumer
        # Keyframe at or before the episode start; frames before it are decoded and skipped.
        container.seek(
            max(0, int(from_ts / stream.time_base) - 1),
            stream=stream,
            backward=True,
            any_frame=False,
        )
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            i = round((frame.time - from_ts) * fps)
            if i < produced:
                continue
            img = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
            while produced < min(i, n):  # a gap in the video: hold the previous picture
                yield last if last is not None else img
                produced += 1
                held += 1
            if produced >= n:
                break
            yield img
            last = img
            produced += 1
    if held:
        log.warning("%s: %d frames missing inside the episode; held the previous ones", path, held)
    if produced < n:
        log.warning(
            "%s: video ends %d frames short of the episode; holding the last frame",
            path,
            n - produced,
        )
        if last is None:
            raise VideoDamaged(f"{path} has no frames for this episode: the video is damaged")
        for _ in range(n - produced):
            yield last

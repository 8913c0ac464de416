"""The writer on its own thread: the bus-draining thread never waits for the encoder."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from drivers.recording.episode_writer import EpisodeWriter
from drivers.recording.errors import RecordingError

log = logging.getLogger(__name__)


@dataclass
class BacklogStats:
    frames: int = 0  # frames handed over and not yet given to the encoders
    bytes: int = 0
    episodes_queued: int = 0  # ended, not yet committed
    max_bytes: int = 0
    max_frames: int = 0


class BackgroundWriter:
    """Runs an EpisodeWriter in its own thread so that whoever drains the bus never waits for
    encoding or saving. The frames handed over and not yet written are the backlog: counted
    (frames, bytes, episodes queued) and bounded by `max_bytes`; `add` says when it is full
    rather than buffering more, and nothing handed over is ever dropped quietly.

    Results (saved / discarded / error) come back through `results()`."""

    def __init__(
        self, writer: EpisodeWriter, max_bytes: int, on_result: Callable[[dict], None] | None = None
    ):
        self.writer = writer
        self.max_bytes = max_bytes
        self.backlog = BacklogStats()
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._on_result = on_result
        self._thread = threading.Thread(target=self._run, name="dataset-writer", daemon=True)
        self._thread.start()
        self.failed: RecordingError | None = None
        self.discarded_frames = 0  # handed over after a failure: counted, reported

    @property
    def full(self) -> bool:
        with self._lock:
            return self.backlog.bytes >= self.max_bytes

    def backlog_snapshot(self) -> BacklogStats:
        with self._lock:
            return BacklogStats(**vars(self.backlog))

    def begin(self, task: str, image_hw: dict[str, tuple[int, int]], info: dict) -> None:
        self._queue.put(("begin", (task, image_hw, info)))

    def add(self, images: dict[str, np.ndarray], states, actions, times) -> None:
        size = sum(int(im.nbytes) for im in images.values())
        with self._lock:
            b = self.backlog
            b.frames += 1
            b.bytes += size
            b.max_bytes = max(b.max_bytes, b.bytes)
            b.max_frames = max(b.max_frames, b.frames)
        self._queue.put(("frame", (images, states, actions, times, size)))

    def end(self, report: dict) -> None:
        with self._lock:
            self.backlog.episodes_queued += 1
        self._queue.put(("end", report))

    def abort(self, reason: str) -> None:
        self._queue.put(("abort", reason))

    def results(self) -> list[dict]:
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def idle(self) -> bool:
        """Nothing queued or being written."""
        with self._lock:
            b = self.backlog
            return self._queue.unfinished_tasks == 0 and b.frames == 0 and not b.episodes_queued

    def _post(self, result: dict) -> None:
        self._results.put(result)
        if self._on_result is not None:
            self._on_result(result)

    def _run(self) -> None:
        info: dict = {}
        active = False
        prepare = getattr(self.writer, "prepare", None)
        while True:
            try:
                kind, item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if prepare is not None and not active and self.failed is None:
                    prepare()  # idle: open the dataset for the next episode now
                continue
            try:
                if kind == "stop":
                    return
                if kind == "begin":
                    task, image_hw, info = item
                    if self.failed is None:
                        try:
                            index = self.writer.begin(task, image_hw)
                            active = True
                            self._post({"state": "recording", "episode": index, **info})
                        except RecordingError as exc:
                            self._failed(exc, info)
                elif kind == "frame":
                    images, states, actions, times, size = item
                    try:
                        if active and self.failed is None:
                            self.writer.add(images, states, actions, times)
                        else:
                            self.discarded_frames += 1
                    except RecordingError as exc:
                        active = False
                        self._failed(exc, info)
                    finally:
                        with self._lock:
                            self.backlog.frames -= 1
                            self.backlog.bytes -= size
                elif kind == "end":
                    try:
                        if active and self.failed is None:
                            active = False
                            saved = self.writer.end(item)
                            if saved is None:
                                self._post(
                                    {
                                        "state": "discarded",
                                        **info,
                                        "reason": f"shorter than {self.writer.min_frames} frames",
                                        **_brief(item),
                                    }
                                )
                            else:
                                self._post(
                                    {
                                        "state": "saved",
                                        "episode": saved.index,
                                        "frames": saved.frames,
                                        "save_s": saved.seconds,
                                        **info,
                                        "report": saved.report,
                                    }
                                )
                    except RecordingError as exc:
                        self._failed(exc, info)
                    finally:
                        with self._lock:
                            self.backlog.episodes_queued -= 1
                elif kind == "abort":
                    if active:
                        active = False
                        self.writer.abort()
                        self._post({"state": "discarded", **info, "reason": item})
            except Exception as exc:  # a bug, not an I/O error: stop recording, say so
                log.exception("dataset writer failed")
                self._failed(
                    RecordingError(f"dataset writer failed: {type(exc).__name__}: {exc}"), info
                )
                active = False
            finally:
                self._queue.task_done()

    def _failed(self, exc: RecordingError, info: dict) -> None:
        self.failed = exc
        self._post({"state": "error", "kind": exc.kind, "error": str(exc), **info})

    def close(self, timeout: float | None = None) -> bool:
        """Finish what was handed over (up to `timeout` s), stop the thread. True if done."""
        self._queue.put(("stop", None))
        self._thread.join(timeout)
        done = not self._thread.is_alive()
        if done:
            self.writer.close()
        return done


def _brief(report: dict) -> dict:
    return {k: report[k] for k in ("frames", "duration_s") if k in report}

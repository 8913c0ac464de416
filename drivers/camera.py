"""An OpenCV camera: a device index, a /dev/video* path, a video file or a stream URL.

A reader thread owns the cv2.VideoCapture and keeps only the newest frame, so a slow consumer
never backs the device up (each frame replaced unread is counted as dropped) and a device that
blocks inside OpenCV (unplugged, stalled stream) cannot freeze the caller: `read()` waits at most
its own timeout and reports the camera lost once no frame has come for `read_timeout_s`. The
caller then `close()`s and `open()`s again on its own schedule (core.backoff).

Frames are RGB uint8 (H, W, 3), C-contiguous, stamped with the injected clock right after the
grab (before decoding), which is the closest OpenCV lets us get to the exposure.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

# A device that fails this many grabs in a row is lost (single failures happen on USB cameras).
MAX_FAILED_GRABS = 5
# How long close() waits for a reader stuck inside OpenCV before abandoning it.
JOIN_TIMEOUT_S = 1.0


@dataclass
class CameraSettings:
    # A device index ("0"), a device path (/dev/video0), a video file or a stream URL (rtsp://...).
    source: str = "0"
    # Requested size and rate (devices only; files and streams give what they have). The log
    # says what the device actually gave.
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    # Pixel format to ask a device for, e.g. MJPG: USB cameras often need it for 30 fps at 640x480+.
    fourcc: str | None = None
    # A video file that ends is reported as ended and, with loop, opened again from the start.
    loop: bool = True
    # No frame for this long: the camera is reported lost and reopened.
    read_timeout_s: float = 2.0
    # Opening (which OpenCV can block in, e.g. for a dead stream URL) gives up after this long.
    open_timeout_s: float = 10.0
    # Reopen attempts: at once, then after this delay, doubling up to the max.
    reopen_backoff_s: float = 0.5
    reopen_backoff_max_s: float = 10.0

    def validate(self) -> None:
        if not str(self.source).strip():
            raise ValueError("source is empty")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.fourcc is not None and len(self.fourcc) != 4:
            raise ValueError(f"fourcc must be 4 characters (e.g. MJPG), got {self.fourcc!r}")
        for name in ("read_timeout_s", "open_timeout_s", "reopen_backoff_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.reopen_backoff_max_s < self.reopen_backoff_s:
            raise ValueError("reopen_backoff_max_s must be >= reopen_backoff_s")


def source_kind(source: str) -> str:
    """ "device", "file" or "stream"."""
    if source.isdigit() or source.startswith("/dev/video"):
        return "device"
    if "://" in source:
        return "stream"
    return "file"


def open_capture(source: str) -> Any:
    return cv2.VideoCapture(int(source) if source.isdigit() else source)


class CameraLost(Exception):
    """The camera stopped delivering; `reason` says why, `ended` is True for a finished file."""

    def __init__(self, reason: str, ended: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.ended = ended


@dataclass
class Frame:
    image: np.ndarray  # RGB uint8 (H, W, 3), C-contiguous
    t_cap: float  # the injected clock, right after the grab


@dataclass
class CameraInfo:
    kind: str
    backend: str
    width: int
    height: int
    fps: float


class _Session:
    """One opening of the source: what its reader thread hands over. A reader abandoned inside
    OpenCV keeps writing to its own session, never to the next one."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.info: CameraInfo | None = None
        self.frame: Frame | None = None
        self.error: CameraLost | None = None
        self.closing = False
        self.frames = 0
        self.last_progress = time.monotonic()

    def fail(self, error: CameraLost) -> None:
        with self.cond:
            self.error = error
            self.cond.notify_all()


class OpenCVCamera:
    def __init__(
        self,
        settings: CameraSettings,
        clock: Callable[[], float] = time.time,
        capture_factory: Callable[[str], Any] = open_capture,
    ):
        settings.validate()
        self.settings = settings
        self.source = str(settings.source)
        self.kind = source_kind(self.source)
        self._clock = clock
        self._capture_factory = capture_factory
        self._session: _Session | None = None
        self._thread: threading.Thread | None = None
        self.dropped = 0  # frames replaced before anyone read them
        self.failed_reads = 0  # grabs or decodes that failed
        self.abandoned_readers = 0  # reader threads stuck inside OpenCV at close

    @property
    def is_open(self) -> bool:
        return self._session is not None

    def open(self) -> CameraInfo:
        """Open the source and start reading; raises CameraLost if it cannot."""
        self.close()
        session = _Session()
        thread = threading.Thread(
            target=self._read_loop,
            args=(session,),
            daemon=True,
            name=f"camera-reader {self.source}",
        )
        thread.start()
        with session.cond:
            session.cond.wait_for(
                lambda: session.info or session.error, self.settings.open_timeout_s
            )
        if session.info is None:
            session.closing = True
            error = session.error or CameraLost(
                f"opening {self.source} timed out after {self.settings.open_timeout_s:g} s"
            )
            raise error
        self._session, self._thread = session, thread
        self._log_opened(session.info)
        return session.info

    def read(self, wait_s: float) -> Frame | None:
        """The newest frame not read before, waiting up to `wait_s` for one; None if none came
        (yet). Raises CameraLost when the reader failed or nothing came for read_timeout_s."""
        session = self._session
        if session is None:
            raise CameraLost("not open")
        with session.cond:
            if session.frame is None and session.error is None:
                session.cond.wait(wait_s)
            frame, session.frame = session.frame, None
            if frame is not None:
                return frame
            if session.error is not None:
                raise session.error
            silent = time.monotonic() - session.last_progress
        if silent > self.settings.read_timeout_s:
            raise CameraLost(f"no frame for {silent:.1f} s (device stalled or unplugged?)")
        return None

    def close(self) -> None:
        session, thread = self._session, self._thread
        self._session = self._thread = None
        if session is None:
            return
        session.closing = True
        if thread is not None:
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                # Stuck in a blocking OpenCV call: it releases its capture if it ever returns.
                self.abandoned_readers += 1
                log.warning(
                    "camera reader for %s is stuck inside OpenCV; abandoned it", self.source
                )

    # -- the reader thread --------------------------------------------------------------------
    def _read_loop(self, session: _Session) -> None:
        try:
            cap = self._capture_factory(self.source)
        except Exception as exc:  # OpenCV raises cv2.error and friends on odd sources
            session.fail(CameraLost(f"cannot open {self.source}: {exc}"))
            return
        try:
            if not cap.isOpened():
                session.fail(CameraLost(self._open_failure()))
                return
            self._request_settings(cap)
            info = self._describe(cap)
            with session.cond:
                session.info = info
                session.last_progress = time.monotonic()
                session.cond.notify_all()
            self._grab_frames(cap, session, info)
        finally:
            cap.release()

    def _open_failure(self) -> str:
        if self.kind == "file" and not os.path.exists(self.source):
            return f"cannot open {self.source}: no such file"
        if self.kind == "device":
            return (
                f"cannot open camera {self.source} (unplugged, in use by another program, "
                "or no permission: is the user in the video group?)"
            )
        return f"cannot open {self.source}"

    def _request_settings(self, cap: Any) -> None:
        if self.kind != "device":
            return
        s = self.settings
        # V4L2 wants the pixel format first, then the size, then the rate.
        if s.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*s.fourcc))
        if s.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, s.width)
        if s.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, s.height)
        if s.fps:
            cap.set(cv2.CAP_PROP_FPS, s.fps)

    def _describe(self, cap: Any) -> CameraInfo:
        try:
            backend = cap.getBackendName()
        except Exception:  # some backends cannot name themselves
            backend = "?"
        return CameraInfo(
            kind=self.kind,
            backend=backend,
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=float(cap.get(cv2.CAP_PROP_FPS)),
        )

    def _grab_frames(self, cap: Any, session: _Session, info: CameraInfo) -> None:
        # Files would decode as fast as the CPU goes: pace them at their own (or the asked) rate.
        period = 1.0 / (self.settings.fps or info.fps or 30.0) if self.kind == "file" else 0.0
        next_t = time.monotonic()
        failed_in_a_row = 0
        while not session.closing:
            if period:
                next_t += period
                time.sleep(max(0.0, next_t - time.monotonic()))
                if time.monotonic() - next_t > period:
                    next_t = time.monotonic()  # fell behind (loaded machine): do not burst
            ok = cap.grab()
            t_cap = self._clock()
            image = cap.retrieve()[1] if ok else None
            if image is None:
                self.failed_reads += 1
                failed_in_a_row += 1
                if self.kind == "file":
                    ended = session.frames > 0
                    session.fail(CameraLost("ended" if ended else "read failed", ended=ended))
                    return
                if failed_in_a_row >= MAX_FAILED_GRABS:
                    session.fail(CameraLost(f"{failed_in_a_row} reads failed in a row"))
                    return
                time.sleep(0.01)
                continue
            failed_in_a_row = 0
            frame = Frame(to_rgb(image), t_cap)
            with session.cond:
                if session.frame is not None:
                    self.dropped += 1
                session.frame = frame
                session.frames += 1
                session.last_progress = time.monotonic()
                session.cond.notify_all()

    def _log_opened(self, info: CameraInfo) -> None:
        s = self.settings
        asked = (
            f"{s.width or '?'}x{s.height or '?'}@{s.fps or '?'}"
            if self.kind == "device"
            else "as recorded"
        )
        log.info(
            "opened %s (%s, %s backend): asked %s, got %dx%d@%.1f",
            self.source,
            info.kind,
            info.backend,
            asked,
            info.width,
            info.height,
            info.fps,
        )
        mismatch = [
            f"{name} {want} -> {got:g}"
            for name, want, got in (
                ("width", s.width, info.width),
                ("height", s.height, info.height),
                ("fps", s.fps, info.fps),
            )
            if self.kind == "device" and want and abs(want - got) > 0.5
        ]
        if mismatch:
            log.warning("%s did not give what was asked: %s", self.source, ", ".join(mismatch))


def to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR (or gray, or BGRA) frame as RGB uint8 (H, W, 3), C-contiguous."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return rgb if rgb.dtype == np.uint8 else rgb.astype(np.uint8)

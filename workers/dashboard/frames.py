"""Camera frames for the page: downscaled, JPEG-encoded, at most `camera_fps` per camera, each
sent as one binary WebSocket message (FRAME_TAG, a 4-byte header length, a JSON header, the
JPEG)."""

from __future__ import annotations

import json
import struct

import cv2

from bus import Message
from workers.dashboard.values import jsonable

FRAME_TAG = b"F"  # first byte of a binary WebSocket message carrying a camera frame


class FrameShrinker:
    """Downscales and JPEG-encodes at most `fps` frames per camera per second."""

    def __init__(self, width: int, quality: int, fps: float):
        self.width = width
        self.params = [cv2.IMWRITE_JPEG_QUALITY, quality]
        self.period = 1.0 / fps
        self._due: dict[str, float] = {}
        self.encoded = 0

    def due(self, camera: str, now: float) -> bool:
        if now < self._due.get(camera, 0.0):
            return False
        self._due[camera] = max(now, self._due.get(camera, 0.0) + self.period)
        return True

    def encode(self, camera: str, msg: Message) -> bytes | None:
        image = msg.arrays["image"]
        h, w = image.shape[:2]
        if w > self.width:
            size = (self.width, max(1, round(h * self.width / w)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), self.params)
        if not ok:
            return None
        self.encoded += 1
        header = json.dumps(
            {
                "camera": camera,
                "frame": jsonable(msg.data.get("frame")),
                "episode": jsonable(msg.data.get("episode")),
                "t_cap": msg.t_cap,
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "src_width": int(w),
                "src_height": int(h),
            }
        ).encode()
        return FRAME_TAG + struct.pack(">I", len(header)) + header + jpeg.tobytes()

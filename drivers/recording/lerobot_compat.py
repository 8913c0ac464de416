"""Every use of lerobot's internals by the recorder, in one place.

lerobot 0.6.1 has no public seam for an encoder that never drops frames, or for ending a
session without its finalizer running again; the recorder subclasses `StreamingVideoEncoder`,
overrides `LeRobotDataset._build_streaming_encoder` and sets a few private flags. `check()`
names anything of it the installed lerobot no longer has (tests/test_recorder.py calls it).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import tempfile
from pathlib import Path

import numpy as np

from drivers.recording.errors import RecordingError
from drivers.recording.journal import ENCODING_PREFIX
from drivers.recording.video import EncoderSettings, _CameraEncoder

log = logging.getLogger(__name__)


def _make_streaming_encoder_class():
    from lerobot.datasets.video_utils import StreamingVideoEncoder

    class NoDropEncoder(StreamingVideoEncoder):
        """lerobot's streaming-encoder interface (start_episode / feed_frame / finish_episode
        / cancel_episode / close), but `feed_frame` waits for room instead of dropping the
        frame, encoder errors keep their OSError (disk full is told apart), and image
        statistics are sampled."""

        def __init__(self, fps: int, rgb_encoder, settings: EncoderSettings):
            super().__init__(
                fps=fps,
                rgb_encoder=rgb_encoder,
                queue_maxsize=settings.queue_frames,
                encoder_threads=settings.threads,
            )
            self.settings = settings
            self._encoders: dict[str, _CameraEncoder] = {}
            self.encoded_frames = 0
            self.busy_s = 0.0
            self.waits = 0

        def start_episode(
            self, video_keys: list[str], temp_dir: Path, depth_video_keys: list[str] | None = None
        ) -> None:
            if depth_video_keys:
                raise RecordingError("depth cameras are not supported by the recorder", "mismatch")
            self.cancel_episode()
            options = self._rgb_encoder.get_codec_options(self._encoder_threads, as_strings=True)
            for key in video_keys:
                tmp = Path(tempfile.mkdtemp(prefix=ENCODING_PREFIX, dir=temp_dir))
                enc = _CameraEncoder(
                    tmp / f"{key}.mp4",
                    self.fps,
                    self._rgb_encoder.vcodec,
                    options,
                    self.queue_maxsize,
                    self.settings.stats_every,
                )
                enc.start()
                self._encoders[key] = enc
            self._episode_active = True

        def feed_frame(self, video_key: str, image: np.ndarray) -> None:
            enc = self._encoders[video_key]
            while True:
                if enc.error is not None:
                    raise enc.error
                if not enc.is_alive():
                    raise RuntimeError(f"the encoder of {video_key} stopped")
                try:
                    enc.frames.put(image, timeout=0.2)
                    return
                except queue.Full:
                    self.waits += 1

        def finish_episode(self) -> dict[str, tuple[Path, dict | None]]:
            results = {}
            for enc in self._encoders.values():
                while enc.is_alive():
                    try:
                        enc.frames.put(None, timeout=0.2)
                        break
                    except queue.Full:
                        continue
            for key, enc in self._encoders.items():
                enc.join()
                if enc.error is not None:
                    raise enc.error
                self.encoded_frames += enc.count
                self.busy_s += enc.busy_s
                results[key] = (enc.path, enc.stats)
            self._encoders = {}
            self._episode_active = False
            return results

        def cancel_episode(self) -> None:
            for enc in self._encoders.values():
                enc.cancelled.set()
            for enc in self._encoders.values():
                enc.join(timeout=10)
                shutil.rmtree(enc.path.parent, ignore_errors=True)
            self._encoders = {}
            self._episode_active = False

        def close(self) -> None:
            self.cancel_episode()
            self._closed = True

    return NoDropEncoder


def _dataset_class(settings: EncoderSettings, made: list):
    """LeRobotDataset whose create()/resume() build the no-drop encoder above (each one
    built is appended to `made`)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    encoder_class = _make_streaming_encoder_class()

    class RecorderDataset(LeRobotDataset):
        @staticmethod
        def _build_streaming_encoder(
            fps, rgb_encoder, depth_encoder, encoder_queue_maxsize, encoder_threads
        ):
            made[:] = [encoder_class(fps, rgb_encoder, settings)]
            return made[0]

    return RecorderDataset


# ---------------------------------------------------------------------------- files


def _defuse(ds) -> None:
    """Make an abandoned lerobot dataset object harmless: its finalizer (run on garbage
    collection) would otherwise flush buffered episode metadata into the folder."""
    meta, writer = getattr(ds, "meta", None), getattr(ds, "writer", None)
    if meta is not None and hasattr(meta, "_metadata_buffer"):
        meta._metadata_buffer.clear()
    if writer is not None:
        enc = getattr(writer, "_streaming_encoder", None)
        if enc is not None:
            with contextlib.suppress(Exception):
                enc.cancel_episode()
        with contextlib.suppress(Exception):
            writer.close_writer()
        writer._finalized = True
    if meta is not None:
        with contextlib.suppress(Exception):
            meta._close_writer()
        meta._finalized = True
    ds._is_finalized = True


# What the code above relies on: (module, class, methods it calls or overrides, attributes it
# reads or sets on instances: found in the class's source, since they are set in __init__).
RELIED_ON = [
    (
        "lerobot.datasets.video_utils",
        "StreamingVideoEncoder",
        ["start_episode", "feed_frame", "finish_episode", "cancel_episode", "close"],
        [],
    ),
    (
        "lerobot.datasets.lerobot_dataset",
        "LeRobotDataset",
        ["_build_streaming_encoder", "create", "resume", "add_frame", "save_episode", "finalize"],
        ["_is_finalized", "writer", "meta"],
    ),
    (
        "lerobot.datasets.dataset_metadata",
        "LeRobotDatasetMetadata",
        ["_close_writer"],
        ["_metadata_buffer", "_finalized"],
    ),
    (
        "lerobot.datasets.dataset_writer",
        "DatasetWriter",
        ["close_writer"],
        ["_streaming_encoder", "_finalized"],
    ),
]


def check() -> list[str]:
    """What of RELIED_ON the installed lerobot no longer has, in words (empty: all there)."""
    import importlib
    import inspect

    missing = []
    for module_name, class_name, methods, attributes in RELIED_ON:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{module_name}.{class_name} ({exc})")
            continue
        source = inspect.getsource(cls)
        for name in methods:
            if not callable(getattr(cls, name, None)):
                missing.append(f"{class_name}.{name}()")
        for name in attributes:
            if f"self.{name}" not in source and f".{name} =" not in source:
                missing.append(f"{class_name}.{name} (instance attribute)")
        if class_name == "LeRobotDataset":
            params = inspect.signature(cls._build_streaming_encoder).parameters
            expected = [
                "fps",
                "rgb_encoder",
                "depth_encoder",
                "encoder_queue_maxsize",
                "encoder_threads",
            ]
            if [p for p in params if p != "self"] != expected:
                missing.append(
                    f"LeRobotDataset._build_streaming_encoder{tuple(params)} "
                    f"(the recorder overrides it as {tuple(expected)})"
                )
    return missing

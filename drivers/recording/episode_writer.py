"""One episode at a time into a LeRobotDataset v3, committed atomically (see the package doc)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivers.recording.errors import RecordingError, _describe_os_error, _os_error_in
from drivers.recording.features import IMAGES_PREFIX, DatasetSpec, feature_differences, time_key
from drivers.recording.folder import FolderLock, probe_writable
from drivers.recording.journal import (
    META_FILES,
    REPORTS_DIR,
    _check_consistent,
    _files,
    _fsync_dir,
    _fsync_file,
    begin_journal,
    end_journal,
    recover,
    verify_episode,
)
from drivers.recording.lerobot_compat import _dataset_class, _defuse
from drivers.recording.video import EncoderSettings

log = logging.getLogger(__name__)


@dataclass
class SavedEpisode:
    index: int
    frames: int
    report: dict
    seconds: float  # from end() to committed


class EpisodeWriter:
    """Appends episodes to one LeRobotDataset v3 folder, each committed on its own.

        w = EpisodeWriter(root, spec); w.open()
        w.begin(task, image_hw); w.add(...) per frame; w.end(report) or w.abort()
        w.close()

    `add` takes per-arm states and actions; an action given as None is taken from the next
    frame's state of that arm (the position the arm reached one frame later; the episode's
    last frame uses its own), which is how episodes without a commanded action are recorded.
    """

    def __init__(
        self,
        root: str | Path,
        spec: DatasetSpec,
        repo_id: str | None = None,
        encoder: EncoderSettings | None = None,
        min_frames: int = 2,
    ):
        self.root = Path(root).expanduser().absolute()
        self.spec = spec
        self.repo_id = repo_id or f"local/{self.root.name}"
        self.encoder = encoder or EncoderSettings()
        self.min_frames = max(2, min_frames)
        self.staging = self.root.parent / f".{self.root.name}.first-episode"
        self._lock = FolderLock(self.root)
        self._ds = None
        self._task = ""
        self._held: dict | None = None
        self._frames = 0
        self._from_state = 0
        self._index: int | None = None
        self._image_hw: dict[str, tuple[int, int]] | None = None
        self._dataset_class = None
        self._prepared = None  # the dataset opened ahead for the next episode
        self._encoder_made: list = []
        self.encoded_frames = 0
        self.encode_busy_s = 0.0
        self.failed: RecordingError | None = None

    # -------------------------------------------------------------- opening

    @property
    def exists(self) -> bool:
        return (self.root / "meta" / "info.json").is_file()

    def open(self) -> list[str]:
        """Lock the folder, recover it, check it can be appended to. Returns the recovery
        actions taken (to be logged). Raises RecordingError."""
        self._lock.acquire()
        actions = []
        if self.staging.exists():
            shutil.rmtree(self.staging)
            actions.append(f"discarded the unfinished first episode ({self.staging.name})")
        if self.root.exists() and not self.root.is_dir():
            raise RecordingError(f"{self.root} is a file, not a dataset folder", "unwritable")
        if self.root.is_dir():
            try:
                actions += recover(self.root)
            except OSError as exc:
                raise _describe_os_error(exc, str(self.root)) from exc
            if self.exists:
                info = _check_consistent(self.root)
                diffs = feature_differences(info, self.spec.fps, self.spec)
                if diffs:
                    raise self._mismatch(diffs)
                self._image_hw = {
                    k.removeprefix(IMAGES_PREFIX): tuple(v["shape"][:2])
                    for k, v in info["features"].items()
                    if k.startswith(IMAGES_PREFIX)
                }
            elif any(self.root.iterdir()):
                raise RecordingError(
                    f"{self.root} exists and is not a LeRobotDataset (no "
                    "meta/info.json): choose another --root",
                    "mismatch",
                )
        probe_writable(self.root)
        self._setup_libraries()
        return actions

    def _mismatch(self, diffs: list[str]) -> RecordingError:
        return RecordingError(
            f"{self.root} holds a dataset whose features differ from the "
            f"streams recorded: {'; '.join(diffs)}. Record into another "
            "folder, or record the streams it holds",
            "mismatch",
        )

    def _setup_libraries(self) -> None:
        import av
        import datasets

        # libx264 prints statistics at INFO after every video; progress bars per save; the
        # codec choice is logged for the RGB and the (unused) depth encoder per episode.
        av.logging.set_libav_level(av.logging.ERROR)
        datasets.disable_progress_bars()
        logging.getLogger("libav").setLevel(logging.ERROR)
        logging.getLogger("lerobot.configs.video").setLevel(logging.WARNING)
        if self._dataset_class is None:  # imports lerobot (seconds): now, not mid-episode
            self._dataset_class = _dataset_class(self.encoder, self._encoder_made)

    @property
    def image_hw(self) -> dict[str, tuple[int, int]] | None:
        """Camera sizes of the existing dataset (None before its first episode)."""
        return dict(self._image_hw) if self._image_hw is not None else None

    # -------------------------------------------------------------- episodes

    @property
    def recording(self) -> bool:
        return self._ds is not None

    @property
    def episodes(self) -> int:
        if not self.exists:
            return 0
        return int(json.loads((self.root / "meta" / "info.json").read_text())["total_episodes"])

    def begin(self, task: str, image_hw: dict[str, tuple[int, int]]) -> int:
        """Start an episode; returns its index in the dataset."""
        if self.failed is not None:
            raise self.failed
        if self._ds is not None:
            raise RuntimeError("an episode is already being recorded")
        image_hw = {k: (int(h), int(w)) for k, (h, w) in image_hw.items()}
        if set(image_hw) != set(self.spec.cameras):
            raise RecordingError(
                f"cameras {sorted(image_hw)} given, {self.spec.cameras} declared", "mismatch"
            )
        if self._image_hw is not None and image_hw != self._image_hw:
            diffs = [
                f"{IMAGES_PREFIX}{c}: {list(self._image_hw.get(c, ()))} in the folder, "
                f"{list(hw)} on the bus"
                for c, hw in image_hw.items()
                if self._image_hw.get(c) != hw
            ]
            raise self._mismatch(diffs)
        try:
            if self._prepared is not None:
                self._ds, self._prepared = self._prepared, None
            elif self.exists:
                self._ds = self._resume()
            else:
                if self.staging.exists():
                    shutil.rmtree(self.staging)
                options = self._lerobot_options()
                self._ds = self._dataset_class.create(
                    self.repo_id,
                    self.spec.fps,
                    self.spec.features(image_hw),
                    root=self.staging,
                    robot_type=self.spec.robot_type,
                    use_videos=True,
                    **options,
                )
        except OSError as exc:
            self._ds = None
            raise self._fail(_describe_os_error(exc, str(self.root))) from exc
        self._image_hw = image_hw
        self._task = task
        self._held = None
        self._frames = 0
        self._from_state = 0
        self._index = int(self._ds.meta.total_episodes)
        return self._index

    def _lerobot_options(self) -> dict:
        if self._dataset_class is None:
            self._dataset_class = _dataset_class(self.encoder, self._encoder_made)
        return dict(
            video_backend="pyav",
            rgb_encoder=self.encoder.lerobot_config(),
            streaming_encoding=True,
            encoder_queue_maxsize=self.encoder.queue_frames,
            encoder_threads=self.encoder.threads,
        )

    def _resume(self):
        options = self._lerobot_options()
        return self._dataset_class.resume(self.repo_id, root=self.root, **options)

    def prepare(self) -> None:
        """Open the dataset for the next episode ahead of time. lerobot reloads the episode
        index on every open, which grows with the episodes (about 20 ms each here); done
        while idle, the next `begin` does not wait for it."""
        if self._prepared is not None or self._ds is not None or self.failed or not self.exists:
            return
        try:
            self._prepared = self._resume()
        except Exception as exc:  # begin() opens it again and reports what is wrong
            log.debug("preparing the next episode failed: %s", exc)

    def _drop_prepared(self) -> None:
        if self._prepared is not None:
            _defuse(self._prepared)
            self._prepared = None

    def add(
        self,
        images: dict[str, np.ndarray],
        states: Sequence[np.ndarray],
        actions: Sequence[np.ndarray | None],
        times: dict[str, float],
    ) -> None:
        """One frame: images by camera, state and action per arm (spec order), capture times
        by stream. Waits while the video encoders are behind (never drops)."""
        if self._ds is None:
            raise RuntimeError("no episode is being recorded")
        frame = {
            "images": images,
            "states": [np.asarray(s, np.float32) for s in states],
            "actions": list(actions),
            "times": dict(times),
        }
        if self._held is not None:
            self._push(self._held, frame)
        self._held = frame

    def _push(self, frame: dict, following: dict | None) -> None:
        action_parts = []
        times = frame["times"]
        for i, (arm, act) in enumerate(zip(self.spec.arms, frame["actions"], strict=True)):
            if act is None:
                src = following or frame
                act = src["states"][i]
                self._from_state += 1
                times = {**times, f"action/{arm}": src["times"].get(f"state/{arm}", np.nan)}
            action_parts.append(np.asarray(act, np.float32))
        row: dict[str, Any] = {
            "observation.state": np.concatenate(frame["states"]),
            "action": np.concatenate(action_parts),
            "task": self._task,
        }
        for cam, image in frame["images"].items():
            row[IMAGES_PREFIX + cam] = image
        for stream in self.spec.time_streams:
            row[time_key(stream)] = np.array([times.get(stream, np.nan)], np.float64)
        try:
            self._ds.add_frame(row)
        except BaseException as exc:
            raise self._abort_with(exc, "recording a frame") from exc
        self._frames += 1

    def end(self, report: dict | None = None) -> SavedEpisode | None:
        """Save and commit the episode. None (and nothing written) when it is shorter than
        `min_frames`. Raises RecordingError after rolling back when the save fails."""
        if self._ds is None:
            raise RuntimeError("no episode is being recorded")
        t_end = time.monotonic()
        if self._held is not None:
            self._push(self._held, None)
            self._held = None
        if self._frames < self.min_frames:
            self.abort()
            return None
        index, frames = self._index, self._frames
        log.info("saving episode %d (%d frames)", index, frames)
        report = {
            **(report or {}),
            "episode_index": index,
            "frames": frames,
            "task": self._task,
            "actions_from_state": self._from_state,
        }
        first = not self.exists
        target = self.staging if first else self.root
        files_before = set() if first else _files(self.root)
        try:
            if not first:
                begin_journal(self.root, index, files_before)
            import datasets

            datasets.disable_progress_bars()  # lerobot turns them back on after each save
            self._ds.save_episode()
            self._ds.finalize()
            enc = self._encoder_made[0] if self._encoder_made else None
            report["encode"] = self._encode_report(enc)
            report["written_at"] = time.time()  # bus clock: compare with t0 + duration_s
            report_path = target / REPORTS_DIR / f"episode_{index:06d}.json"
            report_path.parent.mkdir(parents=True, exist_ok=True)
            report_path.write_text(json.dumps(report, indent=1, default=_json_default))
            verify_episode(target, self.spec, index, frames, files_before)
            for rel in sorted(_files(target) - files_before) + list(META_FILES):
                if (target / rel).is_file():
                    _fsync_file(target / rel)
            for d in {(target / rel).parent for rel in _files(target) - files_before}:
                _fsync_dir(d)
            if first:
                os.replace(self.staging, self.root)  # the commit of a new dataset
                _fsync_dir(self.root.parent)
            else:
                end_journal(self.root)  # the commit of an appended episode
        except BaseException as exc:
            err = self._abort_with(exc, f"episode {index}")
            if isinstance(exc, Exception):
                raise err from exc
            raise
        finally:
            self._ds = None
        if enc is not None:
            self.encoded_frames += enc.encoded_frames
            self.encode_busy_s += enc.busy_s
        return SavedEpisode(index, frames, report, time.monotonic() - t_end)

    def _encode_report(self, enc) -> dict:
        if enc is None:
            return {}
        n, busy = enc.encoded_frames, enc.busy_s
        video_s = n / self.spec.fps
        return {
            "codec": self.encoder.vcodec,
            "preset": self.encoder.preset,
            "crf": self.encoder.crf,
            "gop": self.encoder.gop,
            "frames": n,
            "busy_s": round(busy, 3),
            "realtime_factor": round(video_s / busy, 3) if busy > 0 else None,
            "waits": enc.waits,
        }

    def abort(self) -> None:
        """Discard the episode being recorded; the dataset is left as it was."""
        ds, self._ds, self._held = self._ds, None, None
        if ds is None:
            return
        _defuse(ds)
        if not self.exists or ds.root == self.staging:
            shutil.rmtree(self.staging, ignore_errors=True)
        if self.root.is_dir():
            recover(self.root)

    def _abort_with(self, exc: BaseException, where: str) -> RecordingError:
        """Roll back after a failure; the error recording stops with."""
        self._drop_prepared()
        ds = self._ds
        self._ds, self._held = None, None
        if ds is not None:
            _defuse(ds)
        try:
            shutil.rmtree(self.staging, ignore_errors=True)
            if self.root.is_dir():
                recover(self.root)
        except Exception as rollback_exc:  # keep the journal: the next open finishes it
            log.error(
                "rollback after a failed save did not finish (%s); it will be "
                "finished when the recorder next starts",
                rollback_exc,
            )
        if isinstance(exc, RecordingError):
            return self._fail(exc)
        os_err = _os_error_in(exc)
        if os_err is not None:
            return self._fail(_describe_os_error(os_err, f"{where} in {self.root}"))
        return self._fail(RecordingError(f"saving {where} failed: {type(exc).__name__}: {exc}"))

    def _fail(self, err: RecordingError) -> RecordingError:
        self.failed = err
        return err

    def close(self) -> None:
        self._drop_prepared()
        if self._ds is not None:
            self.abort()
        self._lock.release()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)

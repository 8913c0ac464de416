"""LeRobotDataset v3 episodes written so that a crash loses at most the episode in progress.

lerobot's writer keeps the data parquet and the episode index open until `finalize()`; a process
killed before that loses every episode of the session (lerobot 0.6.1). Here every episode is its
own lerobot session: `LeRobotDataset.resume()` (or `create()` for the first), `add_frame()` per
frame, then `save_episode()` and `finalize()`. In resume mode lerobot writes each episode's
data, index and videos to *new* files and rewrites only `meta/info.json`, `meta/stats.json` and
`meta/tasks.parquet`, so an episode's commit is made atomic with a small journal:

1. `.recorder/snapshot/` gets copies of those three files, then `.recorder/journal.json` lists
   every file the dataset held (written to a temporary name, fsynced, renamed);
2. lerobot's `save_episode()` + `finalize()`; a per-episode report under `meta/recorder/`;
3. the new files are read back (footers, row counts, video durations) and fsynced;
4. the journal is deleted: the episode is committed.

A kill before step 4 leaves the journal: at the next open the snapshot is moved back and every
file the journal did not list is deleted (logged), which is the dataset as it was before the
episode. The very first episode is written whole into a hidden sibling folder and renamed into
place, so the dataset folder never exists half-made. A writer that fails (disk full, a folder
that turned read-only) rolls back the same way and raises `RecordingError`.

Video is encoded while the episode is recorded (lerobot's streaming-encoder seam, with an
encoder here that never drops a frame: a full queue makes `add` wait) and each episode's
files are finished before the next begins. No ZeroMQ here; `workers/recorder.py` wires this to
the bus, with `BackgroundWriter` keeping the encoding off the thread that drains the bus.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

log = logging.getLogger(__name__)

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
IMAGES_PREFIX = "observation.images."
TIME_PREFIX = "time."  # outside observation.*: lerobot-train would take it for a state input
JOURNAL_DIR = ".recorder"
REPORTS_DIR = "meta/recorder"
ENCODING_PREFIX = ".encoding-"
META_FILES = ("meta/info.json", "meta/stats.json", "meta/tasks.parquet")


class RecordingError(Exception):
    """Recording cannot go on; the text says why and what to do. `kind` is one of
    "unwritable", "disk_full", "mismatch", "corrupt", "io", "busy"."""

    def __init__(self, text: str, kind: str = "io"):
        super().__init__(text)
        self.kind = kind


def _describe_os_error(exc: BaseException, where: str) -> RecordingError:
    err = getattr(exc, "errno", None)
    if err == errno.ENOSPC or err == errno.EDQUOT:
        return RecordingError(
            f"disk full while writing {where}: free space, then restart the "
            "recorder (saved episodes are intact)",
            "disk_full",
        )
    if err in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RecordingError(
            f"cannot write {where} ({os.strerror(err)}): make the folder "
            "writable or record elsewhere with --root",
            "unwritable",
        )
    return RecordingError(f"writing {where} failed: {type(exc).__name__}: {exc}", "io")


def _os_error_in(exc: BaseException) -> BaseException | None:
    """The OSError (if any) behind `exc`, following causes (lerobot re-raises as RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


# ---------------------------------------------------------------------------- features


def joint_names(arms: Sequence[str]) -> list[str]:
    """State/action names as lerobot's SO-101 datasets spell them: `shoulder_pan.pos` for one
    arm named `arm`, `left_shoulder_pan.pos` ... for `left_arm` / `right_arm`."""
    names = []
    for arm in arms:
        prefix = "" if arm == "arm" else arm.removesuffix("_arm") + "_"
        names.extend(f"{prefix}{j}.pos" for j in JOINTS)
    return names


def time_key(stream: str) -> str:
    """`camera/front` -> `time.camera.front` (lerobot feature names may not hold '/')."""
    return TIME_PREFIX + stream.replace("/", ".")


@dataclass
class DatasetSpec:
    """What the recorded streams look like, in the dataset's terms."""

    fps: int
    cameras: list[str]
    arms: list[str]
    robot_type: str | None = None
    # Streams whose capture time is kept per frame (`time.<family>.<name>`, float64).
    time_streams: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return joint_names(self.arms)

    def features(self, image_hw: dict[str, tuple[int, int]] | None = None) -> dict[str, dict]:
        """lerobot features; camera shapes from `image_hw` (left out when not known yet)."""
        names = self.names
        feats: dict[str, dict] = {
            "observation.state": {"dtype": "float32", "shape": (len(names),), "names": names},
            "action": {"dtype": "float32", "shape": (len(names),), "names": names},
        }
        for cam in self.cameras:
            h, w = (image_hw or {}).get(cam, (None, None))
            feats[IMAGES_PREFIX + cam] = {
                "dtype": "video",
                "shape": (h, w, 3),
                "names": ["height", "width", "channels"],
            }
        for stream in self.time_streams:
            feats[time_key(stream)] = {"dtype": "float64", "shape": (1,), "names": None}
        return feats


def feature_differences(
    existing: dict, fps: int, spec: DatasetSpec, image_hw: dict[str, tuple[int, int]] | None = None
) -> list[str]:
    """How a dataset's `info.json` differs from what `spec` records (empty: compatible).
    Camera shapes are compared only when `image_hw` is given."""
    from lerobot.utils.constants import DEFAULT_FEATURES

    wanted = spec.features(image_hw)
    have = {k: v for k, v in existing.get("features", {}).items() if k not in DEFAULT_FEATURES}
    diffs = []
    if int(existing.get("fps", -1)) != int(fps):
        diffs.append(f"fps: folder {existing.get('fps')}, recorder {fps}")
    missing = sorted(set(wanted) - set(have))
    extra = sorted(set(have) - set(wanted))
    if missing:
        diffs.append(f"recorded here but not in the folder: {', '.join(missing)}")
    if extra:
        diffs.append(f"in the folder but not recorded here: {', '.join(extra)}")
    for key in sorted(set(wanted) & set(have)):
        w, h = wanted[key], have[key]
        if w["dtype"] != h["dtype"]:
            diffs.append(f"{key}: dtype {h['dtype']} in the folder, {w['dtype']} here")
            continue
        w_shape, h_shape = list(w["shape"]), list(h["shape"])
        if None in w_shape:  # camera size not known yet
            continue
        if w_shape != h_shape:
            diffs.append(f"{key}: shape {h_shape} in the folder, {w_shape} here")
        elif w.get("names") is not None and list(w["names"]) != list(h.get("names") or []):
            diffs.append(f"{key}: names {h.get('names')} in the folder, {w['names']} here")
    return diffs


# ---------------------------------------------------------------------------- video


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


def _files(root: Path) -> set[str]:
    """Every file of the dataset, relative, the journal folder left out."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d != JOURNAL_DIR]
        out.update((rel_dir / f).as_posix() for f in filenames)
    return out


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
        _fsync_file(path)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _remove_empty_dirs(root: Path, keep: set[str]) -> None:
    for dirpath, _dirnames, _filenames in sorted(os.walk(root), key=lambda x: -len(x[0])):
        p = Path(dirpath)
        rel = p.relative_to(root).as_posix()
        if p != root and rel not in keep and not any(p.iterdir()):
            with contextlib.suppress(OSError):
                p.rmdir()


def recover(root: Path) -> list[str]:
    """Bring `root` back to its last committed episode; what was done, one line each.

    Idempotent: a crash during recovery is recovered by the next call."""
    actions = []
    journal_dir = root / JOURNAL_DIR
    journal = journal_dir / "journal.json"
    if journal.is_file():
        try:
            entry = json.loads(journal.read_text())
            keep = set(entry["files"])
            snapshot = list(entry["snapshot"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RecordingError(
                f"{journal} is unreadable ({exc}): the dataset may hold a "
                "half-saved episode; move the folder aside",
                "corrupt",
            ) from exc
        restored = 0
        for rel in snapshot:
            src = journal_dir / "snapshot" / Path(rel).name
            if src.is_file():
                os.replace(src, root / rel)
                restored += 1
        _fsync_dir(root / "meta")
        removed = sorted(_files(root) - keep)
        for rel in removed:
            with contextlib.suppress(FileNotFoundError):
                (root / rel).unlink()
        keep_dirs = {Path(f).parent.as_posix() for f in keep}
        keep_dirs |= {p.as_posix() for f in keep for p in Path(f).parents}
        _remove_empty_dirs(root, keep_dirs)
        actions.append(
            f"rolled back the unfinished save of episode {entry.get('episode_index')}"
            f": {restored} metadata files restored, {len(removed)} new files deleted"
            + (
                f" ({', '.join(removed[:4])}{' ...' if len(removed) > 4 else ''})"
                if removed
                else ""
            )
        )
        journal.unlink()
    if journal_dir.exists():
        shutil.rmtree(journal_dir)
    for tmp in root.glob(ENCODING_PREFIX + "*"):
        shutil.rmtree(tmp, ignore_errors=True)
        actions.append(f"deleted the video of an unfinished episode ({tmp.name})")
    return actions


def _check_consistent(root: Path) -> dict:
    """info.json, the episode index and the data files agree; returns info.json."""
    import pyarrow.parquet as pq

    try:
        info = json.loads((root / "meta" / "info.json").read_text())
    except (OSError, ValueError) as exc:
        raise RecordingError(
            f"{root}/meta/info.json is unreadable ({exc}): not a dataset this "
            "recorder can append to",
            "corrupt",
        ) from exc
    episodes = 0
    for path in sorted((root / "meta" / "episodes").glob("*/*.parquet")):
        try:
            episodes += pq.read_metadata(path).num_rows
        except Exception as exc:
            raise RecordingError(
                f"{path} is damaged ({exc}): the dataset was not written by "
                "this recorder or lost a file",
                "corrupt",
            ) from exc
    frames = 0
    for path in sorted((root / "data").glob("*/*.parquet")):
        try:
            frames += pq.read_metadata(path).num_rows
        except Exception as exc:
            raise RecordingError(
                f"{path} is damaged ({exc}): the dataset was not written by "
                "this recorder or lost a file",
                "corrupt",
            ) from exc
    if episodes != info.get("total_episodes") or frames != info.get("total_frames"):
        raise RecordingError(
            f"{root} is inconsistent: info.json says {info.get('total_episodes')} episodes / "
            f"{info.get('total_frames')} frames, the files hold {episodes} / {frames}; "
            "move it aside and record into a new folder",
            "corrupt",
        )
    return info


# ---------------------------------------------------------------------------- writer


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
        self._lock_path = self.root.parent / f".{self.root.name}.lock"
        self._lock_fd: int | None = None
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
        self._lock()
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
        self._probe_writable()
        self._setup_libraries()
        return actions

    def _mismatch(self, diffs: list[str]) -> RecordingError:
        return RecordingError(
            f"{self.root} holds a dataset whose features differ from the "
            f"streams recorded: {'; '.join(diffs)}. Record into another "
            "folder, or record the streams it holds",
            "mismatch",
        )

    def _lock(self) -> None:
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _describe_os_error(exc, str(self.root.parent)) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RecordingError(
                f"{self.root} is being recorded by another process (lock {self._lock_path})", "busy"
            ) from None
        self._lock_fd = fd

    def _probe_writable(self) -> None:
        where = self.root if self.root.is_dir() else self.root.parent
        dirs = [where] + [
            self.root / d for d in ("meta", "data", "videos") if (self.root / d).is_dir()
        ]
        for d in dirs:
            probe = d / f".write-probe-{os.getpid()}"
            try:
                probe.write_bytes(b"x")
                probe.unlink()
            except OSError as exc:
                raise _describe_os_error(exc, str(d)) from exc

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
                self._journal_begin(index, files_before)
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
            self._verify(target, index, frames, files_before)
            for rel in sorted(_files(target) - files_before) + list(META_FILES):
                if (target / rel).is_file():
                    _fsync_file(target / rel)
            for d in {(target / rel).parent for rel in _files(target) - files_before}:
                _fsync_dir(d)
            if first:
                os.replace(self.staging, self.root)  # the commit of a new dataset
                _fsync_dir(self.root.parent)
            else:
                self._journal_end()  # the commit of an appended episode
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

    # -------------------------------------------------------------- commit

    def _journal_begin(self, index: int, files: set[str]) -> None:
        jdir = self.root / JOURNAL_DIR
        if jdir.exists():
            shutil.rmtree(jdir)
        snap = jdir / "snapshot"
        snap.mkdir(parents=True)
        saved = []
        for rel in META_FILES:
            src = self.root / rel
            if src.is_file():
                shutil.copy2(src, snap / src.name)
                _fsync_file(snap / src.name)
                saved.append(rel)
        _fsync_dir(snap)
        entry = {
            "episode_index": index,
            "snapshot": saved,
            "files": sorted(files),
            "pid": os.getpid(),
            "time": time.time(),
        }
        _write_atomic(jdir / "journal.json", json.dumps(entry))

    def _journal_end(self) -> None:
        jdir = self.root / JOURNAL_DIR
        (jdir / "journal.json").unlink()
        _fsync_dir(jdir)
        shutil.rmtree(jdir, ignore_errors=True)

    def _verify(self, root: Path, index: int, frames: int, before: set[str]) -> None:
        """Read back what lerobot wrote for this episode before it counts as saved."""
        import pyarrow.parquet as pq

        info = json.loads((root / "meta" / "info.json").read_text())
        if info["total_episodes"] != index + 1:
            raise RecordingError(
                f"info.json lists {info['total_episodes']} episodes after saving episode {index}",
                "corrupt",
            )
        new = sorted(_files(root) - before)
        ep_files = [f for f in new if f.startswith("meta/episodes/")]
        data_files = [f for f in new if f.startswith("data/")]
        if len(ep_files) != 1 or len(data_files) != 1:
            raise RecordingError(
                f"episode {index} wrote {ep_files} and {data_files}, expected "
                "one index file and one data file",
                "corrupt",
            )
        rows = pq.read_table(root / ep_files[0]).to_pylist()
        if len(rows) != 1 or rows[0]["episode_index"] != index or rows[0]["length"] != frames:
            raise RecordingError(
                f"{ep_files[0]} does not describe episode {index} ({frames} frames)", "corrupt"
            )
        if pq.read_metadata(root / data_files[0]).num_rows != frames:
            raise RecordingError(f"{data_files[0]} does not hold {frames} frames", "corrupt")
        row = rows[0]
        for cam in self.spec.cameras:
            key = f"videos/{IMAGES_PREFIX}{cam}"
            span = (row[f"{key}/to_timestamp"] - row[f"{key}/from_timestamp"]) * self.spec.fps
            path = root / info["video_path"].format(
                video_key=IMAGES_PREFIX + cam,
                chunk_index=row[f"{key}/chunk_index"],
                file_index=row[f"{key}/file_index"],
            )
            if not path.is_file() or abs(span - frames) > 0.5:
                raise RecordingError(
                    f"video of {cam} for episode {index} holds {span:.1f} "
                    f"frames, expected {frames}",
                    "corrupt",
                )

    def close(self) -> None:
        self._drop_prepared()
        if self._ds is not None:
            self.abort()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


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


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


# ---------------------------------------------------------------------------- background


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

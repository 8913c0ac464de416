"""Dataset replay: a recorded LeRobotDataset v3 folder played back as cameras and arms.

The fake environment of the runtime. Metadata, joint data and file locations come from lerobot's
own `LeRobotDataset` (once: drivers/replay_index.py keeps them, so a restart is fast); the videos
are decoded here, sequentially per episode with PyAV, because lerobot's `__getitem__` seeks and
decodes per timestamp (see `DatasetReplay.steps`).

Everything is local: HF_HUB_OFFLINE is set before lerobot is imported, and the folder is checked
before lerobot sees it, because lerobot falls back to downloading from the Hub whenever a local
file is missing (and creates `root` if it does not exist).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from core.so101 import ARM_PREFIXES, IMAGES_PREFIX, SINGLE_ARM  # noqa: E402
from drivers import replay_index  # noqa: E402
from drivers.replay_video import Prefetcher, VideoDamaged, episode_frames  # noqa: E402


class ReplayError(Exception):
    """Bad replay input; the message is one line that says what to do."""


@dataclass
class ReplayStep:
    episode: int
    index: int  # frame index within the episode (0-based)
    timestamp: float  # dataset time within the episode (s)
    images: dict[str, np.ndarray]  # short camera name ("front") -> uint8 (H, W, 3), C-contiguous
    states: dict[str, np.ndarray]  # arm name -> float32 (n,)
    actions: dict[str, np.ndarray]  # arm name -> float32 (n,); empty without an action feature


def split_arms(names: Sequence[str]) -> dict[str, list[int]]:
    """Arm name -> column indices. `left_`/`right_` prefixes make two arms, else one `arm`."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        arm = next((a for p, a in ARM_PREFIXES.items() if name.startswith(p)), None)
        if arm is None:  # any unprefixed joint: treat the whole vector as one arm
            return {SINGLE_ARM: list(range(len(names)))}
        groups.setdefault(arm, []).append(i)
    return dict(sorted(groups.items(), key=lambda kv: kv[1][0]))


def _joint_label(name: str) -> str:
    for p in ARM_PREFIXES:
        if name.startswith(p):
            return name[len(p) :]
    return name


def _feature_names(feature: dict) -> list[str]:
    n = int(np.prod(feature["shape"]))
    names = feature.get("names")
    if isinstance(names, dict):  # older datasets: {"motors": [...]}
        names = next(iter(names.values()), None)
    if not isinstance(names, list) or len(names) != n:
        return [f"joint_{i}" for i in range(n)]
    return [str(x) for x in names]


def _image_hw(feature: dict) -> tuple[int, int]:
    shape, names = list(feature["shape"]), feature.get("names") or []
    if names and "height" in names and "width" in names:
        return int(shape[names.index("height")]), int(shape[names.index("width")])
    if shape and shape[0] in (1, 3) and shape[-1] not in (1, 3):  # channel-first
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _check_folder(root: Path) -> None:
    """Reject what lerobot would otherwise 'repair' by going to the Hub."""
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ReplayError(
            f"dataset folder {root} {what}: pass the path of a local "
            "LeRobotDataset v3 folder (the one holding meta/info.json)"
        )
    info_path = root / "meta" / "info.json"
    try:
        info = json.loads(info_path.read_text())
        version = str(info["codebase_version"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ReplayError(
            f"{root} is not a LeRobotDataset: {info_path} is missing or "
            f"unreadable ({type(e).__name__}); point replay at a LeRobotDataset "
            "v3 folder"
        ) from e
    if not version.startswith("v3"):
        raise ReplayError(
            f"{root} is a LeRobotDataset {version}, replay needs v3.x: convert it "
            "with lerobot's convert_dataset_v21_to_v30 script"
        )
    for sub in ("meta/episodes", "data"):
        if not any((root / sub).glob("*/*.parquet")):
            raise ReplayError(
                f"{root} is an incomplete LeRobotDataset: no {sub}/*/*.parquet "
                "(was the recording finalized?); re-record or copy the folder whole"
            )
    if not (root / "meta" / "tasks.parquet").is_file():
        raise ReplayError(
            f"{root} is an incomplete LeRobotDataset: meta/tasks.parquet is "
            "missing; re-record or copy the folder whole"
        )


def _check_videos(root: Path, index: replay_index.DatasetIndex) -> None:
    """A cached index still needs every video it points at."""
    missing = sorted({p for v in index.videos.values() for p, _ in v if not (root / p).is_file()})
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ReplayError(
            f"{root} is an incomplete LeRobotDataset: {missing[0]}{more} missing; "
            "copy the dataset folder whole"
        )


def _check_files(root: Path, repo_id: str) -> None:
    """Every data and video file the episodes point at must be here (else lerobot downloads)."""
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata

    meta = LeRobotDatasetMetadata(repo_id, root=root)
    needed = set()
    for ep in range(meta.total_episodes):
        needed.add(meta.get_data_file_path(ep))
        needed.update(meta.get_video_file_path(ep, key) for key in meta.video_keys)
    missing = sorted(str(p) for p in needed if not (root / p).is_file())
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ReplayError(
            f"{root} is an incomplete LeRobotDataset: {missing[0]}{more} missing; "
            "copy the dataset folder whole"
        )


def _decode_video(path: Path, from_ts: float, n: int, fps: int) -> Iterator[np.ndarray]:
    """The n frames of one episode inside a many-episode mp4, in order, as RGB uint8."""
    try:
        yield from episode_frames(path, from_ts, n, fps)
    except VideoDamaged as e:
        raise ReplayError(f"{e}; re-copy or re-record the dataset") from e


class DatasetReplay:
    """Episodes of a local LeRobotDataset v3, step by step, decoded ahead in a thread."""

    def __init__(
        self,
        root: str | Path,
        episodes: Sequence[int] | None = None,
        prefetch: int = 64,
        cache_dir: str | Path | None = None,
    ):
        self.root = Path(root).expanduser().resolve()
        _check_folder(self.root)
        cache = replay_index.default_cache_dir() if cache_dir is None else Path(cache_dir)
        self._ds = None
        index = replay_index.load(self.root, cache)
        if index is None:
            self._ds = self._open_with_lerobot()
            index = replay_index.from_lerobot(self._ds)
            if index.video_only:
                replay_index.save(index, self.root, cache)
        else:
            _check_videos(self.root, index)
        self.index = index
        self.from_cache = self._ds is None  # lerobot not even imported
        features = index.features
        self.fps = index.fps
        self._prefetch = prefetch
        self._active: set[Prefetcher] = set()
        self._lock = threading.Lock()

        self._camera_keys = list(index.camera_keys)
        if not self._camera_keys:
            raise ReplayError(
                f"{self.root} has no camera feature ({IMAGES_PREFIX}*): "
                "replay needs a dataset recorded with at least one camera"
            )
        self.cameras: dict[str, tuple[int, int]] = {
            self._short(k): _image_hw(features[k]) for k in self._camera_keys
        }

        if "observation.state" not in features:
            raise ReplayError(
                f"{self.root} has no observation.state feature: replay needs recorded joint states"
            )
        state_names = _feature_names(features["observation.state"])
        self._state_split = split_arms(state_names)
        self.arms: dict[str, list[str]] = {
            arm: [_joint_label(state_names[i]) for i in idx]
            for arm, idx in self._state_split.items()
        }
        self._has_action = "action" in features
        self._action_split = (
            split_arms(_feature_names(features["action"])) if self._has_action else {}
        )

        total = index.total_episodes
        wanted = list(range(total)) if episodes is None else [int(e) for e in episodes]
        for ep in wanted:
            self._check_episode(ep, total)
        self.episodes: list[int] = wanted
        self._load_columns()

    def _open_with_lerobot(self):
        repo_id = f"local/{self.root.name}"  # never used to reach the Hub: all files are local
        try:
            from lerobot.datasets.lerobot_dataset import LeRobotDataset

            _check_files(self.root, repo_id)
            # video_backend given explicitly: the default probes torchcodec, which warns loudly
            # when FFmpeg's shared libraries are missing; we decode with PyAV ourselves anyway.
            return LeRobotDataset(repo_id, root=self.root, video_backend="pyav")
        except ReplayError:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ReplayError(
                f"{self.root} could not be read as a LeRobotDataset v3 "
                f"({type(e).__name__}: {first}); check the folder is complete"
            ) from e

    # ------------------------------------------------------------------ metadata

    @staticmethod
    def _short(key: str) -> str:
        return key.removeprefix(IMAGES_PREFIX).removeprefix("observation.")

    def _check_episode(self, ep: int, total: int | None = None) -> None:
        total = self.index.total_episodes if total is None else total
        if not 0 <= ep < total:
            raise ReplayError(
                f"episode {ep} is out of range: {self.root.name} has episodes 0..{total - 1}"
            )

    def _load_columns(self) -> None:
        """Joint columns of the whole dataset, once: a few thousand rows of a few floats."""
        columns = self.index.columns
        ep_col, frame_col = columns["episode_index"], columns["frame_index"]
        self._rows: dict[int, np.ndarray] = {}
        for ep in self.episodes:
            rows = np.flatnonzero(ep_col == ep)
            self._rows[ep] = rows[np.argsort(frame_col[rows], kind="stable")]
        self._ts, self._state = columns["timestamp"], columns["state"]
        self._action = columns.get("action") if self._has_action else None

    def num_frames(self, episode: int) -> int:
        self._check_selected(episode)
        return len(self._rows[episode])

    def _check_selected(self, episode: int) -> None:
        self._check_episode(episode)
        if episode not in self._rows:
            raise ReplayError(
                f"episode {episode} was not selected: this replay holds episodes {self.episodes}"
            )

    @staticmethod
    def _split(row: np.ndarray, split: dict[str, list[int]]) -> dict[str, np.ndarray]:
        return {arm: row[..., idx].astype(np.float32, copy=True) for arm, idx in split.items()}

    def recorded_actions(self, episode: int) -> dict[str, np.ndarray]:
        """Arm -> (T, n) float32 recorded actions of one episode; {} without an action feature."""
        self._check_selected(episode)
        if self._action is None:
            return {}
        return self._split(self._action[self._rows[episode]], self._action_split)

    # ------------------------------------------------------------------ frames

    def _frames(self, episode: int, n: int) -> Iterator[dict[str, np.ndarray]]:
        iters = {}
        for key in self._camera_keys:
            if key in self.index.videos:
                path, from_ts = self.index.videos[key][episode]
                iters[self._short(key)] = _decode_video(self.root / path, from_ts, n, self.fps)
            else:  # images in the parquet: such datasets are always opened through lerobot
                iters[self._short(key)] = self._image_column(key, episode)
        try:
            for _ in range(n):
                yield {name: next(it) for name, it in iters.items()}
        finally:
            for it in iters.values():
                it.close()

    def _image_column(self, key: str, episode: int) -> Iterator[np.ndarray]:
        """Cameras stored as images (use_videos=False) live in the data parquet itself."""
        raw = self._ds.hf_dataset.with_format(None)
        for row in self._rows[episode]:
            img = np.asarray(raw[int(row)][key].convert("RGB"))
            yield np.ascontiguousarray(img)

    def _steps(self, episode: int) -> Iterator[ReplayStep]:
        rows = self._rows[episode]
        t0 = float(self._ts[rows[0]]) if len(rows) else 0.0
        frames = self._frames(episode, len(rows))
        try:
            for i, (row, images) in enumerate(zip(rows, frames, strict=True)):
                yield ReplayStep(
                    episode=episode,
                    index=i,
                    timestamp=float(self._ts[row]) - t0,
                    images=images,
                    states=self._split(self._state[row], self._state_split),
                    actions=(
                        {}
                        if self._action is None
                        else self._split(self._action[row], self._action_split)
                    ),
                )
        finally:
            frames.close()

    def steps(self, episode: int) -> Iterator[ReplayStep]:
        """Steps of one episode in order. Decoding runs up to `prefetch` steps ahead in a
        background thread, so a real-time consumer is not held up by the video decoder.
        Closing the generator (or the replay) stops the thread. A bad episode raises here,
        not at the first step."""
        self._check_selected(episode)
        return self._prefetched(episode)

    def _prefetched(self, episode: int) -> Iterator[ReplayStep]:
        pre = Prefetcher(self._steps(episode), self._prefetch, f"replay-ep{episode}")
        with self._lock:
            self._active.add(pre)
        try:
            yield from pre
        finally:
            pre.close()
            with self._lock:
                self._active.discard(pre)

    def close(self) -> None:
        """Stop every background decoder. Generators from steps() end at their next item."""
        with self._lock:
            active, self._active = list(self._active), set()
        for pre in active:
            pre.close()

    def __enter__(self) -> DatasetReplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

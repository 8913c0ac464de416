"""What the replay needs of a LeRobotDataset, read once through lerobot and kept on disk.

Opening a dataset through lerobot imports torch and Hugging Face `datasets` (seconds on a small
CPU). A replay that supervisord restarts must be back within about a second, so the first open
through lerobot's own `LeRobotDataset` writes what the replay uses (fps, features, the joint
columns, each episode's video file and start time) to a cache keyed by the dataset files'
sizes and modification times; a later open reads the cache (numpy and json only) and does not
import lerobot at all. Any change to the dataset's files is a cache miss, and so is a cache
written by another version of this module. Datasets that keep their images in the parquet
files (no videos) are always read through lerobot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1  # bump when what is cached changes
COLUMNS = ("episode_index", "frame_index", "timestamp", "state", "action")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("SO101_CACHE_DIR") or Path(base) / "so101-bus" / "replay")


@dataclass
class DatasetIndex:
    fps: int
    total_episodes: int
    features: dict  # meta/info.json's features
    camera_keys: list[str]  # colour cameras (depth left out)
    columns: dict[str, np.ndarray]  # COLUMNS of the whole dataset ("action" may be absent)
    # camera key -> per episode (video path relative to the root, its from_timestamp); empty
    # when the cameras are stored as images.
    videos: dict[str, list[tuple[str, float]]]

    @property
    def video_only(self) -> bool:
        return bool(self.camera_keys) and all(k in self.videos for k in self.camera_keys)


def from_lerobot(ds) -> DatasetIndex:
    """The index of an open `LeRobotDataset` (its pyarrow table, not the torch transform)."""
    meta = ds.meta
    table = ds.hf_dataset.data

    def matrix(name: str) -> np.ndarray:
        col = table.column(name).combine_chunks()
        n = int(np.prod(meta.features[name]["shape"]))
        return col.flatten().to_numpy().astype(np.float32).reshape(-1, n)

    columns = {
        "episode_index": table.column("episode_index").to_numpy(),
        "frame_index": table.column("frame_index").to_numpy(),
        "timestamp": table.column("timestamp").to_numpy().astype(np.float64),
        "state": matrix("observation.state"),
    }
    if "action" in meta.features:
        columns["action"] = matrix("action")
    cameras = [k for k in meta.camera_keys if k not in meta.depth_keys]
    videos = {
        key: [
            (
                str(meta.get_video_file_path(ep, key)),
                float(meta.episodes[ep][f"videos/{key}/from_timestamp"]),
            )
            for ep in range(int(meta.total_episodes))
        ]
        for key in cameras
        if meta.features[key]["dtype"] == "video"
    }
    return DatasetIndex(
        int(meta.fps), int(meta.total_episodes), dict(meta.features), cameras, columns, videos
    )


def fingerprint(root: Path) -> str:
    """Sizes and modification times of every metadata and data file, hashed."""
    digest = hashlib.sha256(f"{FORMAT}|{root}".encode())
    files = [root / "meta" / "info.json", *sorted((root / "meta" / "episodes").rglob("*"))]
    files += sorted((root / "data").rglob("*"))
    for path in files:
        if path.is_file():
            st = path.stat()
            digest.update(f"{path.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def _path(root: Path, cache_dir: Path) -> Path:
    return cache_dir / f"{hashlib.sha256(str(root).encode()).hexdigest()[:24]}.npz"


def load(root: Path, cache_dir: Path) -> DatasetIndex | None:
    """The cached index of `root`, or None when there is none or it is stale."""
    path = _path(root, cache_dir)
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta.get("fingerprint") != fingerprint(root):
                return None
            columns = {k: npz[k] for k in COLUMNS if k in npz.files}
    except (OSError, ValueError, KeyError):
        return None
    videos = {k: [(str(p), float(t)) for p, t in v] for k, v in meta["videos"].items()}
    return DatasetIndex(
        meta["fps"],
        meta["total_episodes"],
        meta["features"],
        meta["camera_keys"],
        columns,
        videos,
    )


def save(index: DatasetIndex, root: Path, cache_dir: Path) -> Path | None:
    """Write the cache (atomically); a cache that cannot be written only costs speed."""
    meta = {
        "fingerprint": fingerprint(root),
        "fps": index.fps,
        "total_episodes": index.total_episodes,
        "features": index.features,
        "camera_keys": index.camera_keys,
        "videos": index.videos,
    }
    path = _path(root, cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".npz", delete=False) as fh:
            np.savez(fh, meta=np.array(json.dumps(meta)), **index.columns)
        os.replace(fh.name, path)
    except (OSError, TypeError, ValueError) as exc:
        log.warning(
            "replay index not cached in %s (%s): the next start reads lerobot again", cache_dir, exc
        )
        return None
    return path

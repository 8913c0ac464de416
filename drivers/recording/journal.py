"""An episode's commit made atomic: snapshot, journal, read-back, and recovery after a kill."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from drivers.recording.errors import RecordingError
from drivers.recording.features import IMAGES_PREFIX, DatasetSpec

log = logging.getLogger(__name__)

JOURNAL_DIR = ".recorder"
REPORTS_DIR = "meta/recorder"
ENCODING_PREFIX = ".encoding-"
META_FILES = ("meta/info.json", "meta/stats.json", "meta/tasks.parquet")


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
    try:
        info = json.loads((root / "meta" / "info.json").read_text())
    except (OSError, ValueError) as exc:
        raise RecordingError(
            f"{root}/meta/info.json is unreadable ({exc}): not a dataset this "
            "recorder can append to",
            "corrupt",
        ) from exc
    episodes = _parquet_rows(root / "meta" / "episodes")
    frames = _parquet_rows(root / "data")
    if episodes != info.get("total_episodes") or frames != info.get("total_frames"):
        raise RecordingError(
            f"{root} is inconsistent: info.json says {info.get('total_episodes')} episodes / "
            f"{info.get('total_frames')} frames, the files hold {episodes} / {frames}; "
            "move it aside and record into a new folder",
            "corrupt",
        )
    return info


def _parquet_rows(folder: Path) -> int:
    """Rows in every `*/*.parquet` under `folder`, from the footers; a damaged file is named."""
    import pyarrow.parquet as pq

    rows = 0
    for path in sorted(folder.glob("*/*.parquet")):
        try:
            rows += pq.read_metadata(path).num_rows
        except Exception as exc:
            raise RecordingError(
                f"{path} is damaged ({exc}): the dataset was not written by "
                "this recorder or lost a file",
                "corrupt",
            ) from exc
    return rows


def begin_journal(root: Path, index: int, files: set[str]) -> None:
    """Before lerobot appends episode `index`: snapshot the metadata it rewrites and list the
    files that exist, so that `recover` can undo a save cut short."""
    jdir = root / JOURNAL_DIR
    if jdir.exists():
        shutil.rmtree(jdir)
    snap = jdir / "snapshot"
    snap.mkdir(parents=True)
    saved = []
    for rel in META_FILES:
        src = root / rel
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


def end_journal(root: Path) -> None:
    """The commit of an appended episode: without its journal, the episode stays."""
    jdir = root / JOURNAL_DIR
    (jdir / "journal.json").unlink()
    _fsync_dir(jdir)
    shutil.rmtree(jdir, ignore_errors=True)


def verify_episode(
    root: Path, spec: DatasetSpec, index: int, frames: int, before: set[str]
) -> None:
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
    for cam in spec.cameras:
        key = f"videos/{IMAGES_PREFIX}{cam}"
        span = (row[f"{key}/to_timestamp"] - row[f"{key}/from_timestamp"]) * spec.fps
        path = root / info["video_path"].format(
            video_key=IMAGES_PREFIX + cam,
            chunk_index=row[f"{key}/chunk_index"],
            file_index=row[f"{key}/file_index"],
        )
        if not path.is_file() or abs(span - frames) > 0.5:
            raise RecordingError(
                f"video of {cam} for episode {index} holds {span:.1f} frames, expected {frames}",
                "corrupt",
            )

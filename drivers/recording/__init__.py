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

Modules, one job each: `features` (what a recording holds), `video` (encoding while recording),
`lerobot_compat` (every use of lerobot's internals), `journal` (the atomic commit, recovery),
`folder` (one recorder per folder, a write probe), `episode_writer` (one episode), `background`
(the writer's own thread), `episode_recorder` (samples and markers in, aligned frames to the
writer: the recorder worker's core).
"""

from drivers.recording.background import BackgroundWriter, BacklogStats
from drivers.recording.episode_recorder import EpisodeRecorder, RecorderSettings
from drivers.recording.episode_writer import EpisodeWriter, SavedEpisode
from drivers.recording.errors import RecordingError
from drivers.recording.features import (
    IMAGES_PREFIX,
    JOINTS,
    TIME_PREFIX,
    DatasetSpec,
    feature_differences,
    joint_names,
    time_key,
)
from drivers.recording.journal import JOURNAL_DIR, REPORTS_DIR, recover
from drivers.recording.video import EncoderSettings

__all__ = [
    "IMAGES_PREFIX",
    "JOINTS",
    "JOURNAL_DIR",
    "REPORTS_DIR",
    "TIME_PREFIX",
    "BacklogStats",
    "BackgroundWriter",
    "DatasetSpec",
    "EncoderSettings",
    "EpisodeRecorder",
    "EpisodeWriter",
    "RecorderSettings",
    "RecordingError",
    "SavedEpisode",
    "feature_differences",
    "joint_names",
    "recover",
    "time_key",
]

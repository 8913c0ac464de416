"""The crash-safe dataset writer.

Crash safety is tested with real SIGKILLs at nine points of a save inside lerobot's writer
(tests/recorder_faults.py), and with a disk that fills up (patched, then a real small tmpfs).
"""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drivers.recording import (
    JOURNAL_DIR,
    DatasetSpec,
    EpisodeWriter,
    RecordingError,
    feature_differences,
)

from conftest import REPO, load_recording, small_filesystem

LIFT = REPO / "datasets" / "lift"
FAULTS = [
    "mid-episode",
    "tasks",
    "data",
    "video",
    "info-torn",
    "stats",
    "index",
    "before-commit",
    "first",
]


def _recorder_faults():
    sys.path.insert(0, str(Path(__file__).parent))
    import recorder_faults

    return recorder_faults


def states_of(ds) -> np.ndarray:
    return np.stack(ds.hf_dataset.with_format("numpy")["observation.state"])


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """One dataset copy per fault point, each left by a writer SIGKILLed there."""
    work = tmp_path_factory.mktemp("faults")
    out = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "recorder_faults.py"), str(work), *FAULTS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["scenario"] for r in results] == FAULTS, out.stdout + out.stderr
    for r in results:
        assert r["signal"] == signal.SIGKILL, f"{r}: the fault was not reached\n{out.stderr}"
    return work


@pytest.mark.parametrize("fault", FAULTS)
def test_sigkill_during_an_episode_or_its_save_loses_only_that_episode(killed, fault) -> None:
    rf = _recorder_faults()
    root = killed / fault / "ds"
    writer = EpisodeWriter(root, rf.SPEC)
    actions = writer.open()  # the recovery step
    before = 0 if fault == "first" else rf.BASE_EPISODES
    if fault == "first":
        assert not root.exists() and any("unfinished first episode" in a for a in actions)
    elif fault == "mid-episode":
        assert any("video of an unfinished episode" in a for a in actions), actions
    else:
        assert any(f"rolled back the unfinished save of episode {before}" in a for a in actions), (
            actions
        )
    assert not (root / JOURNAL_DIR).exists()
    # The episodes saved before the kill are all there; appending works and they stay intact.
    rf.record(writer, before)
    writer.close()
    ds = load_recording(root)
    assert ds.meta.total_episodes == before + 1
    expected = np.concatenate([rf.episode_state(e) for e in range(before + 1)])
    np.testing.assert_array_equal(states_of(ds), expected)
    last = ds[len(ds) - 1]["observation.images.front"].numpy().transpose(1, 2, 0) * 255
    assert np.abs(last - rf.episode_image(before, rf.FRAMES - 1)).mean() < 6


def test_disk_full_during_a_save_rolls_back_and_stops_recording(tmp_path, monkeypatch) -> None:
    import lerobot.datasets.dataset_metadata as dm

    rf = _recorder_faults()
    root = tmp_path / "ds"
    writer = EpisodeWriter(root, rf.SPEC)
    writer.open()
    rf.record(writer, 0)

    def no_space(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dm, "write_stats", no_space)
    with pytest.raises(RecordingError, match="disk full") as err:
        rf.record(writer, 1)
    assert err.value.kind == "disk_full"
    with pytest.raises(RecordingError, match="disk full"):  # stays stopped
        writer.begin("lift the cube", {"front": rf.HW})
    writer.close()
    monkeypatch.undo()
    assert not (root / JOURNAL_DIR).exists()
    np.testing.assert_array_equal(states_of(load_recording(root)), rf.episode_state(0))


def test_disk_full_on_a_real_small_filesystem(tmp_path) -> None:
    rf = _recorder_faults()
    rng = np.random.default_rng(0)
    with small_filesystem(tmp_path / "disk", "400k") as disk:
        root = disk / "ds"
        writer = EpisodeWriter(root, rf.SPEC)
        writer.open()
        saved = 0
        with pytest.raises(RecordingError, match="disk full"):
            for ep in range(100):
                writer.begin("lift the cube", {"front": rf.HW})
                for k in range(rf.FRAMES):
                    noise = rng.integers(0, 255, (*rf.HW, 3), dtype=np.uint8)  # hard to encode
                    t = 1e9 + ep * 10 + k / 30
                    writer.add(
                        {"front": noise},
                        [rf.episode_state(ep)[k]],
                        [None],
                        {"camera/front": t, "state/arm": t},
                    )
                writer.end()
                saved += 1
        writer.close()
        assert saved >= 1
        assert not (root / JOURNAL_DIR).exists() and not list(root.glob(".encoding-*"))
        ds = load_recording(root)
        assert ds.meta.total_episodes == saved
        np.testing.assert_array_equal(
            states_of(ds), np.concatenate([rf.episode_state(e) for e in range(saved)])
        )


def test_features_that_differ_are_named() -> None:
    info = json.loads((LIFT / "meta" / "info.json").read_text())
    sort = DatasetSpec(
        fps=30, cameras=["front", "left_wrist", "right_wrist"], arms=["left_arm", "right_arm"]
    )
    diffs = " ".join(feature_differences(info, 30, sort))
    assert "observation.images.left_wrist" in diffs and "observation.state: shape [6]" in diffs
    lift = DatasetSpec(fps=30, cameras=["front"], arms=["arm"])
    assert feature_differences(info, 30, lift) == []
    assert feature_differences(info, 30, lift, {"front": (240, 320)}) == [
        "observation.images.front: shape [480, 640, 3] in the folder, [240, 320, 3] here"
    ]
    assert lift.names[0] == "shoulder_pan.pos" and sort.names[6] == "right_shoulder_pan.pos"

"""drivers.replay on our datasets and on a LeRobotDataset written here by lerobot itself."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from drivers.replay import DatasetReplay, ReplayError, split_arms  # noqa: E402
from drivers.replay_video import Prefetcher  # noqa: E402

LIFT = ROOT / "datasets" / "lift"
SORT = ROOT / "datasets" / "sort"
SMALL_LENGTHS = (12, 7)  # frames per episode of the dataset written by the test
SMALL_JOINTS = ["a.pos", "b.pos", "c.pos", "d.pos"]


def _level(ep: int, t: int) -> int:
    return 30 + 90 * ep + 8 * t


def _small_frame(ep: int, t: int) -> dict:
    # Flat grey levels survive lossy video well: each frame's level identifies it.
    img = np.full((96, 128, 3), _level(ep, t), np.uint8)
    state = np.array([ep, t, -t, 0.5 * t], np.float32)
    return {
        "observation.images.top": img,
        "observation.state": state,
        "action": state + 1,
        "task": "test",
    }


def _create(
    root: Path, features: dict, lengths: tuple[int, ...], frame, use_videos: bool = True
) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset.create(
        "local/test",
        fps=30,
        features=features,
        root=root,
        use_videos=use_videos,
        video_backend="pyav",
    )
    for ep, n in enumerate(lengths):
        for t in range(n):
            ds.add_frame(frame(ep, t))
        ds.save_episode()
    ds.finalize()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 unprefixed joints and one 96x128 camera `top`, lerobot's default (AV1) encoder."""
    root = tmp_path_factory.mktemp("small") / "ds"
    joint = {"dtype": "float32", "shape": (4,), "names": SMALL_JOINTS}
    _create(
        root,
        {
            "observation.state": joint,
            "action": joint,
            "observation.images.top": {
                "dtype": "video",
                "shape": (96, 128, 3),
                "names": ["height", "width", "channels"],
            },
        },
        SMALL_LENGTHS,
        _small_frame,
    )
    return root


@pytest.fixture(scope="module")
def lift() -> DatasetReplay:
    replay = DatasetReplay(LIFT)
    yield replay
    replay.close()


def _replay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("replay-")]


def test_lift_metadata(lift: DatasetReplay) -> None:
    assert lift.fps == 30
    assert lift.cameras == {"front": (480, 640)}
    assert lift.arms == {
        "arm": [
            "shoulder_pan.pos",
            "shoulder_lift.pos",
            "elbow_flex.pos",
            "wrist_flex.pos",
            "wrist_roll.pos",
            "gripper.pos",
        ]
    }
    assert lift.episodes == list(
        range(json.loads((LIFT / "meta" / "info.json").read_text())["total_episodes"])
    )


def test_lift_episode_plays_in_order(lift: DatasetReplay) -> None:
    from fake_tasks import episode_arrays

    ep = 5  # not the first episode in the shared mp4: exercises the seek to from_timestamp
    table = pq.read_table(sorted((LIFT / "data").glob("*/*.parquet")))
    rows = np.asarray(table.column("episode_index").to_pylist()) == ep
    state = np.asarray(table.column("observation.state").to_pylist(), np.float32)[rows]
    steps = list(lift.steps(ep))
    assert len(steps) == lift.num_frames(ep) == rows.sum()
    assert [s.index for s in steps] == list(range(len(steps)))
    np.testing.assert_allclose([s.timestamp for s in steps], np.arange(len(steps)) / 30, atol=1e-5)
    for s in steps:
        img = s.images["front"]
        assert img.shape == (480, 640, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
        assert set(s.states) == set(s.actions) == {"arm"}
        assert s.states["arm"].dtype == np.float32 and s.states["arm"].shape == (6,)
    np.testing.assert_array_equal(np.stack([s.states["arm"] for s in steps]), state)
    recorded = lift.recorded_actions(ep)["arm"]
    assert recorded.shape == (len(steps), 6) and recorded.dtype == np.float32
    np.testing.assert_array_equal(np.stack([s.actions["arm"] for s in steps]), recorded)
    # The decoded pictures are this episode's, frame for frame (video is lossy: small error).
    rendered = list(episode_arrays("lift", 0, ep).frames)
    err = [
        np.abs(steps[t].images["front"].astype(int) - rendered[t]["front"]).mean()
        for t in (0, len(steps) // 2, len(steps) - 1)
    ]
    assert max(err) < 3.0, err
    off_by_some = np.abs(
        steps[len(steps) // 2].images["front"].astype(int) - rendered[len(steps) // 2 + 8]["front"]
    ).mean()
    assert off_by_some > max(err)


def test_other_dataset_names_and_sizes(small: Path) -> None:
    replay = DatasetReplay(small)
    assert replay.cameras == {"top": (96, 128)}
    assert replay.arms == {"arm": SMALL_JOINTS}
    assert replay.episodes == [0, 1]
    for ep, n in enumerate(SMALL_LENGTHS):
        steps = list(replay.steps(ep))
        assert len(steps) == replay.num_frames(ep) == n
        for t, s in enumerate(steps):
            expected = _small_frame(ep, t)
            assert s.episode == ep and s.index == t
            assert s.images["top"].shape == (96, 128, 3)
            # The nearest grey level identifies which frame was decoded.
            levels = np.array([_level(ep, k) for k in range(n)])
            assert np.abs(levels - s.images["top"].mean()).argmin() == t
            np.testing.assert_array_equal(s.states["arm"], expected["observation.state"])
            np.testing.assert_array_equal(s.actions["arm"], expected["action"])
    replay.close()


def test_image_dataset_without_action(tmp_path: Path) -> None:
    # Cameras stored as images in the parquet (use_videos=False), channel-first, no action.
    root = tmp_path / "img"
    _create(
        root,
        {
            "observation.state": {
                "dtype": "float32",
                "shape": (2,),
                "names": ["left_x.pos", "right_x.pos"],
            },
            "observation.images.cam": {
                "dtype": "image",
                "shape": (3, 20, 30),
                "names": ["channels", "height", "width"],
            },
        },
        (3, 4),
        lambda ep, t: {
            "observation.state": np.array([ep, t], np.float32),
            "observation.images.cam": np.full((20, 30, 3), 10 * t + 100 * ep, np.uint8),
            "task": "t",
        },
        use_videos=False,
    )
    replay = DatasetReplay(root)
    assert replay.cameras == {"cam": (20, 30)}
    assert replay.arms == {"left_arm": ["x.pos"], "right_arm": ["x.pos"]}
    steps = list(replay.steps(1))
    assert [s.images["cam"][0, 0, 0] for s in steps] == [100, 110, 120, 130]  # lossless PNG
    assert [float(s.states["right_arm"][0]) for s in steps] == [0, 1, 2, 3]
    assert all(s.actions == {} for s in steps)
    assert replay.recorded_actions(1) == {}


def test_episode_selection(small: Path) -> None:
    replay = DatasetReplay(small, episodes=[1])
    assert replay.episodes == [1]
    assert [s.index for s in replay.steps(1)] == list(range(SMALL_LENGTHS[1]))
    with pytest.raises(ReplayError, match="not selected"):
        replay.num_frames(0)


def test_stopping_early_ends_the_decoder_thread(small: Path) -> None:
    replay = DatasetReplay(small, prefetch=2)
    gen = replay.steps(0)
    assert next(gen).index == 0
    assert len(_replay_threads()) == 1
    gen.close()
    assert _replay_threads() == []
    # close() of the replay ends a generator that is still open.
    gen = replay.steps(0)
    next(gen)
    replay.close()
    assert _replay_threads() == []
    assert list(gen) == []


def test_a_closed_prefetcher_hands_out_nothing_more() -> None:
    # The producer waits on a full queue; close() drains it, which lets that waiting put land.
    # That late step must not reach the consumer (it did in CI: one step after replay.close()).
    for _ in range(50):
        pre = Prefetcher(iter(range(10**9)), 2, "test-prefetch")
        items = iter(pre)
        assert next(items) == 0
        pre.close()
        assert list(items) == []


def test_two_arm_split() -> None:
    names = [f"{side}_{j}" for side in ("left", "right") for j in ("a.pos", "b.pos")]
    assert split_arms(names) == {"left_arm": [0, 1], "right_arm": [2, 3]}
    assert split_arms(["left_a.pos", "b.pos"]) == {"arm": [0, 1]}
    replay = DatasetReplay(SORT, episodes=[2])
    assert list(replay.arms) == ["left_arm", "right_arm"]
    assert replay.arms["left_arm"][0] == "shoulder_pan.pos"
    assert set(replay.cameras) == {"front", "left_wrist", "right_wrist"}
    step = next(replay.steps(2))
    assert {k: v.shape for k, v in step.states.items()} == {"left_arm": (6,), "right_arm": (6,)}
    assert {k: v.shape for k, v in step.images.items()} == {
        k: (480, 640, 3) for k in ("front", "left_wrist", "right_wrist")
    }
    replay.close()
    assert _replay_threads() == []


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ReplayError, match="does not exist"):
        DatasetReplay(missing)
    assert not missing.exists()  # lerobot would have created it


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="is not a LeRobotDataset.*info.json"):
        DatasetReplay(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "info.json").write_text("{not json")
    with pytest.raises(ReplayError, match="is not a LeRobotDataset.*info.json"):
        DatasetReplay(tmp_path)


def test_incomplete_dataset(small: Path, tmp_path: Path) -> None:
    # lerobot's answer to a missing file is to download it from the Hub; ours is an error.
    copy = tmp_path / "copy"
    shutil.copytree(small, copy)
    video = next((copy / "videos").rglob("*.mp4"))
    video.unlink()
    with pytest.raises(ReplayError, match=f"incomplete.*{video.name} missing"):
        DatasetReplay(copy)
    shutil.rmtree(copy / "data")
    with pytest.raises(ReplayError, match="incomplete.*no data"):
        DatasetReplay(copy)


def test_damaged_video_is_reported_to_the_consumer(small: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(small, copy)
    next((copy / "videos").rglob("*.mp4")).write_bytes(b"not a video" * 100)
    replay = DatasetReplay(copy)  # the files are all there; decoding is what fails
    with pytest.raises(ReplayError, match="cannot be decoded.*damaged"):
        list(replay.steps(0))
    assert _replay_threads() == []


def test_no_camera(tmp_path: Path) -> None:
    joint = {"dtype": "float32", "shape": (2,), "names": ["x", "y"]}
    root = tmp_path / "blind"
    _create(
        root,
        {"observation.state": joint, "action": joint},
        (3,),
        lambda ep, t: {
            "observation.state": np.zeros(2, np.float32),
            "action": np.zeros(2, np.float32),
            "task": "t",
        },
    )
    with pytest.raises(ReplayError, match="no camera feature"):
        DatasetReplay(root)


def test_episode_out_of_range(small: Path, lift: DatasetReplay) -> None:
    with pytest.raises(ReplayError, match=r"episode 2 is out of range.*episodes 0\.\.1"):
        DatasetReplay(small, episodes=[0, 2])
    last = lift.episodes[-1]
    with pytest.raises(ReplayError, match=rf"out of range.*0\.\.{last}"):
        lift.num_frames(last + 1)
    with pytest.raises(ReplayError, match="out of range"):
        lift.steps(-1)


def test_works_without_network(small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"

    def no_network(*args, **kwargs):
        raise AssertionError("replay tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    replay = DatasetReplay(small)
    assert len(list(replay.steps(1))) == SMALL_LENGTHS[1]
    replay.close()


def test_a_restart_reads_the_cached_index_without_importing_lerobot(
    small: Path, tmp_path: Path
) -> None:
    """The first open goes through lerobot and caches what the replay needs; the next one (a
    supervisord restart) reads the cache and never imports lerobot or torch."""
    root, cache = tmp_path / "ds", tmp_path / "cache"
    shutil.copytree(small, root)
    first = DatasetReplay(root, cache_dir=cache)
    assert not first.from_cache
    expected = [(s.states["arm"], s.actions["arm"], s.images["top"]) for s in first.steps(1)]
    first.close()
    again = DatasetReplay(root, cache_dir=cache)
    assert again.from_cache and again.arms == first.arms and again.cameras == first.cameras
    got = [(s.states["arm"], s.actions["arm"], s.images["top"]) for s in again.steps(1)]
    again.close()
    assert len(got) == len(expected) == SMALL_LENGTHS[1]
    for (s1, a1, i1), (s2, a2, i2) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(i1, i2)
    code = (
        "import sys; from drivers.replay import DatasetReplay; "
        f"r = DatasetReplay({str(root)!r}, cache_dir={str(cache)!r}); next(iter(r.steps(0))); "
        "r.close(); print(r.from_cache, 'lerobot' in sys.modules, 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["True", "False", "False"], done.stdout + done.stderr
    # Any change to the dataset's files is a cache miss.
    data = next((root / "data").rglob("*.parquet"))
    st = data.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not DatasetReplay(root, cache_dir=cache).from_cache

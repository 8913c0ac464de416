"""The synthetic datasets in datasets/ and their generator, scripts/make_datasets.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import make_datasets  # noqa: E402
from fake_arm import JOINTS, Arm  # noqa: E402
from fake_tasks import CUBE, episode_arrays, make_plan  # noqa: E402

DATASETS = ROOT / "datasets"
TASKS = ["lift", "sort", "stack"]
SO101 = [f"{j}.pos" for j in JOINTS]
EXPECTED_NAMES = {
    "lift": SO101,
    "sort": [f"left_{n}" for n in SO101] + [f"right_{n}" for n in SO101],
    "stack": [f"left_{n}" for n in SO101] + [f"right_{n}" for n in SO101],
}
EXPECTED_CAMERAS = {
    "lift": ["front"],
    "sort": ["front", "left_wrist", "right_wrist"],
    "stack": ["front", "left_wrist", "right_wrist"],
}


def _info(task: str) -> dict:
    return json.loads((DATASETS / task / "meta" / "info.json").read_text())


def _data(task: str) -> dict[str, np.ndarray]:
    table = pq.read_table(sorted((DATASETS / task / "data").glob("*/*.parquet")))
    return {name: np.asarray(table.column(name).to_pylist()) for name in table.column_names}


@pytest.mark.parametrize("task", TASKS)
def test_features_and_names(task: str) -> None:
    info = _info(task)
    assert info["codebase_version"].startswith("v3")
    assert info["fps"] == 30
    feats = info["features"]
    for key in ("observation.state", "action"):
        assert feats[key]["dtype"] == "float32"
        assert feats[key]["names"] == EXPECTED_NAMES[task]
        assert feats[key]["shape"] == [len(EXPECTED_NAMES[task])]
    cams = sorted(
        k.removeprefix("observation.images.") for k in feats if k.startswith("observation.images.")
    )
    assert cams == EXPECTED_CAMERAS[task]
    for cam in cams:
        f = feats[f"observation.images.{cam}"]
        assert f["dtype"] == "video"
        assert f["shape"] == [480, 640, 3]
        assert f["info"]["video.codec"] == "h264"


@pytest.mark.parametrize("task", TASKS)
def test_episode_count_length_and_size(task: str) -> None:
    info = _info(task)
    assert info["total_episodes"] >= 20
    lengths = np.bincount(_data(task)["episode_index"])
    assert len(lengths) == info["total_episodes"]
    assert lengths.min() >= 3 * 30 and lengths.max() <= 5 * 30 + 1
    # Blocks actually used, as du counts them.
    on_disk = sum(p.stat().st_blocks * 512 for p in (DATASETS / task).rglob("*") if p.is_file())
    assert on_disk <= 15 * 1024 * 1024, f"{task}: {on_disk / 1e6:.1f} MB"


@pytest.mark.parametrize("task", TASKS)
def test_committed_data_matches_generator(task: str) -> None:
    data = _data(task)
    tasks = pq.read_table(DATASETS / task / "meta" / "tasks.parquet").to_pydict()
    task_text = dict(zip(tasks["task_index"], tasks["task"], strict=True))
    last = int(data["episode_index"].max())
    for ep in (0, last):
        rows = data["episode_index"] == ep
        states, actions, _, text = episode_arrays(task, make_datasets.DEFAULT_SEED, ep)
        # Exact on the machine that wrote them; a tolerance keeps other CPUs' libm out of it.
        np.testing.assert_allclose(data["observation.state"][rows], states, atol=1e-3)
        np.testing.assert_allclose(data["action"][rows], actions, atol=1e-3)
        np.testing.assert_array_equal(data["frame_index"][rows], np.arange(len(states)))
        assert {task_text[i] for i in data["task_index"][rows]} == {text}


def test_generator_is_deterministic_and_seeded() -> None:
    a = episode_arrays("sort", 7, 3)
    b = episode_arrays("sort", 7, 3)
    assert a.states.tobytes() == b.states.tobytes()
    assert a.actions.tobytes() == b.actions.tobytes()
    c = episode_arrays("sort", 8, 3)
    assert a.states.shape[1] == 12 and a.states.dtype == np.float32
    assert not np.array_equal(a.actions[: len(c.actions)], c.actions[: len(a.actions)])


@pytest.mark.parametrize("task", TASKS)
def test_actions_lead_states(task: str) -> None:
    states, actions, _, _ = episode_arrays(task, 0, 1)
    gap = np.abs(actions - states)
    assert gap.max() > 1.0  # the command is ahead of the measured position...
    # ...and the state catches up: one step of lag explains most of the difference.
    lagged = np.abs(actions[:-1] - states[1:]).mean()
    assert lagged < gap.mean()


@pytest.mark.parametrize("task", TASKS)
def test_trajectories_depend_on_cube_layout(task: str) -> None:
    # The commanded pan when grasping follows the cube: it varies across episodes.
    pans = []
    for ep in range(6):
        plan = make_plan(task, 0, ep)
        _, actions, _, _ = episode_arrays(task, 0, ep)
        grasp_t = plan.grasps[0].close
        pans.append(actions[grasp_t, 0])
    assert np.std(pans) > 3.0


def test_inverse_kinematics_reaches_target() -> None:
    arm = Arm((0.0, 0.30), (0, 0, 0))
    for target in ([0.05, 0.12, CUBE / 2], [-0.1, 0.15, 0.1], [0.0, 0.08, 0.05]):
        q = arm.ik(np.array(target))
        assert q is not None
        tip = arm.fk(np.array([*q, 0.0, 50.0])).tip
        np.testing.assert_allclose(tip, target, atol=1e-6)


def _cube_pixels(img: np.ndarray) -> int:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return int(((r > 150) & (g < 90) & (b < 90)).sum())  # the red cube


def test_wrist_camera_closes_in_on_the_cube() -> None:
    # stack: the right arm picks the red cube (no red bin in that scene to confuse the count).
    plan = make_plan("stack", 0, 0)
    ep = episode_arrays("stack", 0, 0)
    grasp = next(g for g in plan.grasps if g.arm == "right_")
    frames = {}
    for t, images in enumerate(ep.frames):
        if t in (0, grasp.close):
            frames[t] = images
        if t == grasp.close:
            break
    for cam, img in frames[0].items():
        assert img.shape == (480, 640, 3) and img.dtype == np.uint8, cam
    near = _cube_pixels(frames[grasp.close]["right_wrist"])
    far = _cube_pixels(frames[0]["right_wrist"])
    assert near > 3 * max(far, 1) and near > 2000, (near, far)
    # The front view sees the arm move: the picture changes between the two instants.
    diff = np.abs(frames[grasp.close]["front"].astype(int) - frames[0]["front"].astype(int))
    assert (diff.max(axis=2) > 30).mean() > 0.005


def test_writer_refuses_then_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "lift"
    make_datasets.write_dataset("lift", out, episodes=1, seed=5)
    states, actions, _, _ = episode_arrays("lift", 5, 0)
    table = pq.read_table(next((out / "data").glob("*/*.parquet")))
    np.testing.assert_array_equal(np.asarray(table.column("action").to_pylist()), actions)
    with pytest.raises(SystemExit, match="--overwrite"):
        make_datasets.write_dataset("lift", out, episodes=1, seed=5)
    make_datasets.write_dataset("lift", out, episodes=1, seed=6, overwrite=True)
    table = pq.read_table(next((out / "data").glob("*/*.parquet")))
    assert table.num_rows == len(episode_arrays("lift", 6, 0).states)
    assert not list(tmp_path.glob(".*partial"))
    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("x")
    with pytest.raises(SystemExit, match="not a LeRobotDataset"):
        make_datasets.write_dataset("lift", stranger, episodes=1, seed=5, overwrite=True)
    assert (stranger / "keep.txt").exists()

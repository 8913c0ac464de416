"""Write the synthetic SO-101 datasets (lift, sort, stack) as LeRobotDataset v3 folders.

    uv run python scripts/make_datasets.py [--only lift] [--out datasets] [--episodes 20]
                                           [--seed 0] [--overwrite]

Episodes are scripted and rendered by fake_tasks (deterministic in the seed) and written through
lerobot's own LeRobotDataset.create / add_frame / save_episode / finalize, so lerobot-train reads
them as they are. Each dataset is built in a hidden sibling folder and moved into place only
when complete: an interrupted run never leaves a half-written dataset behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

# Everything here is local; never let lerobot / huggingface_hub reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_tasks import (  # noqa: E402
    FPS,
    IMAGE_HW,
    TASK_IDS,
    camera_names,
    episode_arrays,
    joint_names,
)

# h264 instead of lerobot's default AV1: a third the size at the same CRF for these flat scenes,
# fast to encode and decode everywhere. GOP 10 (lerobot's default is 2) keeps a dataset of 20
# episodes with 3 cameras near 5 MB while a random-access read decodes at most 9 extra frames.
VCODEC, CRF, GOP = "h264", 30, 10
DEFAULT_EPISODES = 20
DEFAULT_SEED = 0
ROBOT_TYPE = {"lift": "so101_follower", "sort": "bi_so_follower", "stack": "bi_so_follower"}

__all__ = ["episode_arrays", "features_for", "write_dataset", "main"]


def features_for(task: str) -> dict[str, dict]:
    """lerobot feature spec: state and action share the joint names; one video per camera."""
    names = joint_names(task)
    h, w = IMAGE_HW
    feats: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": (len(names),), "names": names},
        "action": {"dtype": "float32", "shape": (len(names),), "names": names},
    }
    for cam in camera_names(task):
        feats[f"observation.images.{cam}"] = {
            "dtype": "video",
            "shape": (h, w, 3),
            "names": ["height", "width", "channels"],
        }
    return feats


def _is_replaceable(path: Path) -> bool:
    """Only ever delete an empty folder or something that is itself a LeRobotDataset."""
    return path.is_dir() and (not any(path.iterdir()) or (path / "meta" / "info.json").is_file())


def write_dataset(
    task: str, root: Path, episodes: int, seed: int, overwrite: bool = False
) -> float:
    """Generate `episodes` episodes of `task` into `root`; returns the seconds it took."""
    import datasets
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    # One "Map" bar per saved episode would drown the progress lines. (lerobot's
    # SuppressProgressBars turns bars back *on* when it exits, so this is redone per dataset.)
    datasets.disable_progress_bars()

    root = root.resolve()
    if root.exists():
        if not overwrite:
            raise SystemExit(f"{root} exists: pass --overwrite to replace it")
        if not _is_replaceable(root):
            raise SystemExit(f"{root} is not a LeRobotDataset folder: refusing to delete it")
    partial = root.parent / f".{root.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    ds = LeRobotDataset.create(
        repo_id=f"local/{root.name}",
        fps=FPS,
        features=features_for(task),
        root=partial,
        robot_type=ROBOT_TYPE[task],
        use_videos=True,
        video_backend="pyav",  # torchcodec cannot load without system FFmpeg here
        rgb_encoder=RGBEncoderConfig(vcodec=VCODEC, crf=CRF, g=GOP),
        # Streaming skips lerobot's PNG round trip. Its queues drop frames when full, so they
        # are sized to hold a whole episode (<= 5 s): rendering may run ahead of the encoders.
        streaming_encoding=True,
        encoder_queue_maxsize=6 * FPS,
    )
    cams = camera_names(task)
    try:
        for ep in range(episodes):
            t0 = time.perf_counter()
            states, actions, frames, text = episode_arrays(task, seed, ep)
            for t, images in enumerate(frames):
                frame = {"observation.state": states[t], "action": actions[t], "task": text}
                frame.update({f"observation.images.{c}": images[c] for c in cams})
                ds.add_frame(frame)
            ds.save_episode()
            print(
                f"[{task}] episode {ep + 1}/{episodes}: {len(states)} frames, "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
        ds.finalize()
        _check_videos(partial, task, episodes)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if root.exists():
        shutil.rmtree(root)
    partial.rename(root)
    return time.perf_counter() - t_start


def _check_videos(root: Path, task: str, episodes: int) -> None:
    """Fail loudly if lerobot's streaming encoder dropped frames (it only logs a warning)."""
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata

    meta = LeRobotDatasetMetadata(f"local/{root.name}", root=root)
    if meta.total_episodes != episodes:
        raise RuntimeError(f"wrote {meta.total_episodes} episodes, expected {episodes}")
    for row in meta.episodes:
        for cam in camera_names(task):
            key = f"videos/observation.images.{cam}"
            duration = row[f"{key}/to_timestamp"] - row[f"{key}/from_timestamp"]
            if abs(duration * FPS - row["length"]) > 0.5:
                raise RuntimeError(
                    f"episode {row['episode_index']} {cam}: video holds "
                    f"{duration * FPS:.1f} frames, data {row['length']}"
                )


def _du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--only",
        choices=sorted(TASK_IDS),
        action="append",
        help="generate only this task (repeatable); default: all three",
    )
    p.add_argument("--out", type=Path, default=Path("datasets"))
    p.add_argument("--episodes", type=int, default=DEFAULT_EPISODES)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--overwrite", action="store_true", help="replace existing dataset folders")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error("--episodes must be at least 1")
    logging.basicConfig(level=logging.WARNING)
    import av

    # lerobot's encoder hands logging back to FFmpeg's own terminal callback after each video,
    # which then prints libx264 statistics and muxer chatter at INFO: raise FFmpeg's own level.
    av.logging.set_libav_level(av.logging.ERROR)
    for task in args.only or list(TASK_IDS):
        root = args.out / task
        secs = write_dataset(task, root, args.episodes, args.seed, args.overwrite)
        print(f"[{task}] wrote {root} ({_du_mb(root):.1f} MB) in {secs:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

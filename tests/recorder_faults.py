"""SIGKILL a dataset writer at chosen points of an episode's save (used by test_episode_writer.py).

    python tests/recorder_faults.py WORKDIR SCENARIO...

Imports lerobot once, writes a base dataset of BASE_EPISODES small episodes in WORKDIR/base,
then for each scenario forks a child that copies the base to WORKDIR/<scenario>/ds, records
one more episode and is killed with SIGKILL at the scenario's point (a real kill: no finally,
no finalizer runs). Prints one JSON line per scenario: {"scenario", "signal", "exit"}.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

# The children are forked: keep the parent single-threaded (no BLAS pool, no jemalloc thread).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.recording import DatasetSpec, EpisodeWriter  # noqa: E402

BASE_EPISODES = 2
FRAMES = 12
HW = (32, 48)
SPEC = DatasetSpec(
    fps=30,
    cameras=["front"],
    arms=["arm"],
    robot_type="so101_follower",
    time_streams=["camera/front", "state/arm", "action/arm"],
)


def episode_state(ep: int) -> np.ndarray:
    """(FRAMES, 6) float32 states of episode `ep` (the ground truth the test checks)."""
    k = np.arange(FRAMES, dtype=np.float32)[:, None]
    return (k + 100 * ep + np.arange(6, dtype=np.float32) / 10).astype(np.float32)


def episode_image(ep: int, k: int) -> np.ndarray:
    img = np.zeros((*HW, 3), np.uint8)
    img[..., 0] = (40 * ep) % 256
    img[..., 1] = (8 * k) % 256
    img[: HW[0] // 2, :, 2] = 200
    return img


def record(writer: EpisodeWriter, ep: int, task: str = "lift the cube", on_frame=None) -> None:
    writer.begin(task, {"front": HW})
    states = episode_state(ep)
    for k in range(FRAMES):
        t = 1e9 + ep * 10 + k / 30
        writer.add(
            {"front": episode_image(ep, k)},
            [states[k]],
            [states[k] + 0.5],
            {"camera/front": t, "state/arm": t, "action/arm": t},
        )
        if on_frame is not None:
            on_frame(k)
    writer.end({"bus_episode": ep})


def kill_now() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _after(obj, name: str, torn: bool = False) -> None:
    """Make obj.name kill the process once it has run (or half-way through, torn=True)."""
    real = getattr(obj, name)

    def wrapper(*args, **kwargs):
        if torn:  # write_info(info, root): leave a half-written file behind
            from lerobot.datasets.utils import INFO_PATH

            info, root = args[0], Path(args[1])
            text = json.dumps(info.to_dict(), indent=4)
            (root / INFO_PATH).write_text(text[: len(text) // 2])
            kill_now()
        out = real(*args, **kwargs)
        kill_now()
        return out

    setattr(obj, name, wrapper)


def install(scenario: str) -> tuple[int, str]:
    """Arm the fault; returns (episode to record, task text)."""
    import lerobot.datasets.dataset_metadata as dm
    from lerobot.datasets.dataset_writer import DatasetWriter

    import drivers.recording.episode_writer as dw

    task = "lift the cube"
    if scenario == "tasks":  # a new task text makes lerobot rewrite tasks.parquet
        _after(dm, "write_tasks")
        task = "lift the other cube"
    elif scenario == "data":
        _after(DatasetWriter, "_save_episode_data")
    elif scenario == "video":
        _after(DatasetWriter, "_save_episode_video")
    elif scenario == "info-torn":
        _after(dm, "write_info", torn=True)
    elif scenario == "stats":
        _after(dm, "write_stats")
    elif scenario == "index":
        _after(dm.LeRobotDatasetMetadata, "_flush_metadata_buffer")
    elif scenario == "before-commit":
        dw.end_journal = lambda root: kill_now()
    elif scenario == "first":
        dw.verify_episode = lambda *a: kill_now()
    elif scenario != "mid-episode":
        raise SystemExit(f"unknown scenario {scenario}")
    return (0 if scenario == "first" else BASE_EPISODES), task


def child(scenario: str, root: Path) -> None:
    episode, task = install(scenario)
    writer = EpisodeWriter(root, SPEC)
    writer.open()
    on_frame = (
        (lambda k: kill_now() if k == FRAMES // 2 else None) if scenario == "mid-episode" else None
    )
    record(writer, episode, task, on_frame)
    os._exit(3)  # the fault was never reached


def run_forked(fn, *args) -> int:
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            fn(*args)
        except BaseException as exc:  # report, never return into the parent's code
            print(f"child failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            os._exit(4)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return status


def build_base(root: Path) -> None:
    writer = EpisodeWriter(root, SPEC)
    writer.open()
    for ep in range(BASE_EPISODES):
        record(writer, ep)
    writer.close()


def main() -> None:
    workdir = Path(sys.argv[1])
    base = workdir / "base" / "ds"
    EpisodeWriter(workdir / "warm" / "ds", SPEC).open()  # imports lerobot before forking
    status = run_forked(build_base, base)
    if status != 0:
        raise SystemExit(f"building the base dataset failed ({status})")
    for scenario in sys.argv[2:]:
        root = workdir / scenario / "ds"
        if scenario != "first":
            shutil.copytree(base, root)
        status = run_forked(child, scenario, root)
        print(
            json.dumps(
                {
                    "scenario": scenario,
                    "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                    "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()

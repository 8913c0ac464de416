"""Record the scripted expert's demonstrations through the bus, with the runtime's own recorder.

    uv run python scripts/record_demos.py --task lift --episodes 100 [--seed 0]
        [--out recordings/sim/lift] [--camera-size 96 128] [--wrist-size 96 128]

The whole stack on a private bus: hub, simulator, the expert as `policy/<task>`, the control
loop and the recorder (the very LeRobotDataset v3 folders `SO101_RECORD=true` writes). Each
episode ends on the simulator's outcome; a line per episode says how it went. Beside lerobot's
own files, `meta/so101_demos.json` lists every saved episode with its seed and outcome, so
training can leave out the failures (scripts/train_policy.py does). Training seeds start at
--seed (0); evaluations use seeds from 1000 (workers.evaluate), scenes never trained on.
Recording into a folder that has episodes appends to it (with seeds it does not have yet), and
`scripts/train_policy.py --resume` trains on what was added.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bus import Subscriber, topics  # noqa: E402
from workers.launch import Launch, LaunchError  # noqa: E402
from workers.tasks import get_task  # noqa: E402

DEMOS_FILE = "so101_demos.json"


def record(
    task: str,
    episodes: int,
    seed: int,
    out: Path,
    camera: list[int],
    wrist: list[int],
    episode_s: float,
) -> list[dict]:
    rows: dict[int, dict] = {}  # bus episode -> what we know of it
    demos = out / "meta" / DEMOS_FILE
    known = json.loads(demos.read_text()) if demos.exists() else []
    saved = 0
    with Launch(out.parent / f"{out.name}-logs") as launch:
        launch.start_hub()
        sub = Subscriber(launch.bus, [topics.event("sim"), topics.event("recorder")], mode="every")
        try:
            launch.start(
                "sim",
                "workers.sim",
                f"--task={task}",
                f"--camera_size=[{camera[0]},{camera[1]}]",
                f"--wrist_size=[{wrist[0]},{wrist[1]}]",
            )
            launch.start("expert", "workers.expert_policy", f"--task={task}")
            launch.start(
                "recorder",
                "workers.recorder",
                f"--task={task}",
                f"--root={out}",
                "--sources=[control]",
            )
            for name, text in (
                ("sim", "ready: sim"),
                ("expert", "ready: scripted expert"),
                ("recorder", "ready: recording"),
            ):
                launch.wait_for(name, text)
            control = launch.start(
                "control",
                "workers.control",
                f"--task={task}",
                f"--episodes={episodes}",
                f"--seed={seed}",
                f"--episode_s={episode_s}",
                "--wait_for_listeners=10",
            )
            started = time.monotonic()
            while saved < episodes:
                msg = sub.recv(1.0)
                if msg is None:
                    if (
                        control.poll() is not None
                        and time.monotonic() - started > 60
                        and not _pending(rows)
                    ):
                        break  # control is done and nothing is left to save
                    continue
                data = msg.data
                if msg.topic == topics.event("sim") and data.get("phase") == "outcome":
                    rows.setdefault(data["episode"], {}).update(
                        bus_episode=data["episode"],
                        seed=data["seed"],
                        success=data["success"],
                        reason=data["reason"],
                        time_s=data["time_s"],
                    )
                elif msg.topic == topics.event("recorder") and data.get("state") in (
                    "saved",
                    "discarded",
                    "refused",
                    "error",
                    "truncated",
                ):
                    row = rows.setdefault(data.get("bus_episode"), {})
                    row["recorder"] = data["state"]
                    if data["state"] == "saved":
                        saved += 1
                        row.update(dataset_episode=data["episode"], frames=data["frames"])
                        _write_demos(demos, known, rows)  # an interrupted run keeps its list
                    _progress(row, saved, episodes, started)
        finally:
            sub.close()
        launch.stop("control")
        launch.stop("recorder", timeout=150)  # a clean stop saves what is queued
    return _saved(rows)


def seeds_recorded(out: Path) -> set[int]:
    """The scene seeds of the episodes already in a recording (recording again appends)."""
    demos = out / "meta" / DEMOS_FILE
    return {r["seed"] for r in json.loads(demos.read_text())} if demos.exists() else set()


def _saved(rows: dict[int, dict]) -> list[dict]:
    return sorted(
        (r for r in rows.values() if "dataset_episode" in r), key=lambda r: r["dataset_episode"]
    )


def _write_demos(demos: Path, known: list[dict], rows: dict[int, dict]) -> None:
    demos.parent.mkdir(parents=True, exist_ok=True)
    tmp = demos.with_suffix(".tmp")
    tmp.write_text(json.dumps(known + _saved(rows), indent=1) + "\n")
    tmp.replace(demos)


def _pending(rows: dict[int, dict]) -> bool:
    return any("recorder" not in r for r in rows.values())


def _progress(row: dict, saved: int, total: int, started: float) -> None:
    elapsed = time.monotonic() - started
    eta = elapsed / max(saved, 1) * (total - saved)
    verdict = ("SUCCESS" if row.get("success") else "FAILURE") if "success" in row else "?"
    where = f" as dataset episode {row['dataset_episode']}" if "dataset_episode" in row else ""
    print(
        f"episode {row.get('bus_episode')} (seed {row.get('seed')}): {verdict} in "
        f"{row.get('time_s', float('nan')):.1f} s, recorder: {row['recorder']}{where}; "
        f"{saved}/{total} saved, {elapsed:.0f} s elapsed, about {eta:.0f} s to go",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", required=True)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default recordings/sim/<task>")
    parser.add_argument("--camera-size", type=int, nargs=2, default=[96, 128])
    parser.add_argument("--wrist-size", type=int, nargs=2, default=None)
    parser.add_argument("--episode-s", type=float, default=30.0)
    args = parser.parse_args()
    try:
        get_task(args.task)
    except ValueError as exc:
        parser.error(str(exc))
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    out = (args.out or REPO / "recordings" / "sim" / args.task).resolve()
    recorded = seeds_recorded(out)
    again = recorded & set(range(args.seed, args.seed + args.episodes))
    if again:
        parser.error(
            f"seeds {min(again)}-{max(again)} are already recorded in {out}: the same scenes "
            f"twice teach nothing new; append with --seed {max(recorded) + 1}"
        )
    t0 = time.time()
    try:
        rows = record(
            args.task,
            args.episodes,
            args.seed,
            out,
            args.camera_size,
            args.wrist_size or args.camera_size,
            args.episode_s,
        )
    except LaunchError as exc:
        raise SystemExit(f"record_demos: {exc}") from None
    demos = out / "meta" / DEMOS_FILE
    ok = sum(1 for r in rows if r.get("success"))
    print(
        f"{len(rows)} episodes saved to {out} ({ok} successes) in {time.time() - t0:.0f} s; "
        f"list in {demos}"
    )
    if len(rows) < args.episodes:
        raise SystemExit(
            f"record_demos: only {len(rows)} of {args.episodes} episodes saved; "
            f"see the logs in {out.parent / (out.name + '-logs')}"
        )


if __name__ == "__main__":
    main()

"""Closed-loop evaluation: seeded episodes in the simulator, through the whole stack.

    uv run python -m workers.evaluate --task=lift --episodes=50 [--checkpoint=PATH]
        [--seed=1000] [--contenders='[checkpoint,expert,hold,checkpoint/sync]']
        [--episode_s=0] [--device=cpu] [--num_inference_steps=10] [--noise_scale=0]
        [--policy_threads=0]
        [--out=outputs/eval/lift.json] [--video=0] [--resume=true]

Each contender runs on the real stack (hub, simulator, a policy worker, the control loop: one
process each, on a private bus; workers.launch) over the same seeds, so comparisons are
paired. Contenders: `checkpoint` (the policy worker serving --checkpoint, default
checkpoints/<task>_sim/checkpoint-best), `expert` (the scripted expert: the upper bound),
`hold` (a policy that answers "stay where you are": the lower bound); a `/suffix` runs one of
them with another control schedule (`/sync`, `/ahead`) or chunk join (`/inpaint`, `/blend`,
`/latest`, `/weighted`, `/average`; default: control's auto, inpaint for diffusion), or
`/hard_prefix` (inpaint with the committed actions only, without RTC's soft tail). A line
per episode; a table at the end with each success rate and its 95 % Wilson interval, time to
success, holds, stall time, policy latency and the cores the processes used; the whole record
(every episode's outcome and reason) as JSON in --out. `--video=N` films each contender's
first N episodes (the task's cameras side by side, workers/episode_video.py) into MP4s beside
--out. A contender whose processes fail is reported with what it finished and the error, and
the others still run; `--resume=true` runs only the episodes --out does not hold yet (after a
Ctrl-C or such a failure).
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from bus import Subscriber, topics
from workers.episode_video import EpisodeVideos
from workers.evaluate_report import counted, print_progress, print_table, resumed, summarize
from workers.launch import REPO, CpuShare, Launch, LaunchError
from workers.lifecycle import exit_bad_config, parse_or_exit
from workers.tasks import checkpoint_camera_sizes, get_task

EPISODE_S = {"lift": 15.0, "sort": 30.0, "stack": 20.0}
SCHEDULES = ("ahead", "sync")
JOINS = ("inpaint", "blend", "latest")
BLENDS = ("weighted", "average")  # --join=blend with this blend
HARD_PREFIX = "hard_prefix"  # --join=inpaint --prefix_soft=false: only the committed actions


@dataclass
class EvaluateConfig:
    task: str = "lift"
    episodes: int = 50
    # Episode k uses seed `seed + k` for every contender. Demonstrations are recorded from seed
    # 0 (scripts/record_demos.py): evaluations start at 1000, scenes never trained on.
    seed: int = 1000
    checkpoint: str = ""
    contenders: list[str] = field(default_factory=lambda: ["checkpoint", "expert", "hold"])
    # 0: the task's default (lift 15 s, sort 30 s, stack 20 s).
    episode_s: float = 0.0
    device: str = "cpu"
    # Diffusion checkpoints: denoising steps at inference (the policy worker's flag; fewer steps
    # answer sooner, which matters where the answer takes half a chunk).
    num_inference_steps: int = 10
    # Diffusion checkpoints: the scale of the noise sampling starts from, in [0, 1] (the policy
    # worker's flag and default; 1 is lerobot's own sampling, docs/closed_loop.md).
    noise_scale: float = 0.0
    # The policy worker's torch CPU threads (its --threads; 0 = all cores but one).
    policy_threads: int = 0
    out: str = ""
    logs: str = "logs/evaluate"
    # Film each contender's first N episodes: <out without .json>_videos/<contender>_seed<S>.mp4
    video: int = 0
    # Continue the evaluation in --out: the episodes it holds (same task, seeds, checkpoint,
    # settings) are kept, only the missing ones run.
    resume: bool = False

    def out_path(self) -> Path:
        return Path(self.out or REPO / "outputs" / "eval" / f"{self.task}.json")


@dataclass
class Contender:
    name: str
    policy: str  # checkpoint | expert | hold
    schedule: str = "ahead"
    join: str = "auto"
    blend: str = "weighted"
    prefix_soft: bool = True

    @staticmethod
    def parse(text: str) -> Contender:
        variants = (*SCHEDULES, *JOINS, *BLENDS, HARD_PREFIX)
        policy, _, variant = text.partition("/")
        if policy not in ("checkpoint", "expert", "hold"):
            raise ValueError(
                f"contender {text!r}: expected checkpoint, expert or hold "
                f"(optionally /{'|'.join(variants)})"
            )
        contender = Contender(text, policy)
        if variant in SCHEDULES:
            contender.schedule = variant
        elif variant in JOINS:
            contender.join = variant
        elif variant in BLENDS:
            contender.join, contender.blend = "blend", variant
        elif variant == HARD_PREFIX:
            contender.join, contender.prefix_soft = "inpaint", False
        elif variant:
            raise ValueError(
                f"contender {text!r}: unknown variant {variant!r}; choose one of "
                f"{', '.join(variants)}"
            )
        return contender


def start_policy(
    launch: Launch, contender: Contender, cfg: EvaluateConfig, checkpoint: Path
) -> None:
    task = f"--task={cfg.task}"
    if contender.policy == "checkpoint":
        launch.start(
            "policy",
            "workers.policy",
            task,
            f"--checkpoint={checkpoint}",
            f"--device={cfg.device}",
            f"--num_inference_steps={cfg.num_inference_steps}",
            f"--noise_scale={cfg.noise_scale}",
            f"--threads={cfg.policy_threads}",
        )
        launch.wait_for("policy", "ready: task", 600)
    elif contender.policy == "expert":
        launch.start("policy", "workers.expert_policy", task)
        launch.wait_for("policy", "ready: scripted expert")
    else:  # hold still: every action is the episode's first observed pose
        launch.start(
            "policy",
            "workers.stand_in_policy",
            task,
            "--step=0",
            "--hold_first=true",
            "--latency=0.01",
        )
        launch.wait_for("policy", "ready: stand-in")


def run_contender(
    launch: Launch,
    contender: Contender,
    cfg: EvaluateConfig,
    checkpoint: Path,
    sizes: dict[str, tuple[int, int]],
    episode_s: float,
    episodes: dict[int, dict],
) -> None:
    """Run one contender's episodes; each finished one lands in `episodes` as it ends, so
    what was measured survives an interruption (see counted()). Episodes already there (a
    resumed evaluation) are not run again: control starts at the first missing one."""
    first = len(episodes)  # control numbers its episodes from 0: row = first + its number
    front = sizes.get("front", (96, 128))
    wrist = next((s for c, s in sizes.items() if c.endswith("_wrist")), front)
    sub = Subscriber(launch.bus, [topics.event("sim"), topics.event("episode")], mode="every")
    videos = None
    try:
        launch.start(
            "sim",
            "workers.sim",
            f"--task={cfg.task}",
            f"--camera_size=[{front[0]},{front[1]}]",
            f"--wrist_size=[{wrist[0]},{wrist[1]}]",
        )
        launch.wait_for("sim", "ready: sim")
        start_policy(launch, contender, cfg, checkpoint)
        if cfg.video > first:
            out = cfg.out_path()
            folder = out.with_name(out.stem + "_videos")
            cameras = get_task(cfg.task).cameras
            videos = EpisodeVideos(launch.bus, folder, cameras, cfg.video - first, contender.name)
            videos.start()
        control = launch.start(
            "control",
            "workers.control",
            f"--task={cfg.task}",
            f"--episodes={cfg.episodes - first}",
            f"--seed={cfg.seed + first}",
            f"--episode_s={episode_s}",
            f"--schedule={contender.schedule}",
            f"--join={contender.join}",
            f"--blend={contender.blend}",
            f"--prefix_soft={str(contender.prefix_soft).lower()}",
            "--wait_for_listeners=10",
        )
        cpu = CpuShare(launch)  # from here on the episodes run: their share of the machine
        done = first
        deadline = time.monotonic() + (cfg.episodes - first) * (episode_s + 30) + 120
        while done < cfg.episodes:
            msg = sub.recv(1.0)
            if msg is None:
                if time.monotonic() > deadline or control.poll() is not None:
                    raise LaunchError(
                        f"{contender.name}: {done}/{cfg.episodes} episodes "
                        f"finished; control: {launch.tail('control', 3)}"
                    )
                continue
            if msg.topic == topics.event("sim") and msg.data.get("phase") == "outcome":
                row = episodes.setdefault(first + msg.data["episode"], {})
                row.update(
                    seed=msg.data["seed"],
                    success=bool(msg.data["success"]),
                    reason=msg.data["reason"],
                    time_s=msg.data["time_s"],
                )
            elif (
                msg.topic == topics.event("episode")
                and msg.src == "control"
                and msg.data.get("phase") == "stop"
            ):
                stats = msg.data.get("stats", {})
                row = episodes.setdefault(first + msg.data["episode"], {})
                row.update(
                    episode=first + msg.data["episode"],
                    holds=stats.get("holds"),
                    stall_s=round(stats.get("stall_ticks", 0) / 30.0, 3),
                    latency_p50_ms=stats.get("chunk_latency_p50_ms"),
                    join=stats.get("join"),
                    seam_p99_deg=stats.get("seam_jump_p99_deg"),
                    cpu_cores=cpu.take(),
                    # A machine paused mid-episode (a VM snapshot) shows as a wall-clock step.
                    clock_step_s=stats.get("clock_step_s", 0.0),
                )
            else:
                continue
            # Done when both halves are in: control's stop marker and the simulator's verdict
            # (which, for an episode control stopped, comes after the marker).
            if "episode" in row and "success" in row and not row.get("counted"):
                row["counted"] = True
                done += 1
                print_progress(contender.name, row, episodes, cfg.episodes)
    finally:
        sub.close()
        for name in ("control", "policy", "sim"):
            launch.stop(name)
        if videos is not None:
            videos.close()
            for episode, path in videos.written.items():
                episodes.setdefault(first + episode, {})["video"] = str(path)
            if videos.error is not None:
                print(f"{contender.name}: filming stopped: {videos.error!r}", flush=True)


def evaluate(cfg: EvaluateConfig) -> dict:
    task = get_task(cfg.task)
    contenders = [Contender.parse(c) for c in cfg.contenders]
    checkpoint = Path(
        cfg.checkpoint or REPO / "checkpoints" / f"{task.name}_sim" / "checkpoint-best"
    )
    if not checkpoint.is_absolute():
        checkpoint = REPO / checkpoint
    uses_checkpoint = any(c.policy == "checkpoint" for c in contenders)
    if uses_checkpoint and not (checkpoint / "config.json").is_file():
        raise ValueError(
            f"checkpoint not found: {checkpoint} (no config.json); train one "
            f"(docs/closed_loop.md) or give --checkpoint"
        )
    # Every contender sees the frames the checkpoint was trained on (same scenes, same sizes).
    sizes = checkpoint_camera_sizes(checkpoint) if (checkpoint / "config.json").is_file() else {}
    episode_s = cfg.episode_s or EPISODE_S[task.name]
    report = {
        "interrupted": False,
        "task": task.name,
        "seed": cfg.seed,
        "episodes": cfg.episodes,
        "episode_s": episode_s,
        "checkpoint": str(checkpoint) if uses_checkpoint else None,
        "num_inference_steps": cfg.num_inference_steps if uses_checkpoint else None,
        "noise_scale": cfg.noise_scale if uses_checkpoint else None,
        "policy_threads": cfg.policy_threads if uses_checkpoint else None,
        "cpu_count": os.cpu_count(),
        "contenders": {},
    }
    before = resumed(cfg.out_path(), report) if cfg.resume else {}
    with Launch(REPO / cfg.logs) as launch:
        launch.start_hub()
        for contender in contenders:
            t0 = time.monotonic()
            prior = before.pop(contender.name, {})
            episodes = {r["episode"]: {**r, "counted": True} for r in prior.get("episodes", [])}
            error = None
            if len(episodes) < cfg.episodes:
                try:
                    run_contender(launch, contender, cfg, checkpoint, sizes, episode_s, episodes)
                except KeyboardInterrupt:  # Ctrl-C: keep what was measured, run nothing more
                    report["interrupted"] = True
                except LaunchError as exc:  # keep what was measured, go on with the next
                    error = str(exc)
                    print(f"{contender.name}: stopped: {error}", flush=True)
            rows = counted(episodes)
            if rows or error:
                report["contenders"][contender.name] = {
                    **summarize(rows),
                    "policy": contender.policy,
                    "schedule": contender.schedule,
                    "blend": contender.blend,
                    "join_asked": contender.join,
                    "prefix_soft": contender.prefix_soft,
                    "wall_s": round(prior.get("wall_s", 0.0) + time.monotonic() - t0, 1),
                    **({"error": error} if error else {}),
                }
            if report["interrupted"]:
                break
    for name, result in before.items():  # the earlier run's contenders not reached or not named now
        report["contenders"].setdefault(name, result)
    return report


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    cfg = parse_or_exit(EvaluateConfig, "evaluate")
    # Ctrl-C, `kill` or `kill -INT` stop the evaluation and keep what was measured, also when
    # the shell started it in the background (which leaves SIGINT ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        get_task(cfg.task)
        [Contender.parse(c) for c in cfg.contenders]
        if cfg.episodes < 1:
            raise ValueError("--episodes must be >= 1")
        if cfg.num_inference_steps < 1:
            raise ValueError("--num_inference_steps must be >= 1")
        if not 0.0 <= cfg.noise_scale <= 1.0:
            raise ValueError(f"--noise_scale must be within [0, 1], got {cfg.noise_scale}")
        if cfg.policy_threads < 0:
            raise ValueError(f"--policy_threads must be >= 0, got {cfg.policy_threads}")
        report = evaluate(cfg)
    except ValueError as exc:
        exit_bad_config("evaluate", exc)
    except LaunchError as exc:
        raise SystemExit(f"evaluate: {exc}") from None
    print_table(report)
    if report["interrupted"]:
        print("interrupted: the episodes that finished are in the table and the file")
    out = cfg.out_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written: {out} (process logs in {cfg.logs}/)")
    if report["interrupted"]:
        raise SystemExit(130)
    failed = [name for name, r in report["contenders"].items() if r.get("error")]
    if failed:
        raise SystemExit(f"evaluate: {', '.join(failed)} stopped early (see 'error' in {out})")


if __name__ == "__main__":
    main()

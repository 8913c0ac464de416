"""The replay worker: a recorded LeRobotDataset played onto the bus as cameras and arms.

    uv run python -m workers.replay --task=lift [--dataset=datasets/lift] [--speed=1.0]
        [--episodes='[0,3]'] [--loop=true] [--bus.*]

Publishes `camera/<name>` and `state/<arm>` at the dataset's fps (times the speed factor) with
real capture times, `event/episode` start/stop markers, and `health/replay`. Listens to
`action/<arm>` and reports, per episode, the open-loop error between the commanded actions and
the dataset's recorded ones (`event/open_loop` and the log). When playback falls behind its
schedule it says so, and by how much, rather than silently slowing down.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

import numpy as np

from bus import BusConfig, Message, Publisher, Subscriber, topics
from bus.clock import now
from bus.health import HealthReporter
from bus.log import Throttle
from drivers.replay import DatasetReplay, ReplayError, ReplayStep
from workers import lifecycle
from workers.tasks import get_task


@dataclass
class ReplayConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    task: str = "lift"
    # A local LeRobotDataset v3 folder; empty = datasets/<task>.
    dataset: str = ""
    # Episodes to play, in this order; empty = all.
    episodes: list[int] = field(default_factory=list)
    # 1.0 = real time; 2.0 = twice as fast.
    speed: float = 1.0
    # Start over after the last episode (the fake env runs until stopped).
    loop: bool = True
    # Name on the bus (source of messages and health/<name>).
    name: str = "replay"
    # Seconds to wait at start for someone to listen to event/episode.
    wait_for_listeners: float = 2.0


class OpenLoopError:
    """Commanded actions vs the dataset's recorded ones, per arm and joint, for one episode.

    A command is compared with the recorded action of the frame that was on the bus at the
    command's execution time (`t_exec`, else its capture time)."""

    def __init__(self, recorded: dict[str, np.ndarray]):
        self.recorded = recorded
        self.frame_times: list[float] = []
        self.sq = {arm: np.zeros(a.shape[1]) for arm, a in recorded.items()}
        self.count = dict.fromkeys(recorded, 0)
        self.rejected = 0

    def frame_shown(self, t: float) -> None:
        self.frame_times.append(t)

    def add(self, arm: str, msg: Message) -> None:
        goal = msg.arrays["goal"]
        rec = self.recorded.get(arm)
        if rec is None or goal.shape[0] != rec.shape[1] or not self.frame_times:
            self.rejected += 1
            return
        t = float(msg.data.get("t_exec", msg.t_cap))
        index = max(0, bisect.bisect_right(self.frame_times, t + 1e-6) - 1)
        index = min(index, rec.shape[0] - 1)
        self.sq[arm] += (goal.astype(np.float64) - rec[index]) ** 2
        self.count[arm] += 1

    def report(self) -> dict:
        per_joint = {
            arm: (np.sqrt(self.sq[arm] / n).round(4).tolist() if n else None)
            for arm, n in self.count.items()
        }
        total = sum(self.count.values())
        overall = (
            float(
                np.sqrt(
                    sum(s.sum() for s in self.sq.values())
                    / sum(n * len(self.sq[a]) for a, n in self.count.items())
                )
            )
            if total
            else None
        )
        return {
            "rmse_per_joint": per_joint,
            "rmse": overall,
            "actions": self.count,
            "rejected": self.rejected,
        }


@dataclass
class PlaybackStats:
    frames: int = 0
    late: int = 0  # steps published more than one frame interval behind schedule
    max_lag_ms: float = 0.0
    intervals: list[float] = field(default_factory=list)

    def rate(self) -> float:
        recent = self.intervals[-60:]
        return 1.0 / float(np.mean(recent)) if recent else 0.0


def publish_step(pub: Publisher, step: ReplayStep, names: dict[str, list[str]]) -> float:
    """One dataset step onto the bus, stamped with the time it is published (what a camera
    and a servo reading taken now would carry)."""
    t_cap = now()
    for camera, image in step.images.items():
        pub.publish(
            topics.camera(camera),
            {"image": image},
            {"frame": step.index, "episode": step.episode},
            t_cap=t_cap,
        )
    for arm, position in step.states.items():
        pub.publish(topics.state(arm), {"position": position}, {"names": names[arm]}, t_cap=t_cap)
    return t_cap


def main() -> None:
    cfg = lifecycle.parse_or_exit(ReplayConfig, "replay")
    log, stop = lifecycle.start(cfg.name)
    try:
        task = get_task(cfg.task)
        if cfg.speed <= 0:
            raise ValueError(f"--speed must be > 0, got {cfg.speed}")
        replay = DatasetReplay(cfg.dataset or task.dataset, episodes=cfg.episodes or None)
        if sorted(replay.arms) != sorted(task.arms):
            # Control waits for the task's arms: a 12-joint `state/arm` would starve it forever.
            raise ValueError(
                f"dataset {replay.root} has arm(s) {list(replay.arms)} but task {task.name} "
                f"drives {list(task.arms)}: a two-arm dataset names its joints left_*/right_* "
                "(lerobot's bimanual convention); pick the matching --task"
            )
    except (ReplayError, ValueError) as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    period = 1.0 / (replay.fps * cfg.speed)
    log.info(
        "dataset %s: %d episodes, %d fps, cameras %s, arms %s; speed %.2f; %s",
        replay.root,
        len(replay.episodes),
        replay.fps,
        {k: f"{w}x{h}" for k, (h, w) in replay.cameras.items()},
        list(replay.arms),
        cfg.speed,
        "index from the cache (lerobot not imported)"
        if replay.from_cache
        else "opened through lerobot",
    )

    pub = Publisher(cfg.bus, cfg.name)
    actions = Subscriber(cfg.bus, [topics.action(arm) for arm in replay.arms], mode="every")
    stats = PlaybackStats()
    current = {"episode": None, "frame": 0}
    health = HealthReporter(
        pub,
        cfg.name,
        lambda: {
            **current,
            "rate_hz": stats.rate(),
            "drops": {"late_frames": stats.late, "actions_bad": actions.bad},
            "fps_target": replay.fps * cfg.speed,
            "fps_achieved": round(stats.rate(), 2),
            "frames": stats.frames,
            "late_frames": stats.late,
            "max_lag_ms": round(stats.max_lag_ms, 1),
            "actions_received": actions.received,
            "actions_bad": actions.bad,
        },
    )
    lag_log = Throttle(5.0)
    # Episode markers must not fall into ZeroMQ's slow-joiner window: give listeners
    # (control, recorder) a moment to be heard before the first start marker.
    if not pub.wait_for_subscriber(topics.event("episode"), cfg.wait_for_listeners):
        log.info(
            "no listener for event/episode after %.0f s; playing anyway", cfg.wait_for_listeners
        )
    log.info("ready: replaying %s on the bus (%s)", replay.root.name, cfg.bus.pub)

    episode_order = list(replay.episodes)
    # Each episode's decoder is opened one episode ahead: opening and seeking a video at the
    # start of an episode held up its first frames by ~250 ms.
    upcoming = replay.steps(episode_order[0])
    while not stop.is_set():
        for i, episode in enumerate(episode_order):
            if stop.is_set():
                break
            steps = upcoming
            last = i + 1 == len(episode_order)
            following = episode_order[0] if last else episode_order[i + 1]
            upcoming = replay.steps(following) if cfg.loop or not last else None
            error = OpenLoopError(replay.recorded_actions(episode))
            n = replay.num_frames(episode)
            current.update(episode=episode, frame=0)
            pub.publish(
                topics.event("episode"),
                data={
                    "phase": "start",
                    "episode": episode,
                    "task": task.name,
                    "source": cfg.name,
                    "frames": n,
                    "fps": replay.fps,
                },
            )
            start = None
            last_pub = None
            for step in steps:
                if start is None:  # the clock starts with the first decoded step
                    start = time.monotonic() - step.index * period
                due = start + step.index * period
                while (wait := due - time.monotonic()) > 0 and not stop.is_set():
                    time.sleep(min(wait, 0.05))
                    health.tick()
                if stop.is_set():
                    break
                lag = time.monotonic() - due
                t_pub = publish_step(pub, step, replay.arms)
                error.frame_shown(t_pub)
                current["frame"] = step.index
                stats.frames += 1
                if last_pub is not None:
                    stats.intervals.append(t_pub - last_pub)
                    del stats.intervals[:-300]
                last_pub = t_pub
                if lag > period:
                    stats.late += 1
                    stats.max_lag_ms = max(stats.max_lag_ms, lag * 1000)
                    if (held := lag_log.ready("lag")) is not None:
                        log.warning(
                            "playback behind schedule by %.0f ms at episode %d frame %d "
                            "(%d late frames so far; decoding or the machine cannot "
                            "hold %.1f fps)%s",
                            lag * 1000,
                            episode,
                            step.index,
                            stats.late,
                            replay.fps * cfg.speed,
                            f" (+{held} more)" if held else "",
                        )
                while (msg := actions.recv(0)) is not None:
                    error.add(msg.topic.split("/", 1)[1], msg)
                health.tick()
            while (msg := actions.recv(0)) is not None:  # actions in flight for the last frame
                error.add(msg.topic.split("/", 1)[1], msg)
            report = {"episode": episode, "task": task.name, **error.report()}
            pub.publish(
                topics.event("episode"),
                data={
                    "phase": "stop",
                    "episode": episode,
                    "task": task.name,
                    "source": cfg.name,
                    "frames": n,
                    "open_loop": report,
                },
            )
            pub.publish(topics.event("open_loop"), data=report)
            if report["rmse"] is None:
                log.info("episode %d done (%d frames); no actions received", episode, n)
            else:
                log.info(
                    "episode %d done (%d frames); open-loop error vs recorded actions: "
                    "RMSE %.3f over %s actions, per joint %s",
                    episode,
                    n,
                    report["rmse"],
                    report["actions"],
                    report["rmse_per_joint"],
                )
        if not cfg.loop:
            break
    health.tick(force=True)
    replay.close()
    actions.close()
    pub.close()
    lifecycle.finish(log, f"stopped after {stats.frames} frames")


if __name__ == "__main__":
    main()

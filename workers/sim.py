"""The simulator process: a MuJoCo SO-101 scene on the bus exactly where the robot would be.

    uv run python -m workers.sim --task=lift [--fps=30] [--camera_size='[480,640]']
        [--episodes_from=control|self] [--seed=0] [--episode_s=30] [--servo.rate_hz=30]

Publishes `camera/<name>` (uint8 (H, W, 3), stamped with the instant the scene was taken) and
`state/<arm>` (lerobot units) like the camera and servo processes, and takes `action/<arm>`
goals and `event/estop` through the servo process's own safety code (workers.arm_channel:
limits, step limit, watchdog hold, latched e-stop). Physics follows the wall clock; rendering
runs on its own thread so physics never waits for pixels.

Episodes: with `--episodes_from=control` (the stack) each `event/episode` start resets the
scene from the marker's `seed`; with `self` it runs episodes on its own (seed, seed+1, ...) and
publishes the markers itself. `event/sim` says {phase: "start", seed, cubes} at each reset and
{phase: "outcome", success, reason, time_s} once per episode (README: success criteria).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bus import BusConfig, Message, Publisher, Subscriber, clock, topics
from bus.health import HealthReporter
from core.estop_latch import EstopLatch
from core.safety import GoalGuard, SafetyLimits
from drivers.sim.arm import MujocoArm
from drivers.sim.render import CameraRig, Frame, RenderError, RenderThread
from drivers.sim.world import Outcome, SimWorld
from workers import lifecycle
from workers.arm_channel import ArmBus, ArmChannel, safety_limits
from workers.lifecycle import exit_bad_config, parse_or_exit
from workers.meters import MillisWindow, RateMeter
from workers.robot_config import ArmSettings, ServoSettings
from workers.tasks import checkpoint_camera_sizes

EPISODE_TOPIC = topics.event("episode")
SIM_TOPIC = topics.event("sim")
MAX_CATCH_UP_S = 0.25  # physics further behind the wall clock than this: say so, re-anchor


@dataclass
class SimConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    task: str = "lift"
    # Camera frames per second (every camera) and sizes [height, width]; wrist cameras
    # (sort, stack) take `wrist_size` when it is set.
    fps: float = 30.0
    camera_size: list[int] = field(default_factory=lambda: [480, 640])
    wrist_size: list[int] = field(default_factory=list)
    # A lerobot checkpoint folder: render each camera at the size it was trained on (wins over
    # camera_size and wrist_size), so the policy gets frames it needs no resizing for.
    checkpoint: str = ""
    # control: reset on the control loop's event/episode start (its seed); self: run episodes
    # here, seeds seed, seed+1, ..., each at most episode_s.
    episodes_from: str = "control"
    seed: int = 0
    episode_s: float = 30.0
    # Safety and rates, as for the servo process (configs/robot.yaml `servo:`), and each arm's
    # step limits (`arm.max_step`, `arm.joint_max_step`, `arm.limits`).
    servo: ServoSettings = field(default_factory=ServoSettings)
    arm: ArmSettings = field(default_factory=ArmSettings)
    name: str = "sim"
    health_interval_s: float = 1.0


def camera_sizes(cfg: SimConfig, cameras: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    trained = {}
    if cfg.checkpoint:
        path = Path(cfg.checkpoint)
        if not (path / "config.json").is_file():
            raise ValueError(f"--checkpoint={cfg.checkpoint}: no config.json there")
        trained = checkpoint_camera_sizes(path)
    sizes = {}
    for camera in cameras:
        size = cfg.wrist_size if (camera.endswith("_wrist") and cfg.wrist_size) else cfg.camera_size
        size = list(trained.get(camera, size))
        if len(size) != 2 or min(size) < 16 or max(size) > 2048:
            raise ValueError(f"camera size {size}: expected [height, width], 16..2048 each")
        sizes[camera] = (int(size[0]), int(size[1]))
    return sizes


class Episodes:
    """Which episode runs, from which seed, and its outcome, reported once."""

    def __init__(self, world: SimWorld, pub: Publisher, cfg: SimConfig, log):
        self.world, self.pub, self.cfg, self.log = world, pub, cfg, log
        self.episode: int | None = None
        self.seed = cfg.seed
        self.outcome: Outcome | None = None
        self.started = time.monotonic()
        self.results = {"success": 0, "failure": 0}

    def start(self, episode: int, seed: int, source: str) -> None:
        if self.episode is not None and self.outcome is None:
            self.finish(
                Outcome(False, "a new episode started before this one ended", self.world.time)
            )
        init = self.world.reset(seed)
        self.episode, self.seed, self.outcome = episode, seed, None
        self.started = time.monotonic()
        self.pub.publish(
            SIM_TOPIC,
            data={
                "phase": "start",
                "episode": episode,
                "seed": seed,
                "task": self.world.scene.task,
                "source": source,
                "cubes": init.cubes,
                "arms": init.arms,
            },
        )
        self.log.info("episode %s: reset with seed %d; cubes %s", episode, seed, init.cubes)

    def finish(self, outcome: Outcome) -> None:
        if self.episode is None or self.outcome is not None:
            return
        self.outcome = outcome
        self.results["success" if outcome.success else "failure"] += 1
        self.pub.publish(
            SIM_TOPIC,
            data={
                "phase": "outcome",
                "episode": self.episode,
                "seed": self.seed,
                "task": self.world.scene.task,
                "success": outcome.success,
                "reason": outcome.reason,
                "time_s": round(outcome.time_s, 3),
            },
        )
        self.log.log(
            20 if outcome.success else 30,
            "episode %s (seed %d): %s after %.2f s: %s",
            self.episode,
            self.seed,
            "SUCCESS" if outcome.success else "FAILURE",
            outcome.time_s,
            outcome.reason,
        )

    def on_marker(self, msg: Message) -> None:
        """The control loop's episode markers (self mode ignores other sources' markers)."""
        if self.cfg.episodes_from != "control" or msg.src == self.cfg.name:
            return
        phase, episode = msg.data.get("phase"), msg.data.get("episode")
        if phase == "start":
            seed = msg.data.get("seed")
            if not isinstance(seed, int) or isinstance(seed, bool):
                seed = self.cfg.seed + (episode if isinstance(episode, int) else 0)
            self.start(episode, seed, msg.src)
        elif phase == "stop" and episode == self.episode:
            self.finish(
                Outcome(
                    False,
                    f"stopped by {msg.src} before success; {self.world.where()}",
                    self.world.time,
                )
            )

    def judge(self) -> None:
        if self.episode is None or self.outcome is not None:
            return
        outcome = self.world.judge()
        if (
            outcome is None
            and self.cfg.episodes_from == "self"
            and self.world.time >= self.cfg.episode_s
        ):
            outcome = Outcome(
                False,
                f"timeout after {self.cfg.episode_s:g} s; {self.world.where()}",
                self.world.time,
            )
        if outcome is not None:
            self.finish(outcome)

    def run_self(self) -> None:
        """Self mode: end the episode a second after its outcome, start the next one."""
        if self.cfg.episodes_from != "self":
            return
        if self.episode is None or (
            self.outcome is not None and self.world.time >= self.outcome.time_s + 1.0
        ):
            if self.episode is not None:
                self.pub.publish(
                    EPISODE_TOPIC,
                    data={
                        "phase": "stop",
                        "episode": self.episode,
                        "task": self.world.scene.task,
                        "source": self.cfg.name,
                        "seed": self.seed,
                    },
                )
            episode = 0 if self.episode is None else self.episode + 1
            self.pub.publish(
                EPISODE_TOPIC,
                data={
                    "phase": "start",
                    "episode": episode,
                    "task": self.world.scene.task,
                    "source": self.cfg.name,
                    "seed": self.cfg.seed + episode,
                },
            )
            self.start(episode, self.cfg.seed + episode, self.cfg.name)


class CameraPublisher:
    """Frames from the render thread onto the bus (its own socket: sockets are per thread)."""

    def __init__(self, cfg: SimConfig):
        self.pub = Publisher(cfg.bus, cfg.name)
        self.fps = RateMeter()
        self.age = MillisWindow("frame_age")  # snapshot -> on the bus

    def __call__(self, frames: list[Frame]) -> None:
        for frame in frames:
            self.pub.publish(
                topics.camera(frame.camera),
                {"image": frame.image},
                {"frame": self.fps.count, "sim_time": round(frame.sim_time, 4)},
                t_cap=frame.t_snapshot,
            )
            self.age.add(clock.now() - frame.t_snapshot)
        self.fps.add()


def main() -> None:
    cfg = parse_or_exit(SimConfig, "sim")
    try:
        if cfg.episodes_from not in ("control", "self"):
            raise ValueError(f"--episodes_from={cfg.episodes_from!r}: expected control or self")
        if cfg.fps <= 0 or cfg.episode_s <= 0 or not 0 < cfg.servo.rate_hz <= 500:
            raise ValueError("--fps and --episode_s must be > 0, --servo.rate_hz in (0, 500]")
        world = SimWorld(cfg.task)
        sizes = camera_sizes(cfg, world.scene.cameras)
        drivers = {arm: MujocoArm(world, arm) for arm in world.scene.arms}
        limits = {arm: safety_limits(d, cfg.arm, cfg.servo) for arm, d in drivers.items()}
        rig = CameraRig(world, sizes)
    except ValueError as exc:  # SceneError included: a scene that does not load
        exit_bad_config("sim", exc)
    with lifecycle.Process(cfg.name) as proc:
        simulate(cfg, world, rig, drivers, limits, proc)


def simulate(
    cfg: SimConfig,
    world: SimWorld,
    rig: CameraRig,
    drivers: dict[str, MujocoArm],
    limits: dict[str, SafetyLimits],
    proc: lifecycle.Process,
) -> None:
    log, stop, sizes = proc.log, proc.stop, rig.sizes
    pub = proc.closing(Publisher(cfg.bus, cfg.name))
    sub = proc.closing(Subscriber(cfg.bus, ArmBus.topics(list(drivers)), mode="latest"))
    markers = proc.closing(Subscriber(cfg.bus, [EPISODE_TOPIC], mode="every"))
    arms = [ArmChannel(name, drivers[name], GoalGuard(limits[name]), pub, log) for name in drivers]
    proc.at_stop("arm shutdown", lambda: [arm.shutdown(cfg.servo.on_exit) for arm in arms])
    for arm in arms:
        arm.connect()
    arm_bus = ArmBus(arms, sub, EstopLatch(cfg.servo.estop_latch_file), log)
    episodes = Episodes(world, pub, cfg, log)
    cameras = CameraPublisher(cfg)
    proc.closing(cameras.pub)
    renderer = RenderThread(rig, cfg.fps, cameras, clock.now)
    try:
        renderer.start()
    except RenderError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    proc.closing(renderer, renderer.stop)

    period = 1.0 / cfg.servo.rate_hz
    ticks, busy = RateMeter(), MillisWindow("tick_busy")
    lag = {"physics_behind_events": 0, "physics_behind_max_s": 0.0}

    def collect() -> dict:
        return {
            "rate_hz": ticks.rate(),
            "drops": {"render_late": renderer.late, **sub.drops()},
            "rate_target_hz": cfg.servo.rate_hz,
            "camera_fps": cameras.fps.rate(),
            "camera_fps_target": cfg.fps,
            "render_ms_p50": renderer.render_ms_p50(),
            "render_late": renderer.late,
            **cameras.age.summary(),
            **busy.summary(),
            **lag,
            "episode": episodes.episode,
            "seed": episodes.seed,
            "outcome": None if episodes.outcome is None else episodes.outcome.reason,
            "results": dict(episodes.results),
            "bad_messages": sub.bad + markers.bad,
            "arms": {arm.name: arm.health() for arm in arms},
        }

    proc.health = health = HealthReporter(pub, cfg.name, collect, cfg.health_interval_s)
    log.info(
        "ready: sim %s, arms %s, cameras %s at %g fps, state at %g Hz, episodes from %s",
        cfg.task,
        list(drivers),
        {c: f"{w}x{h}" for c, (h, w) in sizes.items()},
        cfg.fps,
        cfg.servo.rate_hz,
        cfg.episodes_from,
    )
    wall0, sim0, resets = time.monotonic(), world.time, world.resets
    next_tick = time.monotonic()
    while not stop.is_set():
        if (wait := next_tick - time.monotonic()) > 0.002:
            sub.latest(timeout=wait - 0.001)  # wakes early for a goal: applied at once
            arm_bus.dispatch()
            continue
        started = time.monotonic()
        while (marker := markers.recv(0)) is not None:
            episodes.on_marker(marker)
        episodes.run_self()
        if world.resets != resets:  # the physics clock started again at 0
            wall0, sim0, resets = started, world.time, world.resets
            for arm in arms:  # at rest at the start pose, until this episode's first goal
                arm.reset()
        behind = sim0 + (started - wall0) - world.time
        if behind > MAX_CATCH_UP_S:
            lag["physics_behind_events"] += 1
            lag["physics_behind_max_s"] = round(max(lag["physics_behind_max_s"], behind), 3)
            log.warning(
                "physics %.0f ms behind the wall clock (tick took %.1f ms): the "
                "machine cannot keep real time; continuing from now",
                behind * 1000,
                busy.summary().get("tick_busy_p99_ms") or 0.0,
            )
            wall0, sim0 = started, world.time
        else:
            world.advance(behind)
        episodes.judge()
        arm_bus.dispatch()
        for arm in arms:
            arm.tick(time.monotonic())
        ticks.add()
        health.tick()
        busy.add(time.monotonic() - started)
        next_tick += period
        if time.monotonic() - next_tick >= period:  # overran whole ticks: keep the phase
            next_tick += int((time.monotonic() - next_tick) // period) * period
    proc.last_words = f"stopped; episodes {episodes.results}"


if __name__ == "__main__":
    np.set_printoptions(precision=3, suppress=True)
    main()

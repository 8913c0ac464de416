"""Simulator benchmark: physics, rendering, the sim process on the bus, the scripted expert.

    uv run python -m bench.sim [--tasks=lift,sort,stack] [--episodes=N] [--seconds=S]

Per task:
1. physics alone: a SimWorld stepped in this process, no rendering, goals from the scripted
   expert's plan applied every 1/30 s as a control loop would; simulated s / wall s.
2. rendering alone: a CameraRig with every camera of the scene at the sim worker's default
   size, rendering sets back to back in this process; sets/s and ms per camera.
3. the deployment: hub + workers.sim + workers.policy (the shipped checkpoint; it will not
   succeed at the task, it loads the CPU as deployed) + workers.control for S seconds. A
   subscriber measures each camera's achieved fps and each arm's state rate (capture times),
   and the frame age on arrival (bus clock - t_cap). The lowest camera's rate is the figure.
4. the expert's success rate through the bus: hub + workers.sim + workers.expert_policy +
   workers.control --episodes=N --seed=0; outcomes from the sim's `event/sim` messages;
   successes/N with a 95 % Wilson interval.
`--logs=DIR` keeps every worker's log (DIR/<task>-<policy>/<worker>.log).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import emit, pct
from bench.sim_report import headline, print_expert, print_in_process, print_live
from bus import Publisher, ServiceClient, Subscriber, clock, topics
from drivers.sim.expert import plan_episode
from drivers.sim.render import CameraRig
from drivers.sim.world import SimWorld
from workers.evaluate_report import wilson
from workers.launch import Launch
from workers.sim import SimConfig
from workers.tasks import service_name

TASKS = ("lift", "sort", "stack")
CONTROL_HZ = 30.0
PHYSICS_WALL_S = 1.0  # enough stepping for a steady figure (the physics is fast)
RENDER_S = 3.0
# Checkpoint load + warm-up inference on a small CPU machine takes a while; a generous wait.
START_TIMEOUT_S = 300.0
# Seconds after control's first chunk before measuring: the policy is then in steady state.
SETTLE_S = 2.0
# Expert episode limits, 2-4x each plan's length (lift ~4 s, sort ~12 s, stack ~7 s): room
# for a slow machine, while a failed episode does not cost the run minutes.
EXPERT_EPISODE_S = {"lift": 15.0, "sort": 30.0, "stack": 20.0}
EPISODES = {"lift": 50, "sort": 50, "stack": 50}


# -- 1 and 2: in-process -------------------------------------------------------------------
def physics_rtf(task: str) -> dict:
    """Step the expert's episodes (contacts, grasps: the expensive physics), seeds 0, 1, ...
    until PHYSICS_WALL_S of stepping; planning is not timed."""
    world = SimWorld(task)
    sim_s = wall = 0.0
    seed = 0
    while wall < PHYSICS_WALL_S:
        plan = plan_episode(task, world.reset(seed).cubes, CONTROL_HZ, world.model)
        started = time.perf_counter()
        for k in range(int(plan.duration_s * CONTROL_HZ)):
            for arm, goal in plan.goals_at(k / CONTROL_HZ).items():
                world.set_goal(arm, goal)
            world.advance(1 / CONTROL_HZ)
        wall += time.perf_counter() - started
        sim_s += world.time
        seed += 1
    return {"sim_s": sim_s, "wall_s": wall, "rtf": sim_s / wall, "episodes": seed}


def render_rate(task: str) -> dict:
    world = SimWorld(task)
    size = tuple(SimConfig().camera_size)
    rig = CameraRig(world, dict.fromkeys(world.scene.cameras, size))
    rig.open()  # GL contexts on this thread, which renders
    try:
        rig.render(clock.now)  # the first set pays for uploading meshes and textures
        sets, started = 0, time.perf_counter()
        while (wall := time.perf_counter() - started) < RENDER_S:
            rig.render(clock.now)
            sets += 1
    finally:
        rig.close()
    cameras = len(world.scene.cameras)
    return {
        "size": f"{size[0]}x{size[1]}",
        "cameras": cameras,
        "sets_per_s": sets / wall,
        "ms_per_camera": wall * 1000 / (sets * cameras),
    }


# -- processes -----------------------------------------------------------------------------
@contextmanager
def stack(task: str, policy: str, logs: Path | None) -> Iterator[Launch]:
    """Hub + sim + a policy service for `task`, both ready: the sim listens for episode
    markers, the policy service is registered at the hub. Worker logs go to `logs/<run>/`
    when given (kept), else to a temporary folder."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        Launch(logs / f"{task}-{policy}" if logs else Path(tmp)) as launch,
    ):
        launch.start_hub()
        launch.start("sim", "workers.sim", f"--task={task}")
        launch.start(policy, f"workers.{policy}", f"--task={task}")
        wait_ready(launch, task, policy)
        yield launch


def wait_ready(launch: Launch, task: str, policy: str) -> None:
    with (
        Publisher(launch.bus, "bench-probe") as probe,
        ServiceClient(launch.bus, "bench") as client,
    ):
        # Nobody else listens yet: a listener to these topics is the sim or the expert.
        wait_for(
            lambda: probe.has_subscriber(topics.event("episode")),
            120,
            "the sim to subscribe to event/episode",
            launch,
        )
        if policy == "expert_policy":
            wait_for(
                lambda: probe.has_subscriber(topics.event("sim")),
                60,
                "the expert to subscribe to event/sim",
                launch,
            )
        wait_for(
            lambda: client.hub_status().get("workers", {}).get(service_name(task)),
            START_TIMEOUT_S,
            f"{policy} to serve {service_name(task)}",
            launch,
        )


def wait_for(cond: Callable[[], object], timeout: float, what: str, procs: Launch) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        procs.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def rate(times: list[float]) -> float:
    """Messages per second from capture times (intervals over their span)."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


# -- 3: the sim process beside a real policy -------------------------------------------------
def live_run(task: str, seconds: float, logs: Path | None) -> dict:
    with stack(task, "policy", logs) as procs:
        streams = ["camera/", "state/", "chunk/", "health/sim"]
        with Subscriber(procs.bus, streams, mode="every") as sub:
            # Frames arriving prove our subscription is live before anything is counted.
            wait_for(lambda: sub.recv(0.5) is not None, 30, "the first message", procs)
            procs.start(
                "control",
                "workers.control",
                f"--task={task}",
                "--episodes=1",
                f"--episode_s={seconds + START_TIMEOUT_S}",
                "--end_on_outcome=false",
            )
            cams: dict[str, list[float]] = {}
            states: dict[str, list[float]] = {}
            ages: list[float] = []
            health: list[dict] = []  # the sim's own reports within the window
            chunks = 0
            t_start: float | None = None  # set by the first chunk: the policy is at work
            deadline = time.monotonic() + START_TIMEOUT_S
            while t_start is None or time.monotonic() < t_start + seconds:
                if t_start is None and time.monotonic() > deadline:
                    raise RuntimeError(f"{task}: no chunk within {START_TIMEOUT_S:.0f} s")
                procs.check()
                msg = sub.recv(0.5)
                t_recv = clock.now()
                if msg is None:
                    continue
                if t_start is None:
                    if msg.topic.startswith("chunk/"):
                        t_start = time.monotonic() + SETTLE_S
                    continue
                if time.monotonic() < t_start:
                    continue
                kind, _, name = msg.topic.partition("/")
                if kind == "camera":
                    cams.setdefault(name, []).append(msg.t_cap)
                    ages.append((t_recv - msg.t_cap) * 1000)
                elif kind == "state":
                    states.setdefault(name, []).append(msg.t_cap)
                elif kind == "chunk":
                    chunks += 1
                elif kind == "health":
                    health.append(msg.data)
            lost = sub.lost
    return {
        "camera_fps": {c: rate(t) for c, t in sorted(cams.items())},
        "state_hz": {a: rate(t) for a, t in sorted(states.items())},
        "age_p50_ms": pct(ages, 50),
        "age_p99_ms": pct(ages, 99),
        "chunks": chunks,
        "lost": lost,
        "render_ms_p50": health[-1]["render_ms_p50"] if health else None,
        # How often the sim's physics fell behind the wall clock within the window.
        "physics_behind": (health[-1]["physics_behind_events"] - health[0]["physics_behind_events"])
        if health
        else None,
    }


# -- 4: the scripted expert through the bus ------------------------------------------------
def expert_run(task: str, episodes: int, logs: Path | None) -> dict:
    with stack(task, "expert_policy", logs) as procs:
        events = [topics.event("sim"), topics.event("episode"), topics.health("sim")]
        with Subscriber(procs.bus, events, mode="every") as sub:
            # A health report arriving proves our subscriptions (made in order, before it)
            # are live: no outcome can slip past.
            wait_for(
                lambda: (m := sub.recv(0.2)) and m.topic == topics.health("sim"),
                30,
                "our subscription",
                procs,
            )
            limit = EXPERT_EPISODE_S[task]
            procs.start(
                "control",
                "workers.control",
                f"--task={task}",
                f"--episodes={episodes}",
                f"--episode_s={limit}",
                "--seed=0",
            )
            outcomes: dict[int, dict] = {}  # episode -> the sim's verdict
            stopped: set[int] = set()  # episodes control has ended
            stalls: list[float] = []
            deadline = time.monotonic() + START_TIMEOUT_S + episodes * (limit + 5)
            while len(stopped) < episodes:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{task}: only {len(stopped)}/{episodes} episodes ended")
                procs.check("control")
                msg = sub.recv(1.0)
                if msg is None and procs.finished("control"):  # and all it said has arrived
                    raise RuntimeError(f"{task}: control ended after {len(stopped)} episodes")
                if msg is None:
                    continue
                episode = msg.data.get("episode")
                if msg.topic == topics.event("sim") and msg.data.get("phase") == "outcome":
                    outcomes.setdefault(episode, msg.data)
                elif msg.src == "control" and msg.data.get("phase") == "stop":
                    stopped.add(episode)
                    # Stalls: ticks control held (late frames, a slow reply) once it had acted.
                    stalls.append(msg.data.get("stats", {}).get("stall_ms_per_min", math.nan))
                    # The stop marker carries the outcome control saw; None: the episode ran
                    # out of time (the sim's "stopped by control" verdict follows it).
                    outcomes.setdefault(
                        episode,
                        msg.data.get("outcome")
                        or {"success": False, "reason": f"no outcome in {limit:g} s"},
                    )
    wins = sum(bool(outcomes.get(e, {}).get("success")) for e in stopped)
    times = [o["time_s"] for o in outcomes.values() if o.get("success") and "time_s" in o]
    failures = sorted({o.get("reason", "?") for o in outcomes.values() if not o.get("success")})
    low, high = wilson(wins, episodes)
    return {
        "n": episodes,
        "successes": wins,
        "rate": wins / episodes,
        "ci_low": low,
        "ci_high": high,
        "time_p50_s": pct(times, 50),
        "stall_p50": pct(stalls, 50),
        "failures": failures,
    }


def on_sigterm(*_: object) -> None:
    print("bench.sim: SIGTERM: stopping the workers", file=sys.stderr, flush=True)
    sys.exit(143)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument(
        "--episodes",
        type=int,
        default=None,
        help=f"expert episodes, every task (default {EPISODES})",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="measured seconds of the sim beside the policy, per task",
    )
    parser.add_argument(
        "--logs",
        type=Path,
        default=None,
        help="keep the workers' logs in this folder (default: discarded)",
    )
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    if unknown := set(tasks) - set(TASKS):
        parser.error(f"unknown task(s) {sorted(unknown)}: choose from {','.join(TASKS)}")
    # SIGTERM unwinds like Ctrl-C, so every `finally` stops the processes it started.
    signal.signal(signal.SIGTERM, on_sigterm)
    # Everything here competes for the CPU: say how busy the machine was besides.
    load_start = os.getloadavg()[0]

    errors: dict[str, str] = {}

    def attempt(what: str, fn: Callable[..., dict], *fn_args: object) -> dict | None:
        """One failed run (a worker died, a deadline passed) does not lose the others."""
        started = time.monotonic()
        try:
            result = fn(*fn_args)
            print(f"{what}: done in {time.monotonic() - started:.0f} s", flush=True)
            return result
        except RuntimeError as exc:
            errors[what] = str(exc).splitlines()[0]
            print(f"{what}: FAILED: {exc}", flush=True)
            return None

    # Each table is printed as soon as its runs are done: a long run cut short keeps them.
    phys = {t: physics_rtf(t) for t in tasks}
    rend = {t: render_rate(t) for t in tasks}
    print_in_process(tasks, phys, rend)
    sys.stdout.flush()
    live = {
        t: r for t in tasks if (r := attempt(f"{t} live", live_run, t, args.seconds, args.logs))
    }
    if live:
        print_live(live, args.seconds)
        sys.stdout.flush()
    expert = {
        t: r
        for t in tasks
        if (r := attempt(f"{t} expert", expert_run, t, args.episodes or EPISODES[t], args.logs))
    }
    if expert:
        print_expert(expert)
    load_end = os.getloadavg()[0]
    print(
        f"\nload average (1 min) {load_start:.2f} at the start, {load_end:.2f} at the end, "
        f"{os.cpu_count()} CPUs"
    )
    result = headline(TASKS, tasks, phys, rend, live, expert)
    emit(
        result
        | {
            "seconds": args.seconds,
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "cpus": os.cpu_count(),
            "errors": errors,
        }
    )


if __name__ == "__main__":
    main()

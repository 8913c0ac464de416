"""Control-loop benchmark: stalls and lateness against a policy of fixed latency.

    uv run python -m bench.control [--seconds 30] [--latencies 100,250,400]

A policy stand-in answers with 16-action chunks after exactly L ms; frames and states come at
30 Hz from a steady publisher. For each L the same episode runs with (a) this loop (requests
ahead of time, actions at t_obs + i*dt) and (b) the synchronous baseline the user had (a new
chunk only when the queue is empty, run from its first action). Measured by the loop itself
and reported in its episode-stop event: stall (ms per minute of ticks with no fresh action,
after the first action), action lateness p50 (publish time - intended time), tick jitter p99,
stale actions skipped. With one worker, no stall is possible only while L <= half a chunk
(267 ms); above it the bound is (2L - H*dt) / L of the time, which the loop itself prints.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import (
    emit,
    hub_process,
    ipc_bus,
    met,
    spawn,
    start_control,
    start_process,
    table,
    wait_for_workers,
)
from bus import BusConfig, Publisher, Subscriber
from core.action_plan import stall_bound_fraction

HORIZON = 16
FPS = 30.0


def steady_sensors(cfg: BusConfig, stop) -> None:
    """One 480x640 camera and one arm at 30 Hz, on a monotonic schedule."""
    pub = Publisher(cfg, "bench-sensors")
    image = np.zeros((480, 640, 3), np.uint8)
    state = np.zeros(6, np.float32)
    t0 = time.monotonic()
    k = 0
    while not stop.is_set():
        pub.publish("camera/front", {"image": image}, {"frame": k})
        pub.publish("state/arm", {"position": state})
        k += 1
        time.sleep(max(0.0, t0 + k / FPS - time.monotonic()))
    pub.close()


def run(cfg: BusConfig, latency_ms: int, schedule: str, seconds: float) -> dict:
    policy = start_process(
        cfg,
        "workers.stand_in_policy",
        "--task=lift",
        f"--latency={latency_ms / 1000}",
        f"--horizon={HORIZON}",
    )
    with Subscriber(cfg, ["event/episode", "event/control"], mode="every") as sub:
        try:
            # Wait for the worker so startup does not count against either loop.
            wait_for_workers(cfg, "policy/lift")
            control = start_control(cfg, seconds, f"--schedule={schedule}", f"--fps={FPS}")
            stats, too_slow = None, None
            while stats is None and (msg := sub.recv(seconds + 60)) is not None:
                if msg.topic == "event/control" and msg.data.get("kind") == "policy_too_slow":
                    too_slow = msg.data
                if msg.topic == "event/episode" and msg.data.get("phase") == "stop":
                    stats = msg.data["stats"]
            control.wait(60)
        finally:
            policy.terminate()
            policy.wait(30)
    if stats is None:
        raise RuntimeError(f"no episode stats for L={latency_ms} {schedule}")
    return {"stats": stats, "too_slow": too_slow}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="episode length per run")
    parser.add_argument("--latencies", default="100,250,400")
    args = parser.parse_args()
    latencies = [int(x) for x in args.latencies.split(",")]
    dt = 1 / FPS

    results: dict[tuple[int, str], dict] = {}
    with ipc_bus() as cfg, hub_process(cfg):
        stop = spawn().Event()
        sensors = spawn().Process(target=steady_sensors, args=(cfg, stop))
        sensors.start()
        try:
            for latency in latencies:
                for schedule in ("ahead", "sync"):
                    results[(latency, schedule)] = run(cfg, latency, schedule, args.seconds)
        finally:
            stop.set()
            sensors.join(10)

    rows = []
    for (latency, schedule), res in results.items():
        s = res["stats"]
        bound = stall_bound_fraction(latency / 1000, HORIZON, dt) * 60000
        rows.append(
            [
                latency,
                "this loop" if schedule == "ahead" else "sync baseline",
                s["stall_ms_per_min"],
                round(bound),
                s["lateness_p50_ms"],
                s["jitter_p99_ms"],
                s["skipped_actions"],
                s["chunk_latency_p50_ms"],
                "yes" if res["too_slow"] else "-",
            ]
        )
    table(
        f"control loop, {HORIZON}-action chunks at {FPS:g} Hz ({HORIZON / FPS * 1000:.0f} ms), "
        f"{args.seconds:g} s per run",
        [
            "L ms",
            "loop",
            "stall ms/min",
            "bound ms/min",
            "lateness p50 ms",
            "jitter p99 ms",
            "skipped",
            "chunk latency p50 ms",
            "'too slow' sent",
        ],
        rows,
    )
    for (latency, schedule), res in results.items():
        if res["too_slow"]:
            print(f"\nL={latency} {schedule}: {res['too_slow']['text']}")

    def stat(latency: int, schedule: str, key: str) -> float | None:
        res = results.get((latency, schedule))
        return None if res is None else res["stats"][key]

    jitter = max(r["stats"]["jitter_p99_ms"] for (_, s), r in results.items() if s == "ahead")
    slow = results.get((400, "ahead"), {}).get("too_slow")
    result = {
        "stall_ms_per_min_L100": stat(100, "ahead", "stall_ms_per_min"),
        "stall_ms_per_min_L250": stat(250, "ahead", "stall_ms_per_min"),
        "baseline_stall_ms_per_min_L250": stat(250, "sync", "stall_ms_per_min"),
        "baseline_lateness_p50_ms_L250": stat(250, "sync", "lateness_p50_ms"),
        "lateness_p50_ms_L250": stat(250, "ahead", "lateness_p50_ms"),
        "stall_ms_per_min_L400": stat(400, "ahead", "stall_ms_per_min"),
        "stall_bound_ms_per_min_L400": (
            slow["stall_bound_ms_per_min"]
            if slow
            else stall_bound_fraction(0.4, HORIZON, dt) * 60000
        ),
        "too_slow_published_L400": bool(slow),
        "tick_jitter_p99_ms": jitter,
        "skipped_L250": stat(250, "ahead", "skipped_actions"),
    }
    s400, b400 = result["stall_ms_per_min_L400"], result["stall_bound_ms_per_min_L400"]
    table(
        "targets",
        ["target", "met"],
        [
            [
                "no stall at L100 and L250",
                "yes"
                if not result["stall_ms_per_min_L100"] and not result["stall_ms_per_min_L250"]
                else "NO",
            ],
            [
                "lateness p50 <= one tick (33 ms) at L250",
                met(abs(result["lateness_p50_ms_L250"]) <= 1000 / FPS),
            ],
            ["L400: 'policy too slow' published", met(slow)],
            [
                "L400 stall within 10 % of the bound",
                met(s400 is not None and abs(s400 - b400) <= 0.1 * b400),
            ],
            ["tick_jitter_p99_ms <= 2", met(jitter <= 2)],
        ],
    )
    emit(result)


if __name__ == "__main__":
    main()

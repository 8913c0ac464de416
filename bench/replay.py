"""Replay benchmark: datasets/sort (three 480x640 cameras) played onto a real hub.

    uv run python -m bench.replay [--episodes 2] [--speeds 1,2,4,8]

For each speed: achieved fps per camera (from capture times seen by a subscriber), frame
interval jitter (p99 of |interval - period|), late frames. Then the decoder alone: steps per
second when nobody waits, and its CPU share at real time (target fps / decode fps). The
fastest speed held is the highest one whose every camera reached >= 97 % of its target rate.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

from bench.common import REPO, emit, hub_process, ipc_bus, met, pct, table
from bus import BusConfig, Subscriber
from drivers.replay import DatasetReplay

DATASET = REPO / "datasets" / "sort"


def play(cfg: BusConfig, speed: float, episodes: list[int]) -> dict:
    args = [f"--bus.{k}={v}" for k, v in cfg.endpoints().items()]
    with Subscriber(cfg, ["camera/", "event/episode"], mode="every") as sub:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.replay",
                "--task=sort",
                f"--speed={speed}",
                f"--episodes={episodes}".replace(" ", ""),
                "--loop=false",
                "--wait_for_listeners=30",
                *args,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        times: dict[str, list[list[float]]] = {}
        stops = 0
        while stops < len(episodes) and (msg := sub.recv(60)) is not None:
            if msg.topic == "event/episode":
                if msg.data["phase"] == "start":
                    for per_cam in times.values():
                        per_cam.append([])
                else:
                    stops += 1
                continue
            cam = times.setdefault(msg.topic, [[]])
            cam[-1].append(msg.t_cap)
        out, _ = proc.communicate(timeout=60)
    target = 30.0 * speed
    period_ms = 1000.0 / target
    rows, fps, jitter = {}, [], []
    for topic, runs in times.items():
        intervals = np.concatenate([np.diff(r) for r in runs if len(r) > 1]) * 1000
        span = sum(r[-1] - r[0] for r in runs if len(r) > 1)
        n = sum(len(r) - 1 for r in runs if len(r) > 1)
        achieved = n / span if span else 0.0
        dev = np.abs(intervals - period_ms)
        rows[topic] = (achieved, pct(dev, 50), pct(dev, 99), float(dev.max()))
        fps.append(achieved)
        jitter.append(pct(dev, 99))
    late = out.count("behind schedule")
    return {
        "speed": speed,
        "target": target,
        "per_camera": rows,
        "fps_min": min(fps),
        "jitter_p99_ms": max(jitter),
        "late_warnings": late,
    }


def decode_only(episodes: list[int]) -> tuple[float, float]:
    replay = DatasetReplay(DATASET, episodes=episodes)
    steps = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    for ep in episodes:
        for _ in replay.steps(ep):
            steps += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    replay.close()
    return steps / wall, cpu / steps  # steps/s, CPU seconds per step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=2, help="episodes per speed")
    parser.add_argument("--speeds", default="1,2,4,8")
    args = parser.parse_args()
    episodes = list(range(args.episodes))
    speeds = [float(s) for s in args.speeds.split(",")]

    results = []
    with ipc_bus() as cfg, hub_process(cfg):
        for speed in speeds:
            results.append(play(cfg, speed, episodes))
    steps_s, cpu_per_step = decode_only(episodes)

    table(
        "playback of datasets/sort (3 cameras 480x640) through the hub",
        ["speed", "camera", "target fps", "achieved fps", "|dt-T| p50 ms", "p99 ms", "max ms"],
        [
            [r["speed"], topic, r["target"], *vals]
            for r in results
            for topic, vals in sorted(r["per_camera"].items())
        ],
    )
    held = [r["speed"] for r in results if r["fps_min"] >= 0.97 * r["target"]]
    decode_share = 30.0 * cpu_per_step  # CPU-seconds of decoding per second at real time
    table(
        "decoder alone (no pacing, nobody waiting)",
        ["steps/s", "x real time", "CPU share at 30 fps"],
        [[steps_s, steps_s / 30.0, f"{100 * decode_share:.1f} % of one core"]],
    )
    base = results[0]
    result = {
        "fps_target": base["target"],
        "fps_achieved": base["fps_min"],
        "interval_p99_ms": base["jitter_p99_ms"],
        "max_speed_factor": max(held) if held else 0.0,
        "late_warnings_1x": base["late_warnings"],
        "decode_steps_per_s": steps_s,
        "decode_cpu_share": decode_share,
    }
    table(
        "targets",
        ["target", "met"],
        [
            ["holds 30 fps with three cameras", met(base["fps_min"] >= 0.97 * 30)],
            ["interval_p99_ms <= 5", met(base["jitter_p99_ms"] <= 5)],
        ],
    )
    emit(result)


if __name__ == "__main__":
    main()

"""The policy worker's torch threads on a CPU it shares with the rest of the runtime.

    uv run python -m bench.policy_threads [--calls 20] [--checkpoint PATH]

A chunk of the stack checkpoint (three 96x128 cameras, 10 DDIM steps) on the CPU, in this
process, with torch's own thread count (one per physical core) and with the policy worker's
default (all cores but one), first alone, then beside one process that keeps a core busy (what
the simulator, the camera drivers and the control loop do to a 2-core machine). Per setting:
chunk latency p50 / p90 and the CPU time a chunk costs (threads waiting for each other spin, so
CPU above latency is time taken from the other processes). The closed-loop effect (holds,
stall) is in docs/workers.md. Last line JSON: <setting>_p50_ms, <setting>_cpu_ms for each
setting, and busy_latency_ratio (torch's default over the worker's, beside the busy process).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from bench.common import REPO, emit, pct, table
from drivers.policy import PolicyRunner, set_cpu_threads
from workers.tasks import checkpoint_camera_sizes, get_task

BUSY = "while True: pass"


def chunks(runner: PolicyRunner, observation: tuple[dict, dict], calls: int) -> dict:
    runner.infer(*observation)  # the first call after a thread change sets up its pool
    latencies = []
    cpu0 = time.process_time()
    for _ in range(calls):
        t0 = time.perf_counter()
        runner.infer(*observation)
        latencies.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / calls
    return {
        "p50_ms": 1000 * pct(latencies, 50),
        "p90_ms": 1000 * pct(latencies, 90),
        "cpu_ms": 1000 * cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument(
        "--checkpoint", type=Path, default=REPO / "checkpoints/stack_sim/checkpoint-best"
    )
    args = parser.parse_args()
    task = get_task("stack")
    sizes = checkpoint_camera_sizes(args.checkpoint)
    runner = PolicyRunner(args.checkpoint, task.arms, device="cpu", noise_scale=0.0)
    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for c, hw in sizes.items()}
    states = {a: np.zeros(6, np.float32) for a in task.arms}
    cores = psutil.cpu_count(logical=False) or 1
    settings = {"torch_default": cores}
    settings["worker_default"], _ = set_cpu_threads(0)
    result: dict = {"cores": len(psutil.Process().cpu_affinity()), "physical_cores": cores}
    rows = []
    for busy in (0, 1):
        spinners = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
        try:
            for name, threads in settings.items():
                torch.set_num_threads(threads)
                r = chunks(runner, (images, states), args.calls)
                key = f"{name}_busy{busy}"
                result.update({f"{key}_p50_ms": r["p50_ms"], f"{key}_cpu_ms": r["cpu_ms"]})
                rows.append([name, threads, busy, r["p50_ms"], r["p90_ms"], r["cpu_ms"]])
        finally:
            for p in spinners:
                p.kill()
                p.wait()
    table(
        f"stack checkpoint, one chunk on the CPU, {args.calls} calls per setting",
        ["threads", "n", "busy processes", "p50 ms", "p90 ms", "CPU ms / chunk"],
        rows,
    )
    result["busy_latency_ratio"] = (
        result["torch_default_busy1_p50_ms"] / result["worker_default_busy1_p50_ms"]
    )
    emit(result)


if __name__ == "__main__":
    main()

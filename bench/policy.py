"""Policy benchmark: shipped checkpoints through the hub, a full-size Diffusion Policy against
lerobot's stock path, and a leak check.

    uv run python -m bench.policy [--calls 30] [--full-runs 4] [--leak-runs 1000]

1. Each shipped checkpoint (checkpoints/<task>_real/checkpoint-best) served by the real policy
   worker process: chunk latency end to end through the hub (client side) and inside the
   worker (preprocess + inference + postprocess), on observations from datasets/<task>; the
   worker's peak RSS (and CUDA memory when a GPU is used).
2. A full-size Diffusion Policy (lerobot 0.6.1's default architecture, random weights, one
   480x640 camera, 10 DDIM steps): the worker's inference path vs lerobot's stock
   `select_action` on the same weights and inputs, outputs checked equal for the same noise.
3. Memory growth over `--leak-runs` consecutive inferences of the lift checkpoint.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import REPO, emit, hub_process, ipc_bus, met, pct, rss_mb, table
from bus import BusConfig, ServiceClient, Subscriber
from drivers.policy import STATE_KEY, PolicyRunner
from drivers.random_checkpoint import save_random_checkpoint
from drivers.replay import DatasetReplay
from workers.tasks import TASKS

EQUAL_DEG = 360 / 4096 / 10


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def observations(task, n: int) -> list[dict[str, np.ndarray]]:
    replay = DatasetReplay(task.dataset, episodes=[0])
    out = []
    for step in replay.steps(0):
        arrays = {f"image.{c}": img.copy() for c, img in step.images.items()}
        arrays.update({f"state.{a}": s.copy() for a, s in step.states.items()})
        out.append(arrays)
        if len(out) == n:
            break
    replay.close()
    return out


def shipped(cfg: BusConfig, task, calls: int) -> dict:
    args = [f"--bus.{k}={v}" for k, v in cfg.endpoints().items()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.policy", f"--task={task.name}", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    obs = observations(task, calls)
    e2e, inside = [], []
    health = None
    try:
        with (
            ServiceClient(cfg, "bench") as client,
            Subscriber(cfg, [f"health/policy-{task.name}"]) as sub,
        ):
            deadline = time.monotonic() + 300
            while not client.hub_status().get("workers", {}).get(f"policy/{task.name}"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"policy worker for {task.name} did not start:\n"
                        + (proc.stdout.read() if proc.stdout else "")
                    )
                time.sleep(0.2)
            for arrays in obs:
                t = time.perf_counter()
                reply = client.call(f"policy/{task.name}", arrays, {"t_obs": 0.0}, timeout=60)
                e2e.append((time.perf_counter() - t) * 1000)
                tm = reply.data["timings"]
                inside.append((tm["preprocess"] + tm["inference"] + tm["postprocess"]) * 1000)
                assert reply.arrays["actions"].shape[1] == task.action_dim
            msg = sub.latest(2.0).get(f"health/policy-{task.name}")
            health = msg.data if msg else {}
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "e2e": e2e,
        "inside": inside,
        "peak_rss_mb": rss,
        "cuda_peak_mb": (health or {}).get("cuda_peak_mb"),
        "device": (health or {}).get("device", "?"),
    }


def full_size_dp(runs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = save_random_checkpoint(
            Path(tmp) / "full_dp", "diffusion", {"front": (480, 640)}, 6, 6
        )  # lerobot's defaults: horizon 64, UNet 512/1024/2048
        fast = PolicyRunner(path, arms=["arm"], num_inference_steps=10, scheduler="DDIM")
        stock = PolicyRunner(
            path, arms=["arm"], num_inference_steps=10, scheduler="DDIM", fast_unet=False
        )
    params = sum(p.numel() for p in fast.policy.parameters()) / 1e6
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    state = np.linspace(-10, 10, 6).astype(np.float32)
    raw = {
        "observation.images.front": torch.from_numpy(image).permute(2, 0, 1).float() / 255,
        STATE_KEY: torch.from_numpy(state),
    }
    horizon = fast.cfg.horizon

    def stock_chunk(noise: torch.Tensor) -> tuple[float, np.ndarray]:
        # lerobot's own deployment path: preprocess, select_action (which predicts a chunk
        # when its queue is empty and returns the first action), then the rest of the queue.
        t = time.perf_counter()
        stock.policy.reset()
        with torch.no_grad():
            batch = stock.preprocessor(dict(raw))
            first = stock.policy.select_action(batch, noise=noise)
            rest = list(stock.policy._queues["action"])
            chunk = stock.postprocessor(torch.stack([first, *rest], dim=1))
        return time.perf_counter() - t, chunk[0].numpy()

    def fast_chunk(noise: torch.Tensor) -> tuple[float, np.ndarray]:
        t = time.perf_counter()
        chunk = fast.infer({"front": image}, {"arm": state}, noise=noise)
        return time.perf_counter() - t, chunk.actions

    gen = torch.Generator().manual_seed(0)
    stock_s, fast_s, diffs = [], [], []
    fast_chunk(torch.randn(1, horizon, 6, generator=gen))  # warm-up both
    stock_chunk(torch.randn(1, horizon, 6, generator=gen))
    for _ in range(runs):
        noise = torch.randn(1, horizon, 6, generator=gen)
        ts, a = stock_chunk(noise.clone())
        tf, b = fast_chunk(noise.clone())
        stock_s.append(ts)
        fast_s.append(tf)
        diffs.append(float(np.abs(a - b).max()))
    # Equal = within a tenth of a servo step (STS3215: 360/4096 = 0.088 degrees): the two paths
    # differ only by float rounding in the UNet's convolutions, over 10 denoising steps.
    return {
        "params_m": params,
        "stock_s": stock_s,
        "fast_s": fast_s,
        "max_diff": max(diffs),
        "equal": bool(max(diffs) <= EQUAL_DEG),
    }


def leak_check(runs: int) -> dict:
    task = TASKS["lift"]
    runner = PolicyRunner(task.checkpoint, arms=list(task.arms))
    obs = observations(task, 50)
    images = [{"front": o["image.front"]} for o in obs]
    states = [{"arm": o["state.arm"]} for o in obs]
    warm = min(100, runs // 5)
    for i in range(warm):
        runner.infer(images[i % 50], states[i % 50])
    before = rss_mb()
    t = time.perf_counter()
    for i in range(runs):
        runner.infer(images[i % 50], states[i % 50])
    after = rss_mb()
    return {
        "runs": runs,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "growth_pct": 100 * (after - before) / before,
        "per_inference_ms": (time.perf_counter() - t) / runs * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=30, help="requests per shipped checkpoint")
    parser.add_argument("--full-runs", type=int, default=4, help="timed full-size DP chunks")
    parser.add_argument("--leak-runs", type=int, default=1000)
    parser.add_argument("--tasks", default=",".join(TASKS), help="shipped checkpoints to time")
    args = parser.parse_args()

    per_task = {}
    with ipc_bus() as cfg, hub_process(cfg):
        for name in args.tasks.split(","):
            per_task[name] = shipped(cfg, TASKS[name], args.calls)
    table(
        "shipped checkpoints, served by the policy worker (ms)",
        [
            "task",
            "device",
            "e2e p50",
            "e2e p99",
            "in worker p50",
            "in worker p99",
            "peak RSS MB",
            "CUDA peak MB",
        ],
        [
            [
                name,
                r["device"],
                pct(r["e2e"], 50),
                pct(r["e2e"], 99),
                pct(r["inside"], 50),
                pct(r["inside"], 99),
                r["peak_rss_mb"],
                r["cuda_peak_mb"] or "-",
            ]
            for name, r in per_task.items()
        ],
    )

    full = full_size_dp(args.full_runs)
    fast_p50, stock_p50 = pct(full["fast_s"], 50), pct(full["stock_s"], 50)
    table(
        f"full-size Diffusion Policy ({full['params_m']:.0f} M parameters, one 480x640 "
        "camera, 10 DDIM steps), seconds per chunk",
        ["path", "p50", "min", "max"],
        [
            ["lerobot stock select_action", stock_p50, min(full["stock_s"]), max(full["stock_s"])],
            [
                "worker path (native conv1d UNet)",
                fast_p50,
                min(full["fast_s"]),
                max(full["fast_s"]),
            ],
        ],
    )
    print(
        f"outputs for the same noise: max |difference| {full['max_diff']:.2e} degrees "
        f"({'equal' if full['equal'] else 'DIFFERENT'}: threshold {EQUAL_DEG:.4f}, a tenth of "
        "a servo step)"
    )

    leak = leak_check(args.leak_runs)
    table(
        "leak check: lift checkpoint, consecutive inferences in one process",
        ["inferences", "RSS before MB", "RSS after MB", "growth %", "ms each"],
        [
            [
                leak["runs"],
                leak["rss_before_mb"],
                leak["rss_after_mb"],
                leak["growth_pct"],
                leak["per_inference_ms"],
            ]
        ],
    )

    result = {f"{name}_p50_ms": pct(r["e2e"], 50) for name, r in per_task.items()}
    result.update({f"{name}_p99_ms": pct(r["e2e"], 99) for name, r in per_task.items()})
    result.update({f"{name}_worker_p50_ms": pct(r["inside"], 50) for name, r in per_task.items()})
    result.update(
        {
            "peak_rss_mb": max(r["peak_rss_mb"] for r in per_task.values()),
            "full_dp_p50_s": fast_p50,
            "stock_full_dp_p50_s": stock_p50,
            "speedup_vs_stock": stock_p50 / fast_p50,
            "outputs_equal": full["equal"],
            "outputs_max_diff_deg": full["max_diff"],
            "rss_growth_pct": leak["growth_pct"],
        }
    )
    table(
        "targets",
        ["target", "met"],
        [
            [
                "every shipped checkpoint p50 <= 2 s",
                met(all(result[f"{n}_p50_ms"] <= 2000 for n in per_task)),
            ],
            ["speedup_vs_stock >= 1.5", met(result["speedup_vs_stock"] >= 1.5)],
            ["rss_growth_pct <= 1", met(result["rss_growth_pct"] <= 1)],
        ],
    )
    emit(result)


if __name__ == "__main__":
    main()

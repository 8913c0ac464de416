"""The policy worker: serves `policy/<task>` from a LeRobot checkpoint.

    uv run python -m workers.policy --task=lift [--checkpoint=PATH] [--device=auto|cpu|cuda]
        [--num_inference_steps=10] [--scheduler=DDIM] [--noise_scale=0] [--threads=0] [--bus.*]

Request (arrays): `image.<camera>` uint8 (H, W, 3) or a short history (n, H, W, 3), oldest
first; `state.<arm>` float32 (6,) or (n, 6). data: `t_obs` (bus clock), optional `task`.
Optional committed prefix (diffusion only, docs/seams.md): arrays `prefix` float32
(n, action_dim) in robot units; data `prefix_start` (the chunk index of its first action) and
`prefix_committed` (how many of them are certain to run; the rest are weighted down).
`data: {"describe": true}` returns what the checkpoint expects instead of a chunk.
Reply: arrays `actions` float32 (horizon, action_dim) in robot units; data `normalized_range`,
`timings` (queue, preprocess, inference, postprocess; seconds), `t_obs`, `arms`,
`accepts_prefix` (whether this worker can inpaint).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from bus import BusConfig, Message, Publisher, Reply, RequestError, ServiceWorker
from bus.clock import now
from bus.health import HealthReporter
from drivers.inpaint import Prefix, PrefixError
from drivers.policy import ObservationError, PolicyLoadError, PolicyRunner, set_cpu_threads
from workers import lifecycle
from workers.tasks import Task, get_task, service_name


@dataclass
class PolicyWorkerConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    task: str = "lift"
    # A lerobot `pretrained_model` folder; empty = checkpoints/<task>_real/checkpoint-best.
    checkpoint: str = ""
    # auto = cuda when visible, else cpu.
    device: str = "auto"
    # Diffusion only: sampling steps and scheduler at inference (DDIM with ~10 steps is the
    # usual deployment choice); 0 / "" keep what the checkpoint says.
    num_inference_steps: int = 10
    scheduler: str = "DDIM"
    # Diffusion only: the scale of the noise sampling starts from, in [0, 1] (its temperature).
    # 0 (DDIM from the mean: one chunk per observation) stacked and lifted more often in
    # closed loop than lerobot's 1 (a fresh draw each chunk); docs/closed_loop.md.
    noise_scale: float = 0.0
    # Bus camera name -> checkpoint feature, e.g. {"top": "observation.images.front"};
    # empty = the checkpoint's own names.
    cameras: dict[str, str] = field(default_factory=dict)
    # Order arms are concatenated in; empty = the task's (lift: arm; sort/stack: left, right).
    arms: list[str] = field(default_factory=list)
    warmup_runs: int = 2
    # torch's CPU threads; 0 = all cores but one: the simulator or camera drivers and the
    # control loop run on the same cores, and torch's threads spin-wait against them
    # (drivers/policy.py set_cpu_threads, docs/workers.md).
    threads: int = 0
    # The process's name on the bus (health, logs); empty = policy-<task>. Several workers of
    # one task need different names (supervisord gives policy-2, policy-3, ...).
    name: str = ""


class PolicyService:
    """Turns requests into observations for the runner, and chunks into replies."""

    def __init__(self, runner: PolicyRunner, task: str, log):
        self.runner = runner
        self.task = task
        self.log = log
        self.latencies: deque[float] = deque(maxlen=200)
        self.served = 0
        self.errors = 0

    def handle(self, request: Message) -> Reply:
        started = now()
        if request.data.get("describe"):
            return Reply(data={"task": self.task, **self.runner.describe()})
        asked = request.data.get("task")
        if asked and asked != self.task:
            raise RequestError(f"this worker serves task {self.task!r}, not {asked!r}")
        images = {
            k[len("image.") :]: v for k, v in request.arrays.items() if k.startswith("image.")
        }
        states = {
            k[len("state.") :]: v for k, v in request.arrays.items() if k.startswith("state.")
        }
        try:
            chunk = self.runner.infer(images, states, prefix=request_prefix(request))
        except (ObservationError, PrefixError) as exc:
            self.errors += 1
            self.log.warning("rejected a request from %s: %s", request.src, exc)
            raise RequestError(str(exc)) from None
        timings = {"queue": max(0.0, started - request.t_send), **chunk.timings}
        self.latencies.append(sum(chunk.timings.values()))
        self.served += 1
        return Reply(
            {"actions": chunk.actions},
            {
                "normalized_range": list(chunk.normalized_range),
                "timings": timings,
                "t_obs": request.data.get("t_obs", request.t_cap),
                "arms": self.runner.arms,
                "accepts_prefix": self.runner.accepts_prefix,
            },
        )

    def health(self) -> dict:
        lat = np.asarray(self.latencies) * 1000 if self.latencies else np.zeros(1)
        report = {
            "task": self.task,
            "served": self.served,
            "errors": self.errors,
            "latency_p50_ms": float(np.percentile(lat, 50)),
            "latency_p99_ms": float(np.percentile(lat, 99)),
            "device": self.runner.device,
        }
        if self.runner.device.startswith("cuda"):
            import torch

            report["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return report


def request_prefix(request: Message) -> Prefix | None:
    """The committed prefix a request carries, if any (checked by the inpainter)."""
    actions = request.arrays.get("prefix")
    if actions is None:
        return None
    try:
        start = int(request.data.get("prefix_start", 0))
        committed = request.data.get("prefix_committed")
        committed = None if committed is None else int(committed)
    except (TypeError, ValueError):
        raise PrefixError("prefix_start and prefix_committed must be integers") from None
    return Prefix(np.asarray(actions), start, committed)


def main() -> None:
    cfg = lifecycle.parse_or_exit(PolicyWorkerConfig, "policy")
    try:
        task = get_task(cfg.task)
        _, threads = set_cpu_threads(cfg.threads)
    except ValueError as exc:
        lifecycle.exit_bad_config("policy", exc)
    with lifecycle.Process(cfg.name or f"policy-{cfg.task}") as proc:
        serve(cfg, task, proc, threads)


def serve(cfg: PolicyWorkerConfig, task: Task, proc: lifecycle.Process, threads: str) -> None:
    log = proc.log
    try:
        checkpoint = cfg.checkpoint or str(task.checkpoint)
        log.info("loading %s for task %s", checkpoint, task.name)
        runner = PolicyRunner(
            checkpoint,
            arms=cfg.arms or task.arms,
            device=cfg.device,
            num_inference_steps=cfg.num_inference_steps or None,
            scheduler=cfg.scheduler or None,
            cameras=cfg.cameras or None,
            noise_scale=cfg.noise_scale,
        )
        if runner.action_dim != task.action_dim and not cfg.arms:
            raise PolicyLoadError(
                f"Action dim mismatch: task {task.name} drives {len(task.arms)} arm(s) "
                f"({task.action_dim} joints) but {checkpoint} outputs {runner.action_dim} "
                "(lift is 6, sort and stack are 12): wrong checkpoint for this task?"
            )
    except (PolicyLoadError, ValueError) as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    log.info("device %s (%s), %s", runner.device, runner.device_reason, threads)
    if runner.native_conv1d:
        log.info("diffusion UNet runs on PyTorch's native conv1d (faster than oneDNN here)")
    log.info("warm-up: %d inference(s)", cfg.warmup_runs)
    warm = runner.warm_up(cfg.warmup_runs)

    service = PolicyService(runner, task.name, log)
    publisher = proc.closing(Publisher(cfg.bus, proc.name))
    proc.health = health = HealthReporter(publisher, proc.name, service.health)
    worker = ServiceWorker(cfg.bus, service_name(task.name), service.handle, source=proc.name)
    extra = f", {runner.scheduler}" if runner.scheduler else ""
    if runner.noise_scale != 1.0:
        extra += f", noise scale {runner.noise_scale:g}"
    log.info(
        "ready: task %s, %s, %s, horizon %d, action_dim %d%s (warm-up inference %.2f s), "
        "serving %s",
        task.name,
        runner.type,
        runner.device,
        runner.horizon,
        runner.action_dim,
        extra,
        warm,
        service_name(task.name),
    )

    serving = proc.serve(worker)
    while not proc.stop.wait(0.2):
        health.tick()
        if not serving.is_alive():
            log.error("service loop ended unexpectedly")
            break
    proc.last_words = f"stopped after {service.served} chunks"


if __name__ == "__main__":
    main()

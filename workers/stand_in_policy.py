"""A policy stand-in: serves `policy/<task>` with a chosen latency and no model.

    uv run python -m workers.stand_in_policy --task=lift --latency=0.25 [--horizon=16]

Answers each observation with a chunk that starts at the observed state and moves each joint
by `step` per action: valid actions, with a known shape, after exactly the latency asked for.
`--hold_first=true` is "hold still" instead: every action is the pose first observed after the
episode began (`event/episode`), so an arm does not follow its own sag under gravity down onto
the table, as "every action = the observed state" would.
A committed prefix in the request (control's --join=inpaint) is copied into the chunk where it
belongs, as an inpainting policy would keep it.
For testing the control loop and the stack without a checkpoint, and for bench.control.
Its behaviour can be changed while it runs by publishing `event/stand_in`
{latency: s, fail: "message" | null} (tests use this to make the policy slow or failing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from bus import BusConfig, Message, Reply, RequestError, ServiceWorker, Subscriber, topics
from workers import lifecycle
from workers.tasks import get_task, service_name


@dataclass
class StandInConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    task: str = "lift"
    latency: float = 0.1
    horizon: int = 16
    step: float = 0.1  # joint change per action (degrees)
    hold_first: bool = False  # every action = the episode's first observed pose
    # The process's name on the bus (its replies' source: tests tell workers apart).
    name: str = "stand-in"


class StandInPolicy:
    def __init__(self, cfg: StandInConfig):
        self.cfg = cfg
        self.task = get_task(cfg.task)
        self.latency = cfg.latency
        self.fail: str | None = None
        self.episode_start = 0.0  # bus time of the last episode start marker
        self.held: np.ndarray | None = None  # --hold_first: the pose every action holds

    def new_episode(self, t_start: float) -> None:
        self.episode_start, self.held = t_start, None

    def handle(self, request: Message) -> Reply:
        if request.data.get("describe"):
            return Reply(
                data={
                    "task": self.task.name,
                    "type": "stand-in",
                    "horizon": self.cfg.horizon,
                    "action_dim": self.task.action_dim,
                    "arms": list(self.task.arms),
                    "n_obs_steps": 1,
                    "cameras": {c: None for c in self.task.cameras},
                }
            )
        started = time.perf_counter()
        if self.fail:
            raise RequestError(self.fail)
        states = [
            np.asarray(request.arrays[f"state.{arm}"], np.float32)
            for arm in self.task.arms
            if f"state.{arm}" in request.arrays
        ]
        if len(states) != len(self.task.arms):
            raise RequestError(f"missing state for arms {list(self.task.arms)}")
        state = np.concatenate([s.reshape(-1, s.shape[-1])[-1] for s in states])
        if self.cfg.hold_first:
            if self.held is None and request.data.get("t_obs", request.t_cap) >= self.episode_start:
                self.held = state  # not before: a request can overtake the start marker
            state = self.held if self.held is not None else state
        ramp = np.arange(self.cfg.horizon, dtype=np.float32)[:, None] * self.cfg.step
        actions = state[None, :] + ramp
        prefix = request.arrays.get("prefix")
        if prefix is not None:
            start = int(request.data.get("prefix_start", 0))
            if prefix.ndim != 2 or prefix.shape[1] != actions.shape[1]:
                raise RequestError(f"prefix has shape {tuple(prefix.shape)}")
            n = max(0, min(len(prefix), self.cfg.horizon - start))
            actions[start : start + n] = prefix[:n]
        time.sleep(max(0.0, self.latency - (time.perf_counter() - started)))
        return Reply(
            {"actions": actions.astype(np.float32)},
            {
                "t_obs": request.data.get("t_obs", request.t_cap),
                "normalized_range": [-1.0, 1.0],
                "arms": list(self.task.arms),
                "accepts_prefix": True,
                "timings": {"inference": self.latency},
            },
        )


def main() -> None:
    cfg = lifecycle.parse_or_exit(StandInConfig, "stand_in_policy")
    try:
        policy = StandInPolicy(cfg)
    except ValueError as exc:
        lifecycle.exit_bad_config("stand_in_policy", exc)
    with lifecycle.Process(cfg.name) as proc:
        control = proc.closing(
            Subscriber(cfg.bus, [topics.event("stand_in"), topics.event("episode")], mode="every")
        )
        proc.serve(ServiceWorker(cfg.bus, service_name(cfg.task), policy.handle, source=cfg.name))
        proc.log.info(
            "ready: stand-in for task %s, latency %.3f s, horizon %d",
            cfg.task,
            cfg.latency,
            cfg.horizon,
        )
        while not proc.stop.is_set():
            msg = control.recv(0.2)
            if msg is not None and msg.topic == topics.event("episode"):
                if msg.data.get("phase") == "start":
                    policy.new_episode(msg.t_cap)
            elif msg is not None:
                policy.latency = float(msg.data.get("latency", policy.latency))
                policy.fail = msg.data.get("fail")
                proc.log.info("now: latency %.3f s, fail %r", policy.latency, policy.fail)


if __name__ == "__main__":
    main()

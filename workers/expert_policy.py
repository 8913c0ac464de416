"""The scripted expert as a policy: serves `policy/<task>` from the simulator's ground truth.

    uv run python -m workers.expert_policy --task=lift [--horizon=16] [--fps=30]

At each `event/sim` start it plans the episode from the initial cube poses
(drivers.sim.expert); each request is answered with the plan's goals at the observation's
execution times `t_obs + i / fps`, in the same (horizon, action_dim) chunk a checkpoint
returns. Everything downstream (control's scheduling and holds, the safety guard, the
recorder) runs exactly as it does for a learned policy; this is the demonstrator the
recordings for training come from, and the upper bound of the closed-loop evaluation.
Before the first plan (or for an episode it has no plan for) it answers "stay where you are".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import draccus
import numpy as np

from bus import BusConfig, Message, Reply, RequestError, ServiceWorker, Subscriber, topics
from drivers.sim.expert import ExpertPlan, plan_episode
from drivers.sim.scene import build_model
from workers import lifecycle
from workers.tasks import get_task, service_name


@dataclass
class ExpertConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    task: str = "lift"
    horizon: int = 16
    fps: float = 30.0  # the control loop's rate: actions are 1/fps apart


class ExpertPolicy:
    def __init__(self, cfg: ExpertConfig, log):
        self.cfg = cfg
        self.log = log
        self.task = get_task(cfg.task)
        self.model = build_model(cfg.task)
        self.plan: ExpertPlan | None = None
        self.t_start = 0.0  # bus clock of the plan's reset
        self.episode = None
        self.no_plan = 0
        self._lock = threading.Lock()

    def on_sim(self, msg: Message) -> None:
        if msg.data.get("phase") != "start" or msg.data.get("task") != self.task.name:
            return
        try:
            plan = plan_episode(self.task.name, msg.data["cubes"], self.cfg.fps, self.model)
        except (KeyError, TypeError, ValueError) as exc:
            self.log.error("cannot plan episode %s: %s", msg.data.get("episode"), exc)
            return
        with self._lock:
            self.plan, self.t_start, self.episode = plan, msg.t_cap, msg.data.get("episode")
        self.log.info(
            "episode %s (seed %s): planned %.1f s",
            self.episode,
            msg.data.get("seed"),
            plan.duration_s,
        )

    def handle(self, request: Message) -> Reply:
        if request.data.get("describe"):
            return Reply(
                data={
                    "task": self.task.name,
                    "type": "scripted expert",
                    "horizon": self.cfg.horizon,
                    "action_dim": self.task.action_dim,
                    "arms": list(self.task.arms),
                    "n_obs_steps": 1,
                    "cameras": {c: None for c in self.task.cameras},
                }
            )
        t_obs = float(request.data.get("t_obs", request.t_cap))
        with self._lock:
            plan, t_start = self.plan, self.t_start
        if plan is None or t_obs < t_start:
            self.no_plan += 1
            actions = np.repeat(self._state(request)[None, :], self.cfg.horizon, axis=0)
        else:
            times = t_obs - t_start + np.arange(self.cfg.horizon) / self.cfg.fps
            rows = [plan.goals_at(t) for t in times]
            actions = np.array(
                [np.concatenate([row[arm] for arm in self.task.arms]) for row in rows],
                dtype=np.float32,
            )
        return Reply(
            {"actions": actions.astype(np.float32)},
            {"t_obs": t_obs, "arms": list(self.task.arms), "expert_plan": plan is not None},
        )

    def _state(self, request: Message) -> np.ndarray:
        parts = []
        for arm in self.task.arms:
            state = request.arrays.get(f"state.{arm}")
            if state is None or np.asarray(state).shape[-1] != 6:
                raise RequestError(f"expert: no 6-joint state for arm {arm!r} in the request")
            parts.append(np.asarray(state, np.float32).reshape(-1, 6)[-1])
        return np.concatenate(parts)


def main() -> None:
    cfg = draccus.parse(ExpertConfig)
    log, stop = lifecycle.start(f"expert-{cfg.task}")
    try:
        policy = ExpertPolicy(cfg, log)
    except ValueError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    events = Subscriber(cfg.bus, [topics.event("sim")], mode="every")
    worker = ServiceWorker(cfg.bus, service_name(cfg.task), policy.handle, source="expert")
    serving = threading.Thread(target=worker.run, args=(stop,), name="service")
    serving.start()
    log.info("ready: scripted expert for %s, horizon %d at %g Hz", cfg.task, cfg.horizon, cfg.fps)
    while not stop.is_set():
        msg = events.recv(0.2)
        if msg is not None:
            policy.on_sim(msg)
    serving.join(timeout=10)
    events.close()
    lifecycle.finish(log, f"stopped ({policy.no_plan} requests answered before a plan)")


if __name__ == "__main__":
    main()

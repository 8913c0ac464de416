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

import numpy as np

from bus import BusConfig, Message, Reply, RequestError, ServiceWorker, Subscriber, clock, topics
from drivers.sim.expert import PlanFollower, plan_episode
from drivers.sim.scene import build_model
from workers import lifecycle
from workers.tasks import get_task, service_name


@dataclass
class ExpertConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    task: str = "lift"
    horizon: int = 16
    fps: float = 30.0  # the control loop's rate: actions are 1/fps apart
    name: str = "expert"  # the process's name on the bus


class ExpertPolicy:
    def __init__(self, cfg: ExpertConfig, log):
        self.cfg = cfg
        self.log = log
        self.task = get_task(cfg.task)
        self.model = build_model(cfg.task)
        self.follower: PlanFollower | None = None  # the episode's plan and its clock
        self.episode = None
        self.no_plan = 0
        self._lock = threading.Lock()
        self.clock = clock.ClockSteps()

    def on_sim(self, msg: Message) -> None:
        if msg.data.get("phase") != "start" or msg.data.get("task") != self.task.name:
            return
        with self._lock:  # the last episode's plan must not answer for this one
            self._report_lag()
            self.follower, self.episode = None, msg.data.get("episode")
        try:
            plan = plan_episode(self.task.name, msg.data["cubes"], self.cfg.fps, self.model)
        except (KeyError, TypeError, ValueError) as exc:
            self.log.error("cannot plan episode %s: %s", msg.data.get("episode"), exc)
            return
        # The plan's clock starts when the plan exists, not at the reset: planning a two-arm
        # episode takes 0.4-0.9 s (more on a loaded machine), and a clock started at the reset
        # would open with the arm that far behind, the gripper closing before the arm is down at
        # the cube. Until then every request is answered "stay where you are".
        started = max(msg.t_cap, clock.now())
        with self._lock:
            self.follower = PlanFollower(plan, started)
        self.log.info(
            "episode %s (seed %s): planned %.1f s in %.2f s",
            self.episode,
            msg.data.get("seed"),
            plan.duration_s,
            started - msg.t_cap,
        )

    def _report_lag(self) -> None:
        if self.follower is not None and self.follower.setbacks:
            self.log.info(
                "episode %s: the arms lagged; plan set back %d times (%.2f s)",
                self.episode,
                self.follower.setbacks,
                self.follower.offset,
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
        state = self._state(request)
        step = self.clock.check()
        with self._lock:
            follower = self.follower
            if step and follower is not None:
                # The plan runs on the simulator's time, which a paused machine paused too.
                follower.t_start += step
                self.log.warning("%s; plan clock moved with it", clock.describe_step(step))
        if follower is None or t_obs < follower.t_start:
            self.no_plan += 1
            actions = np.repeat(
                np.concatenate([state[a] for a in self.task.arms])[None, :],
                self.cfg.horizon,
                axis=0,
            )
        else:
            follower.observe(t_obs, state)
            t_plan = follower.plan_time(t_obs)
            rows = [
                follower.plan.goals_at(t_plan + i / self.cfg.fps) for i in range(self.cfg.horizon)
            ]
            actions = np.array(
                [np.concatenate([row[arm] for arm in self.task.arms]) for row in rows]
            )
        return Reply(
            {"actions": actions.astype(np.float32)},
            {"t_obs": t_obs, "arms": list(self.task.arms), "expert_plan": follower is not None},
        )

    def _state(self, request: Message) -> dict[str, np.ndarray]:
        parts = {}
        for arm in self.task.arms:
            state = request.arrays.get(f"state.{arm}")
            if state is None or np.asarray(state).shape[-1] != 6:
                raise RequestError(f"expert: no 6-joint state for arm {arm!r} in the request")
            parts[arm] = np.asarray(state, np.float32).reshape(-1, 6)[-1]
        return parts


def main() -> None:
    cfg = lifecycle.parse_or_exit(ExpertConfig, "expert_policy")
    try:
        get_task(cfg.task)
    except ValueError as exc:
        lifecycle.exit_bad_config("expert_policy", exc)
    with lifecycle.Process(cfg.name) as proc:
        policy = ExpertPolicy(cfg, proc.log)
        events = proc.closing(Subscriber(cfg.bus, [topics.event("sim")], mode="every"))
        proc.serve(ServiceWorker(cfg.bus, service_name(cfg.task), policy.handle, source=cfg.name))
        proc.log.info(
            "ready: scripted expert for %s, horizon %d at %g Hz", cfg.task, cfg.horizon, cfg.fps
        )
        while not proc.stop.is_set():
            msg = events.recv(0.2)
            if msg is not None:
                policy.on_sim(msg)
        proc.last_words = f"stopped ({policy.no_plan} requests answered before a plan)"


if __name__ == "__main__":
    main()

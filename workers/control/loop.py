"""The control loop's scheduling: observations -> policy -> actions on time, with no stall at
chunk edges (the process around it is workers/control/__main__.py).

Each tick (monotonic schedule at `fps`) it takes the newest frames and states, asks the policy
for the next chunk *ahead of time* (while the current chunk still covers the measured latency),
places each action at its execution time `t_obs + i * dt`, skips those already past, joins
overlapping chunks (inpaint: the request carries the actions already committed and a diffusion
policy continues them, docs/seams.md; blend: a weighted average; latest: the new chunk wins),
and publishes `action/<arm>` with the execution time. With several policy workers it keeps one
request in flight per live worker, staggered so chunks arrive evenly. When the policy is
slow, failing or gone it runs what it still has, then holds and says why (`event/hold`), and
resumes when answers come back. `--schedule=sync` is the baseline the user had: ask only when
the queue is empty, then run the chunk from its first action.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from bus import (
    Message,
    Publisher,
    ServiceClient,
    ServiceError,
    ServiceTimeout,
    Subscriber,
    topics,
)
from bus.clock import ClockSteps, describe_step, now
from bus.health import HealthReporter
from bus.log import Throttle, warn_throttled
from core.action_plan import (
    ActionPlan,
    LatencyEstimate,
    too_slow_report,
)
from core.backoff import Backoff
from workers.control.config import ControlConfig, LoopStats
from workers.control.observe import ObservationBuilder
from workers.tasks import get_task, service_name

SIM_TOPIC = topics.event("sim")


class ControlLoop:
    def __init__(
        self,
        cfg: ControlConfig,
        log: logging.Logger,
        pub: Publisher,
        sub: Subscriber,
        client: ServiceClient,
    ):
        self.cfg = cfg
        self.log = log
        self.task = get_task(cfg.task)
        self.dt = 1.0 / cfg.fps
        self.service = service_name(self.task.name)
        self.arms = list(self.task.arms)
        self.observer = observer_for(cfg)
        self.pub, self.sub, self.client = pub, sub, client
        self.latency = LatencyEstimate(initial=cfg.policy_timeout / 2)
        self.stats = LoopStats()
        self.join = cfg.join  # "auto" until the first reply says whether a prefix is accepted
        self.plan = self._new_plan()
        self.workers = 1  # live policy workers used (hub status), at most cfg.policy_workers
        self.status_request: bytes | None = None
        self.status_due = 0.0
        self.in_flight: dict[bytes, tuple[float, float, int]] = {}  # id -> (sent, t_obs, ep)
        self.episode = 0
        self.holding = False
        self.hold_reason, self.hold_sent = "", 0.0
        self.why = "waiting for the first chunk"
        self.horizon: int | None = None
        self.warned_slow = False
        self.acted = False  # an action ran in this episode
        self.outcome: dict | None = None  # the simulator's verdict on this episode
        self.health = HealthReporter(self.pub, cfg.name, self._health)
        self.retry = Backoff(0.05, 1.0)  # after an error reply
        self.error_log = Throttle(5.0)
        # Half a tick: a smaller step moves no action to another tick.
        self.clock = ClockSteps(tolerance=self.dt / 2)

    def _new_plan(self) -> ActionPlan:
        blend = "latest" if self.join in ("inpaint", "latest") else self.cfg.blend
        return ActionPlan(self.dt, now(), blend, self.cfg.blend_weight)

    def _resolve_join(self, accepts_prefix: bool) -> None:
        """`--join=auto` meets the policy's first answer: inpaint if it can, else blend."""
        self.join = "inpaint" if accepts_prefix else "blend"
        self.plan.blend = "latest" if self.join == "inpaint" else self.cfg.blend
        why = "accepts" if accepts_prefix else "cannot take"
        self.log.info("join: %s (the policy %s a committed prefix)", self.join, why)

    # -- reporting ---------------------------------------------------------------------------
    def _seams(self) -> dict:
        seams = self.plan.seams
        return {
            "join": self.join,
            "seams": len(seams),
            "seam_jump_p50_deg": round(float(np.percentile(seams, 50)), 3) if seams else None,
            "seam_jump_p99_deg": round(float(np.percentile(seams, 99)), 3) if seams else None,
        }

    def _health(self) -> dict:
        summary = self.stats.summary(self.dt)
        drops = {
            "stall_ticks": summary["stall_ticks"],
            "skipped_actions": self.plan.skipped,
            "timeouts": summary["timeouts"],
            **{f"obs_not_sent: {k}": v for k, v in self.observer.skipped.items()},
        }
        return {
            **summary,
            **self._seams(),
            "rate_hz": summary["loop_hz"],
            "drops": drops,
            "policy_workers": self.workers,
            "task": self.task.name,
            "episode": self.episode,
            "holding": self.holding,
            "hold_reason": self.why if self.holding else None,
            "latency_estimate_ms": round(self.latency.value() * 1000, 1),
            "skipped_actions": self.plan.skipped,
            "in_flight": len(self.in_flight),
            "obs_not_sent": dict(self.observer.skipped),
            "schedule": self.cfg.schedule,
        }

    def _hold(self, holding: bool, reason: str) -> None:
        """Publish hold transitions, and while holding, a changed reason (at most 1/s)."""
        if holding == self.holding:
            changed = reason != self.hold_reason and time.monotonic() - self.hold_sent >= 1.0
            if not (holding and changed):
                return
        elif holding:
            self.stats.holds += 1
        self.holding = holding
        self.hold_reason, self.hold_sent = reason, time.monotonic()
        if holding:
            self.log.warning("hold: %s", reason)
            self.health.error(f"hold: {reason}")
        else:
            self.log.info("resumed: %s", reason)
        for arm in self.arms:
            self.pub.publish(
                topics.event("hold"),
                data={"arm": arm, "holding": holding, "reason": reason, "source": self.cfg.name},
            )

    # -- policy ------------------------------------------------------------------------------
    def _should_request(self, tick: int) -> bool:
        if not self.retry.due():
            return False
        if self.cfg.schedule == "sync":
            return not self.in_flight and not self.plan.slots
        if len(self.in_flight) >= self.workers:
            return False
        latency = self.latency.value()
        if self.in_flight:
            last_sent = max(sent for sent, _, _ in self.in_flight.values())
            if time.monotonic() - last_sent < latency / self.workers:
                return False  # staggered, so that chunks arrive evenly
        return self._cover(tick) <= latency + self.cfg.margin_ticks * self.dt

    def _cover(self, tick: int) -> float:
        """Seconds of actions planned after `tick`, counting chunks in flight as arrived."""
        cover = self.plan.ahead(tick) * self.dt
        if self.horizon:
            t_tick = self.plan.time_of(tick)
            for _, t_obs, _ in self.in_flight.values():
                cover = max(cover, t_obs + (self.horizon - 1) * self.dt - t_tick)
        return cover

    def _poll_workers(self) -> None:
        """Ask the hub (without waiting) how many policy workers are live, once a second."""
        if self.cfg.policy_workers <= 1 or self.status_request:
            return
        if time.monotonic() < self.status_due:
            return
        self.status_due = time.monotonic() + 1.0
        self.status_request = self.client.send("hub", timeout=1.0)

    def _on_status(self, result: Message | ServiceError) -> None:
        self.status_request = None
        if isinstance(result, ServiceError):
            return
        live = int(result.data.get("workers", {}).get(self.service, 0))
        workers = max(1, min(self.cfg.policy_workers, live))
        if workers != self.workers:
            self.log.info("policy workers in use: %d (%d live)", workers, live)
        self.workers = workers

    def _request(self) -> None:
        self._check_clock()  # before stamping: t_obs and the plan's epoch on the same side
        t_obs = now()
        self.sub.latest()
        arrays, why_not = self.observer.build(self.sub.newest, t_obs)
        if why_not:
            self.why = why_not
            return
        self.stats.skew_ms.append(self.observer.last_skew * 1000)
        data = {"t_obs": t_obs, "task": self.task.name}
        if self.join == "inpaint" and self.horizon:
            # Committed: what runs before the reply is expected back, whatever it says.
            until = t_obs + self.latency.value() + self.cfg.margin_ticks * self.dt
            prefix = self.plan.prefix(t_obs, until, self.horizon, self.cfg.prefix_soft)
            if prefix is not None:
                arrays = {**arrays, "prefix": prefix[0]}
                data["prefix_start"], data["prefix_committed"] = prefix[1], prefix[2]
        rid = self.client.send(
            self.service, arrays, data, timeout=self.cfg.policy_timeout, t_cap=t_obs
        )
        self.in_flight[rid] = (time.monotonic(), t_obs, self.episode)
        self.stats.requests += 1

    def _on_reply(self, rid: bytes, result: Message | ServiceError, tick: int) -> None:
        if rid == self.status_request:
            self._on_status(result)
            return
        sent, t_obs, episode = self.in_flight.pop(rid, (None, None, None))
        if sent is None:
            return
        if isinstance(result, ServiceTimeout):
            self.stats.timeouts += 1
            self.why = f"policy timeout after {self.cfg.policy_timeout:.1f} s"
            self.log.warning("%s (no chunk for the observation of %.3f)", self.why, t_obs)
            return
        if isinstance(result, ServiceError):
            # Back off (50 ms doubling to 1 s) instead of re-asking at once: a policy still
            # loading answers "no live worker" in microseconds, and re-asking at once would be
            # a storm of requests and log lines.
            self.stats.errors += 1
            self.why = f"policy error: {result.text}"
            retry_s = self.retry.failed()
            warn_throttled(
                self.log,
                self.error_log,
                result.text,
                f"policy error reply: {result.text} (next request in {retry_s * 1000:.0f} ms)",
            )
            return
        self.retry.reset()
        if self.join == "auto":
            self._resolve_join(bool(result.data.get("accepts_prefix")))
        latency = time.monotonic() - sent
        self.latency.add(latency)
        self.stats.latency_ms.append(latency * 1000)
        self.stats.replies += 1
        if episode != self.episode:
            return  # an answer for the episode that just ended
        actions = result.arrays["actions"]
        if actions.ndim != 2 or actions.shape[1] != self.task.action_dim:
            self.stats.errors += 1
            self.why = (
                f"policy returned actions of shape {tuple(actions.shape)}, expected "
                f"(horizon, {self.task.action_dim})"
            )
            self.log.warning("%s", self.why)
            return
        self.horizon = actions.shape[0]
        first = tick + 1 if self.cfg.schedule == "sync" else None
        stale = self.plan.add(actions, t_obs, first_tick=first)
        if stale == len(actions):
            self.why = (
                f"chunk arrived too late: all {stale} actions were past "
                f"(latency {latency * 1000:.0f} ms, chunk {stale * self.dt * 1000:.0f} ms)"
            )
        self.pub.publish(
            topics.chunk(self.task.name),
            {"actions": actions},
            {
                "t_obs": t_obs,
                "dt": self.dt,
                "arms": self.arms,
                "latency_s": round(latency, 4),
                "episode": self.episode,
                "worker": result.src,
            },
            t_cap=t_obs,
        )
        self._check_fast_enough()

    def _check_fast_enough(self) -> None:
        if self.warned_slow or self.horizon is None or self.cfg.schedule != "ahead":
            return
        if len(self.latency.samples) < 3:
            return
        report = too_slow_report(self.latency.value(), self.horizon, self.dt, self.workers)
        if report is None:
            return
        self.warned_slow = True
        self.log.warning("%s", report["text"])
        self.pub.publish(
            topics.event("control"), data={"kind": "policy_too_slow", **report, "fps": self.cfg.fps}
        )

    # -- the tick ----------------------------------------------------------------------------
    def _on_clock_step(self, step: float) -> None:
        """The wall clock stepped `step` s against the monotonic schedule: move everything
        that maps one onto the other, so that an action still runs at the tick it was meant
        for. Left alone, a forward step would place every new chunk `step` s in the future
        (the arm running on observations that old), a backward one every action in the past
        (a hold until the episode ends)."""
        self.plan.shift_clock(step)
        self.in_flight = {
            rid: (sent, t_obs + step, ep) for rid, (sent, t_obs, ep) in self.in_flight.items()
        }
        # Frames and states stamped before the step are not comparable with those after it.
        self.observer.fresh_after(now(), "the clock step")
        self.stats.clock_steps += 1
        self.stats.clock_step_s += step
        self.log.warning(
            "%s; action plan re-anchored, waiting for observations stamped after it",
            describe_step(step),
        )
        self.pub.publish(
            topics.event("control"),
            data={"kind": "clock_step", "step_s": round(step, 6), "episode": self.episode},
        )

    def _check_clock(self) -> None:
        if step := self.clock.check():
            self._on_clock_step(step)

    def tick(self, tick: int) -> None:
        self._check_clock()
        for rid, result in self.client.poll(0):
            self._on_reply(rid, result, tick - 1)
        self._poll_workers()
        t_tick = self.plan.time_of(tick)
        if self._should_request(tick):
            self._request()
        slot = self.plan.take(tick)
        self.stats.ticks += 1
        if slot is None:
            if self.acted:
                self.stats.stall_ticks += 1
            else:
                self.stats.startup_ticks += 1
            if self.in_flight and self.why.startswith(("no ", "waiting")):
                self.why = "waiting for the policy (request in flight)"
            self._hold(True, self.why)
            return
        self._hold(False, "fresh actions")
        self.acted = True
        t_pub = now()
        self.stats.actions += 1
        self.stats.lateness_ms.append((t_pub - slot.intended) * 1000)
        goal = slot.action
        for i, arm in enumerate(self.arms):
            self.pub.publish(
                topics.action(arm),
                {"goal": goal[i * 6 : (i + 1) * 6]},
                {"t_exec": t_tick, "t_obs": slot.intended, "episode": self.episode},
            )

    def _wait_until(self, due: float, tick: int) -> None:
        """Until tick `tick` is due: take replies the moment they arrive and send the next
        request right away (every millisecond of a back-to-back cycle is slack for the arm),
        then spin the last 2 ms (sleep alone overshoots by a scheduler quantum on a busy
        machine, and tick jitter is what the arm feels)."""
        while (left := due - time.monotonic()) > 0.002:
            for rid, result in self.client.poll(left - 0.002):
                self._on_reply(rid, result, tick - 1)
                if self._should_request(tick - 1):
                    self._request()
        while time.monotonic() < due:
            pass

    def run_episode(self, stop, episode: int) -> None:
        self.episode = episode
        self.plan = self._new_plan()
        self.warned_slow = False
        self.acted = False
        self.stats = LoopStats()  # health and the stop marker report this episode
        self.outcome = None
        self.why = "waiting for the first chunk"  # not an earlier episode's reason
        self.sub.take(SIM_TOPIC)  # an outcome from before this episode is not its outcome
        # Observations only from after the start: a simulator resets the scene on this marker.
        self.observer.fresh_after(now(), "the episode start")
        self.pub.publish(
            topics.event("episode"),
            data={
                "phase": "start",
                "episode": episode,
                "task": self.task.name,
                "source": self.cfg.name,
                "fps": self.cfg.fps,
                "seed": self.cfg.seed + episode,
            },
        )
        self.log.info("episode %d: start (%.0f s)", episode, self.cfg.episode_s)
        start = time.monotonic()
        # The plan's epoch and this schedule start together: tick k is due at start + k*dt.
        self.plan.epoch = now()
        n_ticks = int(round(self.cfg.episode_s * self.cfg.fps))
        for tick in range(n_ticks):
            if stop.is_set():
                break
            due = start + tick * self.dt
            self._wait_until(due, tick)
            self.stats.jitter_ms.append((time.monotonic() - due) * 1000)
            self.tick(tick)
            self.health.tick()
            if self._episode_outcome(episode):
                break
        self.pub.publish(
            topics.event("episode"),
            data={
                "phase": "stop",
                "episode": episode,
                "task": self.task.name,
                "source": self.cfg.name,
                "seed": self.cfg.seed + episode,
                "outcome": self.outcome,
                "stats": {
                    **self.stats.summary(self.dt),
                    **self._seams(),
                    "skipped_actions": self.plan.skipped,
                },
            },
        )
        self.log.info("episode %d: stop; %s", episode, self.stats.summary(self.dt))

    def _episode_outcome(self, episode: int) -> bool:
        """True when the simulator has judged this episode and the loop should end it."""
        msg = self.sub.take(SIM_TOPIC)
        if msg is None or msg.data.get("phase") != "outcome" or msg.data.get("episode") != episode:
            return False
        self.outcome = {k: msg.data.get(k) for k in ("success", "reason", "time_s")}
        self.log.info(
            "episode %d: %s (%s)",
            episode,
            "success" if self.outcome["success"] else "failure",
            self.outcome["reason"],
        )
        return self.cfg.end_on_outcome

    @staticmethod
    def subscriptions(cfg: ControlConfig) -> list[str]:
        return observer_for(cfg).topics() + [SIM_TOPIC]


def observer_for(cfg: ControlConfig) -> ObservationBuilder:
    task = get_task(cfg.task)
    return ObservationBuilder(cfg.cameras or list(task.cameras), list(task.arms), cfg.max_skew)

"""One arm on the bus: its driver and safety guard wired to `state/<arm>`, `action/<arm>` and
`event/hold`. Shared by the servo process (Feetech or first-order-lag arms) and the simulator
(MuJoCo arms), so a goal meets exactly the same checks whichever arm is behind the topic.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from bus import Message, Publisher, Subscriber, clock, topics
from bus.log import Throttle, warn_throttled
from core.estop_latch import EstopLatch
from core.safety import GoalGuard, SafetyLimits, joint_limits, per_joint
from drivers.servo import JOINTS, ArmDriver, ArmFault
from workers.robot_config import ArmSettings, ServoSettings

ESTOP_TOPIC = topics.event("estop")
EPISODE_RESET = "episode reset: waiting for this episode's first goal"


def safety_limits(driver: ArmDriver, arm: ArmSettings, servo: ServoSettings) -> SafetyLimits:
    lower, upper = joint_limits(JOINTS, *driver.joint_range(), arm.limits)
    return SafetyLimits(
        lower=lower,
        upper=upper,
        max_step=per_joint(JOINTS, arm.max_step, arm.joint_max_step, "joint_max_step"),
        period_s=1.0 / servo.rate_hz,
        max_goal_age_s=servo.max_goal_age_s,
        watchdog_s=servo.watchdog_s,
        resume_scale=servo.resume_scale,
        resume_ramp_s=servo.resume_ramp_s,
    )


def goal_age(msg: Message) -> float:
    """Seconds since the goal was due: its t_exec if it has a usable one, else its t_cap."""
    t_exec = msg.data.get("t_exec")
    ok = isinstance(t_exec, (int, float)) and not isinstance(t_exec, bool) and math.isfinite(t_exec)
    return clock.now() - (t_exec if ok else msg.t_cap)


# -- one arm on the bus -------------------------------------------------------------------------
class ArmChannel:
    """An arm's driver and safety guard, wired to its topics."""

    def __init__(
        self, name: str, driver: ArmDriver, guard: GoalGuard, pub: Publisher, log: logging.Logger
    ):
        self.name = name
        self.driver = driver
        self.guard = guard
        self.pub = pub
        self.log = log
        self.present: np.ndarray | None = None
        self._t_read = 0.0  # bus clock when `present` was read
        self.faults = 0
        self._state_topic = topics.state(name)
        self._connects_seen = 0
        self._hold_reported: tuple[bool, str] | None = None
        self._throttle = Throttle(interval=2.0)

    def connect(self) -> None:
        try:
            self.driver.connect()
        except ArmFault:
            pass  # the driver logged why; reads retry the connection with backoff

    def tick(self, now: float) -> None:
        """Read, publish the state, write the goal."""
        if not self._read():
            return
        self.pub.publish(
            self._state_topic,
            {"position": self.present},
            {"names": list(JOINTS)},
            t_cap=self._t_read,
        )
        self._apply(now)

    def goal(self, msg: Message, now: float) -> None:
        """A new goal: checked, then written at once (not at the next tick)."""
        rejected = self.guard.offer(msg.arrays["goal"], goal_age(msg), now)
        if rejected:
            warn_throttled(
                self.log,
                self._throttle,
                rejected,
                f"{self.name}: rejected goal from {msg.src!r}: {rejected}",
            )
        elif self.present is not None and self.driver.stats.connected:
            self._apply(now)

    def estop(self, engaged: bool, reason: str, now: float) -> None:
        if not engaged:
            self.guard.clear_estop()
            self.log.warning("%s: e-stop cleared (%s)", self.name, reason)
            return
        self._read()  # stop where the arm is now, not where it was at the last tick
        self.guard.engage_estop(self.present, reason)
        if self.present is not None and self.driver.stats.connected:
            self._apply(now)

    def reset(self) -> None:
        """Hold where the arm is now and forget what was commanded before: a simulator reset
        put the arm back at its start pose, and the last episode's goal must not pull it
        away again (an expected hold: logged at info)."""
        self._read()
        self.guard.reanchor(self.present, EPISODE_RESET)

    def shutdown(self, on_exit: str) -> None:
        hold = on_exit == "hold"
        if hold and self.driver.stats.connected:
            try:
                self.driver.write_goals(self.driver.read_positions())
            except ArmFault as exc:
                self.log.error("%s: could not set the hold position on exit: %s", self.name, exc)
        self.driver.disconnect(torque_off=not hold)
        self.log.info(
            "%s: %s", self.name, "torque left on, holding" if hold else "torque off (released)"
        )

    def _read(self) -> bool:
        try:
            present = self.driver.read_positions()
        except ArmFault as exc:
            self._fault(exc)
            return False
        self._t_read = clock.now()
        connects = self.driver.stats.connects
        if connects != self._connects_seen:
            if self._connects_seen:  # reconnected: the arm may have moved while we were away
                self.guard.reanchor(present, "reconnected: waiting for a fresh goal")
            self._connects_seen = connects
        self.present = present
        return True

    def _apply(self, now: float) -> None:
        command = self.guard.command(self.present, now)
        self._report_hold(command.holding, command.reason)
        try:
            self.driver.write_goals(command.goal)
        except ArmFault as exc:
            self._fault(exc)

    def _report_hold(self, holding: bool, reason: str) -> None:
        if self._hold_reported == (holding, reason):
            return
        self._hold_reported = (holding, reason)
        self.log.log(
            logging.WARNING if holding and reason != EPISODE_RESET else logging.INFO,
            "%s: %s",
            self.name,
            f"holding: {reason}" if holding else reason,
        )
        self.pub.publish(
            topics.event("hold"), data={"arm": self.name, "holding": holding, "reason": reason}
        )

    def _fault(self, exc: ArmFault) -> None:
        self.faults += 1
        warn_throttled(self.log, self._throttle, "fault", f"{self.name}: {exc}")

    def health(self) -> dict:
        return {
            **self.guard.counters(),
            "faults": self.faults,
            "serial": self.driver.stats.as_dict(),
        }


class ArmBus:
    """The arms' inbox: the newest e-stop and goals off one subscriber, handed to each arm.

    An engaged e-stop is latched on disk (`EstopLatch`), so a process that restarts comes back
    stopped; only an explicit clear releases it."""

    def __init__(
        self, arms: list[ArmChannel], sub: Subscriber, latch: EstopLatch, log: logging.Logger
    ):
        self.arms, self.sub, self.latch = arms, sub, latch
        latched = latch.engaged()
        if latched:
            log.warning(
                "e-stop still engaged from before this start: %s. Arms hold until a "
                "clear (dashboard: clear e-stop)",
                latched,
            )
            for arm in arms:
                arm.estop(True, f"latched: {latched}", time.monotonic())

    @staticmethod
    def topics(arm_names: list[str]) -> list[str]:
        return [topics.action(name) for name in arm_names] + [ESTOP_TOPIC]

    def dispatch(self) -> None:
        estop = self.sub.take(ESTOP_TOPIC)
        if estop is not None:
            # A malformed e-stop message stops the arms: failing safe beats guessing.
            engaged = estop.data.get("engaged", True) is not False
            reason = str(estop.data.get("reason") or f"from {estop.src}")
            for arm in self.arms:
                arm.estop(engaged, reason, time.monotonic())
            if engaged:  # after the arms: stopping them comes first
                self.latch.engage(reason)
            else:
                self.latch.clear()
        for arm in self.arms:
            msg = self.sub.take(topics.action(arm.name))
            if msg is not None:
                arm.goal(msg, time.monotonic())

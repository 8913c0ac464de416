"""Servo process: one arm (`arm`) or two (`left_arm`, `right_arm`), each on its own driver.

    uv run python -m workers.servo --config_path=configs/robot.yaml

At the control rate (30 Hz default, up to 100 Hz, on a fixed monotonic schedule) it reads each
arm, publishes `state/<arm>`, and writes the goal drivers.safety allows. Between ticks it waits
on the bus, so a new `action/<arm>` goal reaches the servos at once rather than at the next tick,
and an `event/estop` stops every arm at once (latched on disk with `servo.estop_latch_file`, so a
restart does not release it). Holds and resumes are published on `event/hold`.
When the process stops (or crashes), each arm is left per `servo.on_exit`: hold or release.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from bus import Message, Publisher, Subscriber, clock, topics
from bus.health import HealthReporter
from bus.log import Throttle, warn_throttled
from drivers.estop_latch import EstopLatch
from drivers.safety import GoalGuard, SafetyLimits, joint_limits, per_joint
from drivers.servo import (
    JOINTS,
    ArmDriver,
    ArmFault,
    CalibrationError,
    FeetechArm,
    SimArm,
    default_calibration_path,
    load_calibration,
)
from workers import lifecycle
from workers.meters import MillisWindow, RateMeter
from workers.robot_config import (
    ArmSettings,
    ConfigError,
    RobotIOConfig,
    ServoSettings,
    check_servo,
    exit_bad_config,
    parse_or_exit,
)

ESTOP_TOPIC = topics.event("estop")
# Below this, wait for the next tick with sleep(): ZeroMQ's poll counts whole milliseconds.
SLEEP_BELOW_S = 0.002


# -- config -> drivers and limits -------------------------------------------------------------
def open_driver(settings: ArmSettings) -> ArmDriver:
    if settings.driver == "sim":
        return SimArm(settings.sim_time_constant_s)
    path = settings.calibration or default_calibration_path(settings.id)
    return FeetechArm(
        settings.port,
        load_calibration(path),
        handshake=settings.handshake,
        read_retries=settings.read_retries,
        reconnect_after_failures=settings.reconnect_after_failures,
        backoff_s=settings.reconnect_backoff_s,
        backoff_max_s=settings.reconnect_backoff_max_s,
    )


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

    def __init__(self, name: str, driver: ArmDriver, guard: GoalGuard, pub: Publisher,
                 log: logging.Logger):
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
        self.pub.publish(self._state_topic, {"position": self.present},
                         {"names": list(JOINTS)}, t_cap=self._t_read)
        self._apply(now)

    def goal(self, msg: Message, now: float) -> None:
        """A new goal: checked, then written at once (not at the next tick)."""
        rejected = self.guard.offer(msg.arrays["goal"], goal_age(msg), now)
        if rejected:
            warn_throttled(self.log, self._throttle, rejected,
                           f"{self.name}: rejected goal from {msg.src!r}: {rejected}")
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

    def shutdown(self, on_exit: str) -> None:
        hold = on_exit == "hold"
        if hold and self.driver.stats.connected:
            try:
                self.driver.write_goals(self.driver.read_positions())
            except ArmFault as exc:
                self.log.error("%s: could not set the hold position on exit: %s", self.name, exc)
        self.driver.disconnect(torque_off=not hold)
        self.log.info("%s: %s", self.name, "torque left on, holding" if hold else
                      "torque off (released)")

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
        self.log.log(logging.WARNING if holding else logging.INFO, "%s: %s", self.name,
                     f"holding: {reason}" if holding else reason)
        self.pub.publish(topics.event("hold"),
                         data={"arm": self.name, "holding": holding, "reason": reason})

    def _fault(self, exc: ArmFault) -> None:
        self.faults += 1
        warn_throttled(self.log, self._throttle, "fault", f"{self.name}: {exc}")

    def health(self) -> dict:
        return {**self.guard.counters(), "faults": self.faults,
                "serial": self.driver.stats.as_dict()}


# -- the process --------------------------------------------------------------------------------
def main() -> None:
    cfg = parse_or_exit(RobotIOConfig, "servo")
    try:
        check_servo(cfg)
        drivers = {name: open_driver(arm) for name, arm in cfg.arms.items()}
        limits = {name: safety_limits(drivers[name], arm, cfg.servo)
                  for name, arm in cfg.arms.items()}
    except (ConfigError, CalibrationError, ValueError) as exc:
        exit_bad_config("servo", exc)
    process = cfg.process or "servo"
    log, stop = lifecycle.start(process)

    pub = Publisher(cfg.bus, process)
    sub = Subscriber(cfg.bus, [topics.action(name) for name in drivers] + [ESTOP_TOPIC],
                     mode="latest")
    arms = [ArmChannel(name, drivers[name], GoalGuard(limits[name]), pub, log)
            for name in drivers]
    for arm in arms:
        log.info("%s: %s; limits %s .. %s", arm.name, arm.driver.describe(),
                 np.round(limits[arm.name].lower, 1).tolist(),
                 np.round(limits[arm.name].upper, 1).tolist())
        arm.connect()
    latch = EstopLatch(cfg.servo.estop_latch_file)
    latched = latch.engaged()
    if latched:
        log.warning("e-stop still engaged from before this start: %s. Arms hold until a clear "
                    "(dashboard: clear e-stop)", latched)
        for arm in arms:
            arm.estop(True, f"latched: {latched}", time.monotonic())

    period = 1.0 / cfg.servo.rate_hz
    ticks, lateness, busy = RateMeter(), MillisWindow("tick_jitter"), MillisWindow("tick_busy")
    overruns = 0

    def collect() -> dict:
        return {"rate_hz": ticks.rate(), "rate_target_hz": cfg.servo.rate_hz, "ticks": ticks.count,
                "overruns": overruns, **lateness.summary(), **busy.summary(),
                "bad_messages": sub.bad, "bus": sub.stats(),
                "arms": {arm.name: arm.health() for arm in arms}}

    def handle_messages() -> None:
        estop = sub.take(ESTOP_TOPIC)
        if estop is not None:
            # A malformed e-stop message stops the arms: failing safe beats guessing.
            engaged = estop.data.get("engaged", True) is not False
            reason = str(estop.data.get("reason") or f"from {estop.src}")
            for arm in arms:
                arm.estop(engaged, reason, time.monotonic())
            if engaged:  # after the arms: stopping them comes first
                latch.engage(reason)
            else:
                latch.clear()
        for arm in arms:
            msg = sub.take(topics.action(arm.name))
            if msg is not None:
                arm.goal(msg, time.monotonic())

    health = HealthReporter(pub, process, collect, cfg.health_interval_s)
    log.info("ready: servo %s at %g Hz, on exit %s", ", ".join(a.name for a in arms),
             cfg.servo.rate_hz, cfg.servo.on_exit)
    try:
        next_tick = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now < next_tick:
                wait = next_tick - now
                if wait > SLEEP_BELOW_S:
                    sub.latest(timeout=wait - SLEEP_BELOW_S / 2)  # wakes early for a message
                else:
                    time.sleep(wait)
                handle_messages()
                continue
            lateness.add(now - next_tick)
            handle_messages()
            for arm in arms:
                arm.tick(time.monotonic())
            ticks.add()
            health.tick()
            busy.add(time.monotonic() - now)
            next_tick += period
            behind = time.monotonic() - next_tick
            if behind >= period:  # overran whole ticks: skip them, keep the schedule's phase
                missed = int(behind // period)
                overruns += missed
                next_tick += missed * period
    finally:
        for arm in arms:
            arm.shutdown(cfg.servo.on_exit)
        health.tick(force=True)
        sub.close()
        pub.close()
        log.info("stopped")


if __name__ == "__main__":
    main()

"""Servo process: one arm (`arm`) or two (`left_arm`, `right_arm`), each on its own driver.

    uv run python -m workers.servo --config_path=configs/robot.yaml

At the control rate (30 Hz default, up to 100 Hz, on a fixed monotonic schedule) it reads each
arm, publishes `state/<arm>`, and writes the goal core.safety allows. Between ticks it waits
on the bus, so a new `action/<arm>` goal reaches the servos at once rather than at the next tick,
and an `event/estop` stops every arm at once (latched on disk with `servo.estop_latch_file`, so a
restart does not release it). Holds and resumes are published on `event/hold`.
When the process stops (or crashes), each arm is left per `servo.on_exit`: hold or release.
"""

from __future__ import annotations

import time

import numpy as np

from bus import Publisher, Subscriber
from bus.health import HealthReporter
from core.estop_latch import EstopLatch
from core.safety import GoalGuard, SafetyLimits
from drivers.servo import (
    ArmDriver,
    CalibrationError,
    FeetechArm,
    SimArm,
    default_calibration_path,
    load_calibration,
)
from workers import lifecycle
from workers.arm_channel import ArmBus, ArmChannel, safety_limits
from workers.lifecycle import exit_bad_config, parse_or_exit
from workers.meters import MillisWindow, RateMeter
from workers.robot_config import (
    ArmSettings,
    ConfigError,
    RobotIOConfig,
    check_servo,
)

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


# -- the process --------------------------------------------------------------------------------
def main() -> None:
    cfg = parse_or_exit(RobotIOConfig, "servo")
    try:
        check_servo(cfg)
        drivers = {name: open_driver(arm) for name, arm in cfg.arms.items()}
        limits = {
            name: safety_limits(drivers[name], arm, cfg.servo) for name, arm in cfg.arms.items()
        }
    except (ConfigError, CalibrationError, ValueError) as exc:
        exit_bad_config("servo", exc)
    with lifecycle.Process(cfg.name or "servo") as proc:
        run(cfg, drivers, limits, proc)


def run(
    cfg: RobotIOConfig,
    drivers: dict[str, ArmDriver],
    limits: dict[str, SafetyLimits],
    proc: lifecycle.Process,
) -> None:
    log, stop = proc.log, proc.stop
    pub = proc.closing(Publisher(cfg.bus, proc.name))
    sub = proc.closing(Subscriber(cfg.bus, ArmBus.topics(list(drivers)), mode="latest"))
    arms = [ArmChannel(name, drivers[name], GoalGuard(limits[name]), pub, log) for name in drivers]
    # Each arm is left as servo.on_exit says (hold or release), whatever ends the process.
    proc.at_stop("arm shutdown", lambda: [arm.shutdown(cfg.servo.on_exit) for arm in arms])
    for arm in arms:
        log.info(
            "%s: %s; limits %s .. %s",
            arm.name,
            arm.driver.describe(),
            np.round(limits[arm.name].lower, 1).tolist(),
            np.round(limits[arm.name].upper, 1).tolist(),
        )
        arm.connect()
    arm_bus = ArmBus(arms, sub, EstopLatch(cfg.servo.estop_latch_file), log)

    period = 1.0 / cfg.servo.rate_hz
    ticks, lateness, busy = RateMeter(), MillisWindow("tick_jitter"), MillisWindow("tick_busy")
    overruns = 0

    def collect() -> dict:
        return {
            "rate_hz": ticks.rate(),
            "drops": {"overruns": overruns, **sub.drops()},
            "rate_target_hz": cfg.servo.rate_hz,
            "ticks": ticks.count,
            "overruns": overruns,
            **lateness.summary(),
            **busy.summary(),
            "bad_messages": sub.bad,
            "bus": sub.stats(),
            "arms": {arm.name: arm.health() for arm in arms},
        }

    proc.health = health = HealthReporter(pub, proc.name, collect, cfg.health_interval_s)
    log.info(
        "ready: servo %s at %g Hz, on exit %s",
        ", ".join(a.name for a in arms),
        cfg.servo.rate_hz,
        cfg.servo.on_exit,
    )
    next_tick = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now < next_tick:
            wait = next_tick - now
            if wait > SLEEP_BELOW_S:
                sub.latest(timeout=wait - SLEEP_BELOW_S / 2)  # wakes early for a message
            else:
                time.sleep(wait)
            arm_bus.dispatch()
            continue
        lateness.add(now - next_tick)
        arm_bus.dispatch()
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


if __name__ == "__main__":
    main()

"""The servo process against an emulated STS3215 bus on a pseudo-terminal (through pyserial and
lerobot's FeetechMotorsBus, unmodified), and against the sim driver."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from bus import BusConfig, Message, Publisher, Subscriber, clock
from core.safety import WAITING_FOR_FIRST_GOAL
from drivers.servo import JOINTS

from conftest import Proc, wait_until
from feetech_emulator import FeetechEmulator
from test_servo_parts import (
    RANGE_MIN,
    START_RAW,
    STEPS_PER_DEG,
    deg_to_raw,
    raw_to_deg,
    write_calibration,
)


@pytest.fixture
def calibration(tmp_path: Path) -> Path:
    return write_calibration(tmp_path)


@pytest.fixture
def emulator(tmp_path: Path):
    with FeetechEmulator(
        link=tmp_path / "ttyACM-emu", positions=dict.fromkeys(range(1, 7), START_RAW)
    ) as emu:
        yield emu


def write_config(tmp_path: Path, bus_cfg: BusConfig, arms: dict, **servo: object) -> Path:
    path = tmp_path / "robot.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "bus": bus_cfg.endpoints(),
                "arms": arms,
                "servo": {"rate_hz": 50, **servo},
                "health_interval_s": 0.2,
            }
        )
    )
    return path


def feetech_arm(emulator: FeetechEmulator, calibration: Path, **extra: object) -> dict:
    return {
        "arm": {
            "driver": "feetech",
            "port": emulator.port,
            "calibration": str(calibration),
            "reconnect_backoff_s": 0.2,
            "reconnect_backoff_max_s": 0.5,
            **extra,
        }
    }


def start_servo(procs: Callable[..., Proc], config: Path) -> Proc:
    proc = procs("servo", "-m", "workers.servo", f"--config_path={config}")
    proc.wait_for_output("ready:", timeout=60)  # lerobot imports torch: slow on a loaded box
    return proc


class Probe:
    """Everything the servo publishes, drained on demand: newest per topic, and every event."""

    def __init__(self, cfg: BusConfig):
        self.sub = Subscriber(cfg, ["state/", "health/servo", "event/hold"], mode="every")
        self.newest: dict[str, Message] = {}
        self.holds: list[dict] = []

    def poll(self) -> Probe:
        while (msg := self.sub.recv(0.0)) is not None:
            self.newest[msg.topic] = msg
            if msg.topic == "event/hold":
                self.holds.append(msg.data)
        return self

    def health(self) -> dict:
        msg = self.poll().newest.get("health/servo")
        return msg.data if msg else {}

    def arm(self, name: str = "arm") -> dict:
        return self.health().get("arms", {}).get(name, {})

    def state(self, name: str = "arm") -> Message | None:
        return self.poll().newest.get(f"state/{name}")

    def wait_hold(self, holding: bool, contains: str = "", arm: str = "arm") -> dict:
        def found() -> dict | None:
            self.poll()
            return next(
                (
                    h
                    for h in self.holds
                    if h["arm"] == arm and h["holding"] == holding and contains in h["reason"]
                ),
                None,
            )

        return wait_until(found, what=f"hold event holding={holding} {contains!r}")

    def close(self) -> None:
        self.sub.close()


class GoalStream:
    """Publishes `goal` on action/<arm> at 50 Hz from a thread, as a control process would."""

    def __init__(self, cfg: BusConfig, arm: str = "arm"):
        self.topic = f"action/{arm}"
        self.goal: np.ndarray | None = None
        self._pub = Publisher(cfg, "test-control")
        self._lock = threading.Lock()  # a ZeroMQ socket is not for two threads at once
        assert self._pub.wait_for_subscriber(self.topic, 30)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def send(self, goal: object, t_exec: float | None = None) -> None:
        """One goal message, exactly as given (for malformed ones)."""
        with self._lock:
            self._pub.publish(
                self.topic,
                {"goal": np.asarray(goal, dtype=np.float32)},
                {"t_exec": clock.now() if t_exec is None else t_exec},
            )

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            if self.goal is not None:
                self.send(self.goal)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pub.close()


@pytest.fixture
def probe(bus_cfg: BusConfig, hub):
    probe = Probe(bus_cfg)
    yield probe
    probe.close()


@pytest.fixture
def goals(bus_cfg: BusConfig, hub):
    streams: list[GoalStream] = []

    def make(arm: str = "arm") -> GoalStream:
        streams.append(GoalStream(bus_cfg, arm))
        return streams[-1]

    yield make
    for stream in streams:
        stream.close()


def goal_register(emulator: FeetechEmulator, id_: int = 1) -> int:
    return emulator.register(id_, "Goal_Position")


# -- the Feetech arm through the emulator ------------------------------------------------------
def test_state_calibration_clamping_rejections_and_hold_on_exit(
    tmp_path, bus_cfg, emulator, calibration, procs, probe, goals
) -> None:
    config = write_config(
        tmp_path,
        bus_cfg,
        feetech_arm(emulator, calibration, limits={"shoulder_pan": [-30, 30]}, max_step=20.0),
    )
    servo = start_servo(procs, config)

    state = wait_until(probe.state, what="state/arm")
    assert state.data["names"] == list(JOINTS)
    assert state.arrays["position"].dtype == np.float32
    np.testing.assert_allclose(state.arrays["position"][:5], raw_to_deg(START_RAW), atol=0.1)
    # The motors' calibration registers did not match the file: the servo wrote the file's.
    assert all(emulator.register(i, "Min_Position_Limit") == RANGE_MIN for i in range(1, 7))
    assert all(emulator.register(i, "Homing_Offset") == -17 * i for i in range(1, 7))
    assert all(emulator.register(i, "Torque_Enable") == 1 for i in range(1, 7))
    assert probe.wait_hold(True, WAITING_FOR_FIRST_GOAL)

    stream = goals()
    stream.goal = np.array([90.0, 0, 0, 0, 0, 50])  # pan beyond its 30 degree limit
    clamped = deg_to_raw(30.0)
    wait_until(lambda: abs(goal_register(emulator) - clamped) <= 1, what="clamped pan goal")
    assert max(w[1] for _, w in emulator.goal_writes if 1 in w) <= clamped + 1
    wait_until(lambda: probe.arm().get("goals_clamped_range", 0) > 0, what="clamp count")

    # One bad goal at a time, the stream paused: the servo takes only the newest goal per
    # tick, so a good goal right behind a bad one would hide it.
    stream.goal = None
    rejected = {"length": np.zeros(5), "stale": np.zeros(6)}
    for reason, goal in rejected.items():
        stream.send(goal, t_exec=clock.now() - 5.0 if reason == "stale" else None)
        wait_until(
            lambda r=reason: probe.arm().get("goals_rejected", {}).get(r, 0) >= 1,
            what=f"a {reason} goal rejected",
        )
    stream.send(np.array([0, np.nan, 0, 0, 0, 0]))  # refused by the bus schema already
    wait_until(lambda: probe.health().get("bad_messages", 0) >= 1, what="NaN goal dropped")
    assert abs(goal_register(emulator) - clamped) <= 1  # none of them moved the arm

    stream.close()
    assert servo.stop(signal.SIGTERM) == 0
    # on_exit: hold (the default): torque stays on, the goal is where the arm stopped.
    assert all(emulator.register(i, "Torque_Enable") == 1 for i in range(1, 7))
    present = emulator.register(1, "Present_Position")
    assert abs(goal_register(emulator) - present) <= 1
    assert "torque left on, holding" in servo.output()


def test_watchdog_hold_smooth_resume_and_estop_latch(
    tmp_path, bus_cfg, emulator, calibration, procs, probe, goals
) -> None:
    max_step = 4.0
    config = write_config(
        tmp_path,
        bus_cfg,
        feetech_arm(emulator, calibration, max_step=max_step),
        watchdog_s=0.3,
        resume_ramp_s=0.5,
    )
    start_servo(procs, config)
    stream = goals()
    stream.goal = np.array([20.0, 0, 0, 0, 0, 50])
    probe.wait_hold(False, "goals resumed")
    wait_until(lambda: abs(goal_register(emulator) - deg_to_raw(20.0)) <= 1, what="goal reached")

    stream.goal = None  # the policy stops sending
    probe.wait_hold(True, "watchdog")
    wait_until(lambda: probe.arm().get("holding"), what="health says holding")
    held = goal_register(emulator)
    t_resume = clock.now()
    stream.goal = np.array([-40.0, 0, 0, 0, 0, 50])
    wait_until(lambda: abs(goal_register(emulator) - deg_to_raw(-40.0)) <= 1, what="resumed")
    resumed = [w[1] for t, w in emulator.goal_writes if t > t_resume and 1 in w]
    steps = np.abs(np.diff([held, *resumed]))
    assert steps.max() <= max_step * STEPS_PER_DEG + 2  # never a jump, even after the hold
    assert steps[: len(steps) // 4].mean() < steps.max()  # eased in, not full speed at once

    with Publisher(bus_cfg, "test-estop") as estop:
        assert estop.wait_for_subscriber("event/estop", 30)
        estop.publish("event/estop", data={"engaged": True, "reason": "test", "source": "test"})
        probe.wait_hold(True, "e-stop: test")
        stopped_at = goal_register(emulator)
        stream.goal = np.array([40.0, 0, 0, 0, 0, 50])  # goals keep coming: ignored
        wait_until(
            lambda: probe.arm().get("goals_rejected", {}).get("estop", 0) >= 5,
            what="goals refused during the e-stop",
        )
        assert goal_register(emulator) == stopped_at and probe.arm()["estop"]

        estop.publish("event/estop", data={"engaged": False, "reason": "clear", "source": "test"})
        wait_until(lambda: goal_register(emulator) > stopped_at + 5, what="moving after clear")
        wait_until(lambda: probe.arm().get("estop") is False, what="health: e-stop cleared")


def test_serial_faults_are_retried_and_a_lost_port_reopened(
    tmp_path, bus_cfg, emulator, calibration, procs, probe
) -> None:
    config = write_config(tmp_path, bus_cfg, feetech_arm(emulator, calibration), on_exit="release")
    servo = start_servo(procs, config)
    wait_until(probe.state, what="state/arm")

    def serial() -> dict:
        return wait_until(lambda: probe.arm().get("serial"), what="a health report")

    def wait_state_flowing(what: str) -> None:
        since = clock.now()
        wait_until(lambda: (msg := probe.state()) is not None and msg.t_cap > since, what=what)

    # Counters are compared with their value before each fault, and every condition is read
    # from one health report: on a loaded machine a starved emulator can miss lerobot's 50 ms
    # reply timeout by itself, adding failures and reconnects of its own.
    retries = serial()["retries"]
    emulator.corrupt_next(1)
    emulator.silence_next(1)
    wait_until(
        lambda: emulator.faults_pending() == 0 and serial()["retries"] >= retries + 2,
        what="retries after a corrupt and a missing reply",
    )
    wait_state_flowing("state flowing after the faults")

    reconnects = serial()["reconnects"]
    emulator.missing.add(3)  # a motor stops answering: reads fail, reconnects fail the handshake
    wait_until(
        lambda: (
            not (s := serial())["connected"] and "Missing motor IDs: - 3" in (s["last_error"] or "")
        ),
        what="missing motor 3 reported, arm disconnected",
    )
    assert serial()["errors"] >= 5
    emulator.missing.clear()
    wait_until(lambda: serial()["reconnects"] > reconnects, what="reconnected")
    wait_state_flowing("state flowing after the reconnect")

    reconnects = serial()["reconnects"]
    emulator.unplug()  # the USB adapter goes away, and comes back under the same name
    wait_until(lambda: serial()["connected"] is False, what="port lost")
    emulator.replug()
    wait_until(lambda: serial()["reconnects"] > reconnects, what="reopened after replug")
    wait_state_flowing("state flowing after the replug")

    assert servo.stop(signal.SIGTERM) == 0
    assert all(emulator.register(i, "Torque_Enable") == 0 for i in range(1, 7))  # released
    assert "torque off (released)" in servo.output()


# -- the sim driver: closed loop without hardware ----------------------------------------------
def test_two_sim_arms_follow_goals_within_limits(tmp_path, bus_cfg, procs, probe, goals) -> None:
    arms = {
        "left_arm": {"driver": "sim", "sim_time_constant_s": 0.05},
        "right_arm": {"driver": "sim", "limits": {"gripper": [0, 60]}},
    }
    start_servo(procs, write_config(tmp_path, bus_cfg, arms, rate_hz=100))
    left, right = goals("left_arm"), goals("right_arm")
    left.goal = np.array([30.0, -20, 10, 0, 5, 40])
    right.goal = np.array([-30.0, 20, -10, 0, -5, 90])  # gripper beyond its configured 60

    def arrived(name: str, target: list[float]) -> bool:
        msg = probe.state(name)
        return msg is not None and np.allclose(msg.arrays["position"], target, atol=0.5)

    wait_until(lambda: arrived("left_arm", [30, -20, 10, 0, 5, 40]), what="left arm arrived")
    wait_until(lambda: arrived("right_arm", [-30, 20, -10, 0, -5, 60]), what="right arm arrived")
    health = probe.health()
    assert health["rate_target_hz"] == 100 and health["ticks"] > 0
    assert health["arms"]["right_arm"]["goals_clamped_range"] > 0


def test_estop_survives_a_crash_of_the_servo_process(
    tmp_path, bus_cfg, procs, probe, goals
) -> None:
    latch = tmp_path / "run" / "estop-latch.json"
    config = write_config(
        tmp_path, bus_cfg, {"arm": {"driver": "sim"}}, estop_latch_file=str(latch)
    )
    servo = start_servo(procs, config)
    stream = goals()
    stream.goal = np.array([10.0, 0, 0, 0, 0, 50])
    probe.wait_hold(False, "goals resumed")
    with Publisher(bus_cfg, "test-estop") as estop:
        assert estop.wait_for_subscriber("event/estop", 30)
        estop.publish("event/estop", data={"engaged": True, "reason": "hand in the cell"})
        wait_until(lambda: probe.arm().get("estop"), what="e-stop engaged")
        assert "hand in the cell" in latch.read_text()

        assert servo.stop(signal.SIGKILL) == -signal.SIGKILL  # a crash: no clean shutdown
        restarted = clock.now()
        servo = start_servo(procs, config)
        assert "e-stop still engaged from before this start: hand in the cell" in servo.output()
        stream.goal = np.array([-30.0, 0, 0, 0, 0, 50])  # the policy kept sending: refused

        def refusing() -> dict | None:  # a health report of the restarted process only
            msg = probe.poll().newest.get("health/servo")
            arm = msg.data["arms"]["arm"] if msg and msg.t_cap > restarted else {}
            return arm if arm.get("goals_rejected", {}).get("estop", 0) >= 5 else None

        arm = wait_until(refusing, what="goals refused by the restarted servo")
        assert arm["estop"] and arm["goals_applied"] == 0

        estop.publish("event/estop", data={"engaged": False, "reason": "cell clear"})
        wait_until(
            lambda: (msg := probe.state()) is not None and msg.arrays["position"][0] < -20,
            what="moving after the clear",
        )
        assert not latch.exists()


# -- bad config: one line, exit code 2 ---------------------------------------------------------
@pytest.mark.parametrize(
    ("arms", "servo", "message"),
    [
        (
            {"arm": {"driver": "feetech", "calibration": "/nonexistent/cal.json"}},
            {},
            "no calibration file at /nonexistent/cal.json",
        ),
        ({"elbow": {}}, {}, "expected `arm`, or `left_arm` and/or `right_arm`"),
        ({"arm": {}}, {"rate_hz": 500}, "servo.rate_hz must be in (0, 100]"),
        ({"arm": {"limits": {"knee": [0, 1]}}}, {}, "unknown joint"),
    ],
)
def test_bad_config_exits_with_one_line(tmp_path, bus_cfg, procs, arms, servo, message) -> None:
    proc = procs(
        "servo",
        "-m",
        "workers.servo",
        f"--config_path={write_config(tmp_path, bus_cfg, arms, **servo)}",
    )
    assert proc.popen.wait(60) == 2
    lines = proc.output().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines

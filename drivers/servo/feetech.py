"""An SO-101 follower arm through lerobot's own FeetechMotorsBus.

Motors, units and motor configuration are exactly those of lerobot's `so_follower` robot
(ids 1-6, STS3215, degrees for the body, 0-100 for the gripper, the same PID gains and gripper
current limits), and the calibration is lerobot's file, so values match what lerobot records and
what policies trained on it expect. What this driver adds around lerobot: its own read retries
(counted, with the input buffer flushed between tries), holding the present position when torque
comes on, and reopening a lost port with backoff instead of raising into the control loop.
"""

from __future__ import annotations

import logging
import termios
from dataclasses import asdict
from typing import Any

import numpy as np

from core.backoff import Backoff
from drivers.servo.base import GRIPPER, JOINTS, ArmDriver, ArmFault
from drivers.servo.calibration import JointCalibration, calibrated_range

log = logging.getLogger(__name__)

MODEL = "sts3215"
# lerobot's SOFollowerConfig defaults for the position loop, and its gripper protections.
PID = {"P_Coefficient": 16, "I_Coefficient": 0, "D_Coefficient": 32}
GRIPPER_PROTECTION = {"Max_Torque_Limit": 500, "Protection_Current": 250, "Overload_Torque": 25}

# The Feetech SDK polls a non-blocking port in a loop while it waits for a reply, burning a CPU
# core that the control loop (and on a small machine, the servos' emulator) needs. A short
# blocking read returns as soon as the bytes are there and leaves the SDK's own reply timeout
# (about 50 ms, checked between reads) as it was.
PORT_READ_BLOCK_S = 0.01

# A port that is gone (unplugged, EIO on a closed pty): reopen it. lerobot's ConnectionError is
# an OSError too, but means "no good reply", which is retried first: catch it before these.
PORT_ERRORS = (OSError, termios.error)


def describe_error(exc: BaseException) -> str:
    """One line from an exception and its causes (lerobot wraps the useful part in __cause__)."""
    parts = []
    while exc is not None and len(parts) < 3:
        if isinstance(exc, termios.error) and len(exc.args) == 2:
            text = f"serial port error: {exc.args[1]}"  # str() would print the args tuple
        else:
            text = " ".join(str(exc).split())
        if text and text not in parts:
            parts.append(text)
        exc = exc.__cause__
    line = ": ".join(parts) or "unknown error"
    if "Permission denied" in line:
        line += " (add the user to the dialout group: sudo usermod -aG dialout $USER, log in again)"
    return line


class FeetechArm(ArmDriver):
    def __init__(
        self,
        port: str,
        calibration: dict[str, JointCalibration],
        *,
        handshake: bool = True,
        read_retries: int = 2,
        reconnect_after_failures: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 5.0,
    ):
        super().__init__()
        self.port = port
        self.calibration = calibration
        self.handshake = handshake
        self.read_retries = read_retries
        self.reconnect_after_failures = reconnect_after_failures
        self._backoff = Backoff(backoff_s, backoff_max_s)
        self._bus: Any = None  # lerobot's FeetechMotorsBus once connected
        self._failures_in_a_row = 0

    def describe(self) -> str:
        return f"SO-101 follower on {self.port} (6 x Feetech {MODEL} through lerobot)"

    # -- connection ----------------------------------------------------------------------------
    def connect(self) -> None:
        try:
            self._bus = self._open_bus()
        except ArmFault as exc:
            self.stats.connect_failures += 1
            self.stats.last_error = str(exc)
            log.warning("%s; next attempt in %.1f s", exc, self._backoff.failed())
            raise
        self._backoff.reset()
        self._failures_in_a_row = 0
        self.stats.reconnects += 1 if self.stats.connects else 0
        self.stats.connects += 1
        self.stats.connected = True
        log.info("connected: %s, torque on, holding the present position", self.describe())

    def _open_bus(self) -> Any:
        # Deferred: importing lerobot imports torch, seconds that a sim-only process never pays.
        from lerobot.motors import Motor, MotorCalibration, MotorNormMode
        from lerobot.motors.feetech import FeetechMotorsBus

        motors = {
            joint: Motor(
                self.calibration[joint].id,
                MODEL,
                MotorNormMode.RANGE_0_100 if joint == GRIPPER else MotorNormMode.DEGREES,
            )
            for joint in JOINTS
        }
        calibration = {j: MotorCalibration(**asdict(c)) for j, c in self.calibration.items()}
        bus = FeetechMotorsBus(port=self.port, motors=motors, calibration=calibration)
        try:
            bus.connect(handshake=self.handshake)
            bus.port_handler.ser.timeout = PORT_READ_BLOCK_S
            self._sync_calibration(bus, calibration)
            self._configure(bus)
            # Torque on drives each servo to its Goal_Position register, which may hold a stale
            # goal from an earlier session: set it to where the arm is first.
            bus.sync_write("Goal_Position", self._read_present(bus))
            bus.enable_torque(num_retry=self.read_retries)
        except Exception as exc:  # any failure here means "not connected yet": retried later
            self._close_quietly(bus, torque_off=False)
            raise ArmFault(f"cannot connect on {self.port}: {describe_error(exc)}") from exc
        return bus

    def _sync_calibration(self, bus: Any, calibration: dict) -> None:
        """The motors keep their own copy of homing offset and range; when it differs from the
        file, write the file (what lerobot does when you press ENTER to use the file)."""
        if bus.is_calibrated:
            return
        log.warning(
            "calibration in the motors on %s differs from the file: writing the file", self.port
        )
        bus.disable_torque(num_retry=self.read_retries)
        bus.write_calibration(calibration)

    def _configure(self, bus: Any) -> None:
        """lerobot's SOFollower.configure(): EEPROM writes need torque off (briefly limp)."""
        bus.disable_torque(num_retry=self.read_retries)
        bus.configure_motors()
        for joint in JOINTS:
            bus.write("Operating_Mode", joint, 0)  # position mode
            for register, value in PID.items():
                bus.write(register, joint, value)
        for register, value in GRIPPER_PROTECTION.items():
            bus.write(register, GRIPPER, value)

    def _lost(self, reason: str) -> None:
        self.stats.connected = False
        self.stats.last_error = reason
        log.warning("lost the arm on %s: %s; reconnecting with backoff", self.port, reason)
        self._close_quietly(self._bus, torque_off=False)
        self._bus = None

    def _connected_bus(self) -> Any:
        if self._bus is None:
            if not self._backoff.due():
                raise ArmFault(
                    f"not connected ({self.stats.last_error}); next attempt in "
                    f"{self._backoff.wait_s():.1f} s"
                )
            self.connect()
        return self._bus

    @staticmethod
    def _close_quietly(bus: Any, torque_off: bool) -> None:
        if bus is None:
            return
        try:
            if bus.is_connected:
                bus.disconnect(disable_torque=torque_off)
        except Exception as exc:  # closing a port that is already gone
            log.debug("closing the port: %s", describe_error(exc))
            try:
                bus.port_handler.closePort()
            except Exception:
                pass

    # -- transfers -----------------------------------------------------------------------------
    def _flush(self, bus: Any) -> None:
        # A late or corrupt reply left in the input buffer would be read as the next reply.
        bus.port_handler.is_using = False
        bus.port_handler.ser.reset_input_buffer()

    def _read_present(self, bus: Any) -> dict[str, float]:
        """sync_read with our own counted retries; raises ConnectionError after the last one."""
        for attempt in range(self.read_retries + 1):
            try:
                return bus.sync_read("Present_Position", num_retry=0)
            except ConnectionError:
                if attempt == self.read_retries:
                    raise
                self.stats.retries += 1
                self._flush(bus)
        raise AssertionError("unreachable")

    def _failed(self, bus: Any, what: str, exc: Exception) -> ArmFault:
        """Count a transfer that failed after its retries; reopen after too many in a row."""
        self.stats.errors += 1
        self._failures_in_a_row += 1
        # lerobot's text counts its own tries ("after 1 tries"); keep only the SDK's verdict.
        text = describe_error(exc)
        verdict = text[text.find("[TxRxResult]") :] if "[TxRxResult]" in text else text
        self.stats.last_error = f"{what}: {verdict}"
        if self._failures_in_a_row >= self.reconnect_after_failures:
            self._lost(f"{self._failures_in_a_row} transfers failed in a row ({what})")
        else:
            self._flush(bus)
        return ArmFault(self.stats.last_error)

    def read_positions(self) -> np.ndarray:
        bus = self._connected_bus()
        try:
            values = self._read_present(bus)
        except ConnectionError as exc:
            raise self._failed(
                bus, f"read Present_Position failed {self.read_retries + 1} times", exc
            ) from None
        except PORT_ERRORS as exc:
            self._lost(describe_error(exc))
            raise ArmFault(self.stats.last_error) from None
        self._failures_in_a_row = 0
        return np.array([values[j] for j in JOINTS], dtype=np.float32)

    def write_goals(self, goals: np.ndarray) -> None:
        bus = self._bus
        if bus is None:
            raise ArmFault(f"not connected ({self.stats.last_error})")
        try:
            bus.sync_write(
                "Goal_Position", {j: float(g) for j, g in zip(JOINTS, goals, strict=True)}
            )
        except ConnectionError as exc:
            raise self._failed(bus, "write Goal_Position failed", exc) from None
        except PORT_ERRORS as exc:
            self._lost(describe_error(exc))
            raise ArmFault(self.stats.last_error) from None

    def set_torque(self, enabled: bool) -> None:
        bus = self._bus
        if bus is None:
            raise ArmFault(f"not connected ({self.stats.last_error})")
        try:
            if enabled:
                bus.enable_torque(num_retry=self.read_retries)
            else:
                bus.disable_torque(num_retry=self.read_retries)
        except ConnectionError as exc:
            raise self._failed(bus, f"torque {'on' if enabled else 'off'} failed", exc) from None
        except PORT_ERRORS as exc:
            self._lost(describe_error(exc))
            raise ArmFault(self.stats.last_error) from None

    def disconnect(self, torque_off: bool) -> None:
        bus, self._bus = self._bus, None
        self.stats.connected = False
        if bus is None:
            return
        if torque_off:
            try:
                self._flush(bus)
                bus.disable_torque(num_retry=5)
            except Exception as exc:
                log.error("could not switch torque off on %s: %s", self.port, describe_error(exc))
        self._close_quietly(bus, torque_off=False)

    def joint_range(self) -> tuple[np.ndarray, np.ndarray]:
        return calibrated_range(self.calibration)

"""A simulated arm: follows its goals with a first-order lag, for closed-loop tests."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from drivers.servo.base import GRIPPER, JOINTS, ArmDriver, ArmFault

# Without a calibration, the whole turn for the body joints and the gripper's 0-100.
SIM_LOWER = np.array([0.0 if j == GRIPPER else -180.0 for j in JOINTS])
SIM_UPPER = np.array([100.0 if j == GRIPPER else 180.0 for j in JOINTS])


class SimArm(ArmDriver):
    """Each joint moves toward its goal as x += (goal - x) * (1 - exp(-dt / tau)) while torque
    is on, and stays where it is when torque is off (no gravity here)."""

    def __init__(
        self,
        time_constant_s: float = 0.1,
        start: np.ndarray | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        if time_constant_s <= 0:
            raise ValueError(f"sim time constant must be > 0, got {time_constant_s}")
        self.time_constant_s = time_constant_s
        start = np.zeros(len(JOINTS)) if start is None else np.asarray(start, dtype=np.float64)
        self._position = np.clip(start, SIM_LOWER, SIM_UPPER)
        self._goal = self._position.copy()
        self._torque = False
        self._clock = clock
        self._t = clock()

    def describe(self) -> str:
        return f"sim arm (first-order lag, time constant {self.time_constant_s:g} s)"

    def _advance(self) -> None:
        now = self._clock()
        if self._torque:
            gain = 1.0 - math.exp(-(now - self._t) / self.time_constant_s)
            self._position += (self._goal - self._position) * gain
        self._t = now

    def _require_connected(self) -> None:
        if not self.stats.connected:
            raise ArmFault("sim arm is not connected")

    def connect(self) -> None:
        self._advance()
        self._goal = self._position.copy()
        self._torque = True
        self.stats.connected = True
        self.stats.connects += 1

    def read_positions(self) -> np.ndarray:
        self._require_connected()
        self._advance()
        return self._position.astype(np.float32)

    def write_goals(self, goals: np.ndarray) -> None:
        self._require_connected()
        self._advance()
        self._goal = np.asarray(goals, dtype=np.float64).copy()

    def set_torque(self, enabled: bool) -> None:
        self._require_connected()
        self._advance()
        self._torque = enabled

    def disconnect(self, torque_off: bool) -> None:
        self._advance()
        if torque_off:
            self._torque = False
        self.stats.connected = False

    def joint_range(self) -> tuple[np.ndarray, np.ndarray]:
        return SIM_LOWER.copy(), SIM_UPPER.copy()

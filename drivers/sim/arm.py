"""One simulated SO-101 arm as an `ArmDriver`: the servo process's interface onto MuJoCo."""

from __future__ import annotations

import numpy as np

from drivers.servo.base import ArmDriver, ArmFault
from drivers.sim.world import SimWorld


class MujocoArm(ArmDriver):
    """Reads and commands one arm of a `SimWorld` (the world steps its own physics)."""

    def __init__(self, world: SimWorld, arm: str):
        super().__init__()
        if arm not in world.arms:
            raise ValueError(
                f"the {world.scene.task} scene has no arm {arm!r}: it has {list(world.arms)}"
            )
        self.world = world
        self.arm = arm

    def describe(self) -> str:
        return f"MuJoCo SO-101 {self.arm!r} in the {self.world.scene.task} scene"

    def _require_connected(self) -> None:
        if not self.stats.connected:
            raise ArmFault(f"sim arm {self.arm} is not connected")

    def connect(self) -> None:
        self.world.set_goal(self.arm, self.world.positions(self.arm))
        self.world.set_torque(self.arm, True)
        self.stats.connected = True
        self.stats.connects += 1

    def read_positions(self) -> np.ndarray:
        self._require_connected()
        return self.world.positions(self.arm)

    def write_goals(self, goals: np.ndarray) -> None:
        self._require_connected()
        try:
            self.world.set_goal(self.arm, goals)
        except ValueError as exc:  # not finite: core.safety never lets one through
            raise ArmFault(str(exc)) from None

    def set_torque(self, enabled: bool) -> None:
        self._require_connected()
        self.world.set_torque(self.arm, enabled)

    def disconnect(self, torque_off: bool) -> None:
        if torque_off:
            self.world.set_torque(self.arm, False)
        self.stats.connected = False

    def joint_range(self) -> tuple[np.ndarray, np.ndarray]:
        return self.world.arms[self.arm].unit_range()

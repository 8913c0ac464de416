"""What every arm driver offers the servo process, in lerobot's units (degrees, gripper 0-100)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass

import numpy as np

from core.so101 import GRIPPER, JOINTS  # noqa: F401 (part of the driver interface)


class ArmFault(Exception):
    """The arm could not be read or commanded this time (the message says why). The driver keeps
    trying on later calls (retries, reconnects with backoff); the caller skips this tick."""


@dataclass
class SerialStats:
    retries: int = 0  # transfers repeated after a corrupt or missing reply
    errors: int = 0  # operations that still failed after their retries
    connects: int = 0  # successful connects, the first one included
    reconnects: int = 0  # successful connects after the arm was lost
    connect_failures: int = 0
    connected: bool = False
    last_error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class ArmDriver(ABC):
    """One arm. Positions and goals are float (6,) arrays in JOINTS order."""

    names: tuple[str, ...] = JOINTS

    def __init__(self) -> None:
        self.stats = SerialStats()

    @abstractmethod
    def describe(self) -> str:
        """One line for logs: what this driver talks to."""

    @abstractmethod
    def connect(self) -> None:
        """Open the arm and switch torque on, holding the present position. Raises ArmFault."""

    @abstractmethod
    def read_positions(self) -> np.ndarray:
        """Present positions, float32 (6,). Reconnects when due; raises ArmFault."""

    @abstractmethod
    def write_goals(self, goals: np.ndarray) -> None:
        """Goal positions for all joints (already checked by core.safety). Raises ArmFault."""

    @abstractmethod
    def set_torque(self, enabled: bool) -> None:
        """Torque on (the servos hold their goal) or off (the arm goes limp). Raises ArmFault."""

    @abstractmethod
    def disconnect(self, torque_off: bool) -> None:
        """Close the arm, leaving torque on (holding) or switching it off. Never raises."""

    @abstractmethod
    def joint_range(self) -> tuple[np.ndarray, np.ndarray]:
        """The range each joint can be commanded to (lower, upper), in lerobot units."""

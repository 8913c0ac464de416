"""Arm drivers: SO-101 follower arms over the Feetech bus (lerobot's own motor code), and a
simulated arm for closed-loop tests without hardware. Lerobot is imported only by the Feetech
driver, and only when it connects: importing it pulls in torch (seconds of start-up)."""

from drivers.servo.base import JOINTS, ArmDriver, ArmFault, SerialStats
from drivers.servo.calibration import (
    CalibrationError,
    JointCalibration,
    calibrated_range,
    default_calibration_path,
    load_calibration,
)
from drivers.servo.feetech import FeetechArm
from drivers.servo.sim import SimArm

__all__ = [
    "JOINTS",
    "ArmDriver",
    "ArmFault",
    "CalibrationError",
    "FeetechArm",
    "JointCalibration",
    "SerialStats",
    "SimArm",
    "calibrated_range",
    "default_calibration_path",
    "load_calibration",
]

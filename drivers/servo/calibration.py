"""SO-101 calibration files, exactly as lerobot's calibration writes them.

`lerobot-calibrate --robot.type=so101_follower --robot.id=<id>` saves one JSON per arm,
`{motor: {id, drive_mode, homing_offset, range_min, range_max}}` (raw encoder steps), under
`$HF_LEROBOT_CALIBRATION/robots/so_follower/<id>.json` (by default
`~/.cache/huggingface/lerobot/calibration/...`). Parsed here with json rather than through
lerobot, so a bad file is reported before lerobot (and torch) is even imported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from drivers.servo.base import GRIPPER, JOINTS

# STS3215: 4096 encoder steps per turn. lerobot maps steps to degrees with (resolution - 1).
STEPS_PER_TURN = 4096
# Where lerobot 0.6 puts so_follower calibrations, and where lerobot <= 0.3 put them.
ROBOT_DIRS = ("so_follower", "so101_follower")


class CalibrationError(ValueError):
    """A calibration file that is missing or unusable; the message says what to do."""


@dataclass(frozen=True)
class JointCalibration:
    id: int
    drive_mode: int
    homing_offset: int
    range_min: int
    range_max: int


def lerobot_calibration_root() -> Path:
    """lerobot's calibration folder, resolved from the same environment variables it reads."""
    if root := os.getenv("HF_LEROBOT_CALIBRATION"):
        return Path(root).expanduser()
    if home := os.getenv("HF_LEROBOT_HOME"):
        return Path(home).expanduser() / "calibration"
    hf_home = os.getenv("HF_HOME") or os.path.join(
        os.getenv("XDG_CACHE_HOME", "~/.cache"), "huggingface"
    )
    return Path(hf_home).expanduser() / "lerobot" / "calibration"


def default_calibration_path(robot_id: str) -> Path:
    """`robots/so_follower/<id>.json`, or the older `so101_follower` folder if only that exists."""
    root = lerobot_calibration_root() / "robots"
    candidates = [root / d / f"{robot_id}.json" for d in ROBOT_DIRS]
    return next((p for p in candidates if p.is_file()), candidates[0])


def load_calibration(path: str | Path) -> dict[str, JointCalibration]:
    path = Path(path).expanduser()
    hint = (
        "calibrate the arm with `lerobot-calibrate --robot.type=so101_follower "
        "--robot.port=<port> --robot.id=<id>` or point `calibration:` at its JSON"
    )
    if not path.is_file():
        raise CalibrationError(f"no calibration file at {path}: {hint}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"cannot read calibration {path}: {exc}") from None
    if not isinstance(raw, dict) or set(raw) != set(JOINTS):
        got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise CalibrationError(f"calibration {path} has joints {got}, expected {list(JOINTS)}")
    keys = [f.name for f in fields(JointCalibration)]
    calibration = {}
    for joint in JOINTS:
        entry = raw[joint]
        if not isinstance(entry, dict) or any(not isinstance(entry.get(k), int) for k in keys):
            raise CalibrationError(f"calibration {path}: {joint} needs integer {keys}: {entry}")
        cal = JointCalibration(**{k: entry[k] for k in keys})
        if not 0 <= cal.range_min < cal.range_max < STEPS_PER_TURN:
            raise CalibrationError(
                f"calibration {path}: {joint} range [{cal.range_min}, {cal.range_max}] is not "
                f"inside [0, {STEPS_PER_TURN - 1}] with min < max"
            )
        calibration[joint] = cal
    ids = [calibration[j].id for j in JOINTS]
    if len(set(ids)) != len(ids):
        raise CalibrationError(f"calibration {path}: motor ids repeat: {ids}")
    return calibration


def calibrated_range(calibration: dict[str, JointCalibration]) -> tuple[np.ndarray, np.ndarray]:
    """Each joint's calibrated range in lerobot units: degrees for the body joints (lerobot's
    DEGREES mode: 0 at the middle of the range), 0-100 for the gripper (RANGE_0_100)."""
    lower, upper = [], []
    for joint in JOINTS:
        cal = calibration[joint]
        if joint == GRIPPER:
            lower.append(0.0)
            upper.append(100.0)
            continue
        mid = (cal.range_min + cal.range_max) / 2
        scale = 360.0 / (STEPS_PER_TURN - 1)
        # Half a step inside: lerobot turns degrees back into steps with int() (truncation), so
        # the exact edge can land one step outside the calibrated range.
        lower.append((cal.range_min + 0.5 - mid) * scale)
        upper.append((cal.range_max - 0.5 - mid) * scale)
    return np.array(lower), np.array(upper)

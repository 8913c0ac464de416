"""The pieces the servo process relies on, without a process: its calibration files as
lerobot writes them, the e-stop latch file, the reconnect backoff (tests/test_servo.py runs the
process), which shares its calibration file and raw-step conversions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.backoff import Backoff
from core.estop_latch import EstopLatch
from drivers.servo import (
    JOINTS,
    CalibrationError,
    calibrated_range,
    default_calibration_path,
    load_calibration,
)

RANGE_MIN, RANGE_MAX = 1000, 3000  # calibrated range of every emulated motor (raw steps)
MID = (RANGE_MIN + RANGE_MAX) / 2
START_RAW = 2048  # where the emulated motors are at power-up
STEPS_PER_DEG = 4095 / 360


def deg_to_raw(deg: float) -> int:
    """lerobot's DEGREES unnormalisation for the calibration used here."""
    return int(deg * STEPS_PER_DEG + MID)


def raw_to_deg(raw: float) -> float:
    return (raw - MID) / STEPS_PER_DEG


def write_calibration(folder: Path) -> Path:
    """A calibration file in lerobot's format (homing offsets as lerobot would have written)."""
    path = folder / "follower.json"
    path.write_text(
        json.dumps(
            {
                joint: {
                    "id": i + 1,
                    "drive_mode": 0,
                    "homing_offset": -17 * (i + 1),
                    "range_min": RANGE_MIN,
                    "range_max": RANGE_MAX,
                }
                for i, joint in enumerate(JOINTS)
            },
            indent=4,
        )
    )
    return path


@pytest.fixture
def calibration(tmp_path: Path) -> Path:
    return write_calibration(tmp_path)


def test_estop_latch_file_fails_safe(tmp_path, caplog) -> None:
    latch = EstopLatch(tmp_path / "latch.json")
    assert latch.engaged() is None
    latch.engage("test")
    assert latch.engaged().startswith("test (engaged ")
    latch.path.write_text("{not json")  # a torn or edited file still counts as engaged
    assert "unreadable latch file" in latch.engaged()
    latch.clear()
    assert latch.engaged() is None and not latch.path.exists()

    (tmp_path / "a-file").write_text("")
    blocked = EstopLatch(tmp_path / "a-file" / "latch.json")  # cannot be written
    blocked.engage("test")
    assert "NOT latched" in caplog.text
    assert EstopLatch(None).engaged() is None  # memory only: nothing to read or write


def test_calibration_files_as_lerobot_writes_them(tmp_path, calibration, monkeypatch) -> None:
    cal = load_calibration(calibration)
    lower, upper = calibrated_range(cal)
    assert lower[0] == pytest.approx(-87.9, abs=0.1) and upper[0] == pytest.approx(87.9, abs=0.1)
    assert (lower[-1], upper[-1]) == (0.0, 100.0)  # gripper: 0-100
    assert deg_to_raw(upper[0]) <= RANGE_MAX and deg_to_raw(lower[0]) >= RANGE_MIN

    monkeypatch.setenv("HF_LEROBOT_CALIBRATION", str(tmp_path / "cal"))
    assert default_calibration_path("x") == tmp_path / "cal/robots/so_follower/x.json"
    old = tmp_path / "cal/robots/so101_follower/x.json"  # where lerobot <= 0.3 wrote it
    old.parent.mkdir(parents=True)
    old.write_text(calibration.read_text())
    assert default_calibration_path("x") == old

    broken = json.loads(calibration.read_text())
    del broken["gripper"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(CalibrationError, match="expected"):
        load_calibration(tmp_path / "broken.json")


def test_backoff_doubles_up_to_its_max_and_resets() -> None:
    now = [0.0]
    backoff = Backoff(0.5, 2.0, clock=lambda: now[0])
    assert backoff.due()
    assert [backoff.failed() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    assert not backoff.due() and backoff.wait_s() == 2.0
    now[0] = 2.0
    assert backoff.due()
    backoff.reset()
    assert backoff.due() and backoff.failed() == 0.5

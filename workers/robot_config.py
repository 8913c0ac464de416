"""The robot's I/O settings: one file (configs/robot.yaml) for its cameras and arms.

Every camera process and the servo process parse the same `RobotIOConfig`, so one file
configures them all: `--config_path=configs/robot.yaml`, plus `--camera=<name>` for a camera
process. Entries of `cameras` / `arms` are overridden on the command line as YAML maps, e.g.
`--cameras='{front: {source: /dev/video2}}'` (draccus merges them into the file's entries).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bus import BusConfig
from drivers.camera import CameraSettings

ARM_SETS = ({"arm"}, {"left_arm"}, {"right_arm"}, {"left_arm", "right_arm"})
DRIVERS = ("feetech", "sim")
ON_EXIT = ("hold", "release")
MAX_RATE_HZ = 100.0


class ConfigError(ValueError):
    """Settings that parse but make no sense; the message names the setting."""


@dataclass
class ArmSettings:
    # "feetech": an SO-101 follower on a serial port. "sim": a simulated arm, no hardware.
    driver: str = "sim"
    # Serial port of the arm's controller board (`lerobot-find-port` tells which).
    port: str = "/dev/ttyACM0"
    # The id the arm was calibrated under with lerobot (`--robot.id`): names its calibration file.
    id: str = "follower"
    # Calibration JSON; default: lerobot's, ~/.cache/huggingface/lerobot/calibration/robots/
    # so_follower/<id>.json (HF_LEROBOT_CALIBRATION / HF_LEROBOT_HOME / HF_HOME are honoured).
    calibration: str | None = None
    # Ping every motor and check firmware versions on connect (clear error for a missing motor).
    handshake: bool = True
    # Extra sync_read attempts per tick when a reply is corrupt or missing.
    read_retries: int = 2
    # This many failed reads/writes in a row: close the port and reconnect.
    reconnect_after_failures: int = 5
    reconnect_backoff_s: float = 0.5
    reconnect_backoff_max_s: float = 5.0
    # Per joint [low, high] in lerobot units (deg, gripper 0-100); narrows the calibrated range.
    limits: dict[str, list[float]] = field(default_factory=dict)
    # Largest change of the commanded goal per control tick (deg, gripper %), and per joint.
    max_step: float = 10.0
    joint_max_step: dict[str, float] = field(default_factory=dict)
    # Sim driver: time constant of the first-order lag the joints follow goals with.
    sim_time_constant_s: float = 0.1


@dataclass
class ServoSettings:
    # Control rate: read state, publish it, write goals (up to 100 Hz).
    rate_hz: float = 30.0
    # No fresh goal for this long: hold the present position (and say why on event/hold).
    watchdog_s: float = 0.5
    # Goals older than this (their t_exec, else t_cap, vs now) are rejected as stale.
    max_goal_age_s: float = 0.25
    # After a hold, goals are followed at this fraction of max_step at first, ramping up to the
    # full step over resume_ramp_s.
    resume_scale: float = 0.2
    resume_ramp_s: float = 1.0
    # When the process stops or crashes: "hold" (torque stays on at the present position) or
    # "release" (torque off: the arm goes limp and falls under gravity).
    on_exit: str = "hold"
    # Remember an engaged e-stop in this file, so a crashed or restarted servo process comes back
    # stopped; only an explicit clear (`engaged: false`) removes it. Empty: memory only. The
    # stack sets $SO101_RUN_DIR/estop-latch.json.
    estop_latch_file: str = ""


@dataclass
class RobotIOConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    # Camera name -> settings. Each camera runs in a process of its own.
    cameras: dict[str, CameraSettings] = field(default_factory=dict)
    # Which entry of `cameras` this camera process serves (default: the only one).
    camera: str | None = None
    # Arm name (`arm`, or `left_arm` and `right_arm`) -> settings. One servo process serves them.
    arms: dict[str, ArmSettings] = field(default_factory=lambda: {"arm": ArmSettings()})
    servo: ServoSettings = field(default_factory=ServoSettings)
    # Name on the bus (health/<name>); default camera-<camera> or servo.
    name: str | None = None
    health_interval_s: float = 1.0


def selected_camera(cfg: RobotIOConfig) -> tuple[str, CameraSettings]:
    if not cfg.cameras:
        raise ConfigError("no cameras configured (cameras: {name: {source: ...}})")
    name = cfg.camera
    if name is None:
        if len(cfg.cameras) > 1:
            raise ConfigError(
                f"several cameras configured {sorted(cfg.cameras)}: pick one with --camera=<name>"
            )
        name = next(iter(cfg.cameras))
    if name not in cfg.cameras:
        raise ConfigError(f"camera {name!r} is not configured; cameras: {sorted(cfg.cameras)}")
    try:
        cfg.cameras[name].validate()
    except ValueError as exc:
        raise ConfigError(f"cameras.{name}: {exc}") from None
    return name, cfg.cameras[name]


def check_servo(cfg: RobotIOConfig) -> None:
    servo = cfg.servo
    if set(cfg.arms) not in ARM_SETS:
        raise ConfigError(
            f"arms {sorted(cfg.arms)}: expected `arm`, or `left_arm` and/or `right_arm`"
        )
    if not 0 < servo.rate_hz <= MAX_RATE_HZ:
        raise ConfigError(f"servo.rate_hz must be in (0, {MAX_RATE_HZ:g}], got {servo.rate_hz}")
    if servo.on_exit not in ON_EXIT:
        raise ConfigError(f"servo.on_exit must be one of {ON_EXIT}, got {servo.on_exit!r}")
    for name in ("watchdog_s", "max_goal_age_s"):
        if getattr(servo, name) <= 0:
            raise ConfigError(f"servo.{name} must be > 0")
    for name, arm in cfg.arms.items():
        if arm.driver not in DRIVERS:
            raise ConfigError(f"arms.{name}.driver must be one of {DRIVERS}, got {arm.driver!r}")
        if arm.read_retries < 0 or arm.reconnect_after_failures < 1:
            raise ConfigError(f"arms.{name}: read_retries >= 0 and reconnect_after_failures >= 1")
        if arm.max_step <= 0 or any(v <= 0 for v in arm.joint_max_step.values()):
            raise ConfigError(f"arms.{name}: max_step values must be > 0")

"""Camera process: one OpenCV camera published as `camera/<name>`.

    uv run python -m workers.camera --config_path=configs/robot.yaml --camera=front

Frames go out as they come, stamped with their capture time. A camera that stops delivering
(unplugged, stalled, file ended, cannot be opened) is reported once on `event/camera`
({camera, state: "lost", reason}) and in the log, reopened with backoff, and reported again
when it is back ({state: "back"}); the process itself never dies of it.
"""

from __future__ import annotations

import logging

from bus import Publisher, clock, topics
from bus.health import HealthReporter
from core.backoff import Backoff
from drivers.camera import CameraLost, OpenCVCamera
from workers import lifecycle
from workers.lifecycle import exit_bad_config, parse_or_exit
from workers.meters import RateMeter
from workers.robot_config import (
    CameraSettings,
    ConfigError,
    RobotIOConfig,
    selected_camera,
)

READ_WAIT_S = 0.2  # how long one read waits for a frame: bounds the health and stop latency


class Outage:
    """Reports each change between streaming and lost, once, on the bus and in the log."""

    def __init__(self, pub: Publisher, camera: str, log: logging.Logger):
        self.pub, self.camera, self.log = pub, camera, log
        self.reason: str | None = None  # set while the camera is lost

    def lost(self, reason: str) -> None:
        if self.reason is None:
            self.log.warning("camera %s lost: %s", self.camera, reason)
            # A camera that fails at start-up would report it before the hub has passed on
            # anyone's subscription (ZeroMQ's slow joiner): give a listener a moment.
            self.pub.wait_for_subscriber(topics.event("camera"), 1.0)
            self.pub.publish(
                topics.event("camera"),
                data={"camera": self.camera, "state": "lost", "reason": reason},
            )
        self.reason = reason

    def back(self) -> bool:
        """True if the camera was lost until now."""
        if self.reason is None:
            return False
        self.log.info("camera %s back (was lost: %s)", self.camera, self.reason)
        self.pub.publish(
            topics.event("camera"),
            data={"camera": self.camera, "state": "back", "reason": self.reason},
        )
        self.reason = None
        return True


def main() -> None:
    cfg = parse_or_exit(RobotIOConfig, "camera")
    try:
        name, settings = selected_camera(cfg)
    except ConfigError as exc:
        exit_bad_config("camera", exc)
    with lifecycle.Process(cfg.name or f"camera-{name}") as proc:
        stream(cfg, name, settings, proc)


def stream(
    cfg: RobotIOConfig, name: str, settings: CameraSettings, proc: lifecycle.Process
) -> None:
    log, stop = proc.log, proc.stop
    pub = proc.closing(Publisher(cfg.bus, proc.name))
    camera = proc.closing(OpenCVCamera(settings, clock=clock.now))
    backoff = Backoff(settings.reopen_backoff_s, settings.reopen_backoff_max_s)

    topic = topics.camera(name)
    outage = Outage(pub, name, log)
    fps = RateMeter()
    status = {"state": "opening", "reopens": 0, "open_failures": 0, "size": None}

    def collect() -> dict:
        return {
            **status,
            "camera": name,
            "source": settings.source,
            "rate_hz": fps.rate(),
            "drops": {
                "dropped": camera.dropped,
                "failed_reads": camera.failed_reads,
                "abandoned_readers": camera.abandoned_readers,
            },
            "fps": fps.rate(),
            "frames": fps.count,
            "dropped": camera.dropped,
            "failed_reads": camera.failed_reads,
            "abandoned_readers": camera.abandoned_readers,
            "lost_reason": outage.reason,
        }

    proc.health = health = HealthReporter(pub, proc.name, collect, cfg.health_interval_s)
    log.info("ready: camera %s publishing %s from %s", name, topic, settings.source)
    while not stop.is_set():
        health.tick()
        if status["state"] == "ended":  # a file that ended, with loop off: report only
            stop.wait(READ_WAIT_S)
            continue
        if not camera.is_open:
            if not backoff.due():
                stop.wait(min(backoff.wait_s(), READ_WAIT_S))
                continue
            try:
                info = camera.open()
            except CameraLost as exc:
                status["state"] = "reopening"
                status["open_failures"] += 1
                outage.lost(exc.reason)
                health.error(exc.reason)
                log.info("retrying %s in %.1f s", settings.source, backoff.failed())
                continue
            backoff.reset()
            status["reopens"] += 1 if outage.back() else 0
            status["state"] = "streaming"
            status["size"] = f"{info.width}x{info.height}"
            continue
        try:
            frame = camera.read(READ_WAIT_S)
        except CameraLost as exc:
            camera.close()
            outage.lost(exc.reason)
            health.error(exc.reason)
            status["state"] = "ended" if exc.ended and not settings.loop else "reopening"
            continue
        if frame is not None:
            pub.publish(topic, {"image": frame.image}, {"frame": fps.count}, t_cap=frame.t_cap)
            fps.add()
    proc.last_words = f"stopped after {fps.count} frames"


if __name__ == "__main__":
    main()

"""The camera process on real OpenCV sources: video files the tests write with cv2.VideoWriter."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from bus import BusConfig, Message, Subscriber
from drivers.camera import CameraLost, CameraSettings, OpenCVCamera

from conftest import wait_until

WIDTH, HEIGHT = 64, 48
BLUE_BGR = (255, 0, 0)  # what OpenCV writes: the frames must come out as RGB (0, 0, 255)


def make_video(path: Path, frames: int = 15, fps: float = 30.0) -> Path:
    """A short MJPG clip of blue frames (MJPG: OpenCV can always write and read it back)."""
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(frames):
        image = np.full((HEIGHT, WIDTH, 3), BLUE_BGR, np.uint8)
        image[:8, :8] = (i * 16) % 256  # a little movement
        writer.write(image)
    writer.release()
    tmp.replace(path)  # appears whole: a camera polling for it never opens half a file
    return path


def camera_config(tmp_path: Path, bus_cfg: BusConfig, **front: object) -> Path:
    path = tmp_path / "robot.yaml"
    path.write_text(
        yaml.safe_dump(
            {"bus": bus_cfg.endpoints(), "cameras": {"front": front}, "health_interval_s": 0.2}
        )
    )
    return path


class Probe:
    """Frames, camera events and health of camera `front`, drained on demand."""

    def __init__(self, cfg: BusConfig):
        self.sub = Subscriber(
            cfg, ["camera/front", "event/camera", "health/camera-front"], mode="every"
        )
        self.frames: list[Message] = []
        self.events: list[dict] = []
        self.health: dict = {}

    def poll(self) -> Probe:
        while (msg := self.sub.recv(0.0)) is not None:
            if msg.topic == "camera/front":
                self.frames.append(msg)
            elif msg.topic == "event/camera":
                self.events.append(msg.data)
            else:
                self.health = msg.data
        return self

    def event(self, state: str, contains: str = "") -> dict | None:
        self.poll()
        return next(
            (e for e in self.events if e["state"] == state and contains in e["reason"]), None
        )


@pytest.fixture
def probe(bus_cfg: BusConfig, hub):
    probe = Probe(bus_cfg)
    yield probe
    probe.sub.close()


def start_camera(procs, config: Path):
    proc = procs("camera", "-m", "workers.camera", f"--config_path={config}")
    proc.wait_for_output("ready:")
    return proc


def test_video_file_frames_then_end_reported_and_reopened(tmp_path, bus_cfg, procs, probe) -> None:
    video = make_video(tmp_path / "clip.avi", frames=15)  # half a second at 30 fps
    camera = start_camera(procs, camera_config(tmp_path, bus_cfg, source=str(video)))

    wait_until(
        lambda: len(probe.poll().frames) >= 40 and probe.event("back", "ended"),
        what="40 frames across the end of the file",
    )
    assert probe.event("lost", "ended")["camera"] == "front"
    frames = probe.frames
    for msg in frames:
        image = msg.arrays["image"]
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    red, blue = frames[-1].arrays["image"][20:, 20:, 0], frames[-1].arrays["image"][20:, 20:, 2]
    assert blue.mean() > 200 and red.mean() < 60  # converted BGR -> RGB
    indices = [m.data["frame"] for m in frames]
    assert indices == sorted(set(indices))
    t_caps = [m.t_cap for m in frames]
    assert all(b > a for a, b in zip(t_caps, t_caps[1:], strict=False))

    wait_until(lambda: probe.poll().health.get("reopens", 0) >= 1, what="reopen counted")
    assert probe.health["fps"] >= 0 and probe.health["failed_reads"] >= 1
    assert camera.popen.poll() is None
    assert "camera front lost: ended" in camera.output()


def test_unreadable_source_is_reported_and_retried_until_it_works(
    tmp_path, bus_cfg, procs, probe
) -> None:
    video = tmp_path / "late.avi"
    camera = start_camera(
        procs,
        camera_config(
            tmp_path, bus_cfg, source=str(video), reopen_backoff_s=0.1, reopen_backoff_max_s=0.4
        ),
    )
    wait_until(lambda: probe.event("lost", "no such file"), what="lost event: no such file")
    wait_until(lambda: probe.poll().health.get("open_failures", 0) >= 3, what="retries")
    assert probe.health["state"] == "reopening" and camera.popen.poll() is None
    assert len(probe.events) == 1  # reported once, not on every retry

    make_video(video)
    wait_until(lambda: probe.event("back") and probe.poll().frames, what="frames once it exists")
    wait_until(lambda: probe.poll().health.get("state") == "streaming", what="streaming")


def test_bad_camera_config_exits_with_one_line(tmp_path, bus_cfg, procs) -> None:
    for args, message in [
        (["--camera=rear"], "camera 'rear' is not configured"),
        (["--cameras={front: {source: '0', width: -640}}"], "width must be > 0"),
    ]:
        config = camera_config(tmp_path, bus_cfg, source="0")
        proc = procs("camera", "-m", "workers.camera", f"--config_path={config}", *args)
        assert proc.popen.wait(60) == 2
        lines = proc.output().strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines


# -- the driver on its own ------------------------------------------------------------------------
def test_driver_frames_are_rgb_contiguous_and_stamped(tmp_path) -> None:
    stamps = iter(range(1000, 2000))
    camera = OpenCVCamera(
        CameraSettings(source=str(make_video(tmp_path / "c.avi"))),
        clock=lambda: float(next(stamps)),
    )
    info = camera.open()
    assert (info.kind, info.width, info.height) == ("file", WIDTH, HEIGHT)
    frame = wait_until(lambda: camera.read(0.2), what="a frame")
    assert frame.image.flags.c_contiguous and frame.image.shape == (HEIGHT, WIDTH, 3)
    assert frame.image[30, 30].tolist() == pytest.approx([0, 0, 255], abs=40)
    assert frame.t_cap >= 1000
    camera.close()


class StallingCapture:
    """A capture that delivers `frames` frames, then blocks inside grab() like a stalled device."""

    def __init__(self, frames: int):
        self.left = frames
        self.unblock = threading.Event()

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return True

    def set(self, *_: object) -> bool:
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FRAME_WIDTH: 8, cv2.CAP_PROP_FRAME_HEIGHT: 4}.get(prop, 30.0)

    def grab(self) -> bool:
        if self.left <= 0:
            self.unblock.wait(10)
            return False
        self.left -= 1
        return True

    def retrieve(self) -> tuple[bool, np.ndarray]:
        return True, np.zeros((4, 8, 3), np.uint8)

    def release(self) -> None:
        pass


def test_driver_reports_a_stalled_device_instead_of_blocking() -> None:
    capture = StallingCapture(frames=3)
    camera = OpenCVCamera(
        CameraSettings(source="0", read_timeout_s=0.3), capture_factory=lambda _: capture
    )
    camera.open()
    with pytest.raises(CameraLost, match="no frame for"):
        wait_until(lambda: camera.read(0.05) and False, timeout=10, what="stall detected")
    camera.close()  # the reader is stuck in grab(): abandoned, not waited for
    assert camera.abandoned_readers == 1 and not camera.is_open
    capture.unblock.set()

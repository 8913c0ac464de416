"""The dashboard's settings (command line, config file)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bus import BusConfig
from workers.dashboard.view import CONTROL_TOPICS, EVENTS


@dataclass
class DashboardConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    # Where the page is served. Loopback by default; other hosts see the page but not the
    # controls unless allow_remote_control.
    host: str = "127.0.0.1"
    port: int = 9000
    # Let the e-stop and recording buttons work from other machines too.
    allow_remote_control: bool = False
    # Frames pushed to the page per camera per second, their width (px) and JPEG quality.
    camera_fps: float = 5.0
    camera_width: int = 320
    jpeg_quality: int = 70
    # JSON updates pushed to the page per second.
    push_hz: float = 10.0
    # Seconds of joint history kept for a page that opens (the page scrolls its own).
    history_s: float = 20.0
    # A process is "running" while its health/<process> came within this many seconds.
    alive_s: float = 3.0
    # How long a button press waits for a listener before publishing anyway.
    listener_wait_s: float = 0.5
    # event/<kind>s shown in the page's event log (never estop or record: see EVENTS).
    events: list[str] = field(default_factory=lambda: list(EVENTS))
    # Name on the bus (source of messages and health/<name>).
    name: str = "dashboard"

    def check(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"--port must be 1..65535, got {self.port}")
        for key in ("camera_fps", "push_hz", "history_s", "alive_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"--{key} must be > 0, got {getattr(self, key)}")
        if not 16 <= self.camera_width <= 4096:
            raise ValueError(f"--camera_width must be 16..4096, got {self.camera_width}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"--jpeg_quality must be 1..100, got {self.jpeg_quality}")
        if self.listener_wait_s < 0:
            raise ValueError(f"--listener_wait_s must be >= 0, got {self.listener_wait_s}")
        if own := sorted(set(self.events) & set(CONTROL_TOPICS)):
            raise ValueError(
                f"--events may not list {own}: the dashboard publishes those, and "
                "listening to them itself would make every press look heard"
            )


# -- what crosses the bus, made safe for JSON -------------------------------------------------

"""The dashboard worker: the page on http://localhost:9000.

    uv run python -m workers.dashboard [--port=9000] [--host=127.0.0.1]
        [--allow_remote_control=false] [--camera_fps=5] [--camera_width=320] [--bus.*]

A reader thread watches the bus in "latest" mode (a slow page never slows a publisher: what
the dashboard does not read in time is skipped, and counted) and keeps a small picture of it
(`BusView`). An aiohttp server pushes that picture to every open page over a WebSocket: a JSON
update `push_hz` times a second, and camera frames downscaled to `camera_width` and JPEG-encoded
`camera_fps` times a second (encoded on the reader thread, only while a page is open).

The page's buttons POST to /api/estop and /api/record; the dashboard publishes `event/estop`
({engaged, reason, source: "dashboard"}) and `event/record` ({command, task}), after waiting up
to `listener_wait_s` for a subscriber so the press is not lost to ZeroMQ's slow-joiner window,
and tells the page whether anyone was listening. Controls work only from this machine (a
loopback peer and Host) unless `--allow_remote_control=true`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import cv2
from aiohttp import web

from bus import Publisher, Subscriber, topics
from bus.health import HealthReporter
from workers import lifecycle
from workers.dashboard.config import DashboardConfig
from workers.dashboard.frames import FrameShrinker
from workers.dashboard.view import STREAMS, BusView
from workers.dashboard.web import Control, Pages, is_loopback_address, make_app


class BusReader(threading.Thread):
    """Drains the bus into the view ~50 times a second; encodes frames while a page is open."""

    POLL_S = 0.02

    def __init__(
        self,
        streams: Subscriber,
        events: Subscriber,
        view: BusView,
        shrinker: FrameShrinker,
        wants_frames: Callable[[], bool],
        on_frame: Callable[[str, bytes], None],
        stop: threading.Event,
        log: logging.Logger,
    ):
        super().__init__(name="bus-reader", daemon=True)
        self.streams, self.events, self.view = streams, events, view
        self.shrinker, self.wants_frames, self.on_frame = shrinker, wants_frames, on_frame
        self.stop, self.log = stop, log
        self.error: str | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                self.step()
                self.stop.wait(max(0.0, self.POLL_S - (time.monotonic() - started)))
        except Exception as exc:  # the page must say the reader died, not freeze silently
            self.error = f"bus reader stopped: {exc!r}"
            self.log.exception("bus reader stopped")

    def step(self) -> None:
        seen = time.monotonic()
        while (msg := self.events.recv(0)) is not None:
            self.view.on_message(msg, seen)
        for topic in list(self.streams.latest(timeout=self.POLL_S)):
            msg = self.streams.take(topic)
            if msg is None:
                continue
            self.view.on_message(msg, time.monotonic())
            if msg.topic.startswith("camera/"):
                camera = msg.topic.split("/", 1)[1]
                if self.wants_frames() and self.shrinker.due(camera, time.monotonic()):
                    payload = self.shrinker.encode(camera, msg)
                    if payload is not None:
                        self.on_frame(camera, payload)


async def serve(
    cfg: DashboardConfig,
    log: logging.Logger,
    stop: threading.Event,
    streams: Subscriber,
    events: Subscriber,
    pub: Publisher,
) -> None:
    loop = asyncio.get_running_loop()
    view = BusView(cfg.history_s, cfg.alive_s)
    pages = Pages(view)
    shrinker = FrameShrinker(cfg.camera_width, cfg.jpeg_quality, cfg.camera_fps)

    def on_frame(camera: str, payload: bytes) -> None:
        try:
            loop.call_soon_threadsafe(pages.push_frame, camera, payload)
        except RuntimeError:  # the loop closed: shutting down
            pass

    reader = BusReader(
        streams, events, view, shrinker, lambda: pages.count > 0, on_frame, stop, log
    )
    health = HealthReporter(
        pub,
        cfg.name,
        lambda: {
            "drops": streams.drops(),
            "pages": pages.count,
            "updates_pushed": pages.updates,
            "frames_pushed": pages.frames,
            "frames_encoded": shrinker.encoded,
            "commands_sent": control.sent,
            "bus": streams.stats(),
            "events": events.stats(),
        },
    )
    control = Control(pub, health, cfg.listener_wait_s)
    runner = web.AppRunner(make_app(cfg, view, pages, control, log), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, cfg.host, cfg.port).start()
        reader.start()
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        log.info("ready: dashboard on http://%s:%d (bus %s)", host, cfg.port, cfg.bus.sub)
        if not is_loopback_address(cfg.host) and cfg.host != "localhost":
            log.warning(
                "serving beyond this machine on %s; the buttons %s",
                cfg.host,
                "work from anywhere (--allow_remote_control)"
                if cfg.allow_remote_control
                else "still work only from this machine",
            )
        period = 1.0 / cfg.push_hz
        while not stop.is_set():
            await asyncio.sleep(period)
            if reader.error and health.last_error != reader.error:
                health.error(reader.error)
            pages.push_update({"dashboard": {"reader_error": reader.error, "bus": streams.stats()}})
            control.tick_health()
            if not reader.is_alive() and reader.error:
                break
    finally:
        stop.set()
        await pages.close_all()
        await runner.cleanup()
        if reader.is_alive():
            reader.join(timeout=5)
        control.close()


def main() -> None:
    cfg = lifecycle.parse_or_exit(DashboardConfig, "dashboard")
    try:
        cfg.check()
    except ValueError as exc:
        lifecycle.exit_bad_config("dashboard", exc)
    cv2.setNumThreads(1)  # a few small frames a second: keep the machine for the robot
    with lifecycle.Process(cfg.name) as proc:
        streams = proc.closing(Subscriber(cfg.bus, STREAMS, mode="latest", queue=100))
        events = proc.closing(
            Subscriber(cfg.bus, [topics.event(kind) for kind in cfg.events], mode="every")
        )
        pub = Publisher(cfg.bus, cfg.name)  # closed by serve(), after its last health report
        try:
            asyncio.run(serve(cfg, proc.log, proc.stop, streams, events, pub))
        except OSError as exc:
            proc.log.error("cannot serve on %s:%d: %s", cfg.host, cfg.port, exc)
            raise SystemExit(2) from None


if __name__ == "__main__":
    main()

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
import ipaddress
import json
import logging
import math
import re
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
from aiohttp import WSMsgType, web

from bus import BusConfig, Message, Publisher, Subscriber, topics
from bus.clock import now as bus_now
from bus.health import HealthReporter
from bus.log import Throttle
from workers import lifecycle
from workers.tasks import TASKS

STATIC = Path(__file__).with_name("dashboard_static")
STREAMS = ("camera/", "state/", "action/", "chunk/", "health/")
# The events the page shows. Not event/estop nor event/record: the dashboard sends those, and
# a publisher only learns that *some* subscriber covers a topic, so a subscription of its own
# would make every press look heard. The e-stop state the page shows is what servos report.
EVENTS = ("episode", "open_loop", "hold", "process", "camera", "control", "recorder", "sim")
# Health counters shown as drops (nonzero ones), and the keys a process's rate may go by.
DROP_KEY = re.compile(r"drop|lost|bad|late|overrun|reject|fail|stale|timeout|errors")
RATE_KEYS = ("rate_hz", "fps_achieved", "fps", "rate", "loop_hz", "hz")
# Supervisor states that mean the process died (event/process).
DEAD_STATES = {"EXITED", "FATAL", "BACKOFF", "UNKNOWN"}
FRAME_TAG = b"F"  # first byte of a binary WebSocket message carrying a camera frame
CONTROL_TOPICS = {"estop": topics.event("estop"), "record": topics.event("record")}
TASK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
THROTTLE = Throttle(10.0)
SIM_RECENT = 20  # simulated episodes' outcomes listed on the page


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
def jsonable(value: Any, depth: int = 0) -> Any:
    """Bus data as plain JSON: NaN/inf become null, numpy scalars numbers, long text is cut."""
    if depth > 6:
        return "…"
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value if len(value) <= 500 else value[:500] + "…"
    if isinstance(value, np.generic):
        return jsonable(value.item(), depth)
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in list(value.items())[:200]}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth + 1) for v in value[:200]]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist() if value.size <= 200 else f"array{value.shape}", depth)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    return str(value)[:200]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"bus": {"lost": 1}} -> {"bus.lost": 1}."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def drops_of(data: dict) -> dict[str, float]:
    """The nonzero drop-like counters of a health report (flattened names)."""
    return {
        k: v
        for k, v in flatten(data).items()
        if _number(v) and v and DROP_KEY.search(k.rsplit(".", 1)[-1]) and "_ms" not in k
    }


def rate_of(data: dict) -> float | None:
    for key in RATE_KEYS:
        if _number(data.get(key)):
            return data[key]
    return None


def round_list(values: np.ndarray, digits: int = 3) -> list[float]:
    return [round(float(v), digits) for v in values]


def stamp(msg: Message) -> float:
    """A message's capture time (its send time, or now, when that is missing or not finite)."""
    for t in (msg.t_cap, msg.t_send):
        if isinstance(t, float | int) and math.isfinite(t) and t > 0:
            return float(t)
    return bus_now()


class SeqRate:
    """A stream's publishing rate from its sequence numbers: right even when this reader,
    in latest mode, sees only some of the messages."""

    def __init__(self, window_s: float = 1.0):
        self.window_s = window_s
        self._first: tuple[int, float] | None = None
        self.rate: float | None = None

    def see(self, seq: int, t: float) -> float | None:
        if self._first is None or seq < self._first[0]:  # first, or the source restarted
            self._first = (seq, t)
            return self.rate
        seq0, t0 = self._first
        if t - t0 >= self.window_s:
            self.rate = round((seq - seq0) / (t - t0), 2)
            self._first = (seq, t)
        return self.rate


# -- the picture of the bus ---------------------------------------------------------------------
class SimResults:
    """The simulator's episodes as event/sim reports them: the newest reset, the newest outcome,
    and the tally since this dashboard started (the simulator's own tally restarts with it, and
    with several simulators the page wants them all)."""

    START_KEYS = ("episode", "seed", "task", "source")  # not the cube poses: the log has them
    OUTCOME_KEYS = ("episode", "seed", "task", "success", "reason", "time_s")

    def __init__(self, keep: int = SIM_RECENT):
        self.start: dict | None = None
        self.outcome: dict | None = None
        self.running = False  # a reset came after the newest outcome
        self.successes = 0
        self.failures = 0
        self.recent: deque[dict] = deque(maxlen=keep)

    def see(self, data: dict, src: str, t: float) -> None:
        phase = data.get("phase")
        if phase == "start":
            self.start = {k: data.get(k) for k in self.START_KEYS} | {"src": src, "t": t}
            self.running = True
        elif phase == "outcome" and isinstance(data.get("success"), bool):
            # An outcome without a yes/no verdict is a sender's bug: the event log shows it, the
            # tally does not guess.
            self.outcome = {k: data.get(k) for k in self.OUTCOME_KEYS} | {"src": src, "t": t}
            self.running = False
            if self.outcome["success"]:
                self.successes += 1
            else:
                self.failures += 1
            self.recent.append(self.outcome)

    def as_json(self) -> dict:
        return {
            "start": self.start,
            "outcome": self.outcome,
            "running": self.running,
            "successes": self.successes,
            "failures": self.failures,
            "recent": list(self.recent),
        }


class BusView:
    """What the page shows, updated from bus messages (reader thread), read as snapshots
    (event loop). Samples, events and chunks carry increasing ids so that a push carries only
    what is new since the previous one."""

    def __init__(self, history_s: float = 20.0, alive_s: float = 3.0, max_events: int = 100):
        self.history_s = history_s
        self.alive_s = alive_s
        self._lock = threading.Lock()
        self._id = 0
        self._newest_t = 0.0
        self.samples: deque[dict] = deque()
        self.events: deque[dict] = deque(maxlen=max_events)
        self.chunks: dict[str, dict] = {}
        self.cameras: dict[str, dict] = {}
        self.arms: dict[str, dict] = {}
        self.health: dict[str, dict] = {}
        self.supervisor: dict[str, dict] = {}
        self.holds: dict[str, dict] = {}
        self.episode: dict | None = None
        self.open_loop: dict | None = None
        self.control_event: dict | None = None  # the newest event/control (a warning)
        self.sim: SimResults | None = None  # None until some event/sim: no simulator
        self.commands: dict[str, dict] = {}  # what this dashboard sent: "estop", "record"
        self._rates: dict[str, SeqRate] = {}
        self.last_seen: float | None = None  # monotonic time of the newest message

    def _next(self) -> int:
        self._id += 1
        return self._id

    def _rate(self, msg: Message) -> float | None:
        meter = self._rates.setdefault(f"{msg.src}|{msg.topic}", SeqRate())
        return meter.see(msg.seq, stamp(msg))

    # -- updates (reader thread) --
    def on_message(self, msg: Message, seen: float | None = None) -> None:
        seen = time.monotonic() if seen is None else seen
        family, name = msg.topic.split("/", 1)
        handler = getattr(self, f"_on_{family}", None)
        if handler is None:
            return
        with self._lock:
            self.last_seen = seen
            handler(name, msg, seen)

    def _on_camera(self, name: str, msg: Message, seen: float) -> None:
        image = msg.arrays["image"]
        cam = self.cameras.setdefault(name, {"count": 0, "lost": None})
        cam.update(
            frame=jsonable(msg.data.get("frame")),
            episode=jsonable(msg.data.get("episode")),
            t_cap=stamp(msg),
            src=msg.src,
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            rate=self._rate(msg),
            seen=seen,
        )
        cam["count"] += 1

    def _add_sample(self, kind: str, arm: str, t: float, values: np.ndarray) -> None:
        self.samples.append(
            {"id": self._next(), "k": kind, "arm": arm, "t": round(t, 4), "v": round_list(values)}
        )
        self._newest_t = max(self._newest_t, t)
        while self.samples and self.samples[0]["t"] < self._newest_t - self.history_s:
            self.samples.popleft()

    def _on_state(self, arm: str, msg: Message, seen: float) -> None:
        position = msg.arrays["position"]
        names = msg.data.get("names")
        info = self.arms.setdefault(arm, {})
        info.update(
            names=jsonable(names) if isinstance(names, list) else None,
            src=msg.src,
            rate=self._rate(msg),
            seen=seen,
            dim=int(position.shape[0]),
        )
        self._add_sample("s", arm, stamp(msg), position)

    def _on_action(self, arm: str, msg: Message, seen: float) -> None:
        goal = msg.arrays["goal"]
        t_exec = msg.data.get("t_exec")
        t = float(t_exec) if _number(t_exec) and math.isfinite(t_exec) else stamp(msg)
        info = self.arms.setdefault(arm, {})
        info.update(action_src=msg.src, action_rate=self._rate(msg), action_seen=seen)
        self._add_sample("a", arm, t, goal)

    def _on_chunk(self, task: str, msg: Message, seen: float) -> None:
        actions = msg.arrays["actions"]
        data = msg.data
        horizon, dim = actions.shape
        arms = data.get("arms")
        if not (isinstance(arms, list) and arms and all(isinstance(a, str) for a in arms)):
            known = TASKS.get(task)
            arms = list(known.arms) if known else ([*self.arms][:1] if dim <= 6 else [])
        per_arm: dict[str, list] = {}
        if arms and dim % len(arms) == 0:
            width = dim // len(arms)
            for i, arm in enumerate(arms):
                per_arm[arm] = [round_list(row) for row in actions[:, i * width : (i + 1) * width]]
        t_obs, dt = data.get("t_obs"), data.get("dt")
        self.chunks[task] = {
            "id": self._next(),
            "task": task,
            "src": msg.src,
            "horizon": int(horizon),
            "dim": int(dim),
            "arms": arms,
            "per_arm": per_arm,
            "t_obs": t_obs if _number(t_obs) and math.isfinite(t_obs) else stamp(msg),
            "dt": dt if _number(dt) and math.isfinite(dt) and dt > 0 else None,
            "latency_s": jsonable(data.get("latency_s")),
            "seen": seen,
        }

    def _on_health(self, name: str, msg: Message, seen: float) -> None:
        data = jsonable(msg.data) if isinstance(msg.data, dict) else {}
        process = str(data.get("process") or name)
        entry = self.health.setdefault(process, {"count": 0})
        entry.update(data=data, seen=seen, src=msg.src)
        entry["count"] += 1

    def _on_event(self, kind: str, msg: Message, seen: float) -> None:
        data = jsonable(msg.data) if isinstance(msg.data, dict) else {}
        t = stamp(msg)
        self._add_event(msg.topic, msg.src, data, t)
        if kind == "episode":
            self.episode = {**data, "t": t}
        elif kind == "open_loop":
            self.open_loop = {**data, "t": t}
        elif kind == "control":
            self.control_event = {**data, "t": t, "src": msg.src}
        elif kind == "sim":
            self.sim = self.sim or SimResults()
            self.sim.see(data, msg.src, t)
        elif kind == "hold" and data.get("arm"):
            self.holds[str(data["arm"])] = {
                "holding": bool(data.get("holding")),
                "reason": data.get("reason"),
                "src": msg.src,
                "t": t,
            }
        elif kind == "process" and data.get("process"):
            entry = self.supervisor.setdefault(str(data["process"]), {"exits": 0, "starts": 0})
            state = str(data.get("state") or "").upper()
            entry.update(state=state, from_state=data.get("from_state"), pid=data.get("pid"), t=t)
            entry["exits"] += state in DEAD_STATES
            entry["starts"] += state == "RUNNING"
        elif kind == "camera" and data.get("camera"):
            cam = self.cameras.setdefault(str(data["camera"]), {"count": 0, "lost": None})
            cam["lost"] = data.get("reason") if data.get("state") == "lost" else None

    def _add_event(self, topic: str, src: str, data: dict, t: float) -> None:
        self.events.append({"id": self._next(), "topic": topic, "src": src, "data": data, "t": t})

    def command_sent(self, kind: str, data: dict, heard: bool, remote: str) -> None:
        """A button press this dashboard published (it does not subscribe to its own)."""
        t = bus_now()
        with self._lock:
            self.commands[kind] = {**data, "heard": heard, "t": t, "from": remote}
            self._add_event(
                CONTROL_TOPICS[kind], "dashboard (this page)", {**data, "heard": heard}, t
            )

    # -- snapshots (event loop) --
    def cursor(self) -> int:
        with self._lock:
            return self._id

    def snapshot(self, after: int = 0, now_mono: float | None = None) -> dict:
        """Everything the page shows; samples, events and chunks only when newer than `after`."""
        now_mono = time.monotonic() if now_mono is None else now_mono
        with self._lock:
            processes = self._processes(now_mono)
            snap = {
                "type": "update",
                "now": bus_now(),
                "cursor": self._id,
                "samples": [s for s in self.samples if s["id"] > after],
                "events": [e for e in self.events if e["id"] > after],
                "chunks": [
                    {k: v for k, v in c.items() if k != "seen"}
                    | {"age_s": round(now_mono - c["seen"], 2)}
                    for c in self.chunks.values()
                    if c["id"] > after
                ],
                "chunk_ages": {t: round(now_mono - c["seen"], 2) for t, c in self.chunks.items()},
                "cameras": {
                    n: {k: v for k, v in c.items() if k != "seen"}
                    | {"age_s": round(now_mono - c["seen"], 2) if "seen" in c else None}
                    for n, c in self.cameras.items()
                },
                "arms": {
                    n: {k: v for k, v in a.items() if not k.endswith("seen")}
                    for n, a in self.arms.items()
                },
                "processes": processes,
                "policies": self._policies(processes),
                "control": self._health_of("control", now_mono),
                "control_event": self.control_event,
                "recorder": self._health_of("recorder", now_mono),
                "holds": dict(self.holds),
                "estop": self._estop(processes),
                "recording": self.commands.get("record"),
                "episode": self._episode(),
                "open_loop": self.open_loop,
                "sim": self.sim.as_json() if self.sim else None,
                "bus_quiet_s": (
                    round(now_mono - self.last_seen, 1) if self.last_seen is not None else None
                ),
            }
        return snap

    def _processes(self, now_mono: float) -> list[dict]:
        rows = []
        for name in sorted(set(self.health) | set(self.supervisor)):
            entry = self.health.get(name)
            data = entry["data"] if entry else {}
            age = now_mono - entry["seen"] if entry else None
            rows.append(
                {
                    "name": name,
                    "alive": age is not None and age < self.alive_s,
                    "age_s": round(age, 1) if age is not None else None,
                    "rate": rate_of(data),
                    "drops": drops_of(data),
                    "last_error": data.get("last_error"),
                    "uptime_s": data.get("uptime_s"),
                    "supervisor": self.supervisor.get(name),
                    "data": data,
                }
            )
        return rows

    @staticmethod
    def _policies(processes: list[dict]) -> list[dict]:
        keys = ("task", "latency_p50_ms", "latency_p99_ms", "served", "errors", "device")
        return [
            {"name": p["name"], "alive": p["alive"], **{k: p["data"].get(k) for k in keys}}
            for p in processes
            if p["name"].startswith("policy")
        ]

    def _health_of(self, process: str, now_mono: float) -> dict | None:
        entry = self.health.get(process)
        if entry is None:
            return None
        return {"alive": now_mono - entry["seen"] < self.alive_s, "data": flatten(entry["data"])}

    def _estop(self, processes: list[dict]) -> dict:
        reported = [
            {"process": p["name"], "where": k.rsplit(".estop", 1)[0] or p["name"], "engaged": v}
            for p in processes
            if p["alive"]
            for k, v in flatten(p["data"]).items()
            if (k == "estop" or k.endswith(".estop")) and isinstance(v, bool)
        ]
        return {
            "command": self.commands.get("estop"),
            "reported": reported,
            "engaged": any(r["engaged"] for r in reported),
        }

    def _episode(self) -> dict | None:
        if self.episode is None:
            return None
        frames = [
            c["frame"]
            for c in self.cameras.values()
            if c.get("episode") == self.episode.get("episode") and _number(c.get("frame"))
        ]
        return {**self.episode, "frame": max(frames) if frames else None}


# -- camera frames for the page -----------------------------------------------------------------
class FrameShrinker:
    """Downscales and JPEG-encodes at most `fps` frames per camera per second."""

    def __init__(self, width: int, quality: int, fps: float):
        self.width = width
        self.params = [cv2.IMWRITE_JPEG_QUALITY, quality]
        self.period = 1.0 / fps
        self._due: dict[str, float] = {}
        self.encoded = 0

    def due(self, camera: str, now: float) -> bool:
        if now < self._due.get(camera, 0.0):
            return False
        self._due[camera] = max(now, self._due.get(camera, 0.0) + self.period)
        return True

    def encode(self, camera: str, msg: Message) -> bytes | None:
        image = msg.arrays["image"]
        h, w = image.shape[:2]
        if w > self.width:
            size = (self.width, max(1, round(h * self.width / w)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), self.params)
        if not ok:
            return None
        self.encoded += 1
        header = json.dumps(
            {
                "camera": camera,
                "frame": jsonable(msg.data.get("frame")),
                "episode": jsonable(msg.data.get("episode")),
                "t_cap": msg.t_cap,
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "src_width": int(w),
                "src_height": int(h),
            }
        ).encode()
        return FRAME_TAG + struct.pack(">I", len(header)) + header + jpeg.tobytes()


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


# -- the pages ----------------------------------------------------------------------------------
class PageClient:
    """One open page: JSON updates in order, camera frames newest-only (a slow page skips)."""

    def __init__(self, ws: web.WebSocketResponse, remote: str):
        self.ws = ws
        self.remote = remote
        self.texts: deque[str] = deque(maxlen=100)
        self.frames: dict[str, bytes] = {}
        self.wake = asyncio.Event()
        self.sent_frames = 0

    def push_text(self, text: str) -> None:
        self.texts.append(text)
        self.wake.set()

    def push_frame(self, camera: str, payload: bytes) -> None:
        self.frames[camera] = payload
        self.wake.set()

    async def run(self) -> None:
        try:
            while not self.ws.closed:
                await self.wake.wait()
                self.wake.clear()
                while self.texts and not self.ws.closed:
                    await self.ws.send_str(self.texts.popleft())
                frames, self.frames = self.frames, {}
                for payload in frames.values():
                    if self.ws.closed:
                        break
                    await self.ws.send_bytes(payload)
                    self.sent_frames += 1
        except (ConnectionError, RuntimeError):
            pass  # the page went away; its handler cleans up


class Pages:
    def __init__(self, view: BusView):
        self.view = view
        self.clients: set[PageClient] = set()
        self.cursor = 0
        self.updates = 0
        self.frames = 0

    @property
    def count(self) -> int:
        return len(self.clients)

    def push_update(self, extra: dict) -> None:
        if not self.clients:
            self.cursor = self.view.cursor()  # a page that opens gets the history in its hello
            return
        snap = self.view.snapshot(after=self.cursor)
        self.cursor = snap["cursor"]
        try:
            text = dumps({**snap, **extra})
        except (TypeError, ValueError) as exc:  # a bug, not a reason to stop serving
            if THROTTLE.ready("dumps") is not None:
                logging.getLogger("dashboard").error("update not sent: %s", exc)
            return
        for client in self.clients:
            client.push_text(text)
        self.updates += 1

    def push_frame(self, camera: str, payload: bytes) -> None:
        for client in self.clients:
            client.push_frame(camera, payload)
        self.frames += 1

    async def close_all(self) -> None:
        for client in list(self.clients):
            await client.ws.close(code=1001, message=b"dashboard stopping")


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


# -- controls -----------------------------------------------------------------------------------
def is_loopback_address(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_loopback_host(host: str | None) -> bool:
    """The Host header names this machine (guards against DNS rebinding)."""
    name = urlsplit(f"//{host}").hostname if host else None
    return name == "localhost" or is_loopback_address(name)


def control_refusal(request: web.Request, allow_remote: bool) -> str | None:
    """Why this request may not press a button, or None when it may."""
    if not allow_remote:
        if not is_loopback_address(request.remote):
            return (
                f"controls work only from the machine the dashboard runs on (this request "
                f"came from {request.remote}); start it with --allow_remote_control=true "
                "to allow other machines"
            )
        if not is_loopback_host(request.host):
            return f"controls need the page opened as localhost, not {request.host!r}"
    origin = request.headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        return f"cross-site request refused (origin {origin})"
    return None


class Control:
    """Publishes button presses; one thread owns the Publisher (ZeroMQ sockets are not
    thread-safe), and the dashboard's own health goes out through it too."""

    def __init__(self, pub: Publisher, health: HealthReporter, listener_wait_s: float):
        self.pub = pub
        self.health = health
        self.listener_wait_s = listener_wait_s
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bus-publisher")
        self.sent = 0

    def _send(self, topic: str, data: dict) -> bool:
        heard = self.pub.wait_for_subscriber(topic, self.listener_wait_s)
        self.pub.publish(topic, data=data)
        self.sent += 1
        return heard

    async def send(self, topic: str, data: dict) -> bool:
        """Publish; True when some subscriber listened to `topic` (within the wait)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._send, topic, data)

    def tick_health(self) -> None:
        self.pool.submit(self.health.tick)

    def close(self) -> None:
        self.pool.submit(self.health.tick, True)
        self.pool.shutdown(wait=True)
        self.pub.close()


def parse_command(kind: str, body: Any) -> dict:
    """The message a button press publishes; ValueError says what was wrong with the body."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    if kind == "estop":
        engaged = body.get("engaged", True)
        if not isinstance(engaged, bool):
            raise ValueError("'engaged' must be true or false")
        reason = body.get("reason") or (
            "pressed on the dashboard" if engaged else "cleared on the dashboard"
        )
        if not isinstance(reason, str):
            raise ValueError("'reason' must be text")
        return {"engaged": engaged, "reason": reason[:200], "source": "dashboard"}
    command, task = body.get("command"), body.get("task") or ""
    if command not in ("start", "stop"):
        raise ValueError("'command' must be 'start' or 'stop'")
    if not isinstance(task, str) or (task and not TASK_NAME.match(task)):
        raise ValueError("'task' must be a task name (letters, digits, _ . -)")
    if command == "start" and not task:
        raise ValueError("which task? (fill in the task before starting a recording)")
    return {"command": command, "task": task}


# -- the web app ----------------------------------------------------------------------------------
def make_app(
    cfg: DashboardConfig, view: BusView, pages: Pages, control: Any, log: logging.Logger
) -> web.Application:
    """`control` publishes: anything with `async send(topic, data) -> heard` (tests fake it)."""
    refusals = Throttle(5.0)

    async def index(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-store"})

    async def websocket(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=5.0, max_msg_size=64 * 1024)
        await ws.prepare(request)
        client = PageClient(ws, request.remote or "?")
        hello = view.snapshot(after=0)
        hello.update(
            type="hello",
            config={
                "camera_fps": cfg.camera_fps,
                "push_hz": cfg.push_hz,
                "history_s": cfg.history_s,
                "alive_s": cfg.alive_s,
                "allow_remote_control": cfg.allow_remote_control,
                "control_allowed": control_refusal(request, cfg.allow_remote_control) is None,
                "control_refusal": control_refusal(request, cfg.allow_remote_control),
                "name": cfg.name,
            },
        )
        client.push_text(dumps(hello))
        pages.clients.add(client)
        writer = asyncio.create_task(client.run())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            pages.clients.discard(client)
            writer.cancel()
        return ws

    async def press(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        refusal = control_refusal(request, cfg.allow_remote_control)
        if refusal is not None:
            if (held := refusals.ready(request.remote)) is not None:
                log.warning(
                    "refused %s from %s: %s%s",
                    kind,
                    request.remote,
                    refusal,
                    f" (+{held} more)" if held else "",
                )
            return web.json_response({"ok": False, "error": refusal}, status=403)
        if request.content_type != "application/json":
            return web.json_response(
                {"ok": False, "error": "expected application/json"}, status=415
            )
        try:
            data = parse_command(kind, await request.json())
        except ValueError as exc:  # also bad JSON (json.JSONDecodeError is a ValueError)
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        topic = CONTROL_TOPICS[kind]
        try:
            heard = await control.send(topic, data)
        except Exception as exc:
            log.error("could not publish %s: %s", topic, exc)
            return web.json_response({"ok": False, "error": f"publish failed: {exc}"}, status=503)
        view.command_sent(kind, data, heard, request.remote or "?")
        log.log(
            logging.WARNING if kind == "estop" and data["engaged"] else logging.INFO,
            "%s %s from %s (%s)",
            topic,
            data,
            request.remote,
            "heard" if heard else "NOBODY LISTENING",
        )
        return web.json_response({"ok": True, "topic": topic, "data": data, "heard": heard})

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/ws", websocket)
    app.router.add_post(r"/api/{kind:estop|record}", press)
    return app


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
    log, stop = lifecycle.start(cfg.name)
    try:
        cfg.check()
    except ValueError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    cv2.setNumThreads(1)  # a few small frames a second: keep the machine for the robot
    streams = Subscriber(cfg.bus, STREAMS, mode="latest", queue=100)
    events = Subscriber(cfg.bus, [topics.event(kind) for kind in cfg.events], mode="every")
    pub = Publisher(cfg.bus, cfg.name)
    try:
        asyncio.run(serve(cfg, log, stop, streams, events, pub))
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", cfg.host, cfg.port, exc)
        raise SystemExit(2) from None
    finally:
        streams.close()
        events.close()
    lifecycle.finish(log, "stopped")


if __name__ == "__main__":
    main()

"""The dashboard's view model: a small, JSON-ready picture of the bus. Pure (no sockets):
messages in, dictionaries out; unit-tested directly."""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from bus import Message, topics
from bus.clock import now as bus_now
from bus.log import Throttle
from workers.dashboard.values import (
    drops_of,
    flatten,
    is_number,
    jsonable,
    rate_of,
    round_list,
    stamp,
)
from workers.tasks import TASKS

STATIC = Path(__file__).with_name("static")
STREAMS = ("camera/", "state/", "action/", "chunk/", "health/")
# The events the page shows. Not event/estop nor event/record: the dashboard sends those, and
# a publisher only learns that *some* subscriber covers a topic, so a subscription of its own
# would make every press look heard. The e-stop state the page shows is what servos report.
EVENTS = ("episode", "open_loop", "hold", "process", "camera", "control", "recorder", "sim")
# Supervisor states that mean the process died (event/process).
DEAD_STATES = {"EXITED", "FATAL", "BACKOFF", "UNKNOWN"}
CONTROL_TOPICS = {"estop": topics.event("estop"), "record": topics.event("record")}
TASK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
THROTTLE = Throttle(10.0)
SIM_RECENT = 20  # simulated episodes' outcomes listed on the page


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
        t = float(t_exec) if is_number(t_exec) and math.isfinite(t_exec) else stamp(msg)
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
            "t_obs": t_obs if is_number(t_obs) and math.isfinite(t_obs) else stamp(msg),
            "dt": dt if is_number(dt) and math.isfinite(dt) and dt > 0 else None,
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
            if c.get("episode") == self.episode.get("episode") and is_number(c.get("frame"))
        ]
        return {**self.episode, "frame": max(frames) if frames else None}

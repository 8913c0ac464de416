"""The recorder's core: episode markers and samples from the bus in, aligned frames out to the
background writer (drivers/recording), and the recorder's own events. workers/recorder.py is
the process around it."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bus import Message, Publisher, topics
from bus.clock import now
from bus.log import Throttle, warn_throttled
from core.frame_clock import EpisodeClock, Tick
from drivers.recording import (
    JOINTS,
    BackgroundWriter,
    DatasetSpec,
)
from workers.tasks import TASKS, get_task

if TYPE_CHECKING:  # the worker's config; the worker imports this module
    from workers.recorder import RecorderConfig


@dataclass
class Episode:
    clock: EpisodeClock
    info: dict[str, Any]  # bus episode, source, task, start time
    begun: bool = False  # handed to the writer
    truncated: str | None = None  # why it was cut short


class Recorder:
    """Episode markers and samples in, aligned frames out to the background writer."""

    def __init__(
        self,
        cfg: RecorderConfig,
        spec: DatasetSpec,
        writer: BackgroundWriter,
        pub: Publisher,
        log,
        image_hw: dict[str, tuple[int, int]] | None = None,
    ):
        self.cfg, self.spec, self.writer, self.pub, self.log = cfg, spec, writer, pub, log
        self.cameras = [topics.camera(c) for c in spec.cameras]
        self.states = [topics.state(a) for a in spec.arms]
        self.actions = [topics.action(a) for a in spec.arms] if cfg.action == "bus" else []
        self.episodes: list[Episode] = []  # in start order; only the first writes
        self.preroll: dict[str, deque] = {s: deque(maxlen=3) for s in self.streams}
        self.received = dict.fromkeys(self.streams, 0)
        self.rejected = 0
        self.shapes = {topics.camera(c): (h, w, 3) for c, (h, w) in (image_hw or {}).items()}
        self.accepting = True
        self.refused = self.truncated = self.saved = self.discarded = 0
        self.frames_saved = 0
        self.last_saved: dict | None = None
        self.encode_busy_s = self.encoded_video_s = 0.0
        self._throttle = Throttle(5.0)

    @property
    def streams(self) -> list[str]:
        return self.cameras + self.states + self.actions

    @property
    def topics(self) -> list[str]:
        return self.streams + [topics.event("episode"), topics.event("record")]

    # -------------------------------------------------------------- input

    def on_message(self, msg: Message) -> None:
        if msg.topic in self.received:
            self.on_sample(msg)
        elif msg.topic == topics.event("episode"):
            phase = msg.data.get("phase")
            self.on_marker(msg, phase, msg.data.get("episode"))
        elif msg.topic == topics.event("record"):
            self.on_marker(msg, msg.data.get("command"), None)

    def on_sample(self, msg: Message) -> None:
        family = topics.family(msg.topic)
        if family == "camera":
            value = msg.arrays["image"]
            shape = self.shapes.setdefault(msg.topic, value.shape)
            if value.shape != shape:  # a video keeps one size: the first one seen
                self.rejected += 1
                warn_throttled(
                    self.log,
                    self._throttle,
                    msg.topic,
                    f"{msg.topic} from {msg.src!r}: image {value.shape}, this "
                    f"recording takes {shape}; not recorded",
                )
                return
        else:
            value = msg.arrays["position" if family == "state" else "goal"]
            if value.shape != (len(JOINTS),):
                self.rejected += 1
                warn_throttled(
                    self.log,
                    self._throttle,
                    msg.topic,
                    f"{msg.topic} from {msg.src!r}: {value.shape[0]} joints, "
                    f"expected {len(JOINTS)}; not recorded",
                )
                return
        self.received[msg.topic] += 1
        # Actions are aligned on when they execute, everything else on when it was captured.
        t = float(msg.data.get("t_exec", msg.t_cap)) if family == "action" else msg.t_cap
        self.preroll[msg.topic].append((t, value))
        for ep in self.episodes:
            ep.clock.offer(msg.topic, t, value)

    def on_marker(self, msg: Message, phase: str | None, bus_episode: Any) -> None:
        source = str(msg.data.get("source") or msg.src)
        if self.cfg.sources and source not in self.cfg.sources:
            return
        t = msg.t_cap
        if phase == "stop":
            open_ep = self._open()
            if open_ep is not None:
                open_ep.clock.stop(t)
                open_ep.info["ended_by"] = f"stop from {source}"
            return
        if phase != "start":
            return
        if (open_ep := self._open()) is not None:
            self.log.warning(
                "episode start from %s while one was open: closing that one "
                "first (set --sources to pick one source of markers)",
                source,
            )
            open_ep.clock.stop(t)
            open_ep.info["ended_by"] = f"next start from {source}"
        task = str(msg.data.get("task") or "")
        info = {
            "bus_episode": bus_episode,
            "source": source,
            "t_start": t,
            "task": TASKS[task].description
            if task in TASKS
            else (task or get_task(self.cfg.task).description),
        }
        if not self.accepting:
            self.refused += 1
            why = (
                str(self.writer.failed)
                if self.writer.failed
                else f"backlog full ({self._backlog_mb():.0f} MB buffered)"
            )
            self.log.error("episode from %s refused: %s", source, why)
            self._event("refused", info, reason=why)
            return
        clock = EpisodeClock(
            self.spec.fps,
            self.cameras + self.states,
            self.actions,
            t_start=t,
            max_latency=self.cfg.max_latency,
            slack=self.cfg.slack,
        )
        for stream, samples in self.preroll.items():
            for ts, value in samples:
                clock.offer(stream, ts, value)
        self.episodes.append(Episode(clock, info))

    def _open(self) -> Episode | None:
        if self.episodes and self.episodes[-1].clock.t_stop is None:
            return self.episodes[-1]
        return None

    # -------------------------------------------------------------- output

    def tick(self, t_now: float) -> None:
        """Hand due frames to the writer, oldest episode first; close finished episodes."""
        self._results()
        while self.episodes:
            ep = self.episodes[0]
            for tick in ep.clock.ready(t_now):
                self._write(ep, tick)
            if not ep.clock.finished(t_now):
                break
            self.episodes.pop(0)
            self._close(ep)
        if not self.accepting and not self.writer.failed:
            if self.writer.backlog_snapshot().bytes < self.writer.max_bytes / 2:
                self.accepting = True
                self.log.info(
                    "backlog drained to %.0f MB: accepting episodes again", self._backlog_mb()
                )
                self._event("accepting", {})

    def _write(self, ep: Episode, tick: Tick) -> None:
        if ep.truncated:
            return
        if self.writer.failed:
            ep.truncated = "writer failed"
            return
        if not ep.begun:
            hw = {c.split("/", 1)[1]: tuple(tick.samples[c].value.shape[:2]) for c in self.cameras}
            self.writer.begin(
                ep.info["task"], hw, {k: ep.info[k] for k in ("bus_episode", "source")}
            )
            ep.begun = True
        elif self.writer.full:
            ep.truncated = f"backlog full ({self._backlog_mb():.0f} MB)"
            ep.clock.stop(tick.t - ep.clock.period / 2)
            self.truncated += 1
            self.accepting = False
            self.log.error(
                "backlog reached %.0f MB (max %.0f): episode %s cut at frame %d "
                "and new episodes refused until it drains; encoding is slower than "
                "recording (see --preset / --max_backlog_mb)",
                self._backlog_mb(),
                self.cfg.max_backlog_mb,
                ep.info["bus_episode"],
                tick.index,
            )
            self._event("truncated", ep.info, frame=tick.index, reason=ep.truncated)
            return
        s = tick.samples
        images = {c.split("/", 1)[1]: s[c].value for c in self.cameras}
        states = [s[a].value for a in self.states]
        actions = [s[a].value if s.get(a) is not None else None for a in self.actions]
        if not self.actions:
            actions = [None] * len(self.states)
        times = {name: sample.t for name, sample in s.items() if sample is not None}
        self.writer.add(images, states, actions, times)

    def _close(self, ep: Episode) -> None:
        report = {**ep.clock.report(), **ep.info}
        if ep.truncated:
            report["truncated"] = ep.truncated
        if ep.begun:
            self.writer.end(report)
            return
        waiting = [
            s for s, r in report["streams"].items() if not r["received"] and s not in self.actions
        ]
        why = f"no samples from {', '.join(waiting)}" if waiting else "shorter than one frame"
        self.discarded += 1
        self.log.error(
            "bus episode %s from %s not recorded: %s",
            ep.info["bus_episode"],
            ep.info["source"],
            why,
        )
        self._event("discarded", ep.info, reason=why)

    def _results(self) -> None:
        for r in self.writer.results():
            state = r["state"]
            if state == "saved":
                self._saved(r)
            elif state == "discarded":
                self.discarded += 1
                self.log.warning(
                    "bus episode %s from %s discarded: %s",
                    r.get("bus_episode"),
                    r.get("source"),
                    r["reason"],
                )
            elif state == "error":
                self.accepting = False
                self.log.error("recording stopped: %s", r["error"])
                self.log.error("episodes saved so far are intact; restart the recorder once fixed")
            self._event(state, {k: v for k, v in r.items() if k not in ("state", "report")})

    def _saved(self, r: dict) -> None:
        rep = r["report"]
        self.saved += 1
        self.frames_saved += r["frames"]
        enc = rep.get("encode") or {}
        self.encode_busy_s += enc.get("busy_s") or 0.0
        self.encoded_video_s += (enc.get("frames") or 0) / self.spec.fps
        streams = "; ".join(
            f"{name} {v['rate_hz'] or 0:.1f} Hz, dropped {v['dropped']}, duplicated "
            f"{v['duplicated']}"
            + (f", late {v['late']}" if v["late"] else "")
            + (f", missing {v['missing']}" if v["missing"] else "")
            for name, v in rep["streams"].items()
        )
        self.log.info(
            "episode %d saved (bus episode %s): %d frames, %.2f s at %d fps, achieved %.2f "
            "fps%s; %s; encoding %sx real time; committed %.2f s after its end",
            r["episode"],
            r.get("bus_episode"),
            r["frames"],
            rep["duration_s"],
            rep["fps"],
            rep["achieved_fps"],
            f"; cut short: {rep['truncated']}" if rep.get("truncated") else "",
            streams,
            enc.get("realtime_factor"),
            r["save_s"],
        )
        if rep.get("actions_from_state") and self.actions:
            self.log.warning(
                "episode %d: %d arm-frames had no action/<arm> message and took "
                "the next state as action",
                r["episode"],
                rep["actions_from_state"],
            )
        self.last_saved = {
            "episode": r["episode"],
            "frames": r["frames"],
            "achieved_fps": rep["achieved_fps"],
        }

    def _event(self, state: str, info: dict, **extra: Any) -> None:
        data = {"state": state, **{k: v for k, v in info.items() if _plain(v)}, **extra}
        self.pub.publish(topics.event("recorder"), data=data)

    def _backlog_mb(self) -> float:
        return self.writer.backlog_snapshot().bytes / 1e6

    # -------------------------------------------------------------- shutdown

    def shutdown(self, keep_partial: bool) -> None:
        """Stopped episodes are finished; the open one is saved (keep_partial) or dropped."""
        t = now()
        open_ep = self._open()
        if open_ep is not None and not keep_partial:
            self.episodes.pop()
            if open_ep.begun:
                self.writer.abort("recorder stopped during the episode")
            self.log.warning(
                "bus episode %s in progress discarded at shutdown (%d frames); "
                "--keep_partial=true keeps it",
                open_ep.info["bus_episode"],
                open_ep.clock.frames,
            )
        elif open_ep is not None:
            open_ep.clock.stop(t)
            open_ep.info["ended_by"] = "recorder stopped"
        self.tick(math.inf)

    def health(self) -> dict[str, Any]:
        b = self.writer.backlog_snapshot()
        open_ep = self._open()
        waiting = []
        if open_ep is not None and open_ep.clock.t0 is None:
            waiting = [
                s
                for s, r in open_ep.clock.report()["streams"].items()
                if not r["received"] and s not in self.actions
            ]
        return {
            "recording": open_ep is not None,
            "bus_episode": open_ep.info["bus_episode"] if open_ep else None,
            "frames": open_ep.clock.frames if open_ep else 0,
            "waiting_for": waiting,
            "accepting": self.accepting,
            "episodes_saved": self.saved,
            "frames_saved": self.frames_saved,
            "episodes_refused": self.refused,
            "episodes_truncated": self.truncated,
            "episodes_discarded": self.discarded,
            "backlog_frames": b.frames,
            "backlog_mb": round(b.bytes / 1e6, 1),
            "backlog_max_mb": round(b.max_bytes / 1e6, 1),
            "backlog_limit_mb": self.cfg.max_backlog_mb,
            "episodes_queued": b.episodes_queued,
            "discarded_frames": self.writer.discarded_frames,
            "encode_realtime_factor": (
                round(self.encoded_video_s / self.encode_busy_s, 3) if self.encode_busy_s else None
            ),
            "samples": dict(self.received),
            "rejected": self.rejected,
            "last_saved": self.last_saved,
            "error": str(self.writer.failed) if self.writer.failed else None,
        }


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))

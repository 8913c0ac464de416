"""The recorder's core: episode markers and samples in, aligned frames out to the background
writer, and what happened to each episode out as events.

No bus here: workers/recorder.py hands it each sample (`on_sample`) and marker (`on_marker`)
it receives, calls `tick` with the time, and publishes what `emit` is given. Streams are named
"<family>/<name>" (camera/front, state/arm, action/arm) in its reports and logs.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.frame_clock import EpisodeClock, Tick
from drivers.recording.background import BackgroundWriter
from drivers.recording.features import JOINTS, DatasetSpec

Emit = Callable[[str, dict[str, Any]], None]  # (state, details): what became of an episode
Warn = Callable[[str, str], None]  # (key, text): a warning the caller may rate-limit


@dataclass(frozen=True)
class RecorderSettings:
    """What the recorder core needs of the worker's config."""

    record_actions: bool = True  # action/<arm> samples are recorded (else: the next state)
    max_latency: float = 1.0  # seconds a frame waits for a lagging stream
    slack: float = 0.5  # where a frame's window ends, in frames after its nominal time
    # Episode markers and action samples accepted only from these processes (empty = any):
    # a second controller's actions must not interleave with the recorded one's.
    sources: tuple[str, ...] = ()
    default_task: str = ""  # the task text when a marker names none
    task_texts: dict[str, str] = field(default_factory=dict)  # task name -> its text
    max_backlog_mb: float = 1024.0  # for the log line when the backlog is full


@dataclass
class Episode:
    clock: EpisodeClock
    info: dict[str, Any]  # bus episode, source, task, start time
    begun: bool = False  # handed to the writer
    truncated: str | None = None  # why it was cut short


class EpisodeRecorder:
    """Episode markers and samples in, aligned frames out to the background writer."""

    def __init__(
        self,
        settings: RecorderSettings,
        spec: DatasetSpec,
        writer: BackgroundWriter,
        emit: Emit,
        log: logging.Logger,
        warn: Warn | None = None,
        image_hw: dict[str, tuple[int, int]] | None = None,
    ):
        self.settings, self.spec, self.writer, self.emit, self.log = (
            settings,
            spec,
            writer,
            emit,
            log,
        )
        self.warn = warn or (lambda _key, text: log.warning("%s", text))
        self.cameras = [f"camera/{c}" for c in spec.cameras]
        self.states = [f"state/{a}" for a in spec.arms]
        self.actions = [f"action/{a}" for a in spec.arms] if settings.record_actions else []
        self.episodes: list[Episode] = []  # in start order; only the first writes
        self.preroll: dict[str, deque] = {s: deque(maxlen=3) for s in self.streams}
        self.received = dict.fromkeys(self.streams, 0)
        self.rejected = 0
        self.shapes = {f"camera/{c}": (h, w, 3) for c, (h, w) in (image_hw or {}).items()}
        self.accepting = True
        self.refused = self.truncated = self.saved = self.discarded = 0
        self.frames_saved = 0
        self.last_saved: dict | None = None
        self.encode_busy_s = self.encoded_video_s = 0.0

    @property
    def streams(self) -> list[str]:
        """Every stream recorded, as "<family>/<name>"."""
        return self.cameras + self.states + self.actions

    # -------------------------------------------------------------- input

    def on_sample(self, stream: str, t: float, value: np.ndarray, src: str = "?") -> None:
        """One sample of a stream, at `t`: capture time (camera, state) or execution time
        (action). Streams not recorded are ignored; a wrong shape, or an action from a process
        not in `sources`, is counted and warned of."""
        if stream not in self.received:
            return
        if self.settings.sources and stream in self.actions and src not in self.settings.sources:
            self._reject(stream, f"{stream} from {src!r}, not one of --sources; not recorded")
            return
        if stream in self.cameras:
            shape = self.shapes.setdefault(stream, value.shape)
            if value.shape != shape:  # a video keeps one size: the first one seen
                self._reject(
                    stream,
                    f"{stream} from {src!r}: image {value.shape}, this "
                    f"recording takes {shape}; not recorded",
                )
                return
        elif value.shape != (len(JOINTS),):
            self._reject(
                stream,
                f"{stream} from {src!r}: {value.shape[0] if value.ndim else 0} joints, "
                f"expected {len(JOINTS)}; not recorded",
            )
            return
        self.received[stream] += 1
        self.preroll[stream].append((t, value))
        for ep in self.episodes:
            ep.clock.offer(stream, t, value)

    def _reject(self, stream: str, text: str) -> None:
        self.rejected += 1
        self.warn(stream, text)

    def on_marker(
        self, phase: str | None, source: str, t: float, task: str = "", bus_episode: Any = None
    ) -> None:
        """An episode marker: phase "start" or "stop" from `source` at time `t`."""
        if self.settings.sources and source not in self.settings.sources:
            return
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
        info = {
            "bus_episode": bus_episode,
            "source": source,
            "t_start": t,
            "task": self.settings.task_texts.get(task) or task or self.settings.default_task,
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
            max_latency=self.settings.max_latency,
            slack=self.settings.slack,
        )
        for stream, samples in self.preroll.items():
            for ts, value in samples:
                clock.offer(stream, ts, value)
        self.episodes.append(Episode(clock, info))

    def shift_clock(self, step: float) -> int:
        """The bus clock stepped `step` s: the open episodes and the samples kept for the next
        one move with it (bus.clock.ClockSteps notices; the episode's report counts it).
        Returns how many open episodes moved."""
        for ep in self.episodes:
            ep.clock.shift_clock(step)
            ep.info["clock_step_s"] = round(ep.info.get("clock_step_s", 0.0) + step, 3)
        for samples in self.preroll.values():
            shifted = [(t + step, value) for t, value in samples]
            samples.clear()
            samples.extend(shifted)
        return len(self.episodes)

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
                self.settings.max_backlog_mb,
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
        self.emit(state, data)

    def _backlog_mb(self) -> float:
        return self.writer.backlog_snapshot().bytes / 1e6

    # -------------------------------------------------------------- shutdown

    def shutdown(self, keep_partial: bool, t: float) -> None:
        """Stopped episodes are finished; the open one is saved (keep_partial, cut at `t`) or
        dropped."""
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
            "backlog_limit_mb": self.settings.max_backlog_mb,
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

"""Subscriber: receives stream messages from the hub, validated against their topic's schema.

Two modes:
- "latest": `latest()` drains whatever arrived and keeps the newest message per topic; the
  ones overwritten unread are counted as `skipped`. For control loops and dashboards.
- "every": `recv()` hands out every message in order, for the recorder. A deep queue; whatever
  a high-water mark still dropped shows up in `lost` (sequence gaps).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import zmq

from bus import sockets
from bus.config import BusConfig
from bus.gaps import GapCounter
from bus.log import Throttle, warn_throttled
from bus.schema import validate
from bus.wire import Message, WireError, decode, describe_source

log = logging.getLogger("bus.subscriber")

MODES = ("latest", "every")


class Subscriber:
    def __init__(
        self,
        cfg: BusConfig,
        topics: Iterable[str],
        mode: str = "latest",
        ctx: zmq.Context | None = None,
        queue: int | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"subscriber mode {mode!r}: expected one of {MODES}")
        self.mode = mode
        self._sock = sockets.connect(zmq.SUB, cfg.sub, cfg, ctx)
        # Every-message mode buffers ~10 s of three 30 Hz cameras before ZeroMQ drops.
        self._sock.rcvhwm = queue or (1000 if mode == "latest" else 5000)
        for topic in topics:
            self._sock.subscribe(topic.encode())
        self._gaps = GapCounter()
        self._throttle = Throttle()
        self.newest: dict[str, Message] = {}
        self._unread: set[str] = set()
        self.received = 0
        self.skipped = 0
        self.bad = 0

    @property
    def lost(self) -> int:
        return self._gaps.lost

    def _recv_one(self) -> Message | None:
        """One frame set off the socket (caller knows it is there); None if it was bad."""
        frames = self._sock.recv_multipart(copy=False)
        try:
            msg = decode(frames)
            validate(msg)
        except WireError as exc:
            self.bad += 1
            src = describe_source(frames)
            warn_throttled(log, self._throttle, src, f"dropped bad message {src}: {exc}")
            return None
        self.received += 1
        self._gaps.see(msg.src, msg.topic, msg.seq)
        return msg

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next valid message (every mode), or None when `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._sock.poll(None if wait is None else wait * 1000):
                return None
            msg = self._recv_one()
            if msg is not None:
                return msg
            # A bad message: the valid ones queued behind it are still due now, deadline or
            # not (a drain loop `while sub.recv(0)` must not stop at the first bad message).
            if deadline is not None and time.monotonic() >= deadline and not self._sock.poll(0):
                return None

    def latest(self, timeout: float = 0.0) -> dict[str, Message]:
        """Drain the socket; return the newest message per topic seen so far.

        With `timeout` > 0, waits up to that long for at least one new message first.
        """
        if timeout > 0:
            self._sock.poll(timeout * 1000)
        while self._sock.poll(0):
            msg = self._recv_one()
            if msg is None:
                continue
            if msg.topic in self._unread:
                self.skipped += 1
            self._unread.add(msg.topic)
            self.newest[msg.topic] = msg
        return self.newest

    def take(self, topic: str) -> Message | None:
        """The newest message on `topic` if it has not been taken before (latest mode)."""
        self.latest()
        if topic in self._unread:
            self._unread.discard(topic)
            return self.newest[topic]
        return None

    def stats(self) -> dict[str, int]:
        return {
            "received": self.received,
            "skipped": self.skipped,
            "lost": self.lost,
            "bad": self.bad,
        }

    def drops(self) -> dict[str, int]:
        """What this subscriber lost, for a health report's `drops`. In latest mode skipping an
        unread message is the point, not a drop."""
        out = {"bus_lost": self.lost, "bus_bad": self.bad}
        if self.mode != "latest":
            out["bus_skipped"] = self.skipped
        return out

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

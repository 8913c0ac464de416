"""The stream half of the hub: libzmq's XSUB/XPUB proxy, audited from a capture socket.

Frames never wait on Python: the proxy runs in C (the GIL released) and hands each message to
a capture PUB as well, by reference, not by copy. An audit thread decodes and checks those
copies against their topic's schema, counts messages, bytes, sequence gaps and bad messages,
and logs each bad one with its source. Subscribers validate on receive too, so a bad message
is dropped and counted at every subscriber; the hub is where it is seen and named once.
If the audit ever falls behind, the capture PUB drops copies (never blocks the proxy) and the
audit counts what it missed from its own queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from bus.gaps import GapCounter
from bus.log import Throttle, warn_throttled
from bus.schema import validate
from bus.wire import WireError, decode, describe_source

log = logging.getLogger("hub.streams")


@dataclass
class StreamStats:
    messages: int = 0
    bytes: int = 0
    bad: int = 0
    gaps: GapCounter = field(default_factory=GapCounter)
    bad_sources: dict[str, int] = field(default_factory=dict)  # "'topic' from 'src'" -> n


class StreamForwarder:
    """Publishers connect to `xsub`, subscribers to `xpub`; subscriptions flow upstream so a
    publisher only sends what someone listens to."""

    def __init__(
        self,
        ctx: zmq.Context,
        xsub: zmq.Socket,
        xpub: zmq.Socket,
        publish_health: Callable[[], None],
        health_interval: float,
    ):
        self.xsub = xsub
        self.xpub = xpub
        self.stats = StreamStats()
        self._publish_health = publish_health
        self._health_interval = health_interval
        self._throttle = Throttle()
        name = f"inproc://hub-{id(self)}"
        self._capture = ctx.socket(zmq.PUB)
        self._capture.sndhwm = 1000
        self._capture.bind(f"{name}-capture")
        self._audit = ctx.socket(zmq.SUB)
        self._audit.rcvhwm = 1000
        self._audit.subscribe(b"")
        self._audit.connect(f"{name}-capture")
        self._control_rx = ctx.socket(zmq.PAIR)
        self._control_rx.bind(f"{name}-control")
        self._control_tx = ctx.socket(zmq.PAIR)
        self._control_tx.connect(f"{name}-control")

    def _audit_one(self, frames: list) -> None:
        if len(frames) == 1 and frames[0].bytes[:1] in (b"\x00", b"\x01"):
            return  # a subscription travelling upstream, not a message
        try:
            msg = decode(frames)
            validate(msg)
        except WireError as exc:
            self.stats.bad += 1
            src = describe_source(frames)
            if src in self.stats.bad_sources or len(self.stats.bad_sources) < 50:
                self.stats.bad_sources[src] = self.stats.bad_sources.get(src, 0) + 1
            warn_throttled(log, self._throttle, src, f"bad message {src}: {exc}")
            return
        self.stats.gaps.see(msg.src, msg.topic, msg.seq)
        self.stats.messages += 1
        self.stats.bytes += msg.nbytes

    def _proxy(self) -> None:
        try:
            zmq.proxy_steerable(self.xsub, self.xpub, self._capture, self._control_rx)
        except zmq.ContextTerminated:
            pass

    def run(self, stop: threading.Event) -> None:
        proxy = threading.Thread(target=self._proxy, name="proxy", daemon=True)
        proxy.start()
        next_health = time.monotonic()
        try:
            while not stop.is_set():
                wait = max(0.0, min(next_health - time.monotonic(), 0.1))
                if self._audit.poll(wait * 1000):
                    while self._audit.poll(0):
                        self._audit_one(self._audit.recv_multipart(copy=False))
                if time.monotonic() >= next_health:
                    self._publish_health()
                    next_health = max(next_health + self._health_interval, time.monotonic())
        finally:
            self._control_tx.send(b"TERMINATE")
            proxy.join(timeout=5)
            for sock in (self._capture, self._audit, self._control_rx, self._control_tx):
                sock.close(linger=0)

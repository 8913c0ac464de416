"""The stream half of the hub: an XSUB/XPUB forwarder that validates and counts what passes."""

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
    publisher only sends what someone listens to. Each message is decoded (views only, no
    copies) and checked against its topic's schema; bad ones are dropped, counted and logged."""

    def __init__(
        self,
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

    def _forward_one(self) -> None:
        frames = self.xsub.recv_multipart(copy=False)
        try:
            msg = decode(frames)
            validate(msg)
        except WireError as exc:
            self.stats.bad += 1
            src = describe_source(frames)
            if src in self.stats.bad_sources or len(self.stats.bad_sources) < 50:
                self.stats.bad_sources[src] = self.stats.bad_sources.get(src, 0) + 1
            warn_throttled(log, self._throttle, src, f"dropped bad message {src}: {exc}")
            return
        self.stats.gaps.see(msg.src, msg.topic, msg.seq)
        self.xpub.send_multipart(frames, copy=False)
        self.stats.messages += 1
        self.stats.bytes += msg.nbytes

    def run(self, stop: threading.Event) -> None:
        poller = zmq.Poller()
        poller.register(self.xsub, zmq.POLLIN)
        poller.register(self.xpub, zmq.POLLIN)
        next_health = time.monotonic()
        while not stop.is_set():
            wait_ms = max(0.0, (next_health - time.monotonic()) * 1000)
            events = dict(poller.poll(min(wait_ms, 100)))
            if self.xpub in events:
                # Subscriptions (and unsubscriptions) travel upstream to the publishers.
                while self.xpub.poll(0):
                    self.xsub.send(self.xpub.recv())
            if self.xsub in events:
                # Bounded burst so subscriptions and health are never starved by a flood.
                for _ in range(256):
                    if not self.xsub.poll(0):
                        break
                    self._forward_one()
            if time.monotonic() >= next_health:
                self._publish_health()
                next_health += self._health_interval
                if next_health < time.monotonic():
                    next_health = time.monotonic() + self._health_interval

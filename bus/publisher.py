"""Publisher: sends stream messages to the hub (PUB side of the forwarder)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import zmq

from bus import sockets
from bus.config import BusConfig
from bus.wire import Encoder, Message


class Publisher:
    """Publishes messages under one source name.

    The socket is an XPUB so the publisher hears which topics someone subscribes to:
    `wait_for_subscriber` lets one-shot senders (an e-stop command) make sure the message
    is not lost to ZeroMQ's slow-joiner window. Sending never blocks: above the high-water
    mark ZeroMQ drops, and subscribers count the gap from sequence numbers.
    """

    def __init__(self, cfg: BusConfig, source: str, ctx: zmq.Context | None = None):
        self._sock = sockets.connect(zmq.XPUB, cfg.pub, cfg, ctx)
        self._encoder = Encoder(source)
        self._subscriptions: set[bytes] = set()
        self.sent = 0

    def publish(
        self,
        topic: str,
        arrays: Mapping[str, np.ndarray] | None = None,
        data: Mapping[str, Any] | None = None,
        t_cap: float = 0.0,
    ) -> Message:
        msg = Message(topic, dict(arrays or {}), dict(data or {}), t_cap=t_cap)
        self._sock.send_multipart(self._encoder.encode(msg), copy=False)
        self.sent += 1
        self._drain_subscriptions()
        return msg

    def _drain_subscriptions(self) -> None:
        while self._sock.poll(0):
            event = self._sock.recv()
            if event[:1] == b"\x01":
                self._subscriptions.add(event[1:])
            elif event[:1] == b"\x00":
                self._subscriptions.discard(event[1:])

    def has_subscriber(self, topic: str) -> bool:
        self._drain_subscriptions()
        raw = topic.encode()
        return any(raw.startswith(prefix) for prefix in self._subscriptions)

    def wait_for_subscriber(self, topic: str, timeout: float) -> bool:
        """True once some subscriber (through the hub) listens to `topic`, False at the deadline."""
        deadline = time.monotonic() + timeout
        while not self.has_subscriber(topic):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._sock.poll(min(left, 0.05) * 1000)
        return True

    def close(self, linger: float = 1.0) -> None:
        """Close, giving queued messages up to `linger` seconds to leave (see bus.sockets.flush)."""
        self._sock.close(linger=int(linger * 1000))

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

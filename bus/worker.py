"""ServiceWorker: serves one service through the hub.

Registers, heartbeats every second (also while a long request runs: the handler runs on its own
thread), registers again the moment its connection to the hub is re-made (a restarted hub, a
link that came back), says why when the hub refuses its key, and turns every handler exception
into an error reply that names it, so callers hear about failures instead of timing out.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from bus import protocol as p
from bus import sockets
from bus.config import BusConfig
from bus.log import Throttle, warn_throttled
from bus.wire import Encoder, Message, WireError, decode

log = logging.getLogger("bus.worker")


@dataclass
class Reply:
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)


class RequestError(Exception):
    """Raised by a handler for a request it refuses; its text goes back to the caller as is."""


Handler = Callable[[Message], Reply]


@dataclass
class _Job:
    client: bytes
    request_id: bytes
    request: Message | None
    generation: int
    received: float
    reply: Reply | None = None
    error: str | None = None


class ServiceWorker:
    def __init__(
        self,
        cfg: BusConfig,
        service: str,
        handler: Handler,
        source: str | None = None,
        ctx: zmq.Context | None = None,
    ):
        self.cfg = cfg
        self.service = service
        self.handler = handler
        self.ctx = ctx or sockets.context()
        self._encoder = Encoder(source or service)
        self._sock: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._handshakes = 0  # on the current socket; after the first, each is a reconnection
        self._refusals = Throttle()
        self._generation = 0
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._done: queue.Queue[_Job] = queue.Queue()
        pair = f"inproc://worker-done-{id(self)}"
        self._wake_rx = self.ctx.socket(zmq.PAIR)
        self._wake_rx.bind(pair)
        self._wake_tx = self.ctx.socket(zmq.PAIR)
        self._wake_tx.connect(pair)
        self.served = 0
        self.failed = 0
        self.reconnects = 0

    # -- handler thread ----------------------------------------------------------------------
    def _handle_forever(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                if job.request is None:
                    raise RequestError(job.error or "malformed request")
                job.reply = self.handler(job.request)
            except RequestError as exc:
                job.error = str(exc)
            except Exception as exc:
                job.error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "handler failed on a %s request:\n%s", self.service, traceback.format_exc()
                )
            self._done.put(job)
            self._wake_tx.send(b"")

    # -- hub connection ----------------------------------------------------------------------
    def _connect(self) -> None:
        if self._sock is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._sock.close(linger=0)
            self.reconnects += 1
        self._generation += 1
        self._sock = sockets.connect(zmq.DEALER, self.cfg.worker, self.cfg, self.ctx)
        self._monitor = sockets.monitor(self._sock, sockets.HANDSHAKE_EVENTS)
        self._handshakes = 0
        self._send(p.READY, self.service.encode())
        self._hub_expiry = time.monotonic() + p.HEARTBEAT_INTERVAL * p.HEARTBEAT_LIVENESS

    def _send(self, command: bytes, *frames: Any) -> None:
        assert self._sock is not None
        self._sock.send_multipart([b"", p.WORKER, command, *frames], copy=False)

    def _on_hub(self, frames: list) -> None:
        self._hub_expiry = time.monotonic() + p.HEARTBEAT_INTERVAL * p.HEARTBEAT_LIVENESS
        if len(frames) < 3 or frames[1].bytes != p.WORKER:
            return
        command = frames[2].bytes
        if command == p.REQUEST and len(frames) >= 5:
            job = _Job(frames[3].bytes, frames[4].bytes, None, self._generation, time.monotonic())
            try:
                job.request = decode(frames[5:])
            except WireError as exc:
                job.error = f"malformed request: {exc}"
            self._jobs.put(job)
        elif command == p.DISCONNECT:
            log.info("hub asked %s to register again", self.service)
            self._register()

    def _on_monitor(self, event: dict) -> None:
        why = sockets.handshake_failure(event)
        if why:
            warn_throttled(
                log,
                self._refusals,
                why,
                f"the hub at {self.cfg.worker} lets nothing through for {self.service}: {why}",
            )
            return
        self._handshakes += 1
        if self._handshakes > 1:
            # A new connection: a restarted hub does not know us, and waiting for it to say so
            # after our next heartbeat costs up to a second.
            log.info("connection to the hub re-made: registering %s again", self.service)
            self._register()

    def _register(self) -> None:
        """READY again on this socket (the hub takes it as often as it comes). Requests handed
        out before belong to a hub that has failed them: their replies are dropped."""
        self._generation += 1
        self._send(p.READY, self.service.encode())
        self._hub_expiry = time.monotonic() + p.HEARTBEAT_INTERVAL * p.HEARTBEAT_LIVENESS

    def _finish(self, job: _Job) -> None:
        if job.generation != self._generation:
            return  # the hub that sent it is gone; it has already failed the request
        if job.error is not None:
            self.failed += 1
            self._send(p.REPLY, job.client, job.request_id, p.ERROR, job.error.encode())
            return
        assert job.reply is not None
        msg = Message(self.service, dict(job.reply.arrays), dict(job.reply.data))
        self.served += 1
        self._send(p.REPLY, job.client, job.request_id, p.OK, *self._encoder.encode(msg))

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set."""
        thread = threading.Thread(
            target=self._handle_forever, name=f"{self.service}-handler", daemon=True
        )
        thread.start()
        self._connect()
        next_beat = time.monotonic() + p.HEARTBEAT_INTERVAL
        try:
            while not stop.is_set():
                assert self._sock is not None
                poller = zmq.Poller()
                poller.register(self._sock, zmq.POLLIN)
                poller.register(self._wake_rx, zmq.POLLIN)
                poller.register(self._monitor, zmq.POLLIN)
                wait = max(0.0, min(next_beat - time.monotonic(), 0.1))
                events = dict(poller.poll(wait * 1000))
                if self._wake_rx in events:
                    while self._wake_rx.poll(0):
                        self._wake_rx.recv()
                        self._finish(self._done.get())
                if self._monitor in events:
                    while self._monitor.poll(0):
                        self._on_monitor(sockets.read_event(self._monitor))
                if self._sock in events:
                    while self._sock.poll(0):
                        self._on_hub(self._sock.recv_multipart(copy=False))
                now = time.monotonic()
                if now >= next_beat:
                    self._send(p.HEARTBEAT)
                    next_beat = now + p.HEARTBEAT_INTERVAL
                if now > self._hub_expiry:
                    log.warning(
                        "hub silent for %.0f s: reconnecting to %s",
                        p.HEARTBEAT_INTERVAL * p.HEARTBEAT_LIVENESS,
                        self.cfg.worker,
                    )
                    self._connect()
        finally:
            if self._sock is not None:
                self._send(p.DISCONNECT)
                self._sock.disable_monitor()
                self._monitor.close(linger=0)
                self._sock.close(linger=200)
            self._jobs.put(None)
            thread.join(timeout=5)
            self._wake_rx.close(linger=0)
            self._wake_tx.close(linger=0)

"""The service half of the hub: routes requests from clients to registered workers.

Workers register a service name, heartbeat every second and are dropped after three missed
beats, or at once when their connection closes (a killed process: the kernel closes its socket,
and a monitor on the worker socket reports it within milliseconds); several workers of one
service take requests in turn. A caller always gets an answer
within its own deadline: an error reply when no live worker exists, when the queue is full or
when the worker handling its request dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import zmq

from bus import protocol as p
from bus import sockets
from bus.log import Throttle, warn_throttled
from bus.wire import Encoder, Message

log = logging.getLogger("hub.services")

HUB_SERVICE = "hub"  # answered by the broker itself: live workers per service


@dataclass
class Request:
    client: bytes
    request_id: bytes
    service: str
    deadline: float
    body: list


@dataclass
class Worker:
    address: bytes
    service: str
    expiry: float
    request: Request | None = None
    fd: int = -1  # its connection's file descriptor, as the monitor names it


@dataclass
class Service:
    idle: deque[Worker] = field(default_factory=deque)
    queue: deque[Request] = field(default_factory=deque)
    live: int = 0


@dataclass
class BrokerStats:
    requests: int = 0
    replies: int = 0
    errors: int = 0
    bad: int = 0


class ServiceBroker:
    def __init__(self, frontend: zmq.Socket, backend: zmq.Socket, max_queue: int = 64):
        self.frontend = frontend  # ROUTER facing clients
        self.backend = backend  # ROUTER facing workers
        self.max_queue = max_queue
        self.services: dict[str, Service] = {}
        self.workers: dict[bytes, Worker] = {}
        self.stats = BrokerStats()
        self._throttle = Throttle()
        self._encoder = Encoder("hub")
        # libzmq's draft ROUTER_NOTIFY is not in pyzmq's wheels; the socket monitor is.
        self._closed_early: dict[int, int] = {}  # fd -> disconnections already handled
        self.monitor = sockets.monitor(backend, zmq.EVENT_DISCONNECTED | sockets.HANDSHAKE_EVENTS)

    # -- bookkeeping -------------------------------------------------------------------------
    def live_workers(self) -> dict[str, int]:
        return {name: s.live for name, s in self.services.items() if s.live}

    def busy(self) -> dict[str, int]:
        return {
            name: s.live - len(s.idle) for name, s in self.services.items() if s.live > len(s.idle)
        }

    def queued(self) -> dict[str, int]:
        return {name: len(s.queue) for name, s in self.services.items() if s.queue}

    def _expiry(self) -> float:
        return time.monotonic() + p.HEARTBEAT_INTERVAL * p.HEARTBEAT_LIVENESS

    def _bad(self, what: str) -> None:
        self.stats.bad += 1
        warn_throttled(log, self._throttle, what, f"dropped bad service message: {what}")

    # -- replies to clients ------------------------------------------------------------------
    def _reply(self, req: Request, status: bytes, body: list) -> None:
        self.frontend.send_multipart(
            [req.client, b"", p.CLIENT, req.service.encode(), req.request_id, status, *body],
            copy=False,
        )
        if status == p.ERROR:
            self.stats.errors += 1
        else:
            self.stats.replies += 1

    def _fail(self, req: Request, text: str) -> None:
        self._reply(req, p.ERROR, [text.encode()])

    # -- clients -----------------------------------------------------------------------------
    def on_client(self, frames: list) -> None:
        if len(frames) < 6 or frames[1].bytes != b"" or frames[2].bytes != p.CLIENT:
            self._bad(f"client message with {len(frames)} parts or unknown protocol")
            return
        try:
            service = frames[3].bytes.decode()
            timeout = int(frames[5].bytes) / 1000.0
        except (UnicodeDecodeError, ValueError):
            self._bad("client message with a bad service name or timeout")
            return
        req = Request(
            frames[0].bytes, frames[4].bytes, service, time.monotonic() + timeout, frames[6:]
        )
        self.stats.requests += 1
        if service == HUB_SERVICE:
            status = {"workers": self.live_workers(), "busy": self.busy(), "queued": self.queued()}
            self._reply(req, p.OK, self._encoder.encode(Message(HUB_SERVICE, data=status)))
            return
        svc = self.services.get(service)
        if svc is None or svc.live == 0:
            live = ", ".join(sorted(self.live_workers())) or "none"
            self._fail(req, f"no live worker for service {service!r} (live services: {live})")
            return
        if len(svc.queue) >= self.max_queue:
            self._fail(req, f"service {service!r} is busy: {len(svc.queue)} requests queued")
            return
        svc.queue.append(req)
        self._dispatch(svc)

    def _dispatch(self, svc: Service) -> None:
        now = time.monotonic()
        while svc.idle and svc.queue:
            req = svc.queue.popleft()
            if req.deadline < now:
                continue  # its caller has already given up
            worker = svc.idle.popleft()
            worker.request = req
            self.backend.send_multipart(
                [worker.address, b"", p.WORKER, p.REQUEST, req.client, req.request_id, *req.body],
                copy=False,
            )

    # -- workers -----------------------------------------------------------------------------
    def _send_worker(self, address: bytes, command: bytes) -> None:
        self.backend.send_multipart([address, b"", p.WORKER, command])

    def _remove(self, worker: Worker, reason: str) -> None:
        self.workers.pop(worker.address, None)
        svc = self.services[worker.service]
        svc.live -= 1
        if worker in svc.idle:
            svc.idle.remove(worker)
        log.info(
            "worker %s of %r removed: %s (%d left)",
            worker.address.hex()[:8],
            worker.service,
            reason,
            svc.live,
        )
        if worker.request is not None:
            self._fail(
                worker.request,
                f"worker for service {worker.service!r} {reason} while handling this request",
            )
        if svc.live == 0:
            while svc.queue:
                self._fail(svc.queue.popleft(), f"no live worker for service {worker.service!r}")

    def on_worker(self, frames: list) -> None:
        if len(frames) < 4 or frames[1].bytes != b"" or frames[2].bytes != p.WORKER:
            self._bad(f"worker message with {len(frames)} parts or unknown protocol")
            return
        address, command = frames[0].bytes, frames[3].bytes
        worker = self.workers.get(address)
        if command == p.READY and len(frames) == 5:
            service = frames[4].bytes.decode(errors="replace")
            if worker is not None:
                # Again on the same connection: a worker making sure (after a reconnection or
                # our DISCONNECT) is idempotent; another service on it is a protocol error.
                worker.expiry = self._expiry()
                if worker.service != service:
                    self._remove(worker, f"registered again for {service!r}")
                    self._send_worker(address, p.DISCONNECT)
                return
            fd = _source_fd(frames[4])
            for stale in [w for w in self.workers.values() if fd >= 0 and w.fd == fd]:
                # The kernel reuses a closed connection's fd: that connection is gone, and its
                # disconnection event, still on its way, must not remove this worker.
                self._closed_early[fd] = self._closed_early.get(fd, 0) + 1
                self._remove(stale, "lost its connection")
            worker = Worker(address, service, self._expiry(), fd=fd)
            self.workers[address] = worker
            svc = self.services.setdefault(service, Service())
            svc.live += 1
            svc.idle.append(worker)
            log.info("worker %s registered for %r (%d live)", address.hex()[:8], service, svc.live)
            self._dispatch(svc)
            return
        if worker is None:
            # A worker from before a hub restart: tell it to register again.
            self._send_worker(address, p.DISCONNECT)
            return
        worker.expiry = self._expiry()
        if command == p.HEARTBEAT:
            return
        if command == p.DISCONNECT:
            self._remove(worker, "disconnected")
            return
        if command == p.REPLY and len(frames) >= 7:
            req = worker.request
            if (
                req is not None
                and req.client == frames[4].bytes
                and req.request_id == frames[5].bytes
            ):
                self._reply(req, frames[6].bytes, frames[7:])
                worker.request = None
                svc = self.services[worker.service]
                svc.idle.append(worker)
                self._dispatch(svc)
            return
        self._bad(f"unknown worker command {command!r}")

    def on_heartbeat(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.expiry < now:
                self._remove(worker, "stopped responding (3 heartbeats missed)")
            else:
                self._send_worker(worker.address, p.HEARTBEAT)
        for svc in self.services.values():
            while svc.queue and svc.queue[0].deadline < now:
                svc.queue.popleft()

    def on_monitor(self, event: dict) -> None:
        why = sockets.handshake_failure(event)
        if why:
            endpoint = event["endpoint"].decode(errors="replace")
            warn_throttled(
                log, self._throttle, why, f"a worker on {endpoint} got nothing through: {why}"
            )
        if event["event"] != zmq.EVENT_DISCONNECTED:
            return
        fd = event["value"]
        if self._closed_early.get(fd):
            self._closed_early[fd] -= 1
            return
        for worker in [w for w in self.workers.values() if w.fd == fd]:
            self._remove(worker, "lost its connection")

    def run(self, stop: threading.Event) -> None:
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        next_beat = time.monotonic() + p.HEARTBEAT_INTERVAL
        while not stop.is_set():
            wait_ms = max(0.0, (next_beat - time.monotonic()) * 1000)
            events = dict(poller.poll(min(wait_ms, 100)))
            if self.backend in events:
                while self.backend.poll(0):
                    self.on_worker(self.backend.recv_multipart(copy=False))
            if self.frontend in events:
                while self.frontend.poll(0):
                    self.on_client(self.frontend.recv_multipart(copy=False))
            # After the backend: a worker's last reply is read before its disconnection.
            if self.monitor in events:
                while self.monitor.poll(0):
                    self.on_monitor(sockets.read_event(self.monitor))
            if time.monotonic() >= next_beat:
                self.on_heartbeat()
                next_beat = time.monotonic() + p.HEARTBEAT_INTERVAL


def _source_fd(frame: zmq.Frame) -> int:
    try:
        return int(frame.get(zmq.SRCFD))
    except (zmq.ZMQError, AttributeError, TypeError):
        return -1  # no fd (inproc): such a worker is dropped by heartbeats only

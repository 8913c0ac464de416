"""The hub's service broker in-process: real ZeroMQ sockets over inproc, no hub process.

Each test drives the broker by hand (one message in, look at what comes out), so the rules
are checked one at a time: a full queue, requests whose caller gave up, a repeated READY.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from bus import protocol as p
from bus.broker import ServiceBroker


class Wired:
    """A broker with one client socket and any number of worker sockets."""

    def __init__(self, ctx: zmq.Context, name: str, max_queue: int = 64):
        self.ctx = ctx
        frontend, backend = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
        frontend.bind(f"inproc://{name}-clients")
        backend.bind(f"inproc://{name}-workers")
        self.broker = ServiceBroker(frontend, backend, max_queue=max_queue)
        self.name = name
        self.client = ctx.socket(zmq.DEALER)
        self.client.connect(f"inproc://{name}-clients")
        self.sockets = [frontend, backend, self.broker.monitor, self.client]

    def worker(self, service: str = "svc") -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.connect(f"inproc://{self.name}-workers")
        self.sockets.append(sock)
        self.from_worker(sock, p.READY, service.encode())
        return sock

    def from_worker(self, sock: zmq.Socket, *frames: bytes) -> None:
        sock.send_multipart([b"", p.WORKER, *frames])
        self.broker.on_worker(self.broker.backend.recv_multipart(copy=False))

    def request(self, rid: bytes, timeout_ms: int = 5000, service: str = "svc") -> None:
        self.client.send_multipart(
            [b"", p.CLIENT, service.encode(), rid, str(timeout_ms).encode(), b"body"]
        )
        self.broker.on_client(self.broker.frontend.recv_multipart(copy=False))

    def answers(self) -> list[tuple[bytes, bytes, bytes]]:
        """(request id, status, first body frame) of every answer waiting for the client."""
        out = []
        while self.client.poll(100):
            frames = self.client.recv_multipart()
            out.append((frames[3], frames[4], frames[5] if len(frames) > 5 else b""))
        return out

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)


@pytest.fixture
def wired() -> Iterator[callable]:
    ctx = zmq.Context()
    made: list[Wired] = []

    def make(max_queue: int = 64) -> Wired:
        made.append(Wired(ctx, f"b{len(made)}-{id(ctx)}", max_queue))
        return made[-1]

    yield make
    for w in made:
        w.close()
    ctx.term()


def test_a_full_queue_answers_busy_at_once(wired) -> None:
    w = wired(max_queue=2)
    busy = w.worker()
    w.request(b"r0")  # dispatched to the worker
    w.request(b"r1")
    w.request(b"r2")  # two queued: the queue is full
    w.request(b"r3")
    assert w.answers() == [(b"r3", p.ERROR, b"service 'svc' is busy: 2 requests queued")]
    assert w.broker.queued() == {"svc": 2} and w.broker.busy() == {"svc": 1}
    assert busy.poll(100)  # r0 reached the worker


def test_queued_requests_whose_caller_gave_up_are_not_dispatched(wired) -> None:
    w = wired()
    worker = w.worker()
    w.request(b"first", timeout_ms=5000)  # the worker takes it
    w.request(b"stale", timeout_ms=1)  # queued behind it; its caller gives up in 1 ms
    w.request(b"fresh", timeout_ms=5000)
    time.sleep(0.01)
    request = worker.recv_multipart()  # ["", WORKER, REQUEST, client, request id, body...]
    assert request[4] == b"first"
    client, rid = request[3], request[4]
    w.from_worker(worker, p.REPLY, client, rid, p.OK, b"done")
    assert w.answers() == [(b"first", p.OK, b"done")]
    # The next request the worker sees is the fresh one: the stale one was dropped.
    assert worker.recv_multipart()[4] == b"fresh"


def test_a_repeated_ready_is_idempotent_and_another_service_is_refused(wired) -> None:
    w = wired()
    worker = w.worker("svc")
    w.from_worker(worker, p.READY, b"svc")  # again, e.g. after a reconnection
    assert w.broker.live_workers() == {"svc": 1}
    assert not worker.poll(100), "no DISCONNECT for a repeated READY"
    w.from_worker(worker, p.READY, b"other")  # the same connection, another service
    assert w.broker.live_workers() == {}
    assert worker.recv_multipart()[-1] == p.DISCONNECT


def test_no_live_worker_is_answered_with_the_live_services(wired) -> None:
    w = wired()
    w.worker("policy/lift")
    w.request(b"r", service="policy/sort")
    [(rid, status, text)] = w.answers()
    assert (rid, status) == (b"r", p.ERROR)
    assert text == b"no live worker for service 'policy/sort' (live services: policy/lift)"

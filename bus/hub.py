"""The hub: one process that forwards streams and brokers services.

    uv run python -m bus.hub [--bus.pub=tcp://127.0.0.1:5550 ...] [--bus.keys_dir=keys]

Refuses to start when another process holds its endpoints, and refuses to listen beyond
loopback without CurveZMQ keys.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import draccus
import zmq
import zmq.auth.thread

from bus import keys, sockets, topics
from bus import log as buslog
from bus.broker import ServiceBroker
from bus.config import BusConfig, is_loopback
from bus.forwarder import StreamForwarder
from bus.wire import Encoder, Message

log = logging.getLogger("hub")


class HubError(RuntimeError):
    """The hub cannot start; the message says why and what to do."""


@dataclass
class HubConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    # How often the hub publishes `health/hub`.
    health_interval: float = 1.0
    # Messages the hub holds for one slow subscriber before dropping (ZeroMQ's SNDHWM): about
    # a second of three 30 Hz cameras. Subscribers count what was dropped from sequence gaps.
    subscriber_queue: int = 100


def _ipc_in_use(endpoint: str) -> bool:
    """ZeroMQ silently steals an ipc path another process listens on; ask the path first."""
    path = endpoint.split("://", 1)[1]
    if not os.path.exists(path):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False  # stale file from a hub that died: safe to take over
    finally:
        probe.close()


def bind(sock: zmq.Socket, endpoint: str) -> None:
    if endpoint.startswith("ipc://"):
        if _ipc_in_use(endpoint):
            raise HubError(f"{endpoint} is held by another process (is a hub already running?)")
        Path(endpoint.split("://", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise HubError(
                f"{endpoint} is already in use (is a hub already running? "
                "`ss -ltnp` shows who holds the port)"
            ) from exc
        raise HubError(f"cannot bind {endpoint}: {exc}") from exc


class Hub:
    def __init__(self, cfg: HubConfig, ctx: zmq.Context | None = None):
        self.cfg = cfg
        self.ctx = ctx or zmq.Context()
        self.stop = threading.Event()
        self.started = time.monotonic()
        self._auth: zmq.auth.thread.ThreadAuthenticator | None = None
        bus = cfg.bus
        exposed = [e for e in bus.endpoints().values() if not is_loopback(e)]
        if exposed and not bus.keys_dir:
            raise HubError(
                f"refusing to listen on {', '.join(exposed)} without CurveZMQ keys: "
                "run `uv run python -m bus.keys generate keys/` and pass --bus.keys_dir=keys"
            )
        self._sockets: list[zmq.Socket] = []
        try:
            xsub = self._socket(zmq.XSUB, bus.pub)
            xpub = self._socket(zmq.XPUB, bus.sub, sndhwm=cfg.subscriber_queue)
            frontend = self._socket(zmq.ROUTER, bus.client)
            backend = self._socket(zmq.ROUTER, bus.worker)
        except Exception:
            self.close()
            raise
        # The hub's own health enters its forwarder like any publisher's, over inproc.
        health_in = f"inproc://hub-health-{id(self)}"
        xsub.bind(health_in)
        self._health = self.ctx.socket(zmq.PUB)
        self._health.connect(health_in)
        self._sockets.append(self._health)
        self._encoder = Encoder("hub")
        self.forwarder = StreamForwarder(
            self.ctx, xsub, xpub, self._publish_health, cfg.health_interval
        )
        self.broker = ServiceBroker(frontend, backend)
        self._sockets.append(self.broker.monitor)

    def _socket(self, kind: int, endpoint: str, sndhwm: int = 1000) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.linger = 0
        sock.sndhwm = sndhwm
        sock.maxmsgsize = self.cfg.bus.max_msg_bytes
        sockets.keep_alive(sock)
        self._sockets.append(sock)
        if self.cfg.bus.keys_dir:
            self._start_auth()
            sock.curve_publickey, sock.curve_secretkey = keys.hub_keys(self.cfg.bus.keys_dir)
            sock.curve_server = True
        bind(sock, endpoint)
        return sock

    def _start_auth(self) -> None:
        if self._auth is not None:
            return
        authorized = Path(self.cfg.bus.keys_dir or "") / "authorized"
        if not authorized.is_dir():
            raise HubError(
                f"CurveZMQ allow-list folder {authorized} not found "
                "(run `uv run python -m bus.keys generate <keys_dir>`)"
            )
        self._auth = zmq.auth.thread.ThreadAuthenticator(
            self.ctx, log=logging.getLogger("hub.auth")
        )
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(authorized))

    def health(self) -> dict:
        s, b = self.forwarder.stats, self.broker.stats
        return {
            "process": "hub",
            "uptime_s": round(time.monotonic() - self.started, 1),
            "rate_hz": None,
            "drops": {"bad": s.bad + b.bad, "lost_upstream": s.gaps.lost},
            "last_error": None,
            "messages": s.messages,
            "bytes": s.bytes,
            "bad": s.bad + b.bad,
            "bad_sources": dict(s.bad_sources),
            "lost_upstream": s.gaps.lost,
            "workers": self.broker.live_workers(),
            "busy": self.broker.busy(),
            "queued": self.broker.queued(),
            "requests": b.requests,
            "replies": b.replies,
            "errors": b.errors,
        }

    def _publish_health(self) -> None:
        msg = Message(topics.health("hub"), data=self.health())
        self._health.send_multipart(self._encoder.encode(msg))

    def run(self) -> None:
        threads = [
            threading.Thread(target=self.forwarder.run, args=(self.stop,), name="streams"),
            threading.Thread(target=self.broker.run, args=(self.stop,), name="services"),
        ]
        for t in threads:
            t.start()
        log.info(
            "ready: streams pub=%s sub=%s, services client=%s worker=%s%s",
            self.cfg.bus.pub,
            self.cfg.bus.sub,
            self.cfg.bus.client,
            self.cfg.bus.worker,
            ", CurveZMQ on" if self.cfg.bus.keys_dir else "",
        )
        try:
            while not self.stop.wait(0.5):
                if not all(t.is_alive() for t in threads):
                    log.error("a hub thread died; stopping")
                    self.stop.set()
        finally:
            self.stop.set()
            for t in threads:
                t.join()
            self.close()

    def close(self) -> None:
        for sock in self._sockets:
            sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self.ctx.term()


def main() -> None:
    cfg = draccus.parse(HubConfig)
    buslog.setup("hub")
    try:
        hub = Hub(cfg)
    except (HubError, keys.CurveKeyError) as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    signal.signal(signal.SIGTERM, lambda *_: hub.stop.set())
    signal.signal(signal.SIGINT, lambda *_: hub.stop.set())
    hub.run()
    log.info("stopped")


if __name__ == "__main__":
    main()

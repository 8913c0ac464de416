"""ServiceClient: asks a service through the hub, never waiting past its own deadline."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import zmq

from bus import protocol as p
from bus import sockets
from bus.config import BusConfig
from bus.wire import Encoder, Message, WireError, decode


class ServiceError(RuntimeError):
    """The service (or the hub on its behalf) answered with an error; the text is theirs."""

    def __init__(self, service: str, text: str):
        super().__init__(f"{service}: {text}")
        self.service = service
        self.text = text


class ServiceTimeout(ServiceError):
    """No answer within the deadline: hub unreachable, or the service too slow."""


class ServiceClient:
    """A DEALER to the hub. `call` is the blocking form; `send` + `poll` let a control loop keep
    its cadence while a request is in flight (several may be in flight at once)."""

    def __init__(self, cfg: BusConfig, source: str, ctx: zmq.Context | None = None):
        self._sock = sockets.connect(zmq.DEALER, cfg.client, cfg, ctx)
        self._endpoint = cfg.client
        self._encoder = Encoder(source)
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4)
        self._pending: dict[bytes, tuple[str, float]] = {}  # request id -> (service, deadline)
        self._ready: list[tuple[bytes, Message | ServiceError]] = []  # set aside by `call`

    def send(
        self,
        service: str,
        arrays: Mapping[str, np.ndarray] | None = None,
        data: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
        t_cap: float = 0.0,
    ) -> bytes:
        """Send a request; returns its id for `poll`."""
        request_id = self._prefix + next(self._ids).to_bytes(8, "big")
        msg = Message(service, dict(arrays or {}), dict(data or {}), t_cap=t_cap)
        self._sock.send_multipart(
            [
                b"",
                p.CLIENT,
                service.encode(),
                request_id,
                str(int(timeout * 1000)).encode(),
                *self._encoder.encode(msg),
            ],
            copy=False,
        )
        self._pending[request_id] = (service, time.monotonic() + timeout)
        return request_id

    def poll(self, timeout: float = 0.0) -> list[tuple[bytes, Message | ServiceError]]:
        """Replies (or errors, timeouts included) that are ready within `timeout` seconds."""
        done, self._ready = self._ready, []
        return done + self._collect(0.0 if done else timeout)

    def _collect(self, timeout: float) -> list[tuple[bytes, Message | ServiceError]]:
        done: list[tuple[bytes, Message | ServiceError]] = []
        if self._sock.poll(timeout * 1000):
            while self._sock.poll(0):
                result = self._read()
                if result is not None:
                    done.append(result)
        now = time.monotonic()
        for request_id, (service, deadline) in list(self._pending.items()):
            if deadline <= now:
                del self._pending[request_id]
                text = (
                    f"no reply within the deadline (hub at {self._endpoint} unreachable, "
                    "or the service too slow)"
                )
                done.append((request_id, ServiceTimeout(service, text)))
        return done

    def _read(self) -> tuple[bytes, Message | ServiceError] | None:
        frames = self._sock.recv_multipart(copy=False)
        if len(frames) < 5 or frames[1].bytes != p.CLIENT:
            return None
        request_id = frames[3].bytes
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return None  # the reply to a request we already gave up on
        service = pending[0]
        if frames[4].bytes == p.ERROR:
            text = frames[5].bytes.decode(errors="replace") if len(frames) > 5 else "error"
            return request_id, ServiceError(service, text)
        try:
            return request_id, decode(frames[5:])
        except WireError as exc:
            return request_id, ServiceError(service, f"malformed reply: {exc}")

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def call(
        self,
        service: str,
        arrays: Mapping[str, np.ndarray] | None = None,
        data: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
    ) -> Message:
        """Request and wait for the reply; raises ServiceError / ServiceTimeout."""
        request_id = self.send(service, arrays, data, timeout)
        deadline = time.monotonic() + timeout
        aside: list[tuple[bytes, Message | ServiceError]] = []
        try:
            while True:
                for rid, result in self._collect(max(0.0, deadline - time.monotonic())):
                    if rid != request_id:
                        aside.append((rid, result))  # another request's; `poll` hands it out
                    elif isinstance(result, ServiceError):
                        raise result
                    else:
                        return result
        finally:
            self._ready.extend(aside)

    def hub_status(self, timeout: float = 2.0) -> dict:
        """Live workers per service, answered by the hub itself."""
        reply = self.call("hub", timeout=timeout)
        return reply.data

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

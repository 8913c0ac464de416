"""Socket construction shared by every bus endpoint: limits, reconnects, CurveZMQ."""

from __future__ import annotations

import zmq

from bus import keys
from bus.config import BusConfig


def context() -> zmq.Context:
    return zmq.Context.instance()


def connect(kind: int, endpoint: str, cfg: BusConfig, ctx: zmq.Context | None = None) -> zmq.Socket:
    """A socket connected to one of the hub's endpoints; ZeroMQ reconnects it by itself."""
    sock = (ctx or context()).socket(kind)
    sock.linger = 0
    sock.maxmsgsize = cfg.max_msg_bytes
    # Back off up to 2 s so a hub restart is picked up quickly without a reconnect storm.
    sock.reconnect_ivl = 100
    sock.reconnect_ivl_max = 2000
    if cfg.keys_dir:
        keys.apply_client(sock, cfg.keys_dir, cfg.key_name)
    sock.connect(endpoint)
    return sock


def flush() -> None:
    """Wait (up to each socket's linger) for queued messages to leave before the process exits.

    Closing a socket returns at once and ZeroMQ's I/O thread sends what is queued; a process
    that exits right after would lose it (the last `event/episode` stop, say). Terminating the
    shared context blocks until every closed socket has sent or its linger ran out. Call it
    last, after every socket of the process is closed.
    """
    context().term()

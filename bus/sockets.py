"""Socket construction shared by every bus endpoint: limits, reconnects, CurveZMQ."""

from __future__ import annotations

import zmq
from zmq.utils.monitor import parse_monitor_message

from bus import keys
from bus.config import BusConfig


def context() -> zmq.Context:
    return zmq.Context.instance()


def connect(kind: int, endpoint: str, cfg: BusConfig, ctx: zmq.Context | None = None) -> zmq.Socket:
    """A socket connected to one of the hub's endpoints; ZeroMQ reconnects it by itself."""
    sock = (ctx or context()).socket(kind)
    sock.linger = 0
    sock.maxmsgsize = cfg.max_msg_bytes
    # Back off up to 1 s so a hub restart is picked up quickly without a reconnect storm.
    sock.reconnect_ivl = 100
    sock.reconnect_ivl_max = 1000
    # A TCP connect to a host that drops packets (a cut link) would wait out the kernel's SYN
    # retries (seconds, doubling); give up after 1 s and retry on ZeroMQ's schedule instead.
    sock.connect_timeout = 1000
    keep_alive(sock)
    if cfg.keys_dir:
        keys.apply_client(sock, cfg.keys_dir, cfg.key_name)
    sock.connect(endpoint)
    return sock


def keep_alive(sock: zmq.Socket) -> None:
    """ZMTP heartbeats: a peer silent for 3 s (a cut link, a frozen host) is disconnected, so
    the connection is re-made when the link is back instead of hanging on a dead TCP session."""
    sock.heartbeat_ivl = 1000
    sock.heartbeat_timeout = 3000


HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def monitor(sock: zmq.Socket, events: int) -> zmq.Socket:
    """A PAIR socket that receives `sock`'s connection events (read with `read_event`)."""
    return sock.get_monitor_socket(events)


def read_event(mon: zmq.Socket) -> dict:
    return parse_monitor_message(mon.recv_multipart())


def handshake_failure(event: dict) -> str | None:
    """Why a connection's handshake failed, in words a user can act on; None if it did not."""
    kind = event["event"]
    if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (
            f"CurveZMQ handshake refused (status {event['value']}): the client key is not on "
            "the hub's allow-list (keys/authorized/)"
        )
    if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return (
            "handshake failed: the two sides use different security (one has CurveZMQ keys, "
            "the other none: give both the same keys_dir set-up)"
        )
    if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return (
            "handshake failed (ZeroMQ gives no detail: the security set-ups differ, or the "
            "hub key is not this hub's)"
        )
    return None


def flush() -> None:
    """Wait (up to each socket's linger) for queued messages to leave before the process exits.

    Closing a socket returns at once and ZeroMQ's I/O thread sends what is queued; a process
    that exits right after would lose it (the last `event/episode` stop, say). Terminating the
    shared context blocks until every closed socket has sent or its linger ran out. Call it
    last, after every socket of the process is closed.
    """
    context().term()

"""Where the hub listens and how peers reach it. Every worker embeds a BusConfig (`--bus.*`)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass
class BusConfig:
    # Publishers connect here (the hub's XSUB).
    pub: str = "tcp://127.0.0.1:5550"
    # Subscribers connect here (the hub's XPUB).
    sub: str = "tcp://127.0.0.1:5551"
    # Service callers connect here (the hub's client-facing ROUTER).
    client: str = "tcp://127.0.0.1:5552"
    # Service workers connect here (the hub's worker-facing ROUTER).
    worker: str = "tcp://127.0.0.1:5553"
    # Largest message any socket accepts: three 480x640 RGB frames plus headers fit easily.
    max_msg_bytes: int = 16 * 1024 * 1024
    # CurveZMQ keys folder made by `python -m bus.keys generate` (required off loopback).
    keys_dir: str | None = None
    # Which client keypair (keys_dir/clients/<name>.key_secret) this process presents.
    key_name: str = "client"

    def endpoints(self) -> dict[str, str]:
        return {"pub": self.pub, "sub": self.sub, "client": self.client, "worker": self.worker}


def is_loopback(endpoint: str) -> bool:
    scheme = endpoint.split("://", 1)[0]
    if scheme in ("ipc", "inproc"):
        return True
    host = urlsplit(endpoint).hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")

"""Ask the hub what is alive: `uv run python -m bus.status [--require policy/lift] [--bus.*]`.

Prints live, busy and queued workers per service as JSON. Exit code 0 when the hub answers (and
every `--require`d service has a live worker), 1 otherwise: usable as a health check.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import draccus

from bus.client import ServiceClient, ServiceError
from bus.config import BusConfig


@dataclass
class StatusConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    # Services that must have at least one live worker.
    require: list[str] = field(default_factory=list)
    timeout: float = 2.0


def main() -> None:
    cfg = draccus.parse(StatusConfig)
    with ServiceClient(cfg.bus, "status") as client:
        try:
            status = client.hub_status(timeout=cfg.timeout)
        except ServiceError as exc:
            print(f"hub not reachable: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
    print(json.dumps(status))
    missing = [s for s in cfg.require if not status["workers"].get(s)]
    if missing:
        print(f"no live worker for: {', '.join(missing)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""The supervisord event listener: every process state change, on the bus and in a log.

    [eventlistener:process_events]  (supervisord.conf)
    command=.venv/bin/python -m workers.process_events --config_path=configs/bus.yaml
    events=PROCESS_STATE

Speaks supervisord's event listener protocol on stdin/stdout with supervisor's own
`childutils` (READY, then one RESULT per event; stdout carries nothing else; the read has a
timeout, so health goes out while no event comes) and logs on stderr, which supervisord writes to
logs/process_events.log. Each PROCESS_STATE_* event is published on `event/process`
{process, group, state, from_state, pid, expected, tries} (`expected` is supervisord's verdict
on an exit: false means it crashed or was killed and will be restarted) and logged, as a
warning when a process exited unexpectedly, backs off or is FATAL. `health/process_events`
carries the last state of every process seen.
"""

from __future__ import annotations

import logging
import os
import select
import sys
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from supervisor import childutils

from bus import BusConfig, Publisher, topics
from bus.health import HealthReporter
from workers import lifecycle

TOPIC = topics.event("process")
PREFIX = "PROCESS_STATE_"
BAD_STATES = {"BACKOFF", "FATAL", "UNKNOWN"}


@dataclass
class ProcessEventsConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    # Name on the bus (source of messages and health/<name>).
    name: str = "process_events"
    # Seconds between health reports while no event comes.
    health_interval_s: float = 1.0


def state_event(eventname: str, payload: bytes) -> dict | None:
    """The event/process message for one PROCESS_STATE_* event (None for other events)."""
    if not eventname.startswith(PREFIX):
        return None
    fields = childutils.get_headers(payload.split(b"\n", 1)[0].decode("utf-8", "replace"))
    pid = fields.get("pid")
    expected = fields.get("expected")
    tries = fields.get("tries")
    return {
        "process": fields.get("processname", "?"),
        "group": fields.get("groupname", "?"),
        "state": eventname[len(PREFIX) :],
        "from_state": fields.get("from_state"),
        "pid": int(pid) if pid and pid.isdigit() else None,
        "expected": None if expected is None else expected == "1",
        "tries": int(tries) if tries and tries.isdigit() else None,
    }


class ListenerProtocol:
    """supervisord's side of the conversation: READY, a header line, a payload, RESULT.
    childutils writes the tokens; the reading is here because its `wait()` has no timeout."""

    def __init__(self, stdin: BinaryIO, stdout: TextIO):
        self.fd = stdin.fileno()
        self.out = stdout
        self.buffer = b""

    def ready(self) -> None:
        childutils.listener.ready(self.out)

    def ok(self) -> None:
        childutils.listener.ok(self.out)

    def _take(self) -> tuple[dict[str, str], bytes] | None:
        line, sep, rest = self.buffer.partition(b"\n")
        if not sep:
            return None
        headers = childutils.get_headers(line.decode("utf-8", "replace"))
        length = int(headers.get("len", "0"))
        if len(rest) < length:
            return None
        self.buffer = rest[length:]
        return headers, rest[:length]

    def next_event(self, timeout: float) -> tuple[dict[str, str], bytes] | None:
        """(headers, payload) of the next event, or None when nothing came within `timeout`.
        EOFError when supervisord closed our stdin."""
        while (event := self._take()) is None:
            if not select.select([self.fd], [], [], timeout)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        return event


def main() -> None:
    cfg = lifecycle.parse_or_exit(ProcessEventsConfig, "process_events")
    # stdout belongs to the protocol: keep a private handle on it, then point fd 1 at stderr so
    # that nothing else (a library's print) can ever corrupt the conversation.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with lifecycle.Process(cfg.name, stream=sys.stderr) as proc:
        listen(cfg, ListenerProtocol(sys.stdin.buffer, protocol_out), proc)


def listen(cfg: ProcessEventsConfig, protocol: ListenerProtocol, proc: lifecycle.Process) -> None:
    log, stop = proc.log, proc.stop
    pub = proc.closing(Publisher(cfg.bus, cfg.name))
    states: dict[str, str] = {}
    counts = {"events": 0, "unexpected_exits": 0, "fatal": 0}
    proc.health = health = HealthReporter(
        pub, cfg.name, lambda: {**counts, "states": dict(states)}, cfg.health_interval_s
    )
    log.info("ready: reporting supervisord process states on %s (bus %s)", TOPIC, cfg.bus.pub)
    protocol.ready()
    while not stop.is_set():
        health.tick()
        try:
            event = protocol.next_event(timeout=0.5)
        except EOFError:
            log.info("supervisord closed the event stream")
            break
        if event is None:
            continue
        headers, payload = event
        report = state_event(headers.get("eventname", ""), payload)
        if report is not None:
            counts["events"] += 1
            name = report["process"]
            states[name] = report["state"]
            unexpected = report["state"] == "EXITED" and report["expected"] is False
            counts["unexpected_exits"] += unexpected
            counts["fatal"] += report["state"] == "FATAL"
            level = (
                logging.ERROR
                if report["state"] == "FATAL"
                else logging.WARNING
                if unexpected or report["state"] in BAD_STATES
                else logging.INFO
            )
            detail = (
                ""
                if report["expected"] is None
                else (", expected" if report["expected"] else ", unexpected: it will be restarted")
            )
            log.log(
                level,
                "%s: %s -> %s (pid %s%s)",
                name,
                report["from_state"],
                report["state"],
                report["pid"],
                detail,
            )
            pub.publish(TOPIC, data=report)
        protocol.ok()
        protocol.ready()
    proc.last_words = f"stopped after {counts['events']} events"


if __name__ == "__main__":
    main()

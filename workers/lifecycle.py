"""What every worker process does the same way: logging, signals, a clean stop."""

from __future__ import annotations

import logging
import signal
import threading

from bus import log as buslog
from bus import sockets


def start(process: str, stream=None) -> tuple[logging.Logger, threading.Event]:
    """Set up logging (to stdout, or `stream`) and make SIGTERM/SIGINT (supervisorctl stop,
    Ctrl-C) set the stop event."""
    log = buslog.setup(process, stream=stream)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return log, stop


def finish(log: logging.Logger, text: str) -> None:
    """Last words: let queued messages leave (bounded by each socket's linger), then log."""
    sockets.flush()
    log.info("%s", text)

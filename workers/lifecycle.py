"""What every worker process does the same way: its config, logging, signals, a clean stop.

cfg = lifecycle.parse_or_exit(MyConfig, "name")  # a bad flag or value: one line, exit 2
log, stop = lifecycle.start("name")              # SIGTERM / SIGINT set `stop`
... the loop, until stop.is_set() ...
lifecycle.finish(log, "stopped after ...")       # queued messages leave, then last words
"""

from __future__ import annotations

import contextlib
import io
import logging
import signal
import sys
import threading
from typing import NoReturn

import draccus
import yaml

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


def parse_or_exit[C](cls: type[C], process: str, args: list[str] | None = None) -> C:
    """Parse the config; anything wrong ends the process with one line and exit code 2.

    argparse's own complaint (an unknown flag) comes with the whole usage: it is caught and cut
    down to its last line; `--help` is printed as it is."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            return draccus.parse(cls, args=args)
    except SystemExit as exc:
        if exc.code in (0, None):
            sys.stderr.write(said.getvalue())
            raise
        last = said.getvalue().strip().splitlines()[-1:] or ["bad arguments"]
        exit_bad_config(process, ValueError(last[0].split("error: ", 1)[-1]))
    except (draccus.utils.DecodingError, yaml.YAMLError, OSError, ValueError, TypeError) as exc:
        exit_bad_config(process, exc)


def exit_bad_config(process: str, exc: BaseException) -> NoReturn:
    print(f"{process}: bad config: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
    raise SystemExit(2)

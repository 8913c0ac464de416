"""What every worker process does the same way: its config, logging, signals, a clean stop.

    cfg = lifecycle.parse_or_exit(MyConfig, "name")    # a bad flag or value: one line, exit 2
    with lifecycle.Process(cfg.name) as proc:          # logging; SIGTERM / SIGINT set proc.stop
        driver = proc.closing(open_driver(cfg))         # closed at the end, whatever happens
        pub = proc.closing(Publisher(cfg.bus, cfg.name))
        proc.health = HealthReporter(pub, cfg.name, collect)  # its last report goes out at the end
        proc.serve(worker)                              # a ServiceWorker on its own thread
        while not proc.stop.is_set():
            ... the loop ...
        proc.last_words = "stopped after ..."

At the end (a stop, a return, an exception): the stop event is set, service threads joined,
what `at_stop` was given run (arms to their exit state: nothing waits before that), the last
health message sent (it reports that state), everything `closing` was given closed in reverse
order (an error in one close or stop action is logged and the others still run), queued
messages flushed, last words logged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, NoReturn, Protocol, TypeVar

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


class _Health(Protocol):
    def tick(self, force: bool = False) -> Any: ...


class _Service(Protocol):
    def run(self, stop: threading.Event) -> Any: ...


T = TypeVar("T")


class Process:
    """One worker process's life, as a context manager (see the module's docstring)."""

    def __init__(self, name: str, stream=None):
        self.name = name
        self.log, self.stop = start(name, stream)
        self.health: _Health | None = None
        self.last_words = "stopped"
        self._closers: list[tuple[str, Callable[[], Any]]] = []
        self._at_stop: list[tuple[str, Callable[[], Any]]] = []
        self._threads: list[threading.Thread] = []

    def closing(self, thing: T, close: Callable[[], Any] | None = None) -> T:
        """Close `thing` (its .close(), or `close`) when the process ends; returns `thing`."""
        self._closers.append((type(thing).__name__, close or thing.close))  # type: ignore[attr-defined]
        return thing

    def at_stop(self, what: str, action: Callable[[], Any]) -> None:
        """Run `action` first thing at the end, before the last health report and the closes."""
        self._at_stop.append((what, action))

    def serve(self, service: _Service, name: str = "service") -> threading.Thread:
        """Run `service.run(stop)` on its own thread, joined when the process ends."""
        thread = threading.Thread(target=service.run, args=(self.stop,), name=name)
        thread.start()
        self._threads.append(thread)
        return thread

    def __enter__(self) -> Process:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, (SystemExit, KeyboardInterrupt)):
            self.log.error("crashed: %r (traceback below)", exc)
            self.last_words = f"stopped by an error: {exc!r}"
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
            if thread.is_alive():
                self.log.warning("thread %s did not stop within 10 s", thread.name)
        for what, action in self._at_stop:
            self._safely(what, action)
        if self.health is not None:
            self._safely("the last health report", lambda: self.health.tick(force=True))
        for what, close in reversed(self._closers):
            self._safely(f"closing {what}", close)
        finish(self.log, self.last_words)

    def _safely(self, what: str, action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception:
            self.log.exception("%s failed", what)


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
    # The same shape as a log line (time, process, ERROR), so log readers and greps find it.
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    text = " ".join(str(exc).split())
    print(f"{when} {process} ERROR bad config: {text}", file=sys.stderr, flush=True)
    raise SystemExit(2)

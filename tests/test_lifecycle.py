"""The one worker skeleton (workers/lifecycle.py): what every process does at its end, and
that a bad flag or value ends any worker with one line and exit code 2."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading

import pytest

from workers import lifecycle
from workers.tasks import REPO


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


class Thing:
    def __init__(self, name: str, done: list[str], fail: bool = False):
        self.name, self.done, self.fail = name, done, fail

    def close(self) -> None:
        self.done.append(self.name)
        if self.fail:
            raise OSError(f"{self.name} would not close")


class Health:
    def __init__(self, done: list[str]):
        self.done = done

    def tick(self, force: bool = False) -> None:
        self.done.append(f"health force={force}")


class Service:
    def __init__(self):
        self.stopped = threading.Event()

    def run(self, stop: threading.Event) -> None:
        stop.wait()
        self.stopped.set()


def test_the_end_runs_in_order_whatever_fails(restore_signals) -> None:
    done: list[str] = []
    out = io.StringIO()
    service = Service()
    with lifecycle.Process("t", stream=out) as proc:
        proc.closing(Thing("pub", done))
        proc.closing(Thing("driver", done, fail=True))  # a failing close stops nothing else
        proc.closing(Thing("sub", done), close=lambda: done.append("custom"))
        proc.health = Health(done)
        proc.at_stop("arms", lambda: done.append("arms to their exit state"))
        thread = proc.serve(service)
        proc.last_words = "stopped after 3 things"
    assert proc.stop.is_set() and service.stopped.is_set() and not thread.is_alive()
    # the arms first (nothing waits before them), then the last health report (its publisher
    # still open, reporting the arms' final state), then closes in reverse order
    assert done == ["arms to their exit state", "health force=True", "custom", "driver", "pub"]
    log = out.getvalue()
    assert "closing Thing failed" in log and "driver would not close" in log
    assert log.strip().splitlines()[-1].endswith("stopped after 3 things")


def test_an_exception_is_logged_still_closes_and_propagates(restore_signals) -> None:
    done: list[str] = []
    out = io.StringIO()
    with pytest.raises(RuntimeError, match="boom"):
        with lifecycle.Process("t", stream=out) as proc:
            proc.closing(Thing("pub", done))
            raise RuntimeError("boom")
    assert done == ["pub"]
    assert "crashed: RuntimeError('boom')" in out.getvalue()
    assert "stopped by an error" in out.getvalue()


def test_sigterm_sets_stop(restore_signals) -> None:
    with lifecycle.Process("t", stream=io.StringIO()) as proc:
        signal.raise_signal(signal.SIGTERM)
        assert proc.stop.is_set()


# Each worker, one bad value: one line on its output, exit code 2, no traceback.
BAD_VALUES = [
    ("workers.control", "--fps=-1", "fps"),
    ("workers.dashboard", "--port=70000", "--port must be 1..65535, got 70000"),
    ("workers.expert_policy", "--task=juggle", "juggle"),
    ("workers.stand_in_policy", "--task=juggle", "juggle"),
    ("workers.policy", "--task=juggle", "juggle"),
    ("workers.policy", "--threads=-1", "--threads must be >= 0 (0: all cores but one), got -1"),
    ("workers.replay", "--speed=0", "--speed must be > 0, got 0"),
    ("workers.recorder", "--action=psychic", "--action must be 'bus' or 'state'"),
    ("workers.sim", "--fps=0", "--fps and --episode_s must be > 0"),
    ("workers.camera", "--nope=1", "nope"),
]


@pytest.mark.parametrize(("module", "flag", "message"), BAD_VALUES)
def test_a_bad_value_ends_any_worker_with_one_line(module: str, flag: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, flag],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2, lines
    assert len(lines) == 1 and message in lines[0] and "bad config" in lines[0], lines

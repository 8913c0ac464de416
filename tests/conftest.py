"""Shared fixtures: real hub processes on private ipc endpoints, and condition waits."""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The replay's index cache (drivers/replay_index.py): one per test session, not the user's.
os.environ.setdefault("SO101_CACHE_DIR", tempfile.mkdtemp(prefix="so101-test-cache-"))

from bus import BusConfig, ServiceClient, ServiceError  # noqa: E402
from bus.wire import VERSION

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 30.0  # generous: tests must hold on a loaded 2-core machine


def wait_until(
    cond: Callable[[], object],
    timeout: float = DEADLINE,
    what: str = "condition",
    interval: float = 0.02,
) -> object:
    """Poll `cond` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def raw_header(**over: object) -> dict:
    """A wire header for a one-array state message, built by hand so tests can break any field."""
    header = {
        "v": VERSION,
        "seq": 1,
        "src": "evil",  # the name the hub tests look for in its log and health
        "t_cap": 0.0,
        "t_send": 0.0,
        "arrays": [["position", "<f4", [6]]],
        "data": {},
    }
    header.update(over)
    return header


def bus_args(cfg: BusConfig) -> list[str]:
    args = [f"--bus.{k}={v}" for k, v in cfg.endpoints().items()]
    args.append(f"--bus.max_msg_bytes={cfg.max_msg_bytes}")
    if cfg.keys_dir:
        args.append(f"--bus.keys_dir={cfg.keys_dir}")
    return args


class Proc:
    """A child process whose output goes to a log file the test can read."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.log = log
        self._fh = open(log, "wb")
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = DEADLINE) -> None:
        wait_until(
            lambda: text in self.output() or self.popen.poll() is not None,
            timeout,
            f"{text!r} in {self.log.name}",
        )
        assert text in self.output(), f"process exited ({self.popen.returncode}):\n{self.output()}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._fh.close()
        return self.popen.returncode


@pytest.fixture
def bus_dir() -> Iterator[Path]:
    # ipc paths must stay short (108 bytes), so not under pytest's long tmp_path.
    path = Path(tempfile.mkdtemp(prefix="sb-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bus_cfg(bus_dir: Path) -> BusConfig:
    return BusConfig(
        pub=f"ipc://{bus_dir}/pub",
        sub=f"ipc://{bus_dir}/sub",
        client=f"ipc://{bus_dir}/client",
        worker=f"ipc://{bus_dir}/worker",
    )


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start processes with `procs(name, *args)`; all are stopped when the test ends."""
    started: list[Proc] = []

    def start(name: str, *args: str, env: dict | None = None) -> Proc:
        proc = Proc(list(args), tmp_path / f"{name}-{len(started)}.log", env)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


def wait_hub_ready(cfg: BusConfig, timeout: float = DEADLINE) -> None:
    with ServiceClient(cfg, "test-probe") as client:

        def answers() -> bool:
            try:
                client.call("hub", timeout=1.0)
                return True
            except ServiceError:
                return False

        wait_until(answers, timeout, "the hub to answer")


@pytest.fixture
def hub(bus_cfg: BusConfig, procs: Callable[..., Proc]) -> Proc:
    proc = procs("hub", "-m", "bus.hub", *bus_args(bus_cfg))
    wait_hub_ready(bus_cfg)
    return proc


def load_recording(root: Path):
    """A folder the recorder wrote, read back with lerobot's own LeRobotDataset."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(f"local/{root.name}", root=root, video_backend="pyav")


@contextlib.contextmanager
def small_filesystem(path: Path, size: str, readonly: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (root only); skips the test where that is refused."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small filesystem")
    opts = f"size={size}" + (",ro" if readonly else "")
    mount = ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# -- markers: `pytest -m unit` is the fast loop (no process started), `-m e2e` the rest ------
PROCESS_FIXTURES = {"procs", "hub", "stack"}
SPAWNS = ("subprocess", "Popen", "run([", "sys.executable")


def _starts_processes(item: pytest.Item) -> bool:
    if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    try:  # the module: its helpers may be what starts the processes
        source = inspect.getsource(item.module)
    except (OSError, TypeError, AttributeError):
        return False
    return any(word in source for word in SPAWNS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e if _starts_processes(item) else pytest.mark.unit)

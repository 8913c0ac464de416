"""The runtime's processes on a private bus, for one-shot jobs: evaluation, recording demos.

    with Launch(Path("logs/eval")) as launch:
        launch.start("sim", "workers.sim", "--task=lift")
        launch.wait_for("sim", "ready: sim")

The same programs supervisord runs, each a real process with its own log file, on `ipc://`
endpoints in a fresh temporary folder (so a job never meets a running stack's hub); all are
stopped when the `with` block ends, whatever happened inside it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bus import BusConfig, ServiceClient, ServiceError

REPO = Path(__file__).resolve().parents[1]


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # Once: a second SIGTERM (`uv run` forwards the one it got) must not cut the clean-up short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


class CpuShare:
    """How many cores each process used between two readings, and what the rest of the machine
    took meanwhile: where its time went when control holds (a 2-core machine running
    processes that want 2.5 cores holds often, and so does one whose host takes cores away)."""

    def __init__(self, launch: Launch):
        self._launch = launch
        self._since, self._used, self._machine = self._read()

    def _read(self) -> tuple[float, dict[str, float], tuple[float, float]]:
        m = psutil.cpu_times()
        busy = m.user + m.nice + m.system + getattr(m, "irq", 0.0) + getattr(m, "softirq", 0.0)
        return time.monotonic(), self._launch.cpu_seconds(), (busy, getattr(m, "steal", 0.0))

    def take(self) -> dict[str, float]:
        """Cores per process since the last reading (or since this was made), plus `others`
        (every other process on the machine, this job's own included) and `steal` (what the
        hypervisor of a virtual machine ran elsewhere); starts anew."""
        since, used, (busy, steal) = self._since, self._used, self._machine
        self._since, self._used, self._machine = self._read()
        wall = self._since - since
        if wall <= 0:
            return {}
        share = {n: (s - used[n]) / wall for n, s in self._used.items() if n in used}
        share["others"] = max(0.0, (self._machine[0] - busy) / wall - sum(share.values()))
        share["steal"] = (self._machine[1] - steal) / wall
        return {name: round(cores, 2) for name, cores in share.items()}


class LaunchError(RuntimeError):
    """A process did not come up (the message quotes the end of its log)."""


class Launch:
    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="so101-", dir="/tmp"))  # ipc paths stay short
        self.bus = BusConfig(
            **{name: f"ipc://{self._dir}/{name}" for name in ("pub", "sub", "client", "worker")}
        )
        self.procs: dict[str, subprocess.Popen] = {}
        self._log_from: dict[str, int] = {}  # where this run's output starts in its log

    def bus_args(self, bus: BusConfig | None = None) -> list[str]:
        bus = bus or self.bus
        args = [f"--bus.{k}={v}" for k, v in bus.endpoints().items()]
        if bus.keys_dir:
            args += [f"--bus.keys_dir={bus.keys_dir}", f"--bus.key_name={bus.key_name}"]
        return args

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(
        self,
        name: str,
        module: str,
        *args: str,
        bus: BusConfig | None = None,
        netns: str | None = None,
    ) -> subprocess.Popen:
        """`python -m module --bus.* args...`, output to <log_dir>/<name>.log; on another bus
        than the private one with `bus`, inside a network namespace with `netns`."""
        if name in self.procs:
            self.stop(name)
        inside = ["ip", "netns", "exec", netns] if netns else []  # exec: the pid stays python's
        with open(self.log(name), "ab") as fh:  # appended: earlier runs' logs are kept
            self._log_from[name] = fh.tell()
            proc = subprocess.Popen(
                [*inside, sys.executable, "-m", module, *self.bus_args(bus), *args],
                cwd=REPO,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"},
            )
        self.procs[name] = proc
        return proc

    def start_hub(self, timeout: float = 60.0) -> None:
        self.start("hub", "bus.hub")
        deadline = time.monotonic() + timeout
        with ServiceClient(self.bus, "launch") as client:
            while True:
                try:
                    client.call("hub", timeout=1.0)
                    return
                except ServiceError:
                    self._check_alive("hub")
                    if time.monotonic() > deadline:
                        raise LaunchError(
                            f"the hub did not answer within {timeout:.0f} s"
                        ) from None

    def wait_for(self, name: str, text: str, timeout: float = 300.0) -> None:
        """Until `text` appears in the process's log (it is ready), or fail with its log."""
        deadline = time.monotonic() + timeout
        while text not in self.output(name):
            self._check_alive(name)
            if time.monotonic() > deadline:
                raise LaunchError(f"{name}: no {text!r} after {timeout:.0f} s\n{self.tail(name)}")
            time.sleep(0.2)

    def output(self, name: str) -> str:
        """What the process's current run has written to its log."""
        with open(self.log(name), "rb") as fh:
            fh.seek(self._log_from.get(name, 0))
            return fh.read().decode(errors="replace")

    def check(self, *may_finish: str) -> None:
        """Fail at once, with its last words, when a process died (those in `may_finish` may
        end by themselves with status 0): every wait on the others would be pointless."""
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None and (code != 0 or name not in may_finish):
                raise LaunchError(f"{name} exited with status {code}:\n{self.tail(name)}")

    def cpu_seconds(self) -> dict[str, float]:
        """The CPU time (user + system, all threads) each running process has used so far."""
        used = {}
        for name, proc in self.procs.items():
            try:
                times = psutil.Process(proc.pid).cpu_times()
            except psutil.Error:  # ended meanwhile: check() and the waits report that
                continue
            used[name] = times.user + times.system
        return used

    def finished(self, name: str) -> bool:
        return self.procs[name].poll() is not None

    def _check_alive(self, name: str) -> None:
        code = self.procs[name].poll()
        if code is not None:
            raise LaunchError(f"{name} exited with status {code}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 15) -> str:
        return "\n".join(self.output(name).splitlines()[-lines:])

    def stop(self, name: str, timeout: float = 30.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        return proc.returncode

    def close(self) -> None:
        # The processes are in their own sessions (a Ctrl-C reaches only this one): a second
        # Ctrl-C here, or `uv run` passing on the one it got, must not cut the clean-up short
        # and leave them running without their parent. Each stop still ends in SIGKILL.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            for name in reversed(list(self.procs)):
                try:
                    self.stop(name)
                except ProcessLookupError:
                    pass
            shutil.rmtree(self._dir, ignore_errors=True)
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)

    def __enter__(self) -> Launch:
        # A job stopped with SIGTERM (kill, a timeout) still stops its processes: the signal
        # becomes SystemExit, which runs __exit__, instead of ending this process at once.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

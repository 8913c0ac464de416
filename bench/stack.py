"""The whole stack under supervisord, private: for benchmarks and end-to-end tests.

supervisord is started the way the Docker image starts it (scripts/docker-entrypoint.sh) with
the repository's own supervisord.conf, on private ipc endpoints, a private dashboard port, and
logs, socket and pidfile under a temporary folder; `close()` leaves nothing running.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import xmlrpc.client
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from bus import BusConfig, Subscriber

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "scripts" / "docker-entrypoint.sh"
BIN = REPO / ".venv" / "bin"
# What a private stack sets itself; anything the caller's shell has of these is dropped.
STACK_VARS = re.compile(r"^(SO101_\w+|TASK|DEVICE|CHECKPOINT)$")


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not STACK_VARS.match(k)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return {**env, **overrides}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


class PrivateStack:
    """`TASK` and any stack variable as keywords; `topics` are subscribed before anything
    starts, so nothing published on them is missed (`drain()` collects them)."""

    def __init__(self, task: str, logs: Path, topics: list[str], **env: str):
        # ipc and unix socket paths must stay short (108 bytes): not under a test's tmp_path.
        self.short = Path(tempfile.mkdtemp(prefix="sk-", dir="/tmp"))
        self.logs = Path(logs)
        self.bus = BusConfig(
            **{k: f"ipc://{self.short}/bus/{k}" for k in ("pub", "sub", "client", "worker")}
        )
        bus_yaml = self.short / "bus.yaml"
        bus_yaml.write_text(
            "bus:\n" + "".join(f"  {k}: {v}\n" for k, v in self.bus.endpoints().items())
        )
        self.env = clean_env(
            **{
                "TASK": task,
                "SO101_POLICY": "policy",
                "SO101_BUS_CONFIG": str(bus_yaml),
                "SO101_LOG_DIR": str(self.logs),
                "SO101_RUN_DIR": str(self.short / "run"),
                "SO101_DASHBOARD_ARGS": f"--port={free_port()}",
                **env,
            }
        )
        self.sock = f"unix://{self.short}/run/supervisor.sock"
        self.popen: subprocess.Popen | None = None
        self.messages: list = []
        self.sub = Subscriber(self.bus, topics, mode="every")

    def start(self) -> None:
        self.out = open(self.short / "entrypoint.out", "wb")
        self.popen = subprocess.Popen(
            ["bash", str(ENTRYPOINT)],
            env=self.env,
            cwd=REPO,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def rpc(self):
        transport = SupervisorTransport(None, None, self.sock)
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def infos(self) -> dict[str, dict]:
        try:
            return {i["name"]: i for i in self.rpc().getAllProcessInfo()}
        except (OSError, xmlrpc.client.Fault):
            return {}

    def running(self, names: set[str]) -> dict[str, dict] | None:
        """Every process info when all of `names` are RUNNING; raises when one is FATAL."""
        infos = self.infos()
        if failed := sorted(n for n in names if infos.get(n, {}).get("statename") == "FATAL"):
            raise RuntimeError(f"{failed} FATAL")
        if names <= set(infos) and all(infos[n]["statename"] == "RUNNING" for n in names):
            return infos
        return None

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                str(BIN / "supervisorctl"),
                "-c",
                str(REPO / "supervisord.conf"),
                "-s",
                self.sock,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=200,
        )

    def drain(self) -> list:
        while (msg := self.sub.recv(0)) is not None:
            self.messages.append(msg)
        return self.messages

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def diagnostics(self) -> str:
        parts = [self.ctl("status").stdout]
        for path in sorted(self.logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-12:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self) -> set[int]:
        """supervisorctl shutdown; the pids (process groups) of everything that ran."""
        pids = {i["pid"] for i in self.infos().values() if i["pid"]}
        if self.popen is not None:
            pids.add(self.popen.pid)
            result = self.ctl("shutdown")
            if "Shut down" not in result.stdout:
                raise RuntimeError(f"supervisorctl shutdown: {result.stdout}{result.stderr}")
            self.popen.wait(timeout=200)
        return pids

    def close(self) -> None:
        """Whatever happened: nothing of this stack outlives its user."""
        if self.popen is not None and self.popen.poll() is None:
            pids = {i["pid"] for i in self.infos().values() if i["pid"]}
            self.ctl("shutdown")
            try:
                self.popen.wait(timeout=200)
            except subprocess.TimeoutExpired:
                pass
            for pgid in pids | {self.popen.pid}:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self.popen.wait(timeout=10)
        self.sub.close()
        if getattr(self, "out", None):
            self.out.close()
        shutil.rmtree(self.short, ignore_errors=True)

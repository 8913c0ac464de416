"""`python -m bus.status`: the health check other tools (Docker, scripts) rely on."""

from __future__ import annotations

import json
import subprocess
import sys

from bus import BusConfig

from conftest import REPO, bus_args, wait_until


def status(cfg: BusConfig, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bus.status", *bus_args(cfg), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_without_hub_fails(bus_cfg: BusConfig) -> None:
    result = status(bus_cfg, "--timeout=0.5")
    assert result.returncode == 1
    assert "hub not reachable" in result.stderr


def test_status_reports_workers_and_required_services(bus_cfg: BusConfig, hub, procs) -> None:
    result = status(bus_cfg)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["workers"] == {}
    missing = status(bus_cfg, "--require=[echo]")
    assert missing.returncode == 1 and "no live worker for: echo" in missing.stderr
    worker = procs("echo", "tests/echo_worker.py", *bus_args(bus_cfg))
    worker.wait_for_output("ready:")
    wait_until(
        lambda: status(bus_cfg, "--require=[echo]").returncode == 0,
        what="echo to be required and live",
    )

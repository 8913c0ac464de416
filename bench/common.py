"""Small helpers every benchmark shares: percentiles, tables, the final JSON line, processes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bus import BusConfig, ServiceClient, ServiceError

REPO = Path(__file__).resolve().parents[1]


def pct(values: Sequence[float], q: float) -> float:
    return (
        float(np.percentile(np.asarray(values, dtype=np.float64), q))
        if len(values)
        else float("nan")
    )


def table(title: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    rows = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def met(ok: bool) -> str:
    """A target's verdict in a table (capitals catch the eye when it is missed)."""
    return "yes" if ok else "NO"


def emit(result: dict) -> None:
    """The contract: the last line a benchmark prints is one JSON object."""
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}))


def spawn() -> mp.context.SpawnContext:
    return mp.get_context("spawn")


@contextmanager
def ipc_bus() -> Iterator[BusConfig]:
    path = Path(tempfile.mkdtemp(prefix="sbb-", dir="/tmp"))
    try:
        yield BusConfig(
            pub=f"ipc://{path}/pub",
            sub=f"ipc://{path}/sub",
            client=f"ipc://{path}/client",
            worker=f"ipc://{path}/worker",
        )
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def hub_process(cfg: BusConfig) -> Iterator[subprocess.Popen]:
    args = [f"--bus.{k}={v}" for k, v in cfg.endpoints().items()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bus.hub", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with ServiceClient(cfg, "bench") as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.call("hub", timeout=1.0)
                    break
                except ServiceError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("hub did not start") from None
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def rss_mb(pid: int | None = None) -> float:
    with open(f"/proc/{pid or os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait_for_workers(cfg: BusConfig, service: str, n: int = 1, timeout: float = 300.0) -> None:
    """Until the hub counts `n` live workers of `service` (start-up must not count in a run)."""
    deadline = time.monotonic() + timeout
    with ServiceClient(cfg, "bench") as client:
        while client.hub_status().get("workers", {}).get(service, 0) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {n} worker(s) of {service} after {timeout:.0f} s")
            time.sleep(0.1)


def start_process(cfg: BusConfig, module: str, *flags: str) -> subprocess.Popen:
    """`python -m module flags --bus.*` on `cfg`, its output discarded."""
    args = [f"--bus.{k}={v}" for k, v in cfg.endpoints().items()]
    return subprocess.Popen(
        [sys.executable, "-m", module, *flags, *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def start_control(cfg: BusConfig, seconds: float, *flags: str) -> subprocess.Popen:
    """One lift episode of `seconds` of the real control loop."""
    return start_process(
        cfg,
        "workers.control",
        "--task=lift",
        "--episodes=1",
        f"--episode_s={seconds}",
        "--policy_timeout=3",
        *flags,
    )

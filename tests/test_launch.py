"""Launch stops every process it started, also when Ctrl-C comes twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, wait_until

# Takes a while to stop, like a recorder saving its last episode: on SIGTERM it says
# "stopping" and exits 8 s later.
SLOW_TO_STOP = """
import signal, sys, time

def on_term(_signum, _frame):
    print("stopping", flush=True)
    time.sleep(8)
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(0.1)
"""

JOB = """
import sys, time
from pathlib import Path
from workers.launch import Launch

with Launch(Path(sys.argv[1])) as launch:
    launch.start("slow", "slow_to_stop")
    launch.wait_for("slow", "ready", 120)
    print("up", launch.procs["slow"].pid, flush=True)
    while True:
        time.sleep(0.1)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.timeout(300)
def test_a_second_ctrl_c_during_the_clean_up_still_stops_every_process(tmp_path: Path) -> None:
    (tmp_path / "slow_to_stop.py").write_text(SLOW_TO_STOP)
    job = subprocess.Popen(
        [sys.executable, "-c", JOB, str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}"},
        stdout=subprocess.PIPE,
        text=True,
    )
    pid = None
    try:
        line = job.stdout.readline()  # "up PID" once the process is ready
        assert line.startswith("up "), line
        pid = int(line.split()[1])
        job.send_signal(signal.SIGINT)  # the first Ctrl-C: the clean-up begins
        log = tmp_path / "slow.log"
        wait_until(lambda: "stopping" in log.read_text(), 120, "'stopping' in the slow log")
        job.send_signal(signal.SIGINT)  # the second, while the process is still stopping
        job.wait(120)
        assert not alive(pid), "the job exited and left its process running"
        assert "stopping" in log.read_text()
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)

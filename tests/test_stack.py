"""The stack as the user meets it: supervisord.conf and its programs, end to end (the image
and its entry point alone: test_entrypoint.py).

supervisord is started the way the image starts it (scripts/docker-entrypoint.sh, outside
Docker) with the repository's own supervisord.conf, on private ipc endpoints, a private
dashboard port, and logs, socket and pidfile under temporary folders. The policy is the task's
shipped checkpoint (checkpoints/<task>_real/checkpoint-best), served by the real policy worker.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bench.stack import PrivateStack, alive
from bus.clock import now
from workers.tasks import get_task

from conftest import REPO, wait_until

START_DEADLINE = 240.0  # a cold start imports torch in five processes on a loaded 2-core box


# -- the event listener, without supervisord --------------------------------------------------
def test_listener_speaks_the_supervisor_protocol() -> None:
    import io

    from workers.process_events import ListenerProtocol, state_event

    read_fd, write_fd = os.pipe()
    out = io.StringIO()
    with open(read_fd, "rb", buffering=0) as stdin:
        protocol = ListenerProtocol(stdin, out)
        protocol.ready()
        assert protocol.next_event(timeout=0.05) is None
        payload = b"processname:policy groupname:policy from_state:RUNNING expected:0 pid:4242"
        header = (
            b"ver:3.0 server:supervisor serial:21 pool:process_events poolserial:10 "
            b"eventname:PROCESS_STATE_EXITED len:%d\n" % len(payload)
        )
        os.write(write_fd, header + payload[:20])  # an event may arrive in pieces
        assert protocol.next_event(timeout=0.05) is None
        os.write(write_fd, payload[20:])
        headers, body = protocol.next_event(timeout=1.0)
        protocol.ok()
        protocol.ready()
        os.close(write_fd)
        with pytest.raises(EOFError):
            protocol.next_event(timeout=1.0)
    assert out.getvalue() == "READY\nRESULT 2\nOKREADY\n"
    assert state_event(headers["eventname"], body) == {
        "process": "policy",
        "group": "policy",
        "state": "EXITED",
        "from_state": "RUNNING",
        "pid": 4242,
        "expected": False,
        "tries": None,
    }
    starting = state_event(
        "PROCESS_STATE_STARTING", b"processname:hub groupname:hub from_state:BACKOFF tries:2"
    )
    assert starting["state"] == "STARTING" and starting["tries"] == 2
    assert starting["pid"] is None and starting["expected"] is None
    assert state_event("TICK_5", b"when:1") is None


# -- end to end -----------------------------------------------------------------------------
class Stack(PrivateStack):
    """The private stack with what the tests look for."""

    def __init__(self, task: str, tmp_path: Path, **env: str):
        self.task = get_task(task)
        assert (self.task.checkpoint / "config.json").exists(), f"{task}: no shipped checkpoint"
        super().__init__(
            task, tmp_path / "logs", ["action/", "chunk/", "event/process", "health/replay"], **env
        )

    def wait(self, cond, what: str, timeout: float = START_DEADLINE):
        try:
            return wait_until(cond, timeout, what, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnostics()}") from None

    def running(self, names: set[str]) -> dict[str, dict] | None:
        try:
            return super().running(names)
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from None

    def actions_after(self, arm: str, t: float) -> list:
        return [m for m in self.drain() if m.topic == f"action/{arm}" and m.t_cap > t]

    def events(self, process: str, state: str) -> list[dict]:
        return [
            m.data
            for m in self.drain()
            if m.topic == "event/process"
            and m.data["process"] == process
            and m.data["state"] == state
        ]

    def replay_actions(self) -> int:
        health = [m.data for m in self.drain() if m.topic == "health/replay"]
        return health[-1]["actions_received"] if health else 0


@pytest.fixture
def stack(tmp_path: Path):
    made: list[Stack] = []

    def make(task: str, **env: str) -> Stack:
        made.append(Stack(task, tmp_path, **env))
        return made[-1]

    yield make
    for s in made:
        s.close()


PROGRAMS = {"process_events", "hub", "policy", "replay", "control", "dashboard"}


def bring_up(s: Stack, programs: set[str]) -> dict[str, dict]:
    s.start()
    infos = s.wait(lambda: s.running(programs), f"{sorted(programs)} RUNNING")
    for name in programs:
        s.wait(lambda n=name: "ready:" in s.log(n), f"'ready:' in {name}.log")
    return infos


def check_actions_flow(s: Stack, t: float) -> None:
    """Actions for every arm of the task reach the bus and the replay, after time `t`."""
    for arm in s.task.arms:
        msgs = s.wait(lambda a=arm: s.actions_after(a, t), f"action/{arm} after {t:.1f}")
        assert msgs[-1].arrays["goal"].shape == (6,)
    chunks = s.wait(
        lambda: [m for m in s.drain() if m.topic == f"chunk/{s.task.name}" and m.t_cap > t],
        f"chunk/{s.task.name}",
    )
    assert chunks[-1].arrays["actions"].shape[1] == s.task.action_dim
    before = s.replay_actions()
    s.wait(lambda: s.replay_actions() > before, "the replay to receive actions")


def shut_down_leaving_nothing(s: Stack) -> None:
    pids = s.stop()
    assert s.popen.returncode == 0, s.popen.returncode
    wait_until(lambda: not any(alive(p) for p in pids), 30, "every process of the stack gone")
    assert "stopped" in s.log("control") and "stopped" in s.log("process_events")


@pytest.mark.timeout(600)
def test_lift_stack_comes_up_survives_a_killed_policy_and_a_hub_restart(
    stack, tmp_path: Path
) -> None:
    s = stack("lift", SO101_RECORD="true", SO101_RECORDER_ARGS=f"--root={tmp_path / 'rec'}")
    infos = bring_up(s, PROGRAMS | {"recorder"})
    check_actions_flow(s, 0.0)
    status = s.ctl("status")
    assert status.returncode == 0 and status.stdout.count("RUNNING") == 7, status.stdout

    # kill -9 the policy: supervisord restarts it, the listener says so, actions resume.
    old = infos["policy"]["pid"]
    os.kill(old, signal.SIGKILL)
    exited = s.wait(lambda: s.events("policy", "EXITED"), "event/process policy EXITED", 60)
    assert exited[-1]["pid"] == old and exited[-1]["expected"] is False
    assert exited[-1]["from_state"] == "RUNNING"
    s.wait(
        lambda: [e for e in s.events("policy", "RUNNING") if e["pid"] != old],
        "event/process policy RUNNING again",
    )
    new = s.wait(lambda: s.running({"policy"}), "policy RUNNING")["policy"]["pid"]
    assert new != old
    s.wait(lambda: s.log("policy").count("ready:") >= 2, "the new policy ready")
    check_actions_flow(s, now())
    assert "policy: RUNNING -> EXITED" in s.log("process_events")

    # The hub goes away and comes back: every process finds it again by itself.
    assert "stopped" in s.ctl("stop", "hub").stdout
    t_hub = now()
    assert "started" in s.ctl("start", "hub").stdout
    check_actions_flow(s, t_hub)

    shut_down_leaving_nothing(s)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("task", ["sort", "stack"])
def test_two_arm_stacks_drive_both_arms(stack, task: str) -> None:
    if task == "stack":
        # A bad config, on purpose: the dashboard cannot start, says why, and stays down
        # instead of restarting forever (FATAL when it failed within startsecs, after the
        # retries; EXITED with status 2 when importing took longer than startsecs, as it can
        # on a loaded machine); everything else runs on.
        s = stack(task, SO101_DASHBOARD_ARGS="--port=70000")
        bring_up(s, PROGRAMS - {"dashboard"})

        def given_up() -> dict | None:
            info = s.infos()["dashboard"]
            done = info["statename"] == "FATAL" or (
                info["statename"] == "EXITED" and info["exitstatus"] == 2
            )
            return info if done else None

        info = s.wait(given_up, "dashboard FATAL or EXITED (2)", 120)
        assert "bad config: --port must be 1..65535, got 70000" in s.log("dashboard")
        event = s.wait(
            lambda: s.events("dashboard", info["statename"]),
            f"event/process dashboard {info['statename']}",
            30,
        )[-1]
        assert info["statename"] == "FATAL" or event["expected"] is True
    else:
        s = stack(task)
        bring_up(s, PROGRAMS)
    check_actions_flow(s, 0.0)
    shut_down_leaving_nothing(s)


def test_conf_programs_share_the_restart_and_log_policy() -> None:
    """Every program: own rotated log, unbuffered, own process group, exit 2 = no restart."""
    from supervisor.options import UnhosedConfigParser

    parser = UnhosedConfigParser()
    files = [REPO / "supervisord.conf", *sorted((REPO / "configs/supervisord").glob("*.conf"))]
    parser.read([str(f) for f in files])
    sections = [s for s in parser.sections() if s.startswith(("program:", "eventlistener:"))]
    assert {s.split(":", 1)[1] for s in sections} >= {
        "hub",
        "replay",
        "servo",
        "camera-front",
        "policy",
        "control",
        "recorder",
        "dashboard",
        "process_events",
    }
    for section in sections:
        opts = dict(parser.items(section))
        log = "stderr_logfile" if section.startswith("eventlistener") else "stdout_logfile"
        # A program of several processes (numprocs) logs each under its process name.
        name = opts.get("process_name", "%(program_name)s")
        assert opts[log] == f"%(ENV_SO101_LOG_DIR)s/{name}.log", section
        assert opts[f"{log}_maxbytes"] and opts[f"{log}_backups"], section
        assert 'PYTHONUNBUFFERED="1"' in opts["environment"], section
        assert opts["stopasgroup"] == "true" and opts["autorestart"] == "unexpected", section
        assert opts["exitcodes"] == "2" and int(opts["startretries"]) >= 1, section
        assert ".venv/bin/python -m " in opts["command"], section
    assert (
        'CUDA_VISIBLE_DEVICES="%(ENV_CUDA_VISIBLE_DEVICES)s"'
        in dict(parser.items("program:policy"))["environment"]
    )

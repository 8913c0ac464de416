"""Chaos: kill -9 every program of a running stack, flood its hub, count what survives.

    uv run python -m bench.chaos [--profile=fake|sim] [--task=lift] [--policy-workers=1]
        [--flood=4000] [--skip-remote]

On a private stack it starts itself (supervisord, recording on, actions flowing), each
program in turn is killed with SIGKILL; per program: the time until supervisord has it
RUNNING again, and the longest gap between two of control's actions on the bus around the kill
(the normal rhythm is one action per 33 ms). Then the hub's publisher port is flooded with
malformed and poisoned messages (wrong part counts, bad msgpack, an unknown version, array
sizes that lie, NaN and 1e9 goals, wrong dimensions, unknown topics): nothing may restart and
actions must go on. At the end the stack stops cleanly and lerobot's LeRobotDataset loads the
recordings: complete episodes vs episodes started. The two-host figures come from
scripts/two_hosts.py (run here when root). Last line: JSON with gap_s_<program>,
running_s_<program>, flood_messages, flood_restarts, flood_max_gap_s, episodes_started,
episodes_finished, episodes_loadable, remote_link_cut_hold_s, remote_resume_s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

from bench.common import REPO, emit, table
from bench.stack import PrivateStack
from bus.clock import now
from bus.wire import Encoder, Message
from workers.tasks import get_task

NORMAL_GAP_S = 1 / 30
SETTLE_S = 4.0  # actions watched after a program is back, for the gap around its kill


class Chaos:
    def __init__(self, stack: PrivateStack, arm: str):
        self.stack = stack
        self.topic = f"action/{arm}"
        self.sends: list[float] = []  # t_send of control's actions (bus clock)
        self.starts = 0
        self.stops = 0

    def pump(self) -> None:
        for msg in self.stack.drain():
            if msg.topic == self.topic and msg.src == "control":
                self.sends.append(msg.t_send)
            elif msg.topic == "event/episode" and msg.src == "control":
                self.starts += msg.data.get("phase") == "start"
                self.stops += msg.data.get("phase") == "stop"
        self.stack.messages.clear()

    def wait(self, what: str, check, timeout: float = 300.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            if got := check():
                return got
            time.sleep(0.05)
        raise RuntimeError(f"timed out waiting for {what}\n{self.stack.diagnostics()}")

    def actions_since(self, t: float) -> int:
        return sum(1 for s in self.sends if s > t)

    def max_gap(self, t0: float, t1: float) -> float | None:
        inside = [s for s in self.sends if t0 <= s <= t1]
        before = [s for s in self.sends if s < t0][-1:]
        # The silence from the last action to t1 is a gap too (actions that stopped for good).
        times = before + inside + [min(t1, now())]
        return round(float(np.diff(times).max()), 3) if len(times) > 1 else None  # None: none seen

    def kill(self, program: str) -> dict:
        """SIGKILL; then: a new process (spawned_s), supervisord's RUNNING (which it declares
        only after the program's startsecs), and the longest gap between actions around it."""
        old = self.stack.infos()[program]["pid"]
        t_kill = now()
        os.kill(old, signal.SIGKILL)
        t0 = time.monotonic()

        def info() -> dict:
            return self.stack.infos().get(program) or {}

        self.wait(f"{program} spawned again", lambda: info().get("pid") not in (None, 0, old))
        spawned = time.monotonic() - t0
        self.wait(
            f"{program} RUNNING again",
            lambda: info().get("statename") == "RUNNING" and info().get("pid") != old,
        )
        running = time.monotonic() - t0
        self.wait(f"actions after killing {program}", lambda: self.actions_since(t_kill) > 30)
        t_settle = now()
        self.wait("the settle time", lambda: now() - t_settle >= SETTLE_S)
        return {
            "spawned_s": round(spawned, 2),
            "running_s": round(running, 2),
            "gap_s": self.max_gap(t_kill - 1, now()),
        }


def poisoned(n: int) -> list[list[bytes]]:
    """`n` messages, every kind of bad input the bus may meet, round robin."""
    enc = Encoder("chaos")

    def frames(topic: str, arrays: dict, data: dict | None = None) -> list[bytes]:
        return [bytes(f) for f in enc.encode(Message(topic, arrays, data or {}))]

    good = frames("action/arm", {"goal": np.zeros(6, np.float32)})
    header = msgpack.unpackb(good[1])
    kinds = [
        [good[0]],  # a topic alone
        [good[0], good[1]],  # arrays promised, none sent
        good + [b"extra"],  # one part too many
        [good[0], b"\xc1 not msgpack", good[2]],
        [good[0], msgpack.packb({**header, "v": 99}), good[2]],  # unknown version
        [good[0], good[1], b"\x00\x01\x02"],  # the array's size lies
        frames("action/arm", {"goal": np.full(6, np.nan, np.float32)}),
        frames("action/arm", {"goal": np.full(6, 1e9, np.float32)}),
        frames("action/arm", {"goal": np.zeros(7, np.float32)}),  # wrong dimension
        frames("action/left_arm", {"goal": np.zeros((2, 6), np.float64)}),
        frames("no/such/topic", {"x": np.zeros(3, np.uint8)}),
        frames("camera/front", {"image": np.zeros((2, 2), np.uint8)}),  # not (H, W, 3)
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


def flood(stack: PrivateStack, chaos: Chaos, n: int) -> dict:
    """Send the poisoned messages from a thread while this one keeps reading the bus (a reader
    that stops reading would have its own messages dropped by the hub, and see a gap that the
    stack never had)."""
    pids = {name: info["pid"] for name, info in stack.infos().items()}
    sent = threading.Event()

    def send() -> None:
        pub = zmq.Context.instance().socket(zmq.PUB)
        pub.sndhwm = n + 100
        pub.connect(stack.bus.pub)
        time.sleep(0.5)  # PUB has no way to know the hub's subscription has arrived
        for parts in poisoned(n):
            pub.send_multipart(parts)
            time.sleep(0.0005)
        pub.close(linger=2000)
        sent.set()

    t0 = now()
    threading.Thread(target=send, name="flood", daemon=True).start()
    chaos.wait("the flood to be sent", sent.is_set, timeout=120)
    t_sent = now()
    chaos.wait("the settle time after the flood", lambda: now() - t_sent > SETTLE_S)
    infos = stack.infos()
    restarts = sorted(
        n for n, i in infos.items() if i["pid"] != pids.get(n) or i["statename"] != "RUNNING"
    )
    return {
        "restarts": restarts,
        "gap_s": chaos.max_gap(t0, now()),
        "actions": chaos.actions_since(t0),
    }


def count_recordings(root: Path) -> int:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    folders = [p.parent.parent for p in root.rglob("meta/info.json")]
    total = 0
    for folder in folders:
        ds = LeRobotDataset(f"local/{folder.name}", root=folder, video_backend="pyav")
        total += ds.num_episodes
    return total


def remote_figures() -> dict:
    if os.geteuid() != 0:
        return {"remote_note": "not root: scripts/two_hosts.py skipped"}
    done = subprocess.run(
        [
            sys.executable,
            "scripts/two_hosts.py",
            "--log-dir",
            str(REPO / "logs" / "bench_chaos" / "two_hosts"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        return {"remote_note": f"two_hosts failed: {done.stdout[-500:]}{done.stderr[-500:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="fake", choices=["fake", "sim"])
    parser.add_argument("--task", default="lift")
    parser.add_argument("--policy-workers", type=int, default=1)
    parser.add_argument("--flood", type=int, default=4000)
    parser.add_argument("--skip-remote", action="store_true")
    args = parser.parse_args()
    task = get_task(args.task)
    rec = Path(tempfile.mkdtemp(prefix="chaos-rec-"))
    stack = PrivateStack(
        args.task,
        REPO / "logs" / "bench_chaos",
        ["action/", "event/episode"],
        SO101_PROFILE=args.profile,
        SO101_RECORD="true",
        SO101_RECORDER_ARGS=f"--root={rec}",
        SO101_POLICY_WORKERS=str(args.policy_workers),
        SO101_CONTROL_ARGS="--episode_s=8",
    )
    environment = "replay" if args.profile == "fake" else "sim"
    policies = ["policy"] + [f"policy-{i}" for i in range(2, args.policy_workers + 1)]
    programs = ["recorder", "dashboard", "process_events", environment, "control", "hub", "policy"]
    chaos = Chaos(stack, task.arms[0])
    result: dict = {
        "profile": args.profile,
        "task": args.task,
        "policy_workers": args.policy_workers,
    }
    rows = []
    try:
        stack.start()
        names = set(programs) | set(policies)
        chaos.wait("the stack RUNNING", lambda: stack.running(names))
        chaos.wait("actions flowing", lambda: len(chaos.sends) > 60)
        t = now()
        chaos.wait("a normal stretch", lambda: now() - t > SETTLE_S)
        result["gap_s_normal"] = chaos.max_gap(t, now())
        for program in programs:
            got = chaos.kill(program)
            print(
                f"kill -9 {program}: spawned again after {got['spawned_s']} s, RUNNING after "
                f"{got['running_s']} s, longest gap between actions {got['gap_s']} s",
                flush=True,
            )
            result[f"gap_s_{program}"] = got["gap_s"]
            result[f"running_s_{program}"] = got["running_s"]
            rows.append([program, got["spawned_s"], got["running_s"], got["gap_s"]])
        flooded = flood(stack, chaos, args.flood)
        result.update(
            flood_messages=args.flood,
            flood_restarts=len(flooded["restarts"]),
            flood_max_gap_s=flooded["gap_s"],
        )
        print(
            f"flood of {args.flood}: restarted {flooded['restarts'] or 'nothing'}, longest "
            f"gap {flooded['gap_s']} s, {flooded['actions']} actions meanwhile",
            flush=True,
        )
        chaos.pump()
        result["episodes_started"] = chaos.starts
        result["episodes_finished"] = chaos.stops
        stack.stop()
        result["episodes_loadable"] = count_recordings(rec)
    finally:
        stack.close()
    if not args.skip_remote:
        remote = remote_figures()
        result["remote_link_cut_hold_s"] = remote.get("remote_link_cut_hold_s")
        result["remote_resume_s"] = remote.get("remote_resume_s")
        if "remote_note" in remote:
            print(remote["remote_note"])
    table(
        f"kill -9, {args.profile} profile, {args.task}, {args.policy_workers} policy "
        f"worker(s); normal longest gap {result['gap_s_normal']} s",
        ["program", "spawned s", "RUNNING s (after startsecs)", "longest gap between actions s"],
        rows,
    )
    table(
        "flood and recordings",
        ["figure", "value"],
        [
            ["flood messages", args.flood],
            ["restarts during the flood", result["flood_restarts"]],
            ["longest gap during the flood s", result["flood_max_gap_s"]],
            ["episodes started", result["episodes_started"]],
            ["episodes finished (control's stop marker)", result["episodes_finished"]],
            ["episodes loadable (LeRobotDataset)", result["episodes_loadable"]],
            ["remote: hold after the link cut s", result.get("remote_link_cut_hold_s")],
            ["remote: actions after the link is back s", result.get("remote_resume_s")],
        ],
    )
    emit(result)


if __name__ == "__main__":
    main()

"""The policy on another host, for real: two network namespaces joined by a veth pair.

    sudo uv run python scripts/two_hosts.py [--cut-s=5] [--log-dir=logs/two_hosts]

Needs root (`ip netns`). Builds a "robot" host and a "policy" host as Linux network namespaces
with one veth link between them (10.231.N.1 and 10.231.N.2; nothing else is reachable from
either), then follows the README's remote-policy recipe as written: keys from `bus.keys`, the
hub listening on the robot's link address with CurveZMQ, the policy host holding only
`hub.key` and its own `clients/gpu-box.key_secret`. Robot side: hub, replay, control (and this
script, watching the bus). Policy side: the policy worker (a stand-in by default, or
`--checkpoint=PATH`). It checks, in order, printing what it sees:

1. actions flow end to end, every chunk served from the policy host; the bytes per second the
   link carries (observations are frames: what a real LAN must carry per camera);
2. a worker without keys and one with a key not on the allow-list get nothing through, and
   both sides log why;
3. cutting the link (`ip link set ... down`) makes control hold within its policy deadline and
   say why, and the hub's health shows the worker gone;
4. restoring the link resumes actions without restarting any process; the worker is back.

Everything it starts is stopped and both namespaces are deleted at the end, whatever happens.
Last line: JSON with the figures (remote_link_cut_hold_s, remote_resume_s, bytes per second).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bus import BusConfig, ServiceClient, Subscriber  # noqa: E402
from bus.keys import generate  # noqa: E402
from workers.launch import Launch, LaunchError  # noqa: E402

POLICY_TIMEOUT_S = 1.5


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class TwoHosts:
    """Two namespaces and a veth pair, removed on exit (deleting a namespace deletes its end
    of the link, and with it the pair)."""

    def __init__(self) -> None:
        tag = os.getpid() % 100000
        net = 1 + os.getpid() % 250
        self.robot, self.policy = f"so101-robot-{tag}", f"so101-policy-{tag}"
        self.robot_if, self.policy_if = f"so101r{tag}", f"so101p{tag}"
        self.robot_ip, self.policy_ip = f"10.231.{net}.1", f"10.231.{net}.2"
        self._home = -1

    def __enter__(self) -> TwoHosts:
        try:
            for ns in (self.robot, self.policy):
                ip("netns", "add", ns)
                ip("-n", ns, "link", "set", "lo", "up")
            ip("link", "add", self.robot_if, "type", "veth", "peer", "name", self.policy_if)
            for ns, dev, addr in (
                (self.robot, self.robot_if, self.robot_ip),
                (self.policy, self.policy_if, self.policy_ip),
            ):
                ip("link", "set", dev, "netns", ns)
                ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
                ip("-n", ns, "link", "set", dev, "up")
        except Exception:
            self.__exit__()
            raise
        return self

    def enter_robot(self) -> None:
        """This process (its sockets and every process it starts) joins the robot host."""
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.robot}", os.O_RDONLY)
        os.setns(fd, os.CLONE_NEWNET)
        os.close(fd)

    def cut(self) -> None:
        ip("-n", self.robot, "link", "set", self.robot_if, "down")

    def restore(self) -> None:
        ip("-n", self.robot, "link", "set", self.robot_if, "up")

    def policy_rx_bytes(self) -> int:
        stats = json.loads(ip("-n", self.policy, "-s", "-j", "link", "show", self.policy_if))
        return int(stats[0]["stats64"]["rx"]["bytes"])

    def __exit__(self, *exc: object) -> None:
        if self._home >= 0:
            os.setns(self._home, os.CLONE_NEWNET)
            os.close(self._home)
            self._home = -1
        for ns in (self.robot, self.policy):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.robot_if], capture_output=True)


def recipe_keys(root: Path) -> dict[str, Path]:
    """The README recipe: the robot keeps keys/; the policy host gets hub.key and its own
    secret; an intruder has the hub's public key and a pair the hub never allowed."""
    keys, remote, intruder = root / "keys", root / "policy-host-keys", root / "intruder-keys"
    generate(keys, ["robot", "gpu-box"])
    (remote / "clients").mkdir(parents=True)
    shutil.copy(keys / "hub.key", remote / "hub.key")
    shutil.copy(keys / "clients" / "gpu-box.key_secret", remote / "clients")
    generate(intruder, ["gpu-box"])
    shutil.copy(keys / "hub.key", intruder / "hub.key")
    return {"robot": keys, "remote": remote, "intruder": intruder}


def wait(what: str, check, timeout: float = 60.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise LaunchError(f"timed out after {timeout:.0f} s waiting for {what}")


class BusWatch:
    """What the robot side sees on its bus: actions, chunks, holds, the hub's health."""

    def __init__(self, bus: BusConfig):
        self.sub = Subscriber(
            bus, ["action/arm", "chunk/lift", "event/hold", "health/hub"], mode="every"
        )
        self.actions: list[float] = []
        self.chunks: list[tuple[float, str]] = []
        self.holds: list[tuple[float, bool, str]] = []
        self.workers: list[tuple[float, int]] = []

    def pump(self, seconds: float = 0.05) -> None:
        end = time.monotonic() + seconds
        while (msg := self.sub.recv(max(0.0, end - time.monotonic()))) is not None:
            t = time.monotonic()
            if msg.topic == "action/arm":
                self.actions.append(t)
            elif msg.topic == "chunk/lift":
                self.chunks.append((t, msg.data.get("worker", "")))
            elif msg.topic == "event/hold":
                self.holds.append((t, bool(msg.data["holding"]), msg.data["reason"]))
            else:
                self.workers.append((t, msg.data.get("workers", {}).get("policy/lift", 0)))

    def until(self, what: str, check, timeout: float = 60.0):
        return wait(what, lambda: self.pump() or check(), timeout, every=0.0)


def run(log_dir: Path, cut_s: float, checkpoint: str | None) -> dict:
    report: dict = {}
    with (
        tempfile.TemporaryDirectory(prefix="so101-keys-") as tmp,
        TwoHosts() as net,
        Launch(log_dir) as launch,
    ):
        keys = recipe_keys(Path(tmp))
        report["namespaces"] = [net.robot, net.policy]
        net.enter_robot()  # before any ZeroMQ socket exists in this process
        ports = dict(pub=5550, sub=5551, client=5552, worker=5553)
        robot = BusConfig(
            **{k: f"tcp://{net.robot_ip}:{p}" for k, p in ports.items()},
            keys_dir=str(keys["robot"]),
            key_name="robot",
        )
        remote = dataclasses.replace(robot, keys_dir=str(keys["remote"]), key_name="gpu-box")
        print(
            f"robot host {net.robot} at {net.robot_ip}, policy host {net.policy} at "
            f"{net.policy_ip}; logs in {log_dir}/",
            flush=True,
        )
        launch.start("hub", "bus.hub", bus=robot)
        launch.wait_for("hub", "CurveZMQ on", 60)
        launch.start("replay", "workers.replay", "--task=lift", bus=robot)
        policy = (
            ["workers.policy", f"--checkpoint={checkpoint}", "--device=auto"]
            if checkpoint
            else ["workers.stand_in_policy", "--latency=0.05"]
        )
        launch.start(
            "policy", *policy, "--task=lift", "--name=remote", bus=remote, netns=net.policy
        )
        launch.wait_for("policy", "ready:", 600)
        launch.start(
            "control",
            "workers.control",
            "--task=lift",
            "--episode_s=3600",
            f"--policy_timeout={POLICY_TIMEOUT_S}",
            bus=robot,
        )
        watch = BusWatch(robot)
        pids = {name: proc.pid for name, proc in launch.procs.items()}

        # 1. Actions across the link, and what the link carries.
        watch.until("actions from the policy host", lambda: len(watch.chunks) >= 5, 120)
        report["chunks_from"] = sorted({w for _, w in watch.chunks})
        rx0, n0, t0 = net.policy_rx_bytes(), len(watch.chunks), time.monotonic()
        watch.until("5 s of traffic", lambda: time.monotonic() - t0 >= 5.0)
        seconds = time.monotonic() - t0
        report["link_bytes_per_s"] = round((net.policy_rx_bytes() - rx0) / seconds)
        report["requests_per_s"] = round((len(watch.chunks) - n0) / seconds, 2)
        report["link_bytes_per_s_per_camera"] = report["link_bytes_per_s"]  # lift: one camera
        print(
            f"1. actions flow; chunks from {report['chunks_from']}; the link carries "
            f"{report['link_bytes_per_s'] / 1e6:.2f} MB/s to the policy host "
            f"({report['requests_per_s']} observations/s, one 640x480 camera)",
            flush=True,
        )

        # 2. No key, and a key the hub never allowed.
        bare = dataclasses.replace(remote, keys_dir=None)
        wrong = dataclasses.replace(remote, keys_dir=str(keys["intruder"]))
        for name, bus in (("policy-nokey", bare), ("policy-intruder", wrong)):
            launch.start(
                name,
                "workers.stand_in_policy",
                "--task=lift",
                f"--name={name}",
                bus=bus,
                netns=net.policy,
            )
        for name, text in (
            ("policy-nokey", "different security"),
            ("policy-intruder", "not on the hub's allow-list"),
        ):
            wait(f"{name} to say why", lambda n=name, t=text: t in launch.output(n))
        wait("the hub to say why", lambda: "got nothing through" in launch.output("hub"))
        report["hub_says"] = next(
            line for line in launch.output("hub").splitlines() if "got nothing through" in line
        ).split("] ")[-1]
        with ServiceClient(robot, "two-hosts") as client:
            report["live_workers_with_intruders"] = client.hub_status()["workers"]
        report["intruder_chunks"] = [w for _, w in watch.chunks if w.startswith("policy-")]
        for name in ("policy-nokey", "policy-intruder"):
            report[f"{name}_says"] = next(
                line for line in launch.output(name).splitlines() if "lets nothing through" in line
            ).split("] ")[-1]
            launch.stop(name)
        print(
            f"2. no key / wrong key: nothing through (live workers "
            f"{report['live_workers_with_intruders']}); both sides logged why",
            flush=True,
        )

        # 3. Cut the link mid-episode.
        t_cut = time.monotonic()
        net.cut()
        hold = watch.until(
            "a hold after the cut",
            lambda: next((h for h in watch.holds if h[0] > t_cut and h[1]), None),
            30,
        )
        report["remote_link_cut_hold_s"] = round(hold[0] - t_cut, 3)
        watch.until(
            "a hold that names the policy",
            lambda: next((h for h in watch.holds if h[0] > t_cut and "policy" in h[2]), None),
            30,
        )
        gone = watch.until(
            "the hub to drop the worker",
            lambda: next((w for w in watch.workers if w[0] > t_cut and w[1] == 0), None),
            30,
        )
        report["worker_gone_after_s"] = round(gone[0] - t_cut, 3)
        watch.until("the cut to last", lambda: time.monotonic() - t_cut >= cut_s)
        report["hold_reasons"] = sorted({h[2] for h in watch.holds if h[0] > t_cut and h[1]})
        print(
            f"3. link cut: hold after {report['remote_link_cut_hold_s']} s "
            f"({report['hold_reasons']}); the hub dropped the worker after "
            f"{report['worker_gone_after_s']} s",
            flush=True,
        )

        # 4. Restore it.
        t_up = time.monotonic()
        net.restore()
        resumed = watch.until(
            "actions again", lambda: next((t for t in watch.actions if t > t_up), None), 60
        )
        report["remote_resume_s"] = round(resumed - t_up, 3)
        back = watch.until(
            "the worker back in the hub's health",
            lambda: next((w for w in watch.workers if w[0] > t_up and w[1] >= 1), None),
            30,
        )
        report["worker_back_after_s"] = round(back[0] - t_up, 3)
        launch.check()
        report["restarted"] = [n for n, p in launch.procs.items() if pids.get(n) != p.pid]
        print(
            f"4. link back: actions after {report['remote_resume_s']} s, worker back in the "
            f"hub's health after {report['worker_back_after_s']} s, processes restarted: "
            f"{report['restarted'] or 'none'}",
            flush=True,
        )
        watch.sub.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cut-s", type=float, default=5.0, help="how long the link is down")
    parser.add_argument("--log-dir", type=Path, default=REPO / "logs" / "two_hosts")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="serve this checkpoint on the policy host (default: a stand-in)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("two_hosts: network namespaces need root (sudo)")
    try:
        report = run(args.log_dir, args.cut_s, args.checkpoint)
    except (LaunchError, RuntimeError) as exc:
        raise SystemExit(f"two_hosts: {exc}") from None
    print(json.dumps(report))


if __name__ == "__main__":
    main()

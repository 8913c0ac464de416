"""Services through a real hub: errors instead of hangs, load sharing, dead workers, restarts."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import zmq

from bus import BusConfig, ServiceClient, ServiceError, ServiceTimeout, Subscriber
from bus import protocol as p

from conftest import bus_args, wait_hub_ready, wait_until


def start_worker(procs, cfg: BusConfig, service: str = "echo", *extra: str):
    proc = procs(
        f"worker-{service}", "tests/echo_worker.py", "--service", service, *extra, *bus_args(cfg)
    )
    proc.wait_for_output("ready:")
    return proc


def live(client: ServiceClient, service: str) -> int:
    return client.hub_status()["workers"].get(service, 0)


def test_missing_service_is_answered_at_once_with_its_name(bus_cfg: BusConfig, hub) -> None:
    with ServiceClient(bus_cfg, "caller") as client:
        with pytest.raises(ServiceError) as info:
            client.call("policy/lift", timeout=20)
        assert not isinstance(info.value, ServiceTimeout)
        assert "no live worker for service 'policy/lift'" in str(info.value)


def test_request_reply_and_handler_errors(bus_cfg: BusConfig, hub, procs) -> None:
    start_worker(procs, bus_cfg)
    with ServiceClient(bus_cfg, "caller") as client:
        wait_until(lambda: live(client, "echo") == 1, what="the worker to register")
        obs = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        reply = client.call("echo", {"front": obs}, {"k": 1}, timeout=20)
        np.testing.assert_array_equal(reply.arrays["front"], obs)
        assert reply.data["echo"] == {"k": 1}
        with pytest.raises(ServiceError, match="asked to fail: boom"):
            client.call("echo", data={"fail": "boom"}, timeout=20)
        # The worker is still there after an error.
        assert client.call("echo", data={"k": 2}, timeout=20).data["echo"] == {"k": 2}


def test_workers_of_one_service_share_the_load(bus_cfg: BusConfig, hub, procs) -> None:
    workers = [start_worker(procs, bus_cfg) for _ in range(2)]
    with ServiceClient(bus_cfg, "caller") as client:
        wait_until(lambda: live(client, "echo") == 2, what="two workers")
        ids = [client.send("echo", data={"delay": 0.3}, timeout=30) for _ in range(6)]
        replies: dict[bytes, object] = {}
        wait_until(lambda: replies.update(client.poll(0.1)) or len(replies) == 6, what="6 replies")
        pids = {replies[i].data["pid"] for i in ids}
        assert pids == {w.popen.pid for w in workers}


def test_a_worker_killed_mid_request_fails_the_request_not_hangs(
    bus_cfg: BusConfig, hub, procs
) -> None:
    worker = start_worker(procs, bus_cfg)
    with ServiceClient(bus_cfg, "caller") as client:
        wait_until(lambda: live(client, "echo") == 1, what="the worker to register")
        request = client.send("echo", data={"delay": 60}, timeout=60)
        wait_until(lambda: client.hub_status()["busy"].get("echo") == 1, what="the worker busy")
        worker.stop(signal.SIGKILL)
        t0 = time.monotonic()
        results = wait_until(lambda: client.poll(0.1), what="an answer for the request")
        rid, result = results[0]
        assert rid == request
        assert isinstance(result, ServiceError) and not isinstance(result, ServiceTimeout)
        # The kernel closes a killed process's sockets: the hub hears it, not only heartbeats.
        assert "lost its connection" in str(result)
        assert time.monotonic() - t0 < 30  # well before the 60 s deadline
        assert live(client, "echo") == 0


def test_a_frozen_worker_is_dropped_after_missed_heartbeats(bus_cfg: BusConfig, hub, procs) -> None:
    worker = start_worker(procs, bus_cfg)
    with ServiceClient(bus_cfg, "caller") as client, Subscriber(bus_cfg, ["health/hub"]) as health:
        wait_until(lambda: live(client, "echo") == 1, what="the worker to register")
        worker.popen.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: live(client, "echo") == 0, what="the frozen worker to be dropped")
            with pytest.raises(ServiceError, match="no live worker"):
                client.call("echo", timeout=10)
            wait_until(
                lambda: (
                    (m := health.latest(0.1).get("health/hub")) is not None
                    and "echo" not in m.data["workers"]
                ),
                what="health without the worker",
            )
        finally:
            worker.popen.send_signal(signal.SIGCONT)
        # Woken up, it hears it is unknown and registers again.
        wait_until(lambda: live(client, "echo") == 1, what="the worker to come back")
        assert client.call("echo", data={"k": 3}, timeout=20).data["echo"] == {"k": 3}


def test_timeout_when_the_hub_is_not_there(bus_cfg: BusConfig) -> None:
    with ServiceClient(bus_cfg, "caller") as client:
        t0 = time.monotonic()
        with pytest.raises(ServiceTimeout, match="no reply within the deadline"):
            client.call("echo", timeout=0.5)
        assert time.monotonic() - t0 < 10


def test_bad_service_messages_are_counted(bus_cfg: BusConfig, hub) -> None:
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(bus_cfg.client)
    raw.send_multipart([b"", b"NOPE", b"x"])
    raw.send_multipart([b"", p.CLIENT, b"echo", b"id", b"not-a-number", b"t", b"h"])
    raw_worker = ctx.socket(zmq.DEALER)
    raw_worker.linger = 0
    raw_worker.connect(bus_cfg.worker)
    raw_worker.send_multipart([b"", p.WORKER, b"\x09"])
    raw_worker.send_multipart([b"", p.WORKER, p.READY, b"evil"])
    raw_worker.send_multipart([b"", p.WORKER, b"\x09"])
    with Subscriber(bus_cfg, ["health/hub"]) as health, ServiceClient(bus_cfg, "c") as client:
        wait_until(
            lambda: (m := health.latest(0.1).get("health/hub")) is not None and m.data["bad"] >= 3,
            what="three bad service messages counted",
        )
        assert live(client, "evil") == 1  # the hub still works
    raw.close()
    raw_worker.close()


def test_workers_and_clients_survive_a_hub_restart(bus_cfg: BusConfig, procs) -> None:
    hub = procs("hub", "-m", "bus.hub", *bus_args(bus_cfg))
    wait_hub_ready(bus_cfg)
    start_worker(procs, bus_cfg)
    with ServiceClient(bus_cfg, "caller") as client:
        wait_until(lambda: live(client, "echo") == 1, what="the worker to register")
        hub.stop(signal.SIGKILL)
        with pytest.raises(ServiceTimeout):
            client.call("echo", timeout=0.5)
        procs("hub2", "-m", "bus.hub", *bus_args(bus_cfg))
        wait_hub_ready(bus_cfg)

        def echoes() -> bool:
            try:
                return client.call("echo", data={"k": 4}, timeout=2).data["echo"] == {"k": 4}
            except ServiceError:
                return False

        wait_until(echoes, what="the same worker and client through the new hub")

"""The hub refuses to steal endpoints, refuses to listen off loopback without keys, and with
CurveZMQ keys lets only allow-listed clients through."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from bus import BusConfig, Publisher, ServiceClient, ServiceTimeout, Subscriber
from bus.keys import generate

from conftest import bus_args, wait_hub_ready, wait_until


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def tcp_cfg(**over: object) -> BusConfig:
    a, b, c, d = free_ports(4)
    return BusConfig(
        pub=f"tcp://127.0.0.1:{a}",
        sub=f"tcp://127.0.0.1:{b}",
        client=f"tcp://127.0.0.1:{c}",
        worker=f"tcp://127.0.0.1:{d}",
        **over,
    )


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_second_hub_refuses_endpoints_held_by_the_first(transport, bus_cfg, procs) -> None:
    cfg = bus_cfg if transport == "ipc" else tcp_cfg()
    procs("hub", "-m", "bus.hub", *bus_args(cfg))
    wait_hub_ready(cfg)
    second = procs("hub2", "-m", "bus.hub", *bus_args(cfg))
    assert second.popen.wait(60) == 2
    assert "already" in second.output() and cfg.pub in second.output()
    wait_hub_ready(cfg, timeout=10)  # the first one is unharmed


def test_refuses_to_listen_off_loopback_without_keys(procs) -> None:
    cfg = tcp_cfg()
    cfg.sub = cfg.sub.replace("127.0.0.1", "0.0.0.0")
    hub = procs("hub", "-m", "bus.hub", *bus_args(cfg))
    assert hub.popen.wait(60) == 2
    assert "refusing to listen on tcp://0.0.0.0" in hub.output()
    assert "bus.keys generate" in hub.output()


def test_curve_lets_only_allow_listed_clients_through(tmp_path: Path, procs) -> None:
    keys = tmp_path / "keys"
    generate(keys, ["laptop"])
    # An intruder who has the hub's public key but a key pair the hub never allowed.
    intruder = tmp_path / "intruder"
    generate(intruder, ["laptop"])
    shutil.copy(keys / "hub.key", intruder / "hub.key")

    cfg = tcp_cfg(keys_dir=str(keys), key_name="laptop")
    cfg.pub = cfg.pub.replace("127.0.0.1", "0.0.0.0")  # exposed: allowed because keys are set
    hub = procs("hub", "-m", "bus.hub", *bus_args(cfg))
    hub.wait_for_output("CurveZMQ on")
    local = BusConfig(**{**cfg.__dict__, "pub": cfg.pub.replace("0.0.0.0", "127.0.0.1")})
    wait_hub_ready(local)

    keyless = BusConfig(**{**local.__dict__, "keys_dir": None})
    wrong = BusConfig(**{**local.__dict__, "keys_dir": str(intruder)})
    state = {"position": np.zeros(6, np.float32)}
    with (
        Subscriber(local, ["state/"], mode="every") as good_sub,
        Subscriber(keyless, ["state/"], mode="every") as bare_sub,
        Subscriber(wrong, ["state/"], mode="every") as wrong_sub,
        Publisher(local, "good") as good_pub,
        Publisher(keyless, "bare") as bare_pub,
        Publisher(wrong, "wrong") as wrong_pub,
    ):

        def good_heard() -> bool:
            for pub in (good_pub, bare_pub, wrong_pub):
                pub.publish("state/arm", state)
            return good_sub.recv(0.05) is not None

        wait_until(good_heard, what="the allow-listed client's state")
        # Keep the three publishing for a while: only the allow-listed one ever arrives.
        heard = set()
        for _ in range(40):
            for pub in (good_pub, bare_pub, wrong_pub):
                pub.publish("state/arm", state)
            while (msg := good_sub.recv(0.02)) is not None:
                heard.add(msg.src)
        assert heard == {"good"}
        assert bare_sub.recv(0.5) is None and wrong_sub.recv(0.5) is None
        assert not bare_pub.has_subscriber("state/") and not wrong_pub.has_subscriber("state/")

    with ServiceClient(local, "good") as client:
        assert "workers" in client.call("hub", timeout=10).data
    for cfg_ in (keyless, wrong):
        with ServiceClient(cfg_, "bad") as client, pytest.raises(ServiceTimeout):
            client.call("hub", timeout=1.5)

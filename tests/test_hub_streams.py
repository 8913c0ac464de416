"""Streams through a real hub process: delivery, both subscriber modes, bad input, restarts."""

from __future__ import annotations

import signal
import struct
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

from bus import BusConfig, Publisher, Subscriber

from conftest import bus_args, raw_header, wait_hub_ready, wait_until

IMAGE = np.arange(480 * 640 * 3, dtype=np.uint32).astype(np.uint8).reshape(480, 640, 3)


def health(sub: Subscriber) -> dict:
    msg = sub.latest(timeout=0.05).get("health/hub")
    return msg.data if msg else {}


def test_every_message_arrives_in_order_with_stamps(bus_cfg: BusConfig, hub) -> None:
    with Subscriber(bus_cfg, ["camera/"], mode="every") as sub, Publisher(bus_cfg, "cam") as pub:
        assert pub.wait_for_subscriber("camera/front", 30)
        sent = [pub.publish("camera/front", {"image": IMAGE}, t_cap=1000.0 + i) for i in range(50)]
        got = [wait_until(lambda: sub.recv(0.5), what="frame") for _ in sent]
        assert [m.seq for m in got] == list(range(1, 51))
        assert all(m.src == "cam" for m in got)
        assert [m.t_cap for m in got] == [1000.0 + i for i in range(50)]
        assert all(m.t_send >= s.t_send for m, s in zip(got, sent, strict=True))
        np.testing.assert_array_equal(got[-1].arrays["image"], IMAGE)
        assert sub.lost == 0 and sub.bad == 0


def test_topic_prefix_filtering(bus_cfg: BusConfig, hub) -> None:
    with Subscriber(bus_cfg, ["state/left"], mode="every") as sub, Publisher(bus_cfg, "s") as pub:
        assert pub.wait_for_subscriber("state/left_arm", 30)
        assert not pub.has_subscriber("state/right_arm")
        pub.publish("state/right_arm", {"position": np.ones(6, np.float32)})
        pub.publish("state/left_arm", {"position": np.zeros(6, np.float32)})
        msg = sub.recv(10)
        assert msg is not None and msg.topic == "state/left_arm"


def test_latest_mode_keeps_newest_per_topic_and_counts_skips(bus_cfg: BusConfig, hub) -> None:
    with Subscriber(bus_cfg, ["state/"], mode="latest") as sub, Publisher(bus_cfg, "arm") as pub:
        assert pub.wait_for_subscriber("state/", 30)
        for i in range(20):
            pub.publish("state/a", {"position": np.full(6, i, np.float32)})
            pub.publish("state/b", {"position": np.full(6, -i, np.float32)})

        def both_done() -> bool:
            newest = sub.latest()
            return all(t in newest and newest[t].seq == 20 for t in ("state/a", "state/b"))

        wait_until(both_done, what="both topics at seq 20")
        assert sub.latest()["state/a"].arrays["position"][0] == 19
        assert sub.take("state/a") is not None
        assert sub.take("state/a") is None  # nothing new since
        # 40 received, at most 2 read, the rest skipped; none lost on the way.
        assert sub.received == 40 and sub.skipped == 38 and sub.lost == 0


def test_slow_subscriber_never_blocks_the_publisher(bus_cfg: BusConfig, hub) -> None:
    with (
        Subscriber(bus_cfg, ["camera/"], mode="latest", queue=2) as sub,
        Publisher(bus_cfg, "cam") as pub,
    ):
        assert pub.wait_for_subscriber("camera/", 30)
        for _ in range(300):  # far more than any queue on the way holds
            pub.publish("camera/front", {"image": IMAGE})
        # The stream goes on at a normal pace until the subscriber is past the burst.
        wait_until(
            lambda: (
                pub.publish("camera/front", {"image": IMAGE})
                and sub.latest(0.05).get("camera/front") is not None
                and sub.newest["camera/front"].seq > 300
            ),
            what="frames after the burst",
        )
        # What never reached this subscriber is counted, not silent.
        assert sub.received + sub.lost == sub.newest["camera/front"].seq
        assert sub.lost > 0


def _raw(header: dict | bytes, *parts: bytes, topic: bytes = b"state/arm") -> list[bytes]:
    return [topic, header if isinstance(header, bytes) else msgpack.packb(header), *parts]


BAD_MESSAGES = {
    "wrong part count": _raw(raw_header()),
    "bad msgpack": _raw(b"\xc1\xc1\xc1"),
    "unknown version": _raw(raw_header(v=7), np.zeros(6, np.float32).tobytes()),
    "dtype mismatch": _raw(raw_header(arrays=[["position", "<f8", [6]]]), np.zeros(6).tobytes()),
    "shape mismatch": _raw(
        raw_header(arrays=[["position", "<f4", [2, 3]]]), np.zeros(6, np.float32).tobytes()
    ),
    "buffer size mismatch": _raw(raw_header(), b"\x00" * 7),
    "NaN where forbidden": _raw(raw_header(), struct.pack("<6f", *[float("nan")] * 6)),
    "unknown family": _raw(raw_header(arrays=[]), topic=b"nonsense/x"),
}


def test_bad_messages_are_counted_named_and_dropped_and_the_bus_keeps_working(
    bus_cfg: BusConfig, hub
) -> None:
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUB)
    raw.linger = 0
    raw.connect(bus_cfg.pub)
    with (
        Subscriber(bus_cfg, ["state/", "nonsense/", "health/hub"], mode="latest") as sub,
        Publisher(bus_cfg, "good") as pub,
    ):
        assert pub.wait_for_subscriber("state/arm", 30)

        # The raw PUB has no way to know it is subscribed; send until the hub has seen them all.
        def all_counted() -> bool:
            for frames in BAD_MESSAGES.values():
                raw.send_multipart(frames)
            return health(sub).get("bad", 0) >= 3 * len(BAD_MESSAGES)

        wait_until(all_counted, what="the hub to count the bad messages")
        assert "'state/arm' from 'evil'" in health(sub)["bad_sources"]
        pub.publish("state/arm", {"position": np.ones(6, np.float32)})
        wait_until(
            lambda: (
                sub.latest().get("state/arm") is not None and sub.newest["state/arm"].src == "good"
            ),
            what="a good message after bad ones",
        )
        # The subscriber dropped and counted them: nothing bad reached its reader.
        assert sub.bad >= len(BAD_MESSAGES) - 1  # all but "unknown family", not subscribed
        assert all(m.src != "evil" for m in sub.newest.values())
        assert "nonsense/x" not in sub.newest
    raw.close()
    assert "bad message" in hub.output()
    assert "'evil'" in hub.output()  # the log names the source


def test_subscriber_validates_what_it_receives(bus_cfg: BusConfig) -> None:
    # No hub: a raw PUB where the hub's XPUB would be, sending straight to the Subscriber.
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUB)
    raw.linger = 0
    raw.bind(bus_cfg.sub)
    good = _raw(raw_header(src="good"), np.zeros(6, np.float32).tobytes())
    with Subscriber(bus_cfg, ["state/"], mode="every") as sub:

        def got_good() -> bool:
            for frames in BAD_MESSAGES.values():
                if not frames[0].startswith(b"nonsense"):
                    raw.send_multipart(frames)
            raw.send_multipart(good)
            return sub.recv(0.05) is not None

        wait_until(got_good, what="a good message between bad ones")
        assert sub.bad >= 1
        msg = sub.recv(1.0)
        assert msg is None or msg.src == "good"
    raw.close()


def test_oversized_message_is_refused_by_max_msg_size(bus_dir: Path, procs) -> None:
    cfg = BusConfig(
        pub=f"ipc://{bus_dir}/p",
        sub=f"ipc://{bus_dir}/s",
        client=f"ipc://{bus_dir}/c",
        worker=f"ipc://{bus_dir}/w",
        max_msg_bytes=100_000,
    )
    procs("hub", "-m", "bus.hub", *bus_args(cfg))
    wait_hub_ready(cfg)
    with Subscriber(cfg, ["camera/"], mode="every") as sub, Publisher(cfg, "big") as pub:
        assert pub.wait_for_subscriber("camera/", 30)
        pub.publish("camera/big", {"image": IMAGE})  # 921,600 bytes > 100,000
        small = np.zeros((10, 10, 3), np.uint8)
        # ZeroMQ drops the offending connection; the publisher reconnects and goes on.
        wait_until(
            lambda: pub.publish("camera/small", {"image": small}) and sub.recv(0.1),
            what="small frames after an oversized one",
        )
        while (msg := sub.recv(0.5)) is not None:
            assert msg.topic == "camera/small"


def test_everyone_survives_a_hub_restart(bus_cfg: BusConfig, procs) -> None:
    hub = procs("hub", "-m", "bus.hub", *bus_args(bus_cfg))
    wait_hub_ready(bus_cfg)
    with Subscriber(bus_cfg, ["state/"], mode="every") as sub, Publisher(bus_cfg, "arm") as pub:
        state = {"position": np.zeros(6, np.float32)}
        wait_until(lambda: pub.publish("state/arm", state) and sub.recv(0.05), what="first state")
        hub.stop(signal.SIGKILL)  # leaves stale ipc files behind, like a crash would
        procs("hub2", "-m", "bus.hub", *bus_args(bus_cfg))
        wait_hub_ready(bus_cfg)
        wait_until(
            lambda: pub.publish("state/arm", state) and sub.recv(0.05),
            what="states through the restarted hub",
        )


def test_a_drain_loop_does_not_stop_at_a_bad_message(bus_cfg: BusConfig) -> None:
    """`while (msg := sub.recv(0))` must read the good messages queued behind bad ones: a flood
    of bad messages would otherwise starve every drain loop (control, replay, recorder)."""
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUB)
    raw.linger = 0
    raw.bind(bus_cfg.sub)
    bad = next(f for f in BAD_MESSAGES.values() if f[0].startswith(b"state/"))
    good = _raw(raw_header(src="good"), np.zeros(6, np.float32).tobytes())
    with Subscriber(bus_cfg, ["state/"], mode="every") as sub:
        wait_until(
            lambda: raw.send_multipart(good) or sub.recv(0.05) is not None,
            what="the subscription to be up",
        )
        for _ in range(20):
            raw.send_multipart(bad)
            raw.send_multipart(good)
        time.sleep(0.5)  # all 40 queued at the subscriber (what is measured is one drain)
        drained = []
        while (msg := sub.recv(0)) is not None:
            drained.append(msg)
    raw.close()
    assert len(drained) >= 20, (len(drained), sub.bad)

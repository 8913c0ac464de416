"""The wire format and schemas, in process: round trips, zero copies, and every malformed case."""

from __future__ import annotations

import pickle

import msgpack
import numpy as np
import pytest
import zmq

from bus.schema import SchemaError, validate
from bus.wire import VERSION, Encoder, Message, WireError, decode, encode, pack_data

from conftest import raw_header


def frames_of(msg: Message) -> list[bytes]:
    return [bytes(f) for f in Encoder("test").encode(msg)]


def test_round_trip_keeps_arrays_data_and_stamps() -> None:
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    state = np.array([1.5, -2, 3, 4, 5, 60], dtype=np.float32)
    msg = Message(
        "camera/front", {"image": image, "extra": state}, {"exposure": 3, "ok": True}, t_cap=123.25
    )
    out = decode(frames_of(msg))
    assert out.topic == "camera/front"
    np.testing.assert_array_equal(out.arrays["image"], image)
    np.testing.assert_array_equal(out.arrays["extra"], state)
    assert out.arrays["extra"].dtype == np.float32
    assert out.data == {"exposure": 3, "ok": True}
    assert out.src == "test" and out.seq == 1 and out.t_cap == 123.25
    assert out.t_send >= out.t_cap


def test_sequence_numbers_count_per_topic() -> None:
    enc = Encoder("src")
    seqs = [
        decode(enc.encode(Message(t))).seq for t in ["event/a", "event/a", "event/b", "event/a"]
    ]
    assert seqs == [1, 2, 1, 3]


def test_arrays_are_sent_and_received_without_copies() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    frames = encode(Message("camera/x", {"image": image}))
    # Sent: the array part is a view on the array itself.
    assert np.shares_memory(np.frombuffer(frames[2], np.uint8), image)
    # Received: a numpy view on the received zmq frame.
    zframes = [
        zmq.Frame(bytes(f) if not isinstance(f, memoryview) else f.tobytes()) for f in frames
    ]
    out = decode(zframes)
    assert np.shares_memory(out.arrays["image"], np.frombuffer(zframes[2].buffer, np.uint8))
    assert not out.arrays["image"].flags.writeable


def _header(**over: object) -> bytes:
    return msgpack.packb(raw_header(**over))


GOOD_STATE = np.zeros(6, np.float32).tobytes()


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([b"state/arm"], "at least 2 parts"),
        ([b"state/arm", b"\xc1\xff garbage"], "bad msgpack"),
        ([b"state/arm", msgpack.packb([1, 2])], "not a map"),
        ([b"state/arm", _header(v=99), GOOD_STATE], "unknown format version 99"),
        ([b"state/arm", _header()], "declares 1 arrays but the message has 0"),
        ([b"state/arm", _header(), GOOD_STATE[:-4]], "20 bytes for <f4[6] (expected 24)"),
        ([b"state/arm", _header(arrays=[["p", "|O8", [1]]]), b"x" * 8], "not allowed"),
        ([b"state/arm", _header(arrays=[["p", "nonsense", [1]]]), b"x"], "unknown dtype"),
        ([b"state/arm", _header(arrays=[["p", "<f4", [-1]]]), b""], "negative dimension"),
        ([b"\xff\xfe", _header(), GOOD_STATE], "not utf-8"),
        ([b"state/arm", _header(seq="x"), GOOD_STATE], "wrong type"),
    ],
)
def test_malformed_messages_raise_wire_error(frames: list[bytes], error: str) -> None:
    with pytest.raises(WireError, match=None) as info:
        decode(frames)
    assert error in str(info.value)


def test_pickled_numpy_payload_is_refused_not_unpickled(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = {
        b"nd": True,
        b"type": "|O",
        b"kind": b"O",
        b"shape": [1],
        b"data": pickle.dumps(Exploit()),
    }
    header = _header(arrays=[], data={"payload": evil})
    with pytest.raises(WireError, match="not allowed"):
        decode([b"event/x", header])
    assert not marker.exists()


def test_small_numpy_payloads_travel_in_the_header() -> None:
    msg = decode(
        [
            b"event/x",
            pack_data(
                {
                    "v": VERSION,
                    "seq": 1,
                    "src": "s",
                    "t_cap": 0,
                    "t_send": 0,
                    "arrays": [],
                    "data": {"r": np.arange(4, dtype=np.int16)},
                }
            ),
        ]
    )
    np.testing.assert_array_equal(msg.data["r"], np.arange(4))


@pytest.mark.parametrize(
    ("msg", "error"),
    [
        (Message("camera/front", {"image": np.zeros((4, 4), np.uint8)}), "expected rank 3"),
        (Message("camera/front", {"image": np.zeros((4, 4, 3), np.float32)}), "expected uint8"),
        (Message("camera/front", {"image": np.zeros((4, 4, 4), np.uint8)}), "last dim 3"),
        (Message("camera/front"), "missing array 'image'"),
        (Message("state/arm", {"position": np.array([np.nan] * 6, np.float32)}), "NaN"),
        (Message("action/arm", {"goal": np.array([np.inf], np.float32)}), "NaN or inf"),
        (Message("chunk/lift", {"actions": np.zeros(16, np.float32)}), "expected rank 2"),
        (Message("weird/x"), "unknown topic family"),
        (Message("state/"), "no name"),
    ],
)
def test_schema_violations(msg: Message, error: str) -> None:
    with pytest.raises(SchemaError) as info:
        validate(decode(frames_of(msg)))
    assert error in str(info.value)


def test_valid_messages_pass_their_schema() -> None:
    for msg in [
        Message("camera/front", {"image": np.zeros((48, 64, 3), np.uint8)}),
        Message("state/left_arm", {"position": np.zeros(6, np.float32)}),
        Message("action/arm", {"goal": np.zeros(6, np.float32)}),
        Message("chunk/lift", {"actions": np.zeros((16, 6), np.float32)}),
        Message("health/hub", data={"x": 1}),
        Message("event/estop", data={"reason": "button"}),
    ]:
        validate(decode(frames_of(msg)))

"""The wire format: one message = topic, msgpack header, one raw frame per array.

    part 0   topic, utf-8 (`camera/front`)
    part 1   msgpack header {v, seq, src, t_cap, t_send, arrays: [[name, dtype, shape], ...], data}
    part 2.. one raw buffer per array, in header order (sent and received without copies)

`data` holds small structured payloads (numbers, strings, small numpy arrays through
msgpack-numpy). Object arrays are refused on decode: nothing on the bus is ever unpickled.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import msgpack
import msgpack_numpy
import numpy as np

from bus import clock

VERSION = 1

# Only plain numeric kinds may cross the bus; "O" (pickled objects) and "V" (structured) never.
_ALLOWED_KINDS = frozenset("biuf")


class WireError(ValueError):
    """A message that does not follow the wire format. The text says what was wrong."""


@dataclass
class Message:
    topic: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    src: str = ""
    seq: int = 0
    t_cap: float = 0.0  # when the content was captured (bus clock, s)
    t_send: float = 0.0  # when it was sent (bus clock, s)
    nbytes: int = 0  # size on the wire, filled on decode


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError) as exc:
        raise WireError(f"unknown dtype {dtype!r}") from exc
    if dt.kind not in _ALLOWED_KINDS:
        raise WireError(f"dtype {dt.str} is not allowed on the bus (numeric only)")
    return dt


def _safe_ext_decode(obj: dict) -> Any:
    """msgpack-numpy's decoder, minus its pickle and structured-dtype paths."""
    if b"nd" in obj:
        if obj.get(b"kind", b"") != b"" or not isinstance(obj.get(b"type"), (str, bytes)):
            raise WireError("object or structured numpy payloads are not allowed on the bus")
        dt = _check_dtype(obj[b"type"])
        data = obj.get(b"data", b"")
        shape = obj.get(b"shape", ())
        expected = dt.itemsize * (int(np.prod(shape)) if obj[b"nd"] is True else 1)
        if not isinstance(data, bytes) or len(data) != expected:
            raise WireError("numpy payload in header has the wrong number of bytes")
    elif b"complex" in obj:
        raise WireError("complex payloads are not allowed on the bus")
    return msgpack_numpy.decode(obj)


def pack_data(data: dict[str, Any]) -> bytes:
    """Pack a small structured payload (also used by services for their own frames)."""
    return msgpack.packb(data, default=msgpack_numpy.encode, use_bin_type=True)


def unpack_data(buf: bytes | memoryview) -> Any:
    try:
        return msgpack.unpackb(buf, object_hook=_safe_ext_decode, raw=False, strict_map_key=False)
    except WireError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise WireError(f"bad msgpack: {exc}") from exc


class Encoder:
    """Turns messages into frames; owns the per-topic sequence numbers of one source."""

    def __init__(self, src: str):
        self.src = src
        self._seq: dict[str, itertools.count] = {}

    def encode(self, msg: Message) -> list:
        counter = self._seq.get(msg.topic)
        if counter is None:
            counter = self._seq[msg.topic] = itertools.count(1)
        msg.seq = next(counter)
        msg.src = self.src
        msg.t_send = clock.now()
        if not msg.t_cap:
            msg.t_cap = msg.t_send
        return encode(msg)


def encode(msg: Message) -> list:
    """Frames for `msg` (numpy arrays go out as their own buffers, not copied when contiguous)."""
    specs = []
    buffers = []
    for name, arr in msg.arrays.items():
        arr = np.ascontiguousarray(arr)
        _check_dtype(arr.dtype)
        specs.append([name, arr.dtype.str, list(arr.shape)])
        buffers.append(memoryview(arr).cast("B") if arr.size else b"")
    header = {
        "v": VERSION,
        "seq": msg.seq,
        "src": msg.src,
        "t_cap": msg.t_cap,
        "t_send": msg.t_send,
        "arrays": specs,
        "data": msg.data,
    }
    return [msg.topic.encode(), pack_data(header), *buffers]


def _buffer(frame: Any) -> memoryview:
    # zmq.Frame (copy=False) exposes .buffer; bytes (copy=True) are their own buffer.
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


def decode(frames: list) -> Message:
    """Parse frames into a Message with numpy views on the received buffers (no copies).

    Raises WireError naming what is wrong; never unpickles.
    """
    if len(frames) < 2:
        raise WireError(f"expected at least 2 parts (topic, header), got {len(frames)}")
    try:
        topic = bytes(_buffer(frames[0])).decode()
    except UnicodeDecodeError as exc:
        raise WireError("topic is not utf-8") from exc
    header = unpack_data(_buffer(frames[1]))
    if not isinstance(header, dict):
        raise WireError("header is not a map")
    version = header.get("v")
    if version != VERSION:
        raise WireError(f"unknown format version {version!r} (this bus speaks {VERSION})")
    specs = header.get("arrays", [])
    if not isinstance(specs, list) or len(specs) != len(frames) - 2:
        raise WireError(
            f"header declares {len(specs) if isinstance(specs, list) else '?'} arrays "
            f"but the message has {len(frames) - 2} array parts"
        )
    nbytes = 0
    arrays: dict[str, np.ndarray] = {}
    for spec, frame in zip(specs, frames[2:], strict=True):
        try:
            name, dtype, shape = spec
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError) as exc:
            raise WireError(f"bad array spec {spec!r}") from exc
        if any(s < 0 for s in shape):
            raise WireError(f"array {name!r}: negative dimension in {shape}")
        dt = _check_dtype(dtype)
        buf = _buffer(frame)
        expected = dt.itemsize * int(np.prod(shape))
        if buf.nbytes != expected:
            raise WireError(
                f"array {name!r}: {buf.nbytes} bytes for {dt.str}{list(shape)} "
                f"(expected {expected})"
            )
        arr = np.frombuffer(buf, dtype=dt).reshape(shape)
        arr.flags.writeable = False  # a view on the received frame: copy before changing it
        arrays[str(name)] = arr
        nbytes += buf.nbytes
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise WireError("header data is not a map")
    try:
        seq, t_cap, t_send = int(header["seq"]), float(header["t_cap"]), float(header["t_send"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"header field missing or wrong type: {exc}") from exc
    return Message(
        topic=topic,
        arrays=arrays,
        data=data,
        src=str(header.get("src", "")),
        seq=seq,
        t_cap=t_cap,
        t_send=t_send,
        nbytes=nbytes + _buffer(frames[1]).nbytes,
    )


def describe_source(frames: list) -> str:
    """Best-effort "topic from src" for log lines about a message that failed to decode."""
    parts = []
    try:
        parts.append(repr(bytes(_buffer(frames[0]))[:64].decode(errors="replace")))
    except Exception:
        parts.append("<no topic>")
    try:
        header = msgpack.unpackb(_buffer(frames[1]), raw=False, strict_map_key=False)
        parts.append(f"from {str(header.get('src'))[:64]!r}")
    except Exception:
        parts.append("from an unknown source")
    return " ".join(parts)

"""Declared schemas per topic family, checked on receive (by the hub and by every subscriber)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bus.topics import family
from bus.wire import Message, WireError


@dataclass(frozen=True)
class ArraySpec:
    dtype: str
    rank: int
    last_dim: int | None = None  # e.g. 3 for RGB images
    finite: bool = False  # reject NaN/inf (float payloads that drive hardware)


# Each family: the arrays a message must carry. Families without arrays carry only `data`.
SCHEMAS: dict[str, dict[str, ArraySpec]] = {
    "camera": {"image": ArraySpec("uint8", rank=3, last_dim=3)},
    "state": {"position": ArraySpec("float32", rank=1, finite=True)},
    "action": {"goal": ArraySpec("float32", rank=1, finite=True)},
    "chunk": {"actions": ArraySpec("float32", rank=2, finite=True)},
    "health": {},
    "event": {},
}


class SchemaError(WireError):
    """A well-formed message whose content breaks its topic's schema."""


def validate(msg: Message) -> None:
    fam = family(msg.topic)
    schema = SCHEMAS.get(fam)
    if schema is None:
        raise SchemaError(f"unknown topic family {fam!r} in {msg.topic!r}")
    if "/" not in msg.topic or not msg.topic.split("/", 1)[1]:
        raise SchemaError(f"topic {msg.topic!r} has no name after the family")
    for name, spec in schema.items():
        arr = msg.arrays.get(name)
        if arr is None:
            raise SchemaError(f"{msg.topic}: missing array {name!r}")
        check_array(f"{msg.topic}: {name}", arr, spec)


def check_array(what: str, arr: np.ndarray, spec: ArraySpec) -> None:
    if arr.dtype != np.dtype(spec.dtype):
        raise SchemaError(f"{what} is {arr.dtype}, expected {spec.dtype}")
    if arr.ndim != spec.rank:
        raise SchemaError(f"{what} has shape {arr.shape}, expected rank {spec.rank}")
    if spec.last_dim is not None and arr.shape[-1] != spec.last_dim:
        raise SchemaError(f"{what} has shape {arr.shape}, expected last dim {spec.last_dim}")
    if spec.finite and not np.isfinite(arr).all():
        raise SchemaError(f"{what} contains NaN or inf")

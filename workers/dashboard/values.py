"""Bus data as the dashboard page's JSON: plain values (no NaN, no numpy, no long blobs), the
fields of a health report, a message's time. Pure functions, shared by the view model and the
camera frames."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bus import Message
from bus.clock import now as bus_now


def jsonable(value: Any, depth: int = 0) -> Any:
    """Bus data as plain JSON: NaN/inf become null, numpy scalars numbers, long text is cut."""
    if depth > 6:
        return "…"
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value if len(value) <= 500 else value[:500] + "…"
    if isinstance(value, np.generic):
        return jsonable(value.item(), depth)
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in list(value.items())[:200]}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth + 1) for v in value[:200]]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist() if value.size <= 200 else f"array{value.shape}", depth)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    return str(value)[:200]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"bus": {"lost": 1}} -> {"bus.lost": 1}."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def is_number(value: Any) -> bool:
    """A real number (bool is an int to Python, not here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def drops_of(data: dict) -> dict[str, float]:
    """The nonzero counters of a health report's `drops` (the envelope: bus/health.py)."""
    drops = data.get("drops")
    if not isinstance(drops, dict):
        return {}
    return {str(k): v for k, v in drops.items() if is_number(v) and v}


def rate_of(data: dict) -> float | None:
    """A health report's `rate_hz` (the envelope: bus/health.py)."""
    rate = data.get("rate_hz")
    return float(rate) if is_number(rate) else None


def round_list(values: np.ndarray, digits: int = 3) -> list[float]:
    return [round(float(v), digits) for v in values]


def stamp(msg: Message) -> float:
    """A message's capture time (its send time, or now, when that is missing or not finite)."""
    for t in (msg.t_cap, msg.t_send):
        if isinstance(t, float | int) and math.isfinite(t) and t > 0:
            return float(t)
    return bus_now()

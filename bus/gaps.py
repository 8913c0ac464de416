"""Counting lost messages from per-(source, topic) sequence numbers."""

from __future__ import annotations


class GapCounter:
    """Every publisher numbers each topic 1, 2, 3...; a jump means messages were lost upstream
    (a high-water mark overflowed somewhere). A number that goes backwards means the publisher
    restarted, which is not a loss."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}
        self.lost = 0

    def see(self, src: str, topic: str, seq: int) -> int:
        key = (src, topic)
        last = self._last.get(key)
        self._last[key] = seq
        if last is None or seq <= last:
            return 0
        gap = seq - last - 1
        self.lost += gap
        return gap

"""An engaged e-stop remembered on disk, so that a servo process that crashed or was restarted
comes back stopped. Like a latching mushroom button: only an explicit clear releases it, never a
restart.

The file holds the reason and when it was engaged. It is written atomically (temp file +
rename); a file that cannot be read counts as engaged, because failing safe beats guessing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


class EstopLatch:
    """The e-stop latch file at `path`; None keeps the latch in memory only (no file)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path).expanduser() if path else None

    def engaged(self) -> str | None:
        """The reason of an e-stop engaged before this process started, or None."""
        if self.path is None or not self.path.exists():
            return None
        try:
            record = json.loads(self.path.read_text())
            return f"{record['reason']} (engaged {record['engaged_at']})"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"unreadable latch file {self.path} ({exc})"

    def engage(self, reason: str) -> None:
        if self.path is None:
            return
        record = {"reason": reason, "engaged_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(record) + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            # The arms are stopped either way; only surviving a restart is lost.
            log.error("e-stop engaged but NOT latched in %s: %s", self.path, exc)

    def clear(self) -> None:
        if self.path is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("e-stop cleared but %s could not be removed: %s", self.path, exc)

"""The dataset folder's guards: one recorder per folder (an advisory lock beside it), and a
write probe, so a read-only or full disk is found when recording starts, not mid-episode."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from drivers.recording.errors import RecordingError, _describe_os_error


class FolderLock:
    """An exclusive flock on `.<name>.lock` beside the dataset folder; released by release() or
    by the process ending (the kernel drops it), so a crashed recorder never leaves it held."""

    def __init__(self, root: Path):
        self.root = root
        self.path = root.parent / f".{root.name}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises RecordingError "busy" while another process records into the folder."""
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _describe_os_error(exc, str(self.root.parent)) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RecordingError(
                f"{self.root} is being recorded by another process (lock {self.path})", "busy"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def probe_writable(root: Path) -> None:
    """Write and remove a file in the folder (or its parent) and its meta/data/videos; raises
    RecordingError naming the first place that refuses."""
    where = root if root.is_dir() else root.parent
    dirs = [where] + [root / d for d in ("meta", "data", "videos") if (root / d).is_dir()]
    for d in dirs:
        probe = d / f".write-probe-{os.getpid()}"
        try:
            probe.write_bytes(b"x")
            probe.unlink()
        except OSError as exc:
            raise _describe_os_error(exc, str(d)) from exc

"""Recording errors that say what went wrong and where (disk full, read-only, ...)."""

from __future__ import annotations

import errno
import logging
import os

log = logging.getLogger(__name__)


class RecordingError(Exception):
    """Recording cannot go on; the text says why and what to do. `kind` is one of
    "unwritable", "disk_full", "mismatch", "corrupt", "io", "busy"."""

    def __init__(self, text: str, kind: str = "io"):
        super().__init__(text)
        self.kind = kind


def _describe_os_error(exc: BaseException, where: str) -> RecordingError:
    err = getattr(exc, "errno", None)
    if err == errno.ENOSPC or err == errno.EDQUOT:
        return RecordingError(
            f"disk full while writing {where}: free space, then restart the "
            "recorder (saved episodes are intact)",
            "disk_full",
        )
    if err in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RecordingError(
            f"cannot write {where} ({os.strerror(err)}): make the folder "
            "writable or record elsewhere with --root",
            "unwritable",
        )
    return RecordingError(f"writing {where} failed: {type(exc).__name__}: {exc}", "io")


def _os_error_in(exc: BaseException) -> BaseException | None:
    """The OSError (if any) behind `exc`, following causes (lerobot re-raises as RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None

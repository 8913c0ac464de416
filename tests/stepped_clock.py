"""Runs a module with its wall clock stepped: `time.time()` plus the seconds in a file the test
rewrites, the monotonic clock untouched. What NTP setting the clock, or a machine paused and
resumed, does to a process, for real processes and without touching the machine's clock
(libfaketime cannot: with the monotonic clock left real its clock_nanosleep fails).

    python tests/stepped_clock.py OFFSET_FILE -m MODULE [ARGS...]
"""

import runpy
import sys
import time
from pathlib import Path

REREAD_S = 0.05  # how often the offset file is read again

real_time = time.time
offset_file = Path(sys.argv[1])
offset = {"s": 0.0, "read_at": float("-inf")}


def stepped_time() -> float:
    if time.monotonic() - offset["read_at"] > REREAD_S:
        offset["read_at"] = time.monotonic()
        try:
            offset["s"] = float(offset_file.read_text())
        except (OSError, ValueError):
            pass  # half-written: the last value holds until the next read
    return real_time() + offset["s"]


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        sys.exit(__doc__)
    time.time = stepped_time
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the repo, as `-m` would have
    module, sys.argv = sys.argv[3], [sys.argv[3], *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)

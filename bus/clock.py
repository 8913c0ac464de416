"""The one clock every message is stamped with.

Wall-clock seconds (CLOCK_REALTIME) rather than a monotonic clock: every process on a host reads
the same value, and hosts kept in step by NTP/PTP stay comparable. Loops that need steady pacing
use `time.monotonic()` for their own scheduling and this clock only for stamps.
"""

import time


def now() -> float:
    return time.time()

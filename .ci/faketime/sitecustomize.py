"""Loaded (through PYTHONPATH) by every Python process of .ci/run's faketime runs, the test subprocesses included.

Debian 12's libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC=1 breaks `time.sleep` on Python >= 3.11:
Python sleeps with clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), libfaketime shifts that real monotonic
deadline by the fake offset anyway and the kernel refuses the negative time (OSError EINVAL; libfaketime issue
#426, fixed upstream after 0.9.10). Faking the monotonic clock as well is no way out: waits on it then hang.
So, only under that preload, `time.sleep` waits in `select()` with a relative timeout, on the real monotonic
clock. Every other wait (threading, asyncio, subprocess timeouts) uses relative or monotonic timeouts that
libfaketime leaves alone when the monotonic clock is not faked.
"""

import os
import select
import time

if "faketime" in os.environ.get("LD_PRELOAD", "") and os.environ.get("FAKETIME_DONT_FAKE_MONOTONIC") == "1":

    def _sleep(seconds: float) -> None:
        """time.sleep on select(): relative timeouts, measured on the (real) monotonic clock."""
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            select.select([], [], [], left)

    time.sleep = _sleep

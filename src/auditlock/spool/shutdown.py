"""A clean stop is a clean end: every writer of the process is closed (its `auditlock.writer_closed` written, its
segment sealed) however the process is stopped.

- A normal exit runs each writer's `atexit` hook (`SpoolWriter`), as do servers that stop by returning or
  `sys.exit` (gunicorn's sync and thread workers).
- An ASGI server's lifespan shutdown: `integrations.asgi.AuditMiddleware` calls `close_all_writers()` before it
  reports the shutdown complete. This is what covers uvicorn, which after its graceful shutdown restores the
  previous SIGTERM disposition and re-raises the signal — with the default disposition the process then dies
  by the signal and `atexit` never runs.
- A SIGTERM whose disposition is the default (the process would die without running any Python): the hook
  installed by `install_sigterm_hook` closes every writer, then restores the default and re-raises the signal,
  so the process still ends *by SIGTERM* (its exit status unchanged for supervisors). It is installed only over
  the default disposition, never over an application's or a server's own handler; a server that saves and later
  restores the disposition (uvicorn) restores ours and re-raises into it, so the writers close after its
  graceful shutdown, when no request is left to log.

A Python signal handler runs in the main thread between two bytecodes — possibly while that very thread holds a
writer's lock (re-entrant: closing there would cut into a half-done append) or the logging module's. So the hook
does not close anything itself: a helper thread does, and the hook waits for it at most `SIGNAL_CLOSE_TIMEOUT_S`
before re-raising. If the main thread was interrupted inside a writer, the helper cannot get the lock, the wait
times out and the process dies as it would have without the hook (the agent recovers the open segment).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from auditlock.spool import writer as spool_writer

log = logging.getLogger("auditlock.spool")

SIGNAL_CLOSE_TIMEOUT_S = 5.0

_install_lock = threading.Lock()


def close_all_writers() -> None:
    """Close every live writer of this process (each writes its clean-end record if it wrote since)."""
    for writer in list(spool_writer.live_writers()):
        try:
            writer.close()
        except Exception:  # one writer's failure must not leave the others unclosed
            log.exception("auditlock: closing spool writer %s failed", writer.writer_id)


def install_sigterm_hook() -> bool:
    """Close every writer on SIGTERM, if SIGTERM would otherwise kill the process without Python noticing.

    Only from the main thread (the only one that may set handlers) and only over the default disposition: an
    application's or server's own handler is never replaced. Returns whether the hook is in place.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    with _install_lock:
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
            return True
        return current is _on_sigterm


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    closer = threading.Thread(target=close_all_writers, name="auditlock-sigterm-close", daemon=True)
    closer.start()
    closer.join(SIGNAL_CLOSE_TIMEOUT_S)
    if closer.is_alive():
        log.error("auditlock: SIGTERM: the spool writers did not close within %.0f s; stopping anyway "
                  "(the agent recovers their open segments)", SIGNAL_CLOSE_TIMEOUT_S)
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)

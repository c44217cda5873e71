"""Stopping long work on SIGINT and SIGTERM: the exception a command turns into exit status 128 + signum.

Light on purpose (the command line imports it for every command).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import types


class Interrupted(Exception):
    """A sweep stopped by SIGINT or SIGTERM after saving every finished point (``signum``)."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum


class Stop(BaseException):
    """Raised in the writer's main thread by SIGTERM (SIGINT raises KeyboardInterrupt)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT and SIGTERM interrupt the block (main thread only; elsewhere signals are left alone)."""
    record = types.SimpleNamespace(signum=None)
    if threading.current_thread() is not threading.main_thread():
        yield record
        return

    def handler(signum, frame):
        record.signum = signum
        raise Stop(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield record
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

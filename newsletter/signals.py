"""SIGINT and SIGTERM for the long-running commands: `send` and its kin, and the scheduler daemon.

Both stop the same way (the first signal asks for a graceful stop, a second one is more
urgent), and differ only in what they do then, so the installing and putting back of the
handlers is written here once and each passes its own reaction.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def on_stop_signals(react: Callable[[str], None]) -> Iterator[None]:
    """Call ``react`` with the signal's name ("SIGINT", "SIGTERM") on each one, while inside.

    The previous handlers are put back on the way out. Off the main thread it does nothing:
    Python only lets the main thread install handlers, and signals are delivered to it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: Any) -> None:
        react(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

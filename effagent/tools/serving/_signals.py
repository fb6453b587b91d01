"""Stop launched servers when the launcher itself is told to stop.

The launchers start their servers in a new session (own process group), so a SIGTERM or SIGHUP sent to
the launcher does not reach the server, and Python's default action for those signals ends the process
without running ``finally`` blocks or ``atexit`` handlers: the server would stay up on its port.
:func:`signals_interrupt` turns them into :class:`KeyboardInterrupt` (what Ctrl-C already raises), so the
same cleanup path stops the server's process group whatever ended the launcher.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_interrupt(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, the first SIGTERM/SIGHUP raises KeyboardInterrupt; repeats are ignored while the
    cleanup runs (a second ``kill`` must not cut the stop of a server short). Previous handlers come back on
    exit. Outside the main thread (where Python cannot install handlers) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def _handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, _handler) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""Process control the local launchers share (the vLLM test bed and Phoenix): loopback ports, and stopping a
server's whole process group (a server starts in a session of its own, so its workers go with it).

Stop signals sent to a launcher itself are turned into ``KeyboardInterrupt`` by
:func:`effagent.tools.serving._signals.signals_interrupt`, so the same clean-up stops the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
DEFAULT_STOP_GRACE_S = 15.0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port(host: str = LOOPBACK) -> int:
    """A port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def stop_process_group(
    pid: int,
    grace: float = DEFAULT_STOP_GRACE_S,
    log: Callable[[str], None] = _stderr,
    proc: subprocess.Popen[Any] | None = None,
    what: str = "server",
) -> bool:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace`` s; True if it was running.

    Pass ``proc`` when ``pid`` is our child so that its exit status is collected (no zombie keeps the group).
    A group whose leader died while its workers still run is stopped too.
    """
    if not group_alive(pid, proc):  # the leader may be gone while its workers still run: the group counts
        return False
    signal_group(pid, signal.SIGTERM)  # start_new_session=True made pid the group leader
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pid, proc):
            return True
        time.sleep(0.1)
    log(f"{what} (pid {pid}) still running {grace:.0f} s after SIGTERM: sending SIGKILL")
    signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while group_alive(pid, proc) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int, proc: subprocess.Popen[Any] | None = None) -> bool:
    if proc is not None:
        proc.poll()  # reap the leader if it exited, else its zombie keeps the group "alive"
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

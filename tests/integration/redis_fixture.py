"""A real redis-server for the shared-ledger tests.

``redis_url`` (session): ``$EFFAGENT_REDIS_URL`` when set (nothing is started), else a ``redis-server`` started
on a free loopback port in a temp dir with an explicit config (no RDB snapshots, no AOF, no protected-mode
surprises) and stopped at the end. Without a ``redis-server`` binary the tests are skipped, or fail when
``CI=true`` (install it with ``apt-get install -y redis-server``).

``redis_servers`` (function): a factory for servers a test may kill and restart (fault tests); these are
always started here, so it needs the binary even when ``$EFFAGENT_REDIS_URL`` is set.

Use in a test module: ``redis_url = redis_fixture.redis_url`` (re-exported at module level, so pytest finds it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

redis = pytest.importorskip("redis", reason="the redis client is not installed: pip install 'effagent[redis]'")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        message = ("redis-server is not installed (the shared-ledger tests need a real one); install it with "
                   "`apt-get update && apt-get install -y redis-server`, or point $EFFAGENT_REDIS_URL at a server")
        if _in_ci():
            pytest.fail(message + " (CI=true: the redis tests must run in CI)", pytrace=False)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1:``port`` with its data in ``dir``."""

    def __init__(self, binary: str, directory: Path, port: int | None = None, persist: bool = False) -> None:
        self.binary = binary
        self.dir = directory
        self.port = port or free_port()
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--daemonize", "no", "--protected-mode", "yes", "--save", "", "--logfile", "redis.log",
                "--appendonly", "yes" if self.persist else "no", "--maxclients", "2000"]
        if self.persist:  # every write on disk before the reply: a killed server restarts with all of it
            args += ["--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace")
                log = self.dir / "redis.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err}{tail}")
            try:
                if client.ping():
                    client.close()
                    return self
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING in {timeout_s}s")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server for the session (``$EFFAGENT_REDIS_URL`` or one started here)."""
    env = os.environ.get("EFFAGENT_REDIS_URL")
    if env:
        client = redis.Redis.from_url(env, socket_connect_timeout=2)
        try:
            client.ping()
        except redis.exceptions.RedisError as exc:
            pytest.fail(f"$EFFAGENT_REDIS_URL={env} does not answer PING: {exc}", pytrace=False)
        finally:
            client.close()
        yield env
        return
    binary = _binary()
    with tempfile.TemporaryDirectory(prefix="effagent-redis-") as tmp:
        server = RedisServer(binary, Path(tmp)).start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture
def redis_servers() -> Iterator[Callable[..., RedisServer]]:
    """``start(persist=False, port=None) -> RedisServer``: servers this test owns (stopped at the end)."""
    binary = _binary()
    servers: list[RedisServer] = []
    tmps: list[tempfile.TemporaryDirectory[str]] = []

    def start(persist: bool = False, port: int | None = None) -> RedisServer:
        tmp = tempfile.TemporaryDirectory(prefix="effagent-redis-")
        tmps.append(tmp)
        server = RedisServer(binary, Path(tmp.name), port=port, persist=persist).start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for s in servers:
            s.stop()
        for t in tmps:
            t.cleanup()


def unique_prefix(name: str = "t") -> str:
    """A key prefix no other test (or a shared $EFFAGENT_REDIS_URL's other users) writes to."""
    return f"effagent-test-{name}-{uuid.uuid4().hex[:8]}"

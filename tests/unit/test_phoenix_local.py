"""The local Phoenix launcher's process handling, against a fake Phoenix (no install, no network).

The fake is the launcher's venv ``python`` replaced by a script: ``-c`` (the version check) prints a version,
``-m phoenix.server.main serve`` runs a tiny server that answers ``/healthz`` on ``$PHOENIX_PORT`` and keeps a
worker process in its group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from effagent.errors import ServiceError, ServiceStartError
from effagent.tools.serving import phoenix_local as pl

FAKE_PHOENIX = r"""
import http.server, os, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.environ["FAKE_PHOENIX_PIDS"], "w") as f:
    f.write(f"{os.getpid()} {worker.pid}")
if os.environ.get("FAKE_PHOENIX_EXIT"):
    print("fake phoenix: cannot open the database", flush=True)
    sys.exit(4)
time.sleep(float(os.environ.get("FAKE_PHOENIX_DELAY", "0")))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"OK")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PHOENIX_PORT"])), H).serve_forever()
"""


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _first_line(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """The launcher's first stdout line (read in a thread: a hung launcher fails the test, not hangs it)."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    reader.start()
    reader.join(timeout)
    assert got, f"no output from the launcher in {timeout:.0f} s"
    threading.Event().wait(0.3)  # let it get from the print into its wait loop
    return got[0]


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    pause = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if predicate():  # type: ignore[operator]
            return
        pause.wait(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "phoenix-home"
    venv_python = home / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    script = tmp_path / "fake_phoenix.py"
    script.write_text(FAKE_PHOENIX)
    venv_python.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-c" ]; then echo 99.0; exit 0; fi\n'
        f'exec "{sys.executable}" "{script}"\n'
    )
    venv_python.chmod(0o755)
    (home / "venv" / pl.MARKER_NAME).write_text(json.dumps({"arize-phoenix": "99.0"}))
    monkeypatch.setenv("EFFAGENT_PHOENIX_HOME", str(home))
    monkeypatch.setenv("FAKE_PHOENIX_PIDS", str(tmp_path / "pids"))
    return home


def _pids(tmp_path: Path) -> tuple[int, int]:
    server, worker = map(int, (tmp_path / "pids").read_text().split())
    return server, worker


def test_start_and_stop_take_the_whole_process_group(fake_home: Path, tmp_path: Path) -> None:
    server = pl.LocalPhoenix().start(timeout_s=30)
    try:
        assert pl._get(f"{server.base_url}/healthz") == (200, "OK")
        server_pid, worker_pid = _pids(tmp_path)
        assert server.pid == server_pid and _running(worker_pid)
    finally:
        server.stop()
    assert server.pid is None
    _wait_for(lambda: not _running(server_pid) and not _running(worker_pid), 10, "the Phoenix group to be gone")


def test_a_server_that_dies_while_starting_is_a_clear_error(
    fake_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PHOENIX_EXIT", "1")
    with pytest.raises(ServiceStartError) as info:
        pl.LocalPhoenix().start(timeout_s=30)
    assert isinstance(info.value, ServiceError)
    message = str(info.value)
    assert "exited with code 4" in message and "cannot open the database" in message
    assert "delete it to reinstall" in message
    _, worker_pid = _pids(tmp_path)
    _wait_for(lambda: not _running(worker_pid), 10, "the dead server's worker to be stopped")


@pytest.mark.parametrize("when", ["serving", "starting"])
def test_serve_stops_phoenix_on_sigterm(fake_home: Path, tmp_path: Path, when: str) -> None:
    """`python -m effagent.tools.serving.phoenix_local serve` killed with SIGTERM leaves nothing on its port."""
    port = pl.free_port()
    env = {**os.environ, "FAKE_PHOENIX_DELAY": "0" if when == "serving" else "60"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "effagent.tools.serving.phoenix_local", "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(lambda: (tmp_path / "pids").exists() and (tmp_path / "pids").read_text().strip(), 30,
                  "the fake Phoenix's pids")
        if when == "serving":  # the launcher says so once its own readiness check passed
            assert "Phoenix at" in _first_line(launcher), "serve did not report a ready Phoenix"
            assert pl._port_answers(port)
        server_pid, worker_pid = _pids(tmp_path)
        launcher.send_signal(signal.SIGTERM)
        code = launcher.wait(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    _, err = launcher.communicate()
    assert code == (0 if when == "serving" else 130), err
    assert "SIGTERM" in err
    _wait_for(lambda: not _running(server_pid) and not _running(worker_pid), 10, "the Phoenix group to be gone")
    assert not pl._port_answers(port)

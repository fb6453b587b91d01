"""``effagent explain``: difficulty, band, decision and the tier's litellm keyword arguments, without a call."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from effagent import policies
from effagent.tools.cli import main
from tests.fakes.servers import FakeServer

EASY = "What is 2+2?"
HARD = ("Prove that for every integer n>1 there is a prime between n and 2n; then derive a bound on the number of "
        "primes below 10^6, step by step, checking each lemma carefully.")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["explain", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run(capsys, "--json", *argv)
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def two_bands(tmp_path: Path, hard_tier: str, budget: int = 4096) -> str:
    """mixed-hosted's tiers with an easy band on the local tier and a hard one on ``hard_tier``."""
    text = policies.text("mixed-hosted").split("\ndifficulty:")[0]
    text += f"""
difficulty:
  estimators: [{{name: rule}}]
bands:
  - {{name: easy, min: 0.0, max: 0.5, tier: local}}
  - {{name: hard, min: 0.5, max: 1.0, tier: {hard_tier}, thinking: true, thinking_budget: {budget},
     max_tokens: 2048}}
"""
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return str(path)


def test_easy_and_hard_prompts_on_the_mixed_policy(capsys: pytest.CaptureFixture[str]) -> None:
    easy = as_json(capsys, "--policy", "mixed-hosted", EASY)
    assert set(easy) == {"difficulty", "band", "decision", "request", "wire"}
    assert easy["band"]["name"] == "easy" and easy["decision"]["tier"] == "local"
    assert easy["request"]["model"] == "hosted_vllm/Qwen/Qwen3-8B"
    assert easy["request"]["extra_body"] == {"chat_template_kwargs": {"enable_thinking": False}}
    assert easy["request"]["messages"] == [{"role": "user", "content": EASY}]
    hard = as_json(capsys, "--policy", "mixed-hosted", HARD)
    assert hard["difficulty"]["score"] > easy["difficulty"]["score"]
    assert hard["difficulty"]["signals"]
    assert hard["decision"]["thinking"] is True and hard["decision"]["tier"] != "local"


@pytest.mark.parametrize(("tier", "fields"), [
    ("claude", {"model": "anthropic/claude-sonnet-4-5", "max_tokens": 4096 + 2048,
                "thinking": {"type": "enabled", "budget_tokens": 4096}}),
    ("gemini", {"model": "gemini/gemini-2.5-flash", "max_tokens": 2048,
                "thinking": {"type": "enabled", "budget_tokens": 4096}}),
    ("openai", {"model": "openai/gpt-5-mini", "max_tokens": 2048, "reasoning_effort": "high"}),
    ("local", {"model": "hosted_vllm/Qwen/Qwen3-8B", "max_tokens": 2048,
               "extra_body": {"chat_template_kwargs": {"enable_thinking": True}, "thinking_token_budget": 512}}),
])
def test_each_tier_s_request_has_its_provider_s_thinking_fields(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                                 tier: str, fields: dict[str, Any]) -> None:
    out = as_json(capsys, "--policy", two_bands(tmp_path, tier, 512 if tier == "local" else 4096), HARD)
    assert out["decision"]["tier"] == tier
    for key, value in fields.items():
        assert out["request"][key] == value, key
    other = {"thinking", "reasoning_effort", "extra_body"} - set(fields)
    assert not other & set(out["request"]), "no second thinking control in one request"
    if tier == "claude":
        assert "max_tokens raised from 2048 to 6144" in out["decision"]["notes"][0]
        # litellm's table: cache reads at a tenth, cache writes at the 1-hour rate (what a reservation counts on)
        assert out["decision"]["price"] == {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cache_read_per_mtok": 0.3,
                                            "cache_write_per_mtok": 6.0, "source": "litellm"}


def test_text_output_and_stdin_prompt(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(HARD))
    code, out, _ = run(capsys, "--policy", two_bands(tmp_path, "claude"), "-")
    assert code == 0
    assert out.startswith("difficulty ")
    assert "band hard [0.5, 1.0)" in out
    assert "decision: call on tier claude (anthropic/claude-sonnet-4-5), thinking on, budget 4096" in out
    assert '"budget_tokens": 4096' in out and "note: max_tokens raised" in out
    assert "price: $3 in / $15 out per Mtok, cache read $0.3, cache write $6 (litellm)" in out


def test_the_price_line_shows_cache_and_long_context_rates(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    path = tmp_path / "priced.yaml"
    path.write_text("""tiers:
  t: {model: openai/gpt-4o-mini, price: {input_per_mtok: 1.25, output_per_mtok: 10, cache_read_per_mtok: 0.125,
      long_context_above: 200000, long_context_input_per_mtok: 2.5}}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: t}
""")
    code, out, _ = run(capsys, "--policy", str(path), "What is 2 + 2?")
    assert code == 0
    assert ("price: $1.25 in / $10 out per Mtok, cache read $0.125, above 200000 tokens $2.5 in / $10 out (policy)"
            in out)


def test_api_keys_are_never_printed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    path.write_text("""tiers:
  t: {model: anthropic/claude-sonnet-4-5, api_key: sk-ant-SECRET-123, max_tokens: 4096, thinking: {control: auto}}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: t, thinking: true, thinking_budget: 2048}
""")
    for argv in (["--json"], []):
        code, out, err = run(capsys, *argv, "--policy", str(path), EASY)
        assert code == 0 and "SECRET" not in out + err and "api_key" not in out


def test_a_probe_estimator_is_not_run_without_allow_calls(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    answer = {"choices": [{"message": {"role": "assistant", "content": "4"}, "finish_reason": "stop",
                           "logprobs": {"content": [{"token": "4", "logprob": -0.05, "top_logprobs": []}]}}],
              "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}
    server = FakeServer()
    server.script["/v1/chat/completions"] = [(200, answer)]
    try:
        path = tmp_path / "probe.yaml"
        path.write_text(f"""tiers:
  t: {{model: hosted_vllm/smol, api_base: '{server.base_url}', retries: 0}}
difficulty:
  estimators: [{{name: rule, weight: 1}}, {{name: probe, weight: 1}}]
bands:
  - {{name: all, min: 0.0, max: 1.0, tier: t}}
""")
        out = as_json(capsys, "--policy", str(path), EASY)
        assert "--allow-calls" in out["difficulty"]["not_run"]["probe"]
        assert not any(k.startswith("probe.") for k in out["difficulty"]["signals"])
        code, text, _ = run(capsys, "--policy", str(path), EASY)
        assert code == 0 and "probe: not run" in text
        assert server.requests == []  # no model was called
        called = as_json(capsys, "--policy", str(path), "--allow-calls", EASY)
        assert called["difficulty"]["not_run"] == {}
        assert any(k.startswith("probe.") for k in called["difficulty"]["signals"])
        assert len(server.requests) == 1
    finally:
        server.close()


def test_thread_spent_shapes_the_decision(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("""tiers:
  t: {model: hosted_vllm/smol, api_base: 'http://127.0.0.1:9/v1', max_tokens: 1000}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: t}
budgets:
  thread: {tokens: 10000}
""")
    fresh = as_json(capsys, "--policy", str(path), EASY)
    # steps may use 9,000 of the 10,000 (budgets.finalize.reserve keeps 10 % for the final answer): 300 left
    spent = as_json(capsys, "--policy", str(path), "--thread-spent", "8700", EASY)
    assert fresh["request"]["max_tokens"] == 1000
    assert spent["request"]["max_tokens"] < 300 and "remaining token budget" in spent["decision"]["reason"]


def test_an_invalid_policy_gets_validate_s_errors_and_exit_2(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("""tiers:
  claude: {model: anthropic/claude-sonnet-4-5, max_tokens: 8192, thinking: {control: auto}}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: claude, thinking: true, thinking_budget: 500}
""")
    code, out, err = run(capsys, "--policy", str(path), EASY)
    assert code == 2 and out == ""
    assert main(["validate", str(path)]) == 2
    _, verr = capsys.readouterr()
    assert err == verr
    assert err.startswith(f"{path}:4:") and "below Claude's least" in err


def test_wire_shows_the_http_request_litellm_would_send_with_credentials_masked(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("""tiers:
  t: {model: anthropic/claude-opus-4-7, api_key: sk-ant-SECRET-123, max_tokens: 4096, thinking: {control: auto}}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: t, thinking: true, thinking_budget: 4096}
""")
    out = as_json(capsys, "--policy", str(path), EASY)
    wire = out["wire"]
    assert (wire["method"], wire["url"]) == ("POST", "https://api.anthropic.com/v1/messages")
    assert wire["headers"]["x-api-key"] == "[REDACTED]"
    assert wire["body"]["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert wire["body"]["output_config"] == {"effort": "high"}  # 4096 -> high; no budget_tokens on Opus 4.7
    assert out["request"]["reasoning_effort"] == "high" and out["decision"]["effort"] == "high"
    assert out["decision"]["enforcement"] == "none"
    code, text, err = run(capsys, "--policy", str(path), EASY)
    assert code == 0 and "wire (the HTTP request litellm would send" in text and '"output_config"' in text
    assert "SECRET" not in text + err and "budget_tokens" not in text

"""What litellm really sends for each thinking control, and what the ledger makes of each provider's usage.

A local HTTP server on 127.0.0.1 stands in for each provider's endpoint (reached through the tier's
``api_base``); litellm builds and sends the real request, and parses the provider's response body (copied into
``tests/fixtures/providers/`` in the shape of the provider's API reference). Nothing of litellm is mocked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from effagent.decide import Decision, decide
from effagent.governor import Governor
from effagent.ledger.base import LedgerState
from effagent.llm.client import Completion, complete
from effagent.policy import Policy, parse_policy
from effagent.records import Difficulty
from effagent.request import encode
from tests.fakes.servers import FakeServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
EASY, HARD = 0.1, 0.9
PROMPT = [{"role": "user", "content": "Is 1517 prime?"}]


def body(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    try:
        yield srv
    finally:
        srv.close()


def root(server: FakeServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def policy_for(tier: str, *, budget: int, band_max_tokens: int = 1024) -> Policy:
    """One tier, two bands: easy (thinking off) and hard (thinking on with ``budget``)."""
    return parse_policy(f"""
tiers:
  t: {tier}
bands:
  - {{name: easy, min: 0.0, max: 0.5, tier: t, max_tokens: {band_max_tokens}}}
  - {{name: hard, min: 0.5, max: 1.0, tier: t, thinking: true, thinking_budget: {budget},
     max_tokens: {band_max_tokens}}}
telemetry: {{enabled: false}}
""", env={})


def decision(policy: Policy, score: float) -> Decision:
    return decide(policy, Difficulty(score=score), LedgerState())


def call(policy: Policy, score: float) -> Completion:
    d = decision(policy, score)
    [c] = complete(policy.tier("t"), PROMPT, settings=encode(d, "t", policy.tier("t")).settings)
    return c


def sent(server: FakeServer) -> dict[str, Any]:
    assert server.requests, "litellm sent nothing to the stand-in server"
    path, payload = server.requests[-1]
    return {"path": path, **payload}


def ledger_record(policy: Policy, c: Completion) -> Any:
    gov = Governor(policy)
    return gov.call_record("run", None, decision(policy, HARD), tier="t", input_tokens=c.input_tokens,
                           output_tokens=c.output_tokens, reasoning_tokens=c.reasoning_tokens or 0)


# -- Anthropic ------------------------------------------------------------------------------------------------
def anthropic_tier(server: FakeServer, **thinking: Any) -> str:
    extra = "".join(f", {k}: {v}" for k, v in thinking.items())
    return (f"{{model: anthropic/claude-sonnet-4-5, api_base: '{root(server)}', api_key: test-key, retries: 0, "
            f"max_tokens: 8192, thinking: {{control: auto{extra}}}}}")


def test_anthropic_thinking_budget_and_raised_max_tokens_on_the_wire(server: FakeServer) -> None:
    server.script["/v1/messages"] = [(200, body("anthropic_messages_thinking.json"))]
    policy = policy_for(anthropic_tier(server), budget=2048)
    c = call(policy, HARD)
    req = sent(server)
    assert req["path"] == "/v1/messages"
    assert req["model"] == "claude-sonnet-4-5"
    assert req["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert req["max_tokens"] == 2048 + 1024  # raised so that budget_tokens < max_tokens, the answer keeps 1024
    assert "temperature" not in req
    # the response: thinking inside output_tokens, counted from the thinking text by litellm (an estimate)
    assert (c.input_tokens, c.output_tokens) == (46, 212)
    assert c.reasoning is not None and "37 * 41" in c.reasoning
    assert c.content == "No: 1,517 = 37 × 41."
    assert c.reasoning_tokens is not None and 0 < c.reasoning_tokens < 212
    assert c.reasoning_estimated
    rec = ledger_record(policy, c)
    assert rec.usage.input_tokens == 46 and rec.usage.output_tokens == 212
    assert rec.usage.reasoning_tokens == c.reasoning_tokens
    assert rec.usage.cost_usd == pytest.approx((46 * 3.0 + 212 * 15.0) / 1e6)  # litellm's table: $3 / $15


def test_anthropic_thinking_off_sends_no_thinking(server: FakeServer) -> None:
    server.script["/v1/messages"] = [(200, body("anthropic_messages_thinking.json"))]
    policy = policy_for(anthropic_tier(server), budget=2048)
    call(policy, EASY)
    req = sent(server)
    assert "thinking" not in req
    assert req["max_tokens"] == 1024


def test_anthropic_lower_budget_keeps_max_tokens(server: FakeServer) -> None:
    server.script["/v1/messages"] = [(200, body("anthropic_messages_thinking.json"))]
    policy = policy_for(anthropic_tier(server, budget_over_max_tokens="lower_budget"), budget=4096,
                        band_max_tokens=3000)
    call(policy, HARD)
    req = sent(server)
    assert req["thinking"] == {"type": "enabled", "budget_tokens": 2999}
    assert req["max_tokens"] == 3000


def test_bedrock_claude_thinking_on_the_wire(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_REGION_NAME", "us-east-1")
    model = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    path = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    server.script[path] = [(200, body("bedrock_converse_reasoning.json"))]
    policy = policy_for(f"{{model: 'bedrock/{model}', api_base: '{root(server)}', retries: 0, max_tokens: 8192, "
                        "thinking: {control: auto}}", budget=2048)
    assert policy.tier("t").thinking.control == "anthropic"
    c = call(policy, HARD)
    req = sent(server)
    assert req["path"] == path
    assert req["additionalModelRequestFields"]["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert req["inferenceConfig"]["maxTokens"] == 3072
    assert (c.input_tokens, c.output_tokens) == (46, 190)
    assert c.reasoning_tokens is not None and 0 < c.reasoning_tokens < 190 and c.reasoning_estimated
    rec = ledger_record(policy, c)
    assert rec.usage.cost_usd == pytest.approx((46 * 3.3 + 190 * 16.5) / 1e6)  # litellm's table for this id


# -- Gemini -----------------------------------------------------------------------------------------------------
def gemini_tier(server: FakeServer, model: str = "gemini/gemini-2.5-flash") -> str:
    return (f"{{model: {model}, api_base: '{root(server)}', api_key: test-key, retries: 0, max_tokens: 8192, "
            "thinking: {control: auto}}")


def test_gemini_25_thinking_budget_on_the_wire_and_thought_tokens_counted(server: FakeServer) -> None:
    path = "/models/gemini-2.5-flash:generateContent"
    server.script[path] = [(200, body("gemini_generate_content_thinking.json"))]
    policy = policy_for(gemini_tier(server), budget=2048)
    c = call(policy, HARD)
    req = sent(server)
    assert req["path"] == path  # the model is named in the URL
    gen = req["generationConfig"]
    assert gen["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 2048}
    assert gen["max_output_tokens"] == 1024
    # thoughtsTokenCount is the reasoning count; litellm adds it to the candidates' tokens
    assert (c.input_tokens, c.output_tokens, c.reasoning_tokens) == (11, 15 + 537, 537)
    assert not c.reasoning_estimated
    assert c.content == "No, 1,517 is not prime: it is 37 × 41."
    rec = ledger_record(policy, c)
    assert (rec.usage.input_tokens, rec.usage.output_tokens, rec.usage.reasoning_tokens) == (11, 552, 537)
    assert rec.usage.cost_usd == pytest.approx((11 * 0.3 + 552 * 2.5) / 1e6)


def test_gemini_25_thinking_off_sends_budget_zero(server: FakeServer) -> None:
    path = "/models/gemini-2.5-flash:generateContent"
    server.script[path] = [(200, body("gemini_generate_content_thinking.json"))]
    call(policy_for(gemini_tier(server), budget=2048), EASY)
    assert sent(server)["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}


def test_gemini_25_unbounded_thinking_is_dynamic(server: FakeServer) -> None:
    path = "/models/gemini-2.5-flash:generateContent"
    server.script[path] = [(200, body("gemini_generate_content_thinking.json"))]
    call(policy_for(gemini_tier(server), budget=0), HARD)
    assert sent(server)["generationConfig"]["thinkingConfig"]["thinkingBudget"] == -1


def test_gemini_3_gets_a_thinking_level(server: FakeServer) -> None:
    path = "/models/gemini-3-pro-preview:generateContent"
    server.script[path] = [(200, body("gemini_generate_content_thinking.json"))]
    policy = policy_for(gemini_tier(server, "gemini/gemini-3-pro-preview"), budget=2048)
    assert policy.tier("t").thinking.control == "gemini_levels"
    call(policy, HARD)
    assert sent(server)["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "medium", "includeThoughts": True}
    call(policy, EASY)
    assert sent(server)["generationConfig"]["thinkingConfig"]["includeThoughts"] is False


# -- OpenAI -----------------------------------------------------------------------------------------------------
def test_openai_effort_level_from_budget_on_the_wire(server: FakeServer) -> None:
    server.script["/v1/chat/completions"] = [(200, body("openai_chat_completion_reasoning.json"))]
    policy = policy_for(f"{{model: openai/gpt-5-mini, api_base: '{server.base_url}', api_key: test-key, "
                        "retries: 0, max_tokens: 8192, thinking: {control: auto}}", budget=4096)
    c = call(policy, HARD)
    req = sent(server)
    assert req["model"] == "gpt-5-mini"
    assert req["reasoning_effort"] == "high"  # 4096 <= high's bound (4096)
    assert req["max_completion_tokens"] == 1024  # litellm's name for max_tokens on reasoning models
    assert (c.input_tokens, c.output_tokens, c.reasoning_tokens) == (13, 343, 320)
    assert not c.reasoning_estimated
    rec = ledger_record(policy, c)
    assert rec.usage.reasoning_tokens == 320
    assert rec.usage.cost_usd == pytest.approx((13 * 0.25 + 343 * 2.0) / 1e6)
    call(policy, EASY)
    assert sent(server)["reasoning_effort"] == "minimal"  # GPT-5's least thinking


# -- vLLM -------------------------------------------------------------------------------------------------------
def test_vllm_thinking_switch_and_budget_on_the_wire(server: FakeServer) -> None:
    server.script["/v1/chat/completions"] = [(200, body("vllm_chat_completion_reasoning.json"))]
    policy = policy_for(f"{{model: hosted_vllm/Qwen/Qwen3-8B, api_base: '{server.base_url}', retries: 0, "
                        "max_tokens: 2048, thinking: {control: auto}}", budget=512)
    assert policy.tier("t").price.output_per_mtok == 0  # self-hosted, no price given: $0, not an error
    c = call(policy, HARD)
    req = sent(server)
    assert req["model"] == "Qwen/Qwen3-8B"
    assert req["chat_template_kwargs"] == {"enable_thinking": True}
    assert req["thinking_token_budget"] == 512
    assert req["max_tokens"] == 1024
    # vLLM reports no reasoning count: None, for the server's tokenizer to count
    assert (c.input_tokens, c.output_tokens, c.reasoning_tokens) == (18, 42, None)
    assert c.reasoning == "Try primes up to 38: 37 * 41 = 1517."
    call(policy, EASY)
    off = sent(server)
    assert off["chat_template_kwargs"] == {"enable_thinking": False} and "thinking_token_budget" not in off


# -- the chat model the integrations call (ChatLiteLLM with TierRequest.settings as call kwargs) -------------
def test_chat_model_path_sends_claude_thinking_and_reads_usage(server: FakeServer) -> None:
    from effagent.integrations.chat_models import chat_litellm_for
    from effagent.integrations.messages import reply_of

    server.script["/v1/messages"] = [(200, body("anthropic_messages_thinking.json"))]
    policy = policy_for(anthropic_tier(server), budget=2048)
    request = encode(decision(policy, HARD), "t", policy.tier("t"))
    msg = chat_litellm_for(policy.tier("t")).invoke("Is 1517 prime?", **request.settings)
    req = sent(server)
    assert req["thinking"] == {"type": "enabled", "budget_tokens": 2048} and req["max_tokens"] == 3072
    reply = reply_of(msg)  # type: ignore[arg-type]
    assert reply is not None
    assert (reply.input_tokens, reply.output_tokens) == (46, 212)
    assert 0 < reply.reasoning_tokens < 212 and "37 * 41" in reply.reasoning


def test_chat_model_path_reads_gemini_thought_tokens(server: FakeServer) -> None:
    from effagent.integrations.chat_models import chat_litellm_for
    from effagent.integrations.messages import reply_of

    path = "/models/gemini-2.5-flash:generateContent"
    server.script[path] = [(200, body("gemini_generate_content_thinking.json"))]
    policy = policy_for(gemini_tier(server), budget=2048)
    request = encode(decision(policy, HARD), "t", policy.tier("t"))
    msg = chat_litellm_for(policy.tier("t")).invoke("Is 1517 prime?", **request.settings)
    assert sent(server)["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 2048
    reply = reply_of(msg)  # type: ignore[arg-type]
    assert reply is not None
    assert (reply.input_tokens, reply.output_tokens, reply.reasoning_tokens) == (11, 552, 537)

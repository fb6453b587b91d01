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
                           output_tokens=c.output_tokens, reasoning_tokens=c.reasoning_tokens or 0,
                           reasoning_estimated=c.reasoning_estimated)


def one_band(tier: str, band: str) -> Policy:
    """One tier ``t`` and one band (``band``: the band's own fields), so that explain decides what the call does."""
    return parse_policy(f"""
tiers:
  t: {tier}
bands:
  - {{name: all, min: 0.0, max: 1.0, tier: t, max_tokens: 1024, {band}}}
telemetry: {{enabled: false}}
""", env={})


def call_and_explain(policy: Policy, server: FakeServer) -> tuple[Completion, dict[str, Any]]:
    """Call the tier through litellm (the stand-in server records what arrives), and check that
    ``effagent explain``'s ``wire`` is exactly that request: same path, same body."""
    from urllib.parse import urlsplit

    from effagent.tools.explain import explain

    c = call(policy, HARD)
    req = sent(server)
    wire = explain(policy, PROMPT[0]["content"])["wire"]
    assert "error" not in wire, wire
    url = urlsplit(wire["url"])
    assert url.path + (f"?{url.query}" if url.query else "") == req["path"]
    assert wire["body"] == {k: v for k, v in req.items() if k != "path"}
    assert "test-key" not in json.dumps(wire)  # credentials masked
    return c, req


# -- Anthropic ------------------------------------------------------------------------------------------------
def anthropic_tier(server: FakeServer, model: str = "anthropic/claude-sonnet-4-5", price: bool = True,
                   **thinking: Any) -> str:
    extra = "".join(f", {k}: {v}" for k, v in thinking.items())
    priced = "price: {input_per_mtok: 3.0, output_per_mtok: 15.0}, " if price else ""
    return (f"{{model: {model}, api_base: '{root(server)}', api_key: test-key, retries: 0, {priced}"
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
    assert rec.usage.cost_usd == pytest.approx((46 * 3.0 + 212 * 15.0) / 1e6)  # the tier's price: $3 / $15


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
                        "price: {input_per_mtok: 3.3, output_per_mtok: 16.5}, thinking: {control: auto}}",
                        budget=2048)
    assert policy.tier("t").thinking.control == "anthropic"
    c = call(policy, HARD)
    req = sent(server)
    assert req["path"] == path
    assert req["additionalModelRequestFields"]["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert req["inferenceConfig"]["maxTokens"] == 3072
    assert (c.input_tokens, c.output_tokens) == (46, 190)
    assert c.reasoning_tokens is not None and 0 < c.reasoning_tokens < 190 and c.reasoning_estimated
    rec = ledger_record(policy, c)
    assert rec.usage.cost_usd == pytest.approx((46 * 3.3 + 190 * 16.5) / 1e6)  # the tier's price for this id


# -- Gemini -----------------------------------------------------------------------------------------------------
def gemini_tier(server: FakeServer, model: str = "gemini/gemini-2.5-flash") -> str:
    return (f"{{model: {model}, api_base: '{root(server)}', api_key: test-key, retries: 0, max_tokens: 8192, "
            "price: {input_per_mtok: 0.3, output_per_mtok: 2.5}, thinking: {control: auto}}")


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


def test_gemini_3_pro_gets_a_level_it_takes(server: FakeServer) -> None:
    path = "/models/gemini-3-pro-preview:generateContent"
    server.script[path] = [(200, body("gemini_generate_content_thinking.json"))]
    policy = policy_for(gemini_tier(server, "gemini/gemini-3-pro-preview"), budget=2048)
    assert policy.tier("t").thinking.control == "gemini_levels"
    call(policy, HARD)
    # Gemini 3 Pro takes low and high only: 2048 maps to the nearest level at or above it that Pro takes
    assert sent(server)["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "high", "includeThoughts": True}
    call(policy, EASY)  # Gemini 3 cannot switch thinking off: off is its lowest level, thoughts not returned
    assert sent(server)["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "low", "includeThoughts": False}
    for band in ("thinking: true, effort: low", "thinking: false"):
        call_and_explain(one_band(gemini_tier(server, "gemini/gemini-3-pro-preview"), band), server)


def test_gemini_3_flash_takes_minimal_and_medium(server: FakeServer) -> None:
    path = "/models/gemini-3-flash-preview:generateContent"
    server.script[path] = [(200, body("gemini_generate_content_thinking.json"))]
    tier = gemini_tier(server, "gemini/gemini-3-flash-preview")
    _, req = call_and_explain(one_band(tier, "thinking: true, thinking_budget: 2048"), server)
    assert req["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "medium", "includeThoughts": True}
    _, req = call_and_explain(one_band(tier, "thinking: true, effort: minimal"), server)
    assert req["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "minimal", "includeThoughts": True}
    _, req = call_and_explain(one_band(tier, "thinking: false"), server)
    assert req["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "minimal", "includeThoughts": False}


def test_gemini_25_pro_budget_and_least_budget_for_off(server: FakeServer) -> None:
    path = "/models/gemini-2.5-pro:generateContent"
    server.script[path] = [(200, body("gemini_generate_content_thinking.json"))]
    tier = gemini_tier(server, "gemini/gemini-2.5-pro")
    _, req = call_and_explain(one_band(tier, "thinking: true, thinking_budget: 4096"), server)
    assert req["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 4096}
    _, req = call_and_explain(one_band(tier, "thinking: false"), server)
    assert req["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 128  # 2.5 Pro cannot stop thinking


# -- OpenAI -----------------------------------------------------------------------------------------------------
def test_openai_effort_level_from_budget_on_the_wire(server: FakeServer) -> None:
    server.script["/v1/chat/completions"] = [(200, body("openai_chat_completion_reasoning.json"))]
    policy = policy_for(f"{{model: openai/gpt-5-mini, api_base: '{server.base_url}', api_key: test-key, "
                        "retries: 0, max_tokens: 8192, price: {input_per_mtok: 0.25, output_per_mtok: 2.0}, "
                        "thinking: {control: auto}}", budget=4096)
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
    for band in ("thinking: true, thinking_budget: 4096", "thinking: false"):
        call_and_explain(one_band(policy_tier(policy), band), server)


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
    from effagent.integrations.messages import reply_of
    from effagent.integrations.tier_models import chat_litellm_for

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
    from effagent.integrations.messages import reply_of
    from effagent.integrations.tier_models import chat_litellm_for

    path = "/models/gemini-2.5-flash:generateContent"
    server.script[path] = [(200, body("gemini_generate_content_thinking.json"))]
    policy = policy_for(gemini_tier(server), budget=2048)
    request = encode(decision(policy, HARD), "t", policy.tier("t"))
    msg = chat_litellm_for(policy.tier("t")).invoke("Is 1517 prime?", **request.settings)
    assert sent(server)["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 2048
    reply = reply_of(msg)  # type: ignore[arg-type]
    assert reply is not None
    assert (reply.input_tokens, reply.output_tokens, reply.reasoning_tokens) == (11, 552, 537)


def policy_tier(policy: Policy) -> str:
    """Tier ``t`` of ``policy`` written back as a YAML flow mapping (for :func:`one_band`)."""
    t = policy.tier("t")
    data = t.model_dump(mode="json", exclude={"price_source", "thinking"}, exclude_defaults=True)
    data["api_key"] = "test-key"
    data["price"] = t.price.model_dump(mode="json")
    data["thinking"] = {"control": t.thinking.control}
    return json.dumps(data)


# -- the explain wire of the families above ------------------------------------------------------------------
def test_explain_wire_is_what_claude_45_bedrock_gemini_25_and_vllm_receive(server: FakeServer,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    server.script["/v1/messages"] = [(200, body("anthropic_messages_thinking.json"))]
    _, req = call_and_explain(one_band(anthropic_tier(server), "thinking: true, thinking_budget: 2048"), server)
    assert req["thinking"] == {"type": "enabled", "budget_tokens": 2048}  # Claude 4.5: a manual budget
    path = "/models/gemini-2.5-flash:generateContent"
    server.script[path] = [(200, body("gemini_generate_content_thinking.json"))]
    call_and_explain(one_band(gemini_tier(server), "thinking: true, thinking_budget: 2048"), server)
    server.script["/v1/chat/completions"] = [(200, body("vllm_chat_completion_reasoning.json"))]
    vllm = (f"{{model: hosted_vllm/Qwen/Qwen3-8B, api_base: '{server.base_url}', retries: 0, max_tokens: 2048, "
            "thinking: {control: auto}}")
    _, req = call_and_explain(one_band(vllm, "thinking: true, thinking_budget: 512"), server)
    assert req["thinking_token_budget"] == 512
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_REGION_NAME", "us-east-1")
    model = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    server.script["/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"] = [
        (200, body("bedrock_converse_reasoning.json"))]
    bedrock = (f"{{model: 'bedrock/{model}', api_base: '{root(server)}', retries: 0, max_tokens: 8192, "
               "price: {input_per_mtok: 3.3, output_per_mtok: 16.5}, thinking: {control: auto}}")
    _, req = call_and_explain(one_band(bedrock, "thinking: true, thinking_budget: 2048"), server)
    assert req["additionalModelRequestFields"]["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    wire = __import__("effagent.tools.explain", fromlist=["explain"]).explain(
        one_band(bedrock, "thinking: true, thinking_budget: 2048"), PROMPT[0]["content"])["wire"]
    assert wire["headers"]["authorization"] == "[REDACTED]"  # the SigV4 signature is not printed


# -- Claude 4.6+: adaptive thinking with an effort level -----------------------------------------------------
@pytest.mark.parametrize("model", ["anthropic/claude-opus-4-6", "anthropic/claude-opus-4-7"])
def test_claude_46_and_47_think_adaptively_with_an_effort(server: FakeServer, model: str) -> None:
    server.script["/v1/messages"] = [(200, body("anthropic_messages_adaptive_summarized.json"))]
    c, req = call_and_explain(one_band(anthropic_tier(server, model), "thinking: true, thinking_budget: 2048"),
                              server)
    # no manual budget_tokens: adaptive thinking, the budget as its nearest level, a summary so thinking shows
    assert req["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert req["output_config"] == {"effort": "medium"}
    assert req["max_tokens"] == 1024  # no raise: adaptive thinking has no budget_tokens < max_tokens rule
    _, req = call_and_explain(one_band(anthropic_tier(server, model), "thinking: true, effort: high"), server)
    assert req["output_config"] == {"effort": "high"}
    _, req = call_and_explain(one_band(anthropic_tier(server, model), "thinking: false"), server)
    assert "thinking" not in req and "output_config" not in req  # does not think by default: nothing to switch off
    d = one_band(anthropic_tier(server, model), "thinking: true, thinking_budget: 2048")
    req_ = encode(decision(d, HARD), "t", d.tier("t"))
    assert (req_.effort, req_.enforcement) == ("medium", "none") and "output_config.effort medium" in req_.notes[0]


def test_claude_46_takes_a_manual_budget_when_asked(server: FakeServer) -> None:
    server.script["/v1/messages"] = [(200, body("anthropic_messages_thinking.json"))]
    tier = anthropic_tier(server, "anthropic/claude-opus-4-6", manual_budget="true")
    _, req = call_and_explain(one_band(tier, "thinking: true, thinking_budget: 2048"), server)
    assert req["thinking"] == {"type": "enabled", "budget_tokens": 2048} and req["max_tokens"] == 3072


def test_sonnet_5_thinking_off_sends_the_off_switch(server: FakeServer) -> None:
    server.script["/v1/messages"] = [(200, body("anthropic_messages_no_thinking.json"))]
    c, req = call_and_explain(one_band(anthropic_tier(server, "anthropic/claude-sonnet-5"), "thinking: false"),
                              server)
    assert req["thinking"] == {"type": "disabled"}  # Sonnet 5 thinks by default: off must be said
    assert c.reasoning_tokens in (None, 0)


@pytest.mark.parametrize("fixture", ["anthropic_messages_adaptive_summarized.json",
                                     "anthropic_messages_adaptive_omitted.json"])
def test_claude_reasoning_tokens_are_what_was_billed(server: FakeServer, fixture: str) -> None:
    server.script["/v1/messages"] = [(200, body(fixture))]
    policy = one_band(anthropic_tier(server, "anthropic/claude-opus-4-7"), "thinking: true, effort: high")
    c = call(policy, HARD)
    assert c.output_tokens == 900
    visible = __import__("effagent.llm.billed", fromlist=["x"]).visible_tokens(c.model, c.content)
    assert 0 < visible < 20
    # the billed thinking (output less the visible answer), not the 28-token summary nor 0 for an empty block
    assert c.reasoning_tokens == 900 - visible and c.reasoning_estimated
    rec = ledger_record(policy, c)
    assert rec.usage.reasoning_tokens == 900 - visible and rec.reasoning_estimated
    assert rec.usage.cost_usd == pytest.approx((46 * 3.0 + 900 * 15.0) / 1e6)


def test_an_anthropic_tier_with_an_api_base_and_no_price_costs_nothing(server: FakeServer) -> None:
    server.script["/v1/messages"] = [(200, body("anthropic_messages_thinking.json"))]
    policy = one_band(anthropic_tier(server, price=False), "thinking: false")
    assert policy.tier("t").price_source == "policy" and policy.tier("t").price.output_per_mtok == 0
    c = call(policy, HARD)
    assert ledger_record(policy, c).usage.cost_usd == 0  # self-hosted (docs/providers.md): priced only if given


# -- OpenAI: each model's own effort values ---------------------------------------------------------------------
def openai_tier(server: FakeServer, model: str) -> str:
    return (f"{{model: openai/{model}, api_base: '{server.base_url}', api_key: test-key, retries: 0, "
            "max_tokens: 8192, price: {input_per_mtok: 1.0, output_per_mtok: 8.0}, thinking: {control: auto}}")


@pytest.mark.parametrize(("model", "band", "effort"), [
    ("gpt-5.1", "thinking: false", "none"),
    ("gpt-5.1", "thinking: true, thinking_budget: 8192", "high"),  # 5.1 has no xhigh
    ("gpt-5.2", "thinking: true, thinking_budget: 8192", "xhigh"),
    ("gpt-5-pro", "thinking: true, thinking_budget: 1024", "high"),  # gpt-5-pro takes only high
    ("gpt-5.2-pro", "thinking: true, thinking_budget: 1024", "medium"),  # its least
    ("o3", "thinking: false", "low"),  # o-series cannot stop reasoning
    ("o3", "thinking: true, effort: high", "high"),
])
def test_openai_effort_each_model_takes(server: FakeServer, model: str, band: str, effort: str) -> None:
    server.script["/v1/chat/completions"] = [(200, body("openai_chat_completion_reasoning.json"))]
    server.script["/v1/responses"] = [(200, body("openai_responses_reasoning.json"))]  # litellm's route for pro
    c, req = call_and_explain(one_band(openai_tier(server, model), band), server)
    sent_effort = req["reasoning"]["effort"] if req["path"] == "/v1/responses" else req["reasoning_effort"]
    assert req["model"] == model and sent_effort == effort
    assert c.reasoning_tokens == 320 and not c.reasoning_estimated


# -- DeepSeek ------------------------------------------------------------------------------------------------
def test_deepseek_thinking_type_and_effort(server: FakeServer) -> None:
    server.script["/v1/chat/completions"] = [(200, body("deepseek_chat_completion_thinking.json"))]
    tier = (f"{{model: deepseek/deepseek-v4-pro, api_base: '{server.base_url}', api_key: test-key, retries: 0, "
            "max_tokens: 8192, price: {input_per_mtok: 0.5, output_per_mtok: 2.0}, thinking: {control: auto}}")
    c, req = call_and_explain(one_band(tier, "thinking: true, effort: max"), server)
    assert req["thinking"] == {"type": "enabled"} and req["reasoning_effort"] == "max"
    assert (c.output_tokens, c.reasoning_tokens, c.reasoning_estimated) == (310, 296, False)
    _, req = call_and_explain(one_band(tier, "thinking: true, thinking_budget: 2048"), server)
    assert req["reasoning_effort"] == "high"  # DeepSeek takes high and max
    _, req = call_and_explain(one_band(tier, "thinking: false"), server)
    assert req["thinking"] == {"type": "disabled"} and "reasoning_effort" not in req

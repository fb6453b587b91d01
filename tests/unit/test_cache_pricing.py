"""True cost: prompt-cache reads and writes, long-context rates and reasoning are billed as the provider bills
them. Usage bodies in each provider's documented shape go through the path a user has -- litellm turns the
provider's usage into its ``Usage``, ChatLiteLLM turns that into the AIMessage's ``usage_metadata``, effagent's
middleware records the call -- and the ledger's $ must equal litellm's own cost for the same usage."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from pydantic import Field

from effagent import InMemoryLedger, parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.llm.client import Completion, _parse
from effagent.policy import Price, table_price
from effagent.telemetry.pricing import call_cost
from tests.fakes import FakeTierModel
from tests.fakes.completions import FakeEndpoint

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map
import litellm
from langchain_litellm import ChatLiteLLM
from langchain_litellm.chat_models.litellm import _create_usage_metadata
from litellm.llms.anthropic.chat.transformation import AnthropicConfig
from litellm.llms.bedrock.chat.converse_transformation import AmazonConverseConfig
from litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini import VertexGeminiConfig

BEDROCK_SONNET = "bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0"


# -- provider usage bodies, as each provider documents them, turned into litellm's Usage by litellm itself ---------
def anthropic_usage(uncached: int, read: int, write: int, output: int) -> Any:
    """Anthropic Messages API: input_tokens excludes the cache; cache_read/cache_creation_input_tokens."""
    raw = {"input_tokens": uncached, "cache_read_input_tokens": read, "cache_creation_input_tokens": write,
           "output_tokens": output}
    return AnthropicConfig().calculate_usage(raw, reasoning_content=None)


def openai_usage(prompt: int, cached: int, output: int, reasoning: int = 0) -> Any:
    """OpenAI Chat Completions: prompt_tokens includes prompt_tokens_details.cached_tokens."""
    raw: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
                           "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0}}
    if reasoning:
        raw["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return litellm.Usage(**raw)


def gemini_usage(prompt: int, cached: int, candidates: int, thoughts: int = 0) -> Any:
    """Gemini generateContent usageMetadata: cachedContentTokenCount is part of promptTokenCount."""
    meta = {"promptTokenCount": prompt, "cachedContentTokenCount": cached, "candidatesTokenCount": candidates,
            "thoughtsTokenCount": thoughts, "totalTokenCount": prompt + candidates + thoughts}
    return VertexGeminiConfig._calculate_usage({"usageMetadata": meta})


def bedrock_usage(uncached: int, read: int, write: int, output: int) -> Any:
    """Bedrock Converse (Claude): inputTokens excludes cacheReadInputTokens / cacheWriteInputTokens."""
    raw = {"inputTokens": uncached, "outputTokens": output, "totalTokens": uncached + read + write + output,
           "cacheReadInputTokens": read, "cacheWriteInputTokens": write}
    return AmazonConverseConfig().transform_usage(raw)


def response(model: str, usage: Any, content: str = "done") -> Any:
    return litellm.ModelResponse(model=model.split("/")[-1], usage=usage, choices=[
        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}])


def litellm_cost(model: str, resp: Any) -> float:
    """litellm's own cost of a response."""
    return litellm.completion_cost(completion_response=copy.deepcopy(resp), model=model)


class ReplayedLiteLLM(ChatLiteLLM):
    """The real ChatLiteLLM, its network call replaced by a recorded litellm response (one per call, cycled)."""

    replies: list[Any] = Field(default_factory=list)
    sent: int = 0

    def completion_with_retry(self, run_manager: Any = None, **kwargs: Any) -> Any:
        reply = self.replies[self.sent % len(self.replies)]
        self.sent += 1
        return copy.deepcopy(reply)


def one_tier_policy(tier_yaml: str) -> Any:
    return parse_policy(f"tiers:\n  t: {tier_yaml}\nbands:\n  - {{name: all, min: 0, max: 1, tier: t}}\n", env={})


def run_agent(policy: Any, model: Any, prompt: str = "Summarise the design doc.", tools: Any = ()) -> Any:
    ledger = InMemoryLedger()
    mw = EfficiencyMiddleware(policy, models={"t": model}, ledger=ledger)
    out = create_agent(mw.default_model, tools=list(tools), middleware=[mw]).invoke(
        {"messages": [HumanMessage(prompt)]})
    return out, ledger


CASES = {
    "anthropic cache read + write": ("anthropic/claude-sonnet-4-5", anthropic_usage(1200, 20000, 1500, 400)),
    "anthropic cache write only": ("anthropic/claude-sonnet-4-5", anthropic_usage(300, 0, 21000, 250)),
    "openai gpt-4o cached tokens": ("openai/gpt-4o", openai_usage(21200, 20000, 400)),
    "openai gpt-5-mini cached + reasoning": ("openai/gpt-5-mini", openai_usage(21200, 20480, 900, reasoning=640)),
    "gemini 2.5 flash cached content + thoughts": ("gemini/gemini-2.5-flash", gemini_usage(21200, 20000, 150, 250)),
    "gemini 2.5 pro above 200k tokens": ("gemini/gemini-2.5-pro", gemini_usage(250_000, 200_000, 300, 700)),
    "bedrock claude cache read + write": (BEDROCK_SONNET, bedrock_usage(1200, 20000, 1500, 400)),
    "bedrock claude above 200k tokens": (BEDROCK_SONNET, bedrock_usage(210_000, 30000, 2000, 500)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_ledger_charges_what_litellm_charges_for_each_providers_cached_usage(case):
    model, usage = CASES[case]
    resp = response(model, usage)
    policy = one_tier_policy(f"{{model: {model}, max_tokens: 2000}}")
    assert policy.tiers["t"].price_source == "litellm"
    out, ledger = run_agent(policy, ReplayedLiteLLM(model=model, api_key="unused", replies=[resp]))
    assert out["messages"][-1].content == "done"
    [rec] = ledger.records()
    expected = litellm_cost(model, resp)
    assert rec.usage.cost_usd == pytest.approx(expected, abs=1e-9, rel=0)
    # the record keeps the counts the provider reported, the cached parts inside the input
    assert rec.usage.input_tokens == usage.prompt_tokens
    assert rec.usage.cache_read_tokens == (usage.prompt_tokens_details.cached_tokens or 0)
    assert rec.usage.cache_write_tokens == (getattr(usage, "cache_creation_input_tokens", None) or 0)
    # a prompt cache makes it cheaper than the uncached worst case a reservation holds, never dearer
    assert expected <= policy.tiers["t"].price.max_cost(rec.usage.input_tokens, rec.usage.output_tokens) + 1e-12


def test_a_step_with_20000_cache_read_tokens_is_not_charged_as_20000_full_price_tokens():
    """The issue's example: an agent re-sends its conversation, Anthropic serves 20,000 tokens of it from cache."""
    model = "anthropic/claude-sonnet-4-5"
    resp = response(model, anthropic_usage(800, 20000, 0, 300))
    policy = one_tier_policy(f"{{model: {model}, max_tokens: 2000}}")
    _, ledger = run_agent(policy, ReplayedLiteLLM(model=model, api_key="unused", replies=[resp]))
    [rec] = ledger.records()
    full_rate = policy.tiers["t"].price.cost(rec.usage.input_tokens, rec.usage.output_tokens)  # the old charge
    assert rec.usage.cost_usd == pytest.approx(litellm_cost(model, resp), abs=1e-9, rel=0)
    assert rec.usage.cost_usd < full_rate / 2
    # a budget counts tokens as before: cached tokens are input tokens
    assert ledger.run_usage(rec.run_id).total_tokens == 20800 + 300


def test_every_step_of_a_tool_using_agent_is_priced_with_its_own_cache_counts():
    model = "anthropic/claude-sonnet-4-5"

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return "value"

    first = response(model, anthropic_usage(900, 0, 18000, 60))
    first.choices[0].message.content = ""
    first.choices[0].message.tool_calls = [{"id": "c1", "type": "function",
                                            "function": {"name": "lookup", "arguments": '{"key": "a"}'}}]
    second = response(model, anthropic_usage(200, 18000, 900, 120), content="The value is value.")
    chat = ReplayedLiteLLM(model=model, api_key="unused", replies=[first, second])
    policy = one_tier_policy(f"{{model: {model}, max_tokens: 2000}}")
    out, ledger = run_agent(policy, chat, tools=[lookup])
    assert out["messages"][-1].content == "The value is value."
    recs = ledger.records()
    assert [(r.usage.cache_read_tokens, r.usage.cache_write_tokens) for r in recs] == [(0, 18000), (18000, 900)]
    for rec, resp in zip(recs, (first, second), strict=True):
        assert rec.usage.cost_usd == pytest.approx(litellm_cost(model, resp), abs=1e-9, rel=0)
    assert ledger.run_usage(recs[0].run_id).cache_read_tokens == 18000


@pytest.mark.parametrize("shape", ["anthropic", "openai"])
def test_a_policy_price_with_cache_rates_bills_like_litellms_custom_pricing(shape):
    price = {"input_per_mtok": 2.0, "output_per_mtok": 8.0, "cache_read_per_mtok": 0.2, "cache_write_per_mtok": 2.5}
    if shape == "anthropic":
        usage, uncached = anthropic_usage(700, 16000, 3000, 500), 700
    else:
        usage, uncached = openai_usage(19700, 16000, 500), 19700
    msg = AIMessage(content="done", usage_metadata=_create_usage_metadata(usage))  # what ChatLiteLLM reports
    fake = FakeTierModel(tier="t", script=[msg])
    policy = one_tier_policy(f"{{model: openai/acme-large, price: {price}, max_tokens: 2000}}")
    assert policy.tiers["t"].price_source == "policy"
    _, ledger = run_agent(policy, fake)
    [rec] = ledger.records()
    custom = {"input_cost_per_token": price["input_per_mtok"] / 1e6,
              "output_cost_per_token": price["output_per_mtok"] / 1e6,
              "cache_read_input_token_cost": price["cache_read_per_mtok"] / 1e6,
              "cache_creation_input_token_cost": price["cache_write_per_mtok"] / 1e6}
    # litellm's custom pricing reads Anthropic-style usage with prompt_tokens excluding the cache (as Anthropic sends)
    prompt, completion = litellm.cost_per_token(model="acme-large", prompt_tokens=uncached,
                                                completion_tokens=usage.completion_tokens,
                                                usage_object=usage, custom_cost_per_token=custom)
    assert rec.usage.cost_usd == pytest.approx(prompt + completion, abs=1e-9, rel=0)
    assert rec.usage.cache_read_tokens == 16000


def test_a_policy_price_without_cache_rates_bills_cached_tokens_at_the_input_rate():
    p = Price(input_per_mtok=1.0, output_per_mtok=4.0)
    assert p.cost(10_000, 100, cache_read_tokens=9_000, cache_write_tokens=500) == p.cost(10_000, 100)
    cached = Price(input_per_mtok=1.0, output_per_mtok=4.0, cache_read_per_mtok=0.1, cache_write_per_mtok=1.25)
    assert cached.cost(10_000, 100, 9_000, 500) < cached.cost(10_000, 100) <= cached.max_cost(10_000, 100)
    # cache counts beyond the prompt are not believed: never a negative uncached part
    assert cached.cost(100, 0, cache_read_tokens=10**6) == cached.cost(100, 0, cache_read_tokens=100)


def test_the_table_price_a_reservation_counts_on_covers_long_prompts_and_cache_writes():
    """Gemini 2.5 Pro bills prompts above 200k tokens at higher rates: the price shows the base rates, the
    worst case a reservation holds uses the higher ones, and a fallback bill matches litellm's."""
    entry = litellm.model_cost["gemini/gemini-2.5-pro"]
    price = table_price("gemini/gemini-2.5-pro")
    assert price is not None
    assert price.input_per_mtok == pytest.approx(entry["input_cost_per_token"] * 1e6)
    assert price.long_context_above == 200_000
    assert price.long_context_input_per_mtok == pytest.approx(entry["input_cost_per_token_above_200k_tokens"] * 1e6)
    assert price.long_context_output_per_mtok == pytest.approx(entry["output_cost_per_token_above_200k_tokens"] * 1e6)
    for prompt, cached in ((400_000, 0), (250_000, 200_000), (20_000, 15_000)):
        usage = gemini_usage(prompt, cached, 1000)
        real = litellm_cost("gemini/gemini-2.5-pro", response("gemini/gemini-2.5-pro", usage))
        assert price.cost(prompt, 1000, cache_read_tokens=cached) == pytest.approx(real, abs=1e-9, rel=0)
        assert real <= price.max_cost(prompt, 1000) + 1e-12
    # a short prompt is still reserved at the long-context rates: the size is not known for sure before the call
    assert price.max_cost(1000, 100) == pytest.approx(
        (1000 * price.long_context_input_per_mtok + 100 * price.long_context_output_per_mtok) / 1e6)
    # Anthropic: a cache write costs more than plain input, so the worst case is not "all uncached"
    sonnet = table_price("anthropic/claude-sonnet-4-5")
    assert sonnet is not None and sonnet.cache_write_per_mtok is not None
    assert sonnet.cache_write_per_mtok > sonnet.input_per_mtok
    writes = litellm_cost("anthropic/claude-sonnet-4-5",
                          response("anthropic/claude-sonnet-4-5", anthropic_usage(0, 0, 30000, 100)))
    assert sonnet.cost(30000, 100) < writes <= sonnet.max_cost(30000, 100) + 1e-12


def test_long_context_rates_need_the_prompt_length_they_start_at():
    from effagent.errors import PolicyError

    with pytest.raises(PolicyError, match="long_context_above"):
        one_tier_policy("{model: openai/acme, price: {input_per_mtok: 1, long_context_input_per_mtok: 2}}")


def test_the_client_path_reads_cached_tokens_from_each_providers_response():
    cases = [("anthropic/claude-sonnet-4-5", anthropic_usage(1200, 20000, 1500, 400), 20000, 1500),
             ("openai/gpt-4o", openai_usage(21200, 20000, 400), 20000, 0),
             ("gemini/gemini-2.5-flash", gemini_usage(21200, 20000, 150, 250), 20000, 0),
             (BEDROCK_SONNET, bedrock_usage(1200, 20000, 1500, 400), 20000, 1500)]
    for model, usage, read, write in cases:
        [c] = _parse(response(model, usage))
        assert (c.input_tokens, c.cache_read_tokens, c.cache_write_tokens) == (usage.prompt_tokens, read, write)
        tier = one_tier_policy(f"{{model: {model}}}").tiers["t"]
        got = call_cost(tier, c.input_tokens, c.output_tokens, cache_read_tokens=c.cache_read_tokens,
                        cache_write_tokens=c.cache_write_tokens, reasoning_tokens=c.reasoning_tokens or 0)
        assert got.total_usd == pytest.approx(litellm_cost(model, response(model, usage)), abs=1e-9, rel=0)


def test_early_exit_calls_are_priced_with_the_cache_counts_the_server_reported():
    """Early exit calls the tier's server itself (continuing the turn chunk by chunk): every one of those calls
    re-sends the prompt, a prefix-caching server reports it as cached, and each record is priced with that."""
    endpoint = FakeEndpoint()

    def cached_endpoint(tier, messages, **kw):
        out: list[Completion] = endpoint(tier, messages, **kw)
        return [c.model_copy(update={"cache_read_tokens": c.input_tokens - 3}) for c in out]

    policy = parse_policy("""\
tiers:
  think:
    model: hosted_vllm/thinker
    api_base: http://127.0.0.1:9/v1
    price: {input_per_mtok: 1, output_per_mtok: 2, cache_read_per_mtok: 0.1}
    thinking: {control: chat_template_kwargs}
    max_tokens: 512
bands:
  - {name: all, min: 0, max: 1, tier: think, thinking: true, thinking_budget: 200,
     early_exit: {chunk: 8, agree: 2, probe_tokens: 4}}
""", env={})
    mw = EfficiencyMiddleware(policy, models={"think": FakeTierModel(tier="think")})
    mw.procedure.complete_fn = cached_endpoint
    out = create_agent(mw.default_model, tools=[], middleware=[mw]).invoke(
        {"messages": [HumanMessage("What is 6 * 7?")]})
    assert out["messages"][-1].content == "The answer is 42."
    recs = mw.ledger.records()
    assert len(recs) > 2
    price = policy.tiers["think"].price
    for r in recs:
        assert r.usage.cache_read_tokens == r.usage.input_tokens - 3
        assert r.usage.cost_usd == pytest.approx(
            price.cost(r.usage.input_tokens, r.usage.output_tokens, r.usage.cache_read_tokens), abs=1e-12)
    assert out["messages"][-1].usage_metadata["input_token_details"]["cache_read"] == sum(
        r.usage.cache_read_tokens for r in recs)


def test_traces_and_the_report_show_the_cached_tokens(tmp_path, monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from effagent.telemetry import OTelObserver
    from effagent.telemetry.exporters import JsonlFileSpanExporter
    from effagent.tools.report import load, render, summary

    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)  # the suite may turn telemetry off
    model = "anthropic/claude-sonnet-4-5"
    resp = response(model, anthropic_usage(1200, 20000, 1500, 400))
    policy = one_tier_policy(f"{{model: {model}, max_tokens: 2000}}")
    exporter, path = InMemorySpanExporter(), tmp_path / "traces.jsonl"
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tp.add_span_processor(SimpleSpanProcessor(JsonlFileSpanExporter(path)))
    ledger = InMemoryLedger()
    mw = EfficiencyMiddleware(policy, models={"t": ReplayedLiteLLM(model=model, api_key="unused", replies=[resp])},
                              ledger=ledger, observer=OTelObserver(policy, tracer_provider=tp))
    create_agent(mw.default_model, tools=[], middleware=[mw]).invoke({"messages": [HumanMessage("hi")]})
    [rec] = ledger.records()
    [step] = [s for s in exporter.get_finished_spans() if s.attributes.get("effagent.span") == "step"]
    a = step.attributes
    assert a["gen_ai.usage.input_tokens"] == 1200 + 20000 + 1500 == rec.usage.input_tokens
    assert a["gen_ai.usage.cache_read.input_tokens"] == 20000
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 1500
    assert a["effagent.cost.usd"] == pytest.approx(litellm_cost(model, resp), abs=1e-9, rel=0)
    assert a["llm.cost.prompt"] + a["llm.cost.completion"] == pytest.approx(rec.usage.cost_usd, abs=1e-12)
    data = load(path)
    assert summary(data)["cache_read_tokens"] == 20000
    page = render(data)
    assert "cache read" in page and "20,000" in page

"""The second, stronger local tier (Qwen2.5-Coder-0.5B-Instruct) against the real servers: its tool calls come
back as ``tool_calls`` through the server's tool parser, its usage matches its tokenizer, an agent on the shipped
``local-two-tier`` policy routes between the two servers and calls the tool, and a step falls back from one server
to the other when its tier's endpoint fails.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from effagent import InMemoryLedger, policies
from effagent.policy import Policy
from effagent.tools import demo

if TYPE_CHECKING:
    from tests.integration.conftest import VLLMServer

pytestmark = pytest.mark.vllm

CALCULATOR = {"type": "function", "function": {
    "name": "calculator",
    "description": "Evaluate an arithmetic expression such as '17 * 23' or '(16 - 3 - 4) * 2'.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
}}
TOOL_TASK = "Use the calculator tool to multiply 4821 by 377, then tell me the product."
FACT_TASK = "What is the capital of France?"


def _chat(server: VLLMServer, **body: Any) -> dict[str, Any]:
    payload = {"model": "qwen", "temperature": 0, "seed": 0, "max_tokens": 128, **body}
    response = server.client.post(f"{server.base_url}/chat/completions", json=payload)
    assert response.status_code == 200, response.text
    return response.json()


def _policy(small_url: str, strong_url: str, **tier_updates: dict[str, Any]) -> Policy:
    policy = policies.load("local-two-tier", env={"EFFAGENT_VLLM_URL": small_url,
                                                  "EFFAGENT_VLLM_STRONG_URL": strong_url})
    policy = policy.model_copy(update={"telemetry": policy.telemetry.model_copy(update={"enabled": False})})
    if not tier_updates:
        return policy
    data = policy.model_dump()
    for name, update in tier_updates.items():
        data["tiers"][name].update(update)
    return Policy.model_validate(data)


def _agent(policy: Policy, ledger: InMemoryLedger) -> Any:
    from langchain.agents import create_agent

    from effagent.integrations.langchain import EfficiencyMiddleware
    from effagent.integrations.tier_models import models_for

    mw = EfficiencyMiddleware(policy, models=models_for(policy, temperature=0), ledger=ledger)
    return create_agent(mw.default_model, tools=demo.make_tools(demo.load_corpus()), middleware=[mw],
                        system_prompt=demo.SYSTEM)


def test_qwen_serves_under_its_own_name(qwen_server: VLLMServer) -> None:
    assert qwen_server.names == ["qwen"]


def test_qwen_tool_call_comes_back_as_tool_calls_with_usage(qwen_server: VLLMServer) -> None:
    """tool_choice auto: the model writes bare JSON; the server's llama3_json parser returns it as tool_calls."""
    payload = _chat(qwen_server, messages=[{"role": "system", "content": demo.SYSTEM},
                                           {"role": "user", "content": TOOL_TASK}],
                    tools=[CALCULATOR], tool_choice="auto")
    choice = payload["choices"][0]
    calls = choice["message"].get("tool_calls") or []
    assert calls, choice
    assert calls[0]["function"]["name"] == "calculator"
    args = json.loads(calls[0]["function"]["arguments"])
    assert demo.safe_eval(args["expression"]) == 4821 * 377
    assert choice["finish_reason"] == "tool_calls"
    usage = payload["usage"]
    assert usage["prompt_tokens"] > 100  # the tool's schema is in the prompt
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_qwen_usage_counts_the_prompt_with_the_servers_tokenizer(qwen_server: VLLMServer) -> None:
    messages = [{"role": "user", "content": FACT_TASK + " Answer in one word."}]
    payload = _chat(qwen_server, messages=messages, max_tokens=16)
    content = payload["choices"][0]["message"]["content"] or ""
    assert "paris" in content.lower(), content
    tokenized = qwen_server.client.post(f"{qwen_server.root_url}/tokenize",
                                        json={"model": "qwen", "messages": messages, "add_generation_prompt": True})
    tokenized.raise_for_status()
    assert payload["usage"]["prompt_tokens"] == tokenized.json()["count"]
    # the answer's tokens, plus the end-of-turn token when the model stopped by itself
    answer_tokens = qwen_server.tokenize(content, "qwen")
    assert payload["usage"]["completion_tokens"] in (answer_tokens, answer_tokens + 1)


def test_agent_routes_facts_and_restatements_to_the_small_server_and_tool_calls_to_qwen(
    vllm_server: VLLMServer, qwen_server: VLLMServer
) -> None:
    ledger = InMemoryLedger()
    agent = _agent(_policy(vllm_server.base_url, qwen_server.base_url), ledger)
    fact = agent.invoke({"messages": [{"role": "user", "content": FACT_TASK}]}, {"recursion_limit": 12})
    assert [r.tier for r in ledger.records()] == ["small"]
    assert "paris" in str(fact["messages"][-1].content).lower()
    out = agent.invoke({"messages": [{"role": "user", "content": TOOL_TASK}]}, {"recursion_limit": 12})
    tiers = [r.tier for r in ledger.records()][1:]
    # the tool call on Qwen; the step that restates the tool's result (its role) on the small server
    assert tiers[0] == "large" and tiers[-1] == "small" and len(tiers) >= 2, tiers
    tool_results = [m.content for m in out["messages"] if m.type == "tool"]
    assert "1817517" in tool_results, out["messages"]
    assert demo.is_correct(str(out["messages"][-1].content), "1817517"), out["messages"][-1].content
    assert all(r.ok and r.usage.input_tokens > 0 and r.usage.output_tokens > 0 for r in ledger.records())


def test_a_step_falls_back_from_qwen_to_the_small_server_when_qwen_times_out(
    vllm_server: VLLMServer, qwen_server: VLLMServer
) -> None:
    # the large tier's timeout is shorter than any answer of the CPU server: its call fails, the small one answers
    policy = _policy(vllm_server.base_url, qwen_server.base_url, large={"timeout_s": 0.05, "retries": 0})
    ledger = InMemoryLedger()
    out = _agent(policy, ledger).invoke({"messages": [{"role": "user", "content": TOOL_TASK}]},
                                        {"recursion_limit": 12})
    records = ledger.records()
    assert [(r.tier, r.ok) for r in records][:2] == [("large", False), ("small", True)], records
    assert str(out["messages"][-1].content).strip()


def test_a_step_falls_back_from_the_small_server_to_qwen_when_small_refuses(
    vllm_server: VLLMServer, qwen_server: VLLMServer
) -> None:
    # the small server answers 404 for a model name it does not serve; the fallback order goes on to Qwen
    policy = _policy(vllm_server.base_url, qwen_server.base_url, small={"model": "hosted_vllm/no-such-model"})
    policy = Policy.model_validate({**policy.model_dump(), "fallback": {"order": ["small", "large"]}})
    ledger = InMemoryLedger()
    out = _agent(policy, ledger).invoke({"messages": [{"role": "user", "content": FACT_TASK}]},
                                        {"recursion_limit": 12})
    records = ledger.records()
    assert [(r.tier, r.ok) for r in records][:2] == [("small", False), ("large", True)], records
    assert "paris" in str(out["messages"][-1].content).lower()

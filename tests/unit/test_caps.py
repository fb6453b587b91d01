"""A limit is a cap: reservations sized from real token counts, and a thread budget many concurrent runs share
never recorded past its limit, in each ``on_exhausted`` mode (in-memory ledger; the shared Redis one is measured
by ``effagent bench ledger`` and tests/integration)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import litellm
import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage, convert_to_openai_messages

from effagent import BudgetExceeded, InMemoryLedger, parse_policy
from effagent.governor import Governor
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.records import Message, Step
from tests.fakes import FakeTierModel, ai, call
from tests.unit.test_langchain_middleware import calculator

POLICY = """
tiers:
  small: {model: hosted_vllm/small, price: {input_per_mtok: 1, output_per_mtok: 2}, max_tokens: 200}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: small}
budgets:
  thread: {tokens: LIMIT}
  on_exhausted: MODE
telemetry: {enabled: false}
"""

ZH = "这是一个关于预算的中文句子，用于测试分词器的计数。" * 20
JSON = json.dumps([{"id": i, "name": f"item{i}", "price": i * 1.5, "tags": ["a", "b"]} for i in range(40)])


@pytest.mark.parametrize("text", [ZH, JSON], ids=["chinese", "json"])
def test_a_steps_prompt_is_counted_in_real_tokens_not_characters_over_4(text):
    gov = Governor(parse_policy(POLICY.replace("LIMIT", "100000").replace("MODE", "finalize"), env={}),
                   ledger=InMemoryLedger())
    step = Step(messages=[Message(role="user", content="Summarise the tool's result."),
                          Message(role="tool", content=text)])
    real = litellm.token_counter(model="hosted_vllm/small", text=text)
    assert real > 1.5 * (len(text) // 4)  # where chars/4 fell short (tool results)
    assert gov.prompt_tokens(step) >= real


def realistic(calls: list[int], lock: threading.Lock):
    """A fake that bills what a server would: its prompt's tokens, and at most max_tokens of output; it calls the
    calculator until it has seen four results, then answers."""

    def respond(messages, kwargs):
        with lock:
            calls.append(1)
        prompt = litellm.token_counter(model="hosted_vllm/small", messages=convert_to_openai_messages(messages))
        out = min(40, int(kwargs.get("max_tokens") or 40))
        if sum(isinstance(m, ToolMessage) for m in messages) >= 4 or "tool_names" not in kwargs:
            return ai("done", input_tokens=prompt, output_tokens=out)
        return ai("", tool_calls=[call("calculator", {"expression": f"{len(messages)}*2"})], input_tokens=prompt,
                  output_tokens=out)

    return respond


@pytest.mark.parametrize("mode", ["finalize", "error"])
def test_many_concurrent_runs_sharing_a_thread_budget_never_pass_it(mode):
    limit = 6_000
    calls: list[int] = []
    model = FakeTierModel(tier="small", responder=realistic(calls, threading.Lock()))
    mw = EfficiencyMiddleware(parse_policy(POLICY.replace("LIMIT", str(limit)).replace("MODE", mode), env={}),
                              models={"small": model}, ledger=InMemoryLedger())
    agent = create_agent(mw.default_model, tools=[calculator], middleware=[mw])
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            agent.invoke({"messages": [HumanMessage(f"Task {i}: compute with the calculator.")]},
                         {"configurable": {"thread_id": "shared"}})
        except BudgetExceeded as err:
            errors.append(err)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(40)))
    spent = mw.ledger.thread_usage("shared")
    assert spent.total_tokens <= limit
    assert spent.calls == len(calls)  # every call made is recorded once
    assert len(calls) < 40 * 5  # the cap stopped runs (40 runs x 5 steps would pass it)
    if mode == "error":
        assert errors and all(e.scope == "thread" for e in errors)
    else:
        kinds = {r.kind for r in mw.ledger.records()}
        assert "finalize" in kinds or any("halt" in r.reason for r in mw.ledger.records()) or kinds == {"model"}


def test_a_team_budget_on_the_in_memory_ledger_counts_every_call():
    from effagent.ledger import ledger_from_policy

    pol = parse_policy(POLICY.replace("thread: {tokens: LIMIT}", "team: {tokens: 900}").replace("MODE", "finalize")
                       + "ledger: {redis: {team: research}}\n", env={})
    ledger = ledger_from_policy(pol)
    calls: list[int] = []
    model = FakeTierModel(tier="small", responder=realistic(calls, threading.Lock()))
    mw = EfficiencyMiddleware(pol, models={"small": model}, ledger=ledger)
    agent = create_agent(mw.default_model, tools=[calculator], middleware=[mw])
    for i in range(4):
        agent.invoke({"messages": [HumanMessage(f"Task {i}: compute with the calculator.")]})
    team = ledger.scope_usage("team", "research")
    assert 0 < team.total_tokens <= 900 and team.calls == len(calls)

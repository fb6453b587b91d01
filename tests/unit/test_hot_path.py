"""The per-step hot path builds records without re-validation and caches derived values; these tests pin
that the shortcuts give exactly what the validated, uncached code gives."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from effagent import parse_policy
from effagent._trusted import trusted
from effagent.decide import Decision
from effagent.difficulty.base import Difficulty, Message, Step, ToolCall
from effagent.governor import Governor
from effagent.ledger import InMemoryLedger
from effagent.ledger.base import LedgerState, StepRecord, Usage
from effagent.observe import NullObserver

POLICY = """
tiers:
  small: {model: openai/small, price: {input_per_mtok: 1, output_per_mtok: 2}, max_tokens: 256,
          extra_body: {top_k: 20, stop: ["</s>"]}}
  large: {model: openai/large, price: {input_per_mtok: 5, output_per_mtok: 10},
          thinking: {control: chat_template_kwargs, max_budget: 1024}}
bands:
  - {name: easy, min: 0.0, max: 0.5, tier: small}
  - {name: hard, min: 0.5, max: 1.0, tier: large, thinking: true, thinking_budget: 512}
"""


@pytest.mark.parametrize(("cls", "values"), [
    (Usage, {"input_tokens": 3, "output_tokens": 4, "reasoning_tokens": 1, "cost_usd": 0.5, "calls": 1}),
    (Usage, {}),
    (StepRecord, {"run_id": "r", "tier": "small", "model": "m", "usage": Usage(input_tokens=1), "ts": 1.0}),
    (LedgerState, {"run": Usage(calls=2), "steps": 3}),
    (Decision, {"tier": "small", "model": "m", "max_tokens": 10, "signals": {"a": 0.5}, "fallback": ["large"]}),
    (Difficulty, {"score": 0.25, "signals": {"x": 1.0}, "estimator": "heuristic"}),
    (ToolCall, {"name": "lookup", "args": {"q": "x"}}),
    (Message, {"role": "assistant", "content": "hi", "tool_calls": [ToolCall(name="t")]}),
    (Step, {"messages": [Message(role="user", content="q")], "tools": ["t"], "index": 2}),
])
def test_trusted_construction_equals_validated(cls, values):
    fast, slow = trusted(cls, **values), cls(**values)
    assert fast == slow
    assert fast.model_dump() == slow.model_dump()
    assert fast.model_dump_json() == slow.model_dump_json()
    assert repr(fast) == repr(slow)


def test_trusted_defaults_are_fresh_objects():
    a, b = trusted(Decision, tier="t", model="m", max_tokens=1), trusted(Decision, tier="t", model="m", max_tokens=1)
    a.signals["x"] = 1.0
    assert b.signals == {}


def test_usage_addition_keeps_validated_semantics():
    total = Usage(input_tokens=1, cost_usd=0.25, calls=1) + Usage(output_tokens=2, reasoning_tokens=1, calls=1)
    assert total == Usage(input_tokens=1, output_tokens=2, reasoning_tokens=1, cost_usd=0.25, calls=2)
    assert total.total_tokens == 3


def test_tool_call_key_is_cached_but_not_part_of_equality():
    a, b = ToolCall(name="f", args={"y": 1, "x": [1, 2]}), ToolCall(name="f", args={"x": [1, 2], "y": 1})
    assert a.key == b.key == 'f{"x": [1, 2], "y": 1}'
    assert a == ToolCall(name="f", args={"x": [1, 2], "y": 1})  # b's key was never computed
    assert a != ToolCall(name="f", args={"x": [1, 2], "y": 2})


def test_settings_are_cached_but_every_caller_gets_its_own_copy():
    gov = Governor(parse_policy(POLICY, env={}), ledger=InMemoryLedger(), observer=NullObserver())
    hard = gov.plan(Step.from_prompt("prove " * 300), "run")
    first = gov.settings(hard)
    assert first["extra_body"]["chat_template_kwargs"] == {"enable_thinking": True}
    first["extra_body"]["chat_template_kwargs"]["enable_thinking"] = False  # a caller changes its copy
    first["max_tokens"] = 1
    again = gov.settings(hard)
    assert again["extra_body"]["chat_template_kwargs"] == {"enable_thinking": True}
    assert again["max_tokens"] != 1
    small = gov.settings(hard, "small")  # a fallback tier: its own extra_body, thinking not requested
    small["extra_body"]["stop"].append("X")
    assert gov.settings(hard, "small")["extra_body"]["stop"] == ["</s>"]


def test_thread_usage_written_by_a_step_is_read_back_and_a_tampered_state_is_still_validated():
    from effagent.integrations._lc import thread_usage_for_state, thread_usage_from_state

    total = Usage(input_tokens=10, output_tokens=5, cost_usd=0.01, calls=2)
    raw = thread_usage_for_state(total)
    assert raw == total.model_dump()
    assert thread_usage_from_state({"k": raw}, "k") == total
    assert thread_usage_from_state({"k": dict(raw, input_tokens=11)}, "k").input_tokens == 11  # a new dict
    with pytest.raises(ValidationError):
        thread_usage_from_state({"k": dict(raw, input_tokens=-5)}, "k")


def test_a_runs_history_is_converted_incrementally_and_rebuilt_when_it_was_rewritten():
    from effagent.integrations._lc import MessageCache, to_message, to_step
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    h = HumanMessage("What is 6 * 7?", id="h1")
    a = AIMessage("", id="a1", tool_calls=[{"name": "calc", "args": {"x": "6*7"}, "id": "c1", "type": "tool_call"}])
    t = ToolMessage("42", tool_call_id="c1", id="t1")
    cache = MessageCache()
    first = to_step([h], cache=cache, run_id="r")
    grown = to_step([h, a, t], cache=cache, run_id="r")
    assert grown.messages[0] is first.messages[0]  # the prefix was reused
    assert grown.messages == [to_message(m) for m in (h, a, t)]
    # a middleware rewrote the history (e.g. summarised it): the new list is converted as it is
    summary = HumanMessage("Summary: the user asked for 6 * 7; calc said 42.", id="s1")
    rewritten = to_step([summary, t], cache=cache, run_id="r")
    assert [m.content for m in rewritten.messages] == [summary.content, "42"]
    # the head replaced, the length and the last message kept
    to_step([h, a, t], cache=cache, run_id="r3")
    assert to_step([summary, a, t], cache=cache, run_id="r3").messages[0].content == summary.content
    # another run, and messages without ids, are converted from scratch
    assert to_step([HumanMessage("hi")], cache=cache, run_id="r2").messages[0].content == "hi"
    assert to_step([HumanMessage("hi"), HumanMessage("again")], cache=cache, run_id="r2").messages[1].content == "again"

"""Converting an agent's LangChain messages into effagent's step records: what estimators and the loop guard
read must equal a fresh reading of the conversation, however the history grew or was rewritten."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from effagent import parse_policy
from effagent.ledger.base import Usage
from effagent.records import Message, Step, ToolCall

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


def test_tool_call_key_is_cached_but_not_part_of_equality():
    a, b = ToolCall(name="f", args={"y": 1, "x": [1, 2]}), ToolCall(name="f", args={"x": [1, 2], "y": 1})
    assert a.key == b.key == 'f{"x": [1, 2], "y": 1}'
    assert a == ToolCall(name="f", args={"x": [1, 2], "y": 1})  # b's key was never computed
    assert a != ToolCall(name="f", args={"x": [1, 2], "y": 2})


def test_thread_usage_written_by_a_step_is_read_back_and_a_tampered_state_is_still_validated():
    from effagent.integrations.state import thread_usage_for_state, thread_usage_from_state

    total = Usage(input_tokens=10, output_tokens=5, cost_usd=0.01, calls=2)
    raw = thread_usage_for_state(total)
    assert raw == total.model_dump()
    assert thread_usage_from_state({"k": raw}, "k") == total
    assert thread_usage_from_state({"k": dict(raw, input_tokens=11)}, "k").input_tokens == 11  # a new dict
    with pytest.raises(ValidationError):
        thread_usage_from_state({"k": dict(raw, input_tokens=-5)}, "k")


def test_a_runs_history_is_converted_incrementally_and_rebuilt_when_it_was_rewritten():
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    from effagent.integrations.messages import MessageCache, to_message, to_step

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


SETTINGS_POLICY = POLICY.replace(
    "  - {name: hard, min: 0.5, max: 1.0, tier: large, thinking: true, thinking_budget: 512}",
    "  - {name: mid, min: 0.5, max: 0.8, tier: large, thinking: true, early_exit: {chunk: 32}}\n"
    "  - {name: hard, min: 0.8, max: 1.0, tier: large, samples: 5}")


def test_run_statistics_kept_across_steps_equal_a_fresh_scan():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from effagent.integrations.messages import MessageCache, to_step

    message = st.tuples(st.sampled_from(["user", "assistant", "tool"]), st.sampled_from(["", "a", "same", "Paris!"]),
                        st.sampled_from([None, "x", "y"]), st.booleans())

    @settings(max_examples=150, deadline=None)
    @given(st.lists(message, min_size=1, max_size=14), st.lists(st.integers(1, 14), max_size=5))
    def check(spec, cuts):
        msgs = _lc_messages(spec)
        cache = MessageCache()
        for end in sorted({min(c, len(msgs)) for c in cuts} | {len(msgs)}):  # the steps of one run
            step = to_step(msgs[:end], (), cache, "run")
            got = step.known_stats  # what the run's history handed in
            assert got is not None and step.stats() is got
            ref = _reference(step.messages)
            assert {k: getattr(got, k) for k in ref} == ref
            fresh = Step(messages=step.messages)  # no statistics handed in: scanned once
            assert fresh.stats() == got and fresh.prompt == step.prompt and fresh.tool_errors == step.tool_errors

    check()


def test_statistics_follow_messages_changed_after_they_were_read():
    step = Step(messages=[Message(role="user", content="first")])
    assert step.prompt == "first"
    step.messages.append(Message(role="user", content="second"))
    assert step.prompt == "second" and step.at_index(3).prompt == "second" and step.at_index(3).index == 3


def test_a_runs_steps_are_numbered_by_the_message_cache():
    from langchain_core.messages import AIMessage, HumanMessage

    from effagent.integrations.messages import MessageCache, to_step

    cache = MessageCache()
    h, a = HumanMessage("q", id="h1"), AIMessage("draft", id="a1")
    assert [to_step(msgs, cache=cache, run_id="r").index for msgs in ([h], [h, a], [h, a])] == [0, 1, 2]
    assert to_step([h], cache=cache, run_id="other").index == 0
    # messages without ids: statistics are not kept, the count still is
    assert [to_step([HumanMessage("x")], cache=cache, run_id="n").index for _ in range(2)] == [0, 1]


def test_the_message_cache_stays_bounded_and_keeps_converting_correctly():
    from langchain_core.messages import HumanMessage

    from effagent.integrations.messages import MessageCache, to_message

    cache = MessageCache(size=8)
    msgs = [HumanMessage(f"m{i}", id=f"id{i}") for i in range(50)]
    for m in msgs:
        assert cache.convert(m) == to_message(m)
        assert len(cache._by_id) <= 8
    assert cache.convert(msgs[-1]) is cache.convert(msgs[-1])  # a recent message is still cached


def test_tool_call_keys_are_the_canonical_json_of_the_arguments():
    import json

    from hypothesis import given, settings
    from hypothesis import strategies as st

    scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.floats(allow_nan=False))
    value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4),
                                                                                              inner, max_size=3),
                         max_leaves=6)
    keys = st.one_of(st.text(max_size=6), st.integers(-3, 3))

    @settings(max_examples=400, deadline=None)
    @given(st.dictionaries(keys, value, max_size=5))
    def check(args):
        try:
            expected = json.dumps(args, sort_keys=True, default=str)
        except TypeError:  # keys of mixed types cannot be sorted: neither can the key be built
            with pytest.raises(TypeError):
                ToolCall(name="t", args=args).key  # noqa: B018
            return
        assert ToolCall(name="t", args=args).key == "t" + expected  # as converted from a framework

    check()


def test_a_policy_in_use_cannot_be_changed_in_place():
    """The per-policy plans (bands, limits, prices) are worked out once: a policy cannot be changed under them."""
    policy = parse_policy(POLICY, env={})
    with pytest.raises(ValidationError, match="frozen"):
        policy.budgets.run.tokens = 5
    with pytest.raises(ValidationError, match="frozen"):
        policy.tiers["small"].price.input_per_mtok = 0.0
    from effagent.policy import Policy

    other = Policy.model_validate({**policy.model_dump(), "name": "other"})  # a change is a new, validated policy
    assert other.name == "other" and policy.name != "other" and other.tiers == policy.tiers
    with pytest.raises(ValidationError):
        Policy.model_validate({**policy.model_dump(), "bands": []})


def test_the_run_cache_stays_bounded_with_or_without_message_ids():
    from langchain_core.messages import HumanMessage

    from effagent.integrations.messages import MessageCache, to_step

    cache = MessageCache(runs=4)
    for i in range(20):
        to_step([HumanMessage("q", id=f"h{i}")], cache=cache, run_id=f"with-{i}")
        to_step([HumanMessage("q")], cache=cache, run_id=f"without-{i}")
        assert len(cache._runs) <= 4


def test_streamed_message_chunks_convert_like_whole_messages():
    from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage, ToolMessageChunk

    from effagent.integrations.messages import to_message

    calls = [{"name": "f", "args": {"x": 1}, "id": "c1", "type": "tool_call"}]
    assert to_message(AIMessageChunk(content="hi", tool_calls=calls)) == to_message(AIMessage("hi", tool_calls=calls))
    err = to_message(ToolMessageChunk(content="x", tool_call_id="c1", status="error"))
    assert err == to_message(ToolMessage("x", tool_call_id="c1", status="error")) and err.is_error



def _lc_messages(spec):
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    out = []
    for i, (kind, text, call, flag) in enumerate(spec):
        if kind == "user":
            out.append(HumanMessage(text, id=f"m{i}"))
        elif kind == "assistant":
            calls = [{"name": "lookup", "args": {"q": call}, "id": f"c{i}", "type": "tool_call"}] if call else []
            out.append(AIMessage(text, id=f"m{i}", tool_calls=calls,
                                 additional_kwargs={"reasoning_content": "wait, " + text} if flag else {}))
        else:
            out.append(ToolMessage(text, id=f"m{i}", tool_call_id=f"c{i}", status="error" if flag else "success"))
    return out


def _reference(messages):
    """What estimators and the loop guard computed by scanning the messages (before statistics were kept)."""
    users = [m.content for m in messages if m.role == "user"]
    calls = [c.key for m in messages if m.role == "assistant" for c in m.tool_calls]
    last = next((m for m in reversed(messages) if m.role == "assistant"), None)
    return {
        "prompt": users[-1] if users else "",
        "calls": len(calls), "distinct_calls": len(set(calls)),
        "max_call_repeats": max((calls.count(k) for k in calls), default=0),
        "tool_errors": sum(1 for m in messages if m.role == "tool" and m.is_error),
        "drafts": tuple(m.content for m in messages if m.role == "assistant" and not m.tool_calls and m.content),
        "last_reasoning": last.reasoning if last is not None else "",
        "chars": sum(len(m.content) for m in messages), "count": len(messages),
    }


def test_a_runs_history_is_dropped_when_the_run_ends_and_its_messages_stay_cached():
    from langchain_core.messages import HumanMessage

    from effagent.integrations.messages import MessageCache, to_step

    cache = MessageCache()
    h = HumanMessage("hi", id="h1")
    first = to_step([h], cache=cache, run_id="r").messages[0]
    assert to_step([h], cache=cache, run_id="r").index == 1  # the run's second step
    cache.forget("r")
    again = to_step([h], cache=cache, run_id="r")
    assert again.index == 0 and again.messages[0] is first  # a new history; the message converted once

"""Bands with early_exit: chunked thinking with answer probes inside agent steps, against a fake endpoint
(a scripted stand-in for the tier's server that continues partial assistant turns)."""

from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from effagent import parse_policy
from effagent.decide import Decision
from effagent.errors import PolicyError
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.integrations.langgraph import EfficiencyNode
from tests.fakes import FakeTierModel, ai
from tests.fakes.completions import FakeEndpoint

POLICY = """\
tiers:
  think:
    model: hosted_vllm/thinker
    api_base: http://127.0.0.1:9/v1
    price: {input_per_mtok: 1, output_per_mtok: 2}
    thinking: {control: chat_template_kwargs}
    max_tokens: 512
  small: {model: hosted_vllm/small, api_base: "http://127.0.0.1:9/v1",
          price: {input_per_mtok: 0.1, output_per_mtok: 0.2}}
bands:
  - {name: all, min: 0, max: 1, tier: think, thinking: true, thinking_budget: 200,
     early_exit: {chunk: 8, agree: 2, probe_tokens: 4}}
fallback: {order: [think, small]}
"""


def middleware(endpoint, policy=POLICY, **models):
    models = models or {"think": FakeTierModel(tier="think"), "small": FakeTierModel(tier="small")}
    mw = EfficiencyMiddleware(parse_policy(policy, env={}), models=models)
    mw.procedure.complete_fn = endpoint
    return mw


def test_agent_step_stops_thinking_when_probes_agree_and_every_call_is_in_the_ledger():
    endpoint = FakeEndpoint()
    mw = middleware(endpoint)
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    out = agent.invoke({"messages": [HumanMessage("What is 6 * 7?")]})
    last = out["messages"][-1]
    assert last.content == "The answer is 42."
    assert last.additional_kwargs["reasoning_content"] == "step " * 24
    ee = last.response_metadata["effagent"]["early_exit"]
    assert ee["exited"] == "probes_agree" and ee["thinking_tokens"] == 24 and ee["probes"] == 3
    assert last.response_metadata["effagent"]["decision"]["early_exit"]["chunk"] == 8
    assert not mw.models["think"].calls  # the chat model object is not used: the endpoint is continued directly
    recs = mw.ledger.records()
    assert [r.kind for r in recs] == ["model", "probe", "model", "probe", "model", "probe", "model"]
    assert [r.usage.output_tokens for r in recs] == [8, 2, 8, 2, 8, 2, 6]
    assert [r.usage.reasoning_tokens for r in recs] == [8, 0, 8, 0, 8, 0, 0]
    total = mw.ledger.total()
    assert total.output_tokens == 36 and total.calls == 7
    assert last.usage_metadata["output_tokens"] == 36
    assert last.usage_metadata["output_token_details"]["reasoning"] == 24
    assert total.cost_usd == pytest.approx((total.input_tokens * 1 + total.output_tokens * 2) / 1e6)
    # what a shared budget reserves for such a step covers what it spent
    decision = Decision.model_validate(last.response_metadata["effagent"]["decision"])
    tokens, usd, calls = mw.governor.step_maximum(decision, len("What is 6 * 7?") // 4)
    assert total.total_tokens <= tokens and total.cost_usd <= usd and total.calls <= calls


def test_an_empty_written_answer_is_replaced_by_what_the_probes_agreed_on():
    mw = middleware(FakeEndpoint(answer=""))
    out = create_agent(mw.default_model, tools=[], middleware=[mw]).invoke(
        {"messages": [HumanMessage("What is 6 * 7?")]})
    last = out["messages"][-1]
    assert last.content == "42"
    assert last.response_metadata["effagent"]["early_exit"]["answer_from_probes"] is True


def test_with_no_answer_at_all_one_plain_call_answers_the_step():
    think = FakeTierModel(tier="think", script=[ai("It is 42.", input_tokens=30, output_tokens=5)])
    endpoint = FakeEndpoint(probes=["hmm, maybe?"] * 40, answer="")  # probes never settle, the answer is empty
    mw = middleware(endpoint, think=think, small=FakeTierModel(tier="small"))
    out = create_agent(mw.default_model, tools=[], middleware=[mw]).invoke(
        {"messages": [HumanMessage("What is 6 * 7?")]})
    last = out["messages"][-1]
    assert last.content == "It is 42." and len(think.calls) == 1
    assert last.response_metadata["effagent"]["early_exit"]["plain_call_answered"] is True
    recs = mw.ledger.records()
    assert recs[-1].usage.input_tokens == 30 and len(recs) == len(endpoint.calls) + 1  # every call accounted


def test_probe_answer_mode_makes_no_answer_call():
    endpoint = FakeEndpoint(probes=("42", "42"))
    mw = middleware(endpoint, POLICY.replace("probe_tokens: 4}", "probe_tokens: 4, answer: probe}"))
    node = EfficiencyNode(mw.policy, models=mw.models)
    node.procedure.complete_fn = endpoint
    out = node.invoke({"messages": [HumanMessage("What is 6 * 7?")]})
    assert out["messages"][-1].content == "42"
    assert [r.kind for r in node.ledger.records()] == ["model", "probe", "model", "probe"]


def test_a_step_that_offers_tools_is_called_normally():
    @tool
    def lookup(q: str) -> str:
        """Look something up."""
        return q

    endpoint = FakeEndpoint()
    think = FakeTierModel(tier="think", script=[ai("done")])
    mw = middleware(endpoint, think=think, small=FakeTierModel(tier="small"))
    agent = create_agent(mw.default_model, tools=[lookup], middleware=[mw])
    agent.invoke({"messages": [HumanMessage("What is 6 * 7?")]})
    assert len(think.calls) == 1 and not endpoint.calls


def test_runaway_self_verification_is_capped_by_the_loop_guard():
    endpoint = FakeEndpoint(probes=("maybe?",) * 50, thought="Wait, let me double-check. ")
    policy = POLICY + "loop_guard: {max_reasoning_verifications: 3}\n"
    mw = middleware(endpoint, policy)
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    last = agent.invoke({"messages": [HumanMessage("What is 6 * 7?")]})["messages"][-1]
    ee = last.response_metadata["effagent"]["early_exit"]
    assert ee["exited"] == "stop_check" and "re-verified" in ee["reason"]
    assert ee["thinking_tokens"] == 8


def test_a_failing_endpoint_keeps_what_was_spent_and_falls_back_to_the_next_tier():
    endpoint = FakeEndpoint(fail_at=3)
    small = FakeTierModel(tier="small", script=[ai("41", input_tokens=7, output_tokens=1)])
    mw = middleware(endpoint, think=FakeTierModel(tier="think"), small=small)
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    last = agent.invoke({"messages": [HumanMessage("What is 6 * 7?")]})["messages"][-1]
    assert last.content == "41" and last.response_metadata["effagent"]["tier"] == "small"
    recs = mw.ledger.records()
    assert [(r.tier, r.kind, r.ok) for r in recs] == [
        ("think", "model", True), ("think", "probe", True), ("think", "model", True), ("think", "model", False),
        ("small", "model", True)]
    assert mw.ledger.total().output_tokens == 8 + 2 + 8 + 1


async def test_async_agent_step_uses_early_exit():
    endpoint = FakeEndpoint()
    mw = middleware(endpoint)
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    out = await agent.ainvoke({"messages": [HumanMessage("What is 6 * 7?")]})
    assert out["messages"][-1].response_metadata["effagent"]["early_exit"]["exited"] == "probes_agree"


@pytest.mark.parametrize(("band", "message"), [
    ("{name: all, min: 0, max: 1, tier: think, early_exit: {chunk: 8}}", "early_exit is set but thinking is false"),
    ("{name: all, min: 0, max: 1, tier: think, thinking: true, samples: 4, early_exit: {}}", "do not combine"),
    ("{name: all, min: 0, max: 1, tier: think, thinking: true, early_exit: {chunk: 0}}", "chunk"),
])
def test_bad_early_exit_settings_are_named(band, message):
    policy = POLICY.split("bands:")[0] + f"bands:\n  - {band}\n"
    with pytest.raises(PolicyError) as err:
        parse_policy(policy, env={})
    assert message in str(err.value)


def test_a_step_that_never_settles_thinks_to_its_budget_and_stays_inside_its_reserved_maximum():
    endpoint = FakeEndpoint(probes=("maybe?",) * 100)
    mw = middleware(endpoint, POLICY.replace("thinking_budget: 200", "thinking_budget: 32"))
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    last = agent.invoke({"messages": [HumanMessage("What is 6 * 7?")]})["messages"][-1]
    ee = last.response_metadata["effagent"]["early_exit"]
    assert ee["exited"] == "max_thinking" and ee["thinking_tokens"] == 32 and ee["probes"] == 4
    total = mw.ledger.total()
    decision = Decision.model_validate(last.response_metadata["effagent"]["decision"])
    tokens, usd, calls = mw.governor.step_maximum(decision, len("What is 6 * 7?") // 4)
    assert total.calls == 9 == calls  # 4 chunks, 4 probes, the answer: the worst case
    assert total.total_tokens <= tokens and total.cost_usd <= usd

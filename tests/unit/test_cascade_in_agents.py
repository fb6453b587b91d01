"""Cascade bands: the cheap tier answers first; the verifier escalates only answers that look wrong."""

from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from effagent import parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.integrations.langgraph import EfficiencyNode
from tests.fakes import FakeEndpointDown, FakeTierModel, ai

POLICY = """\
tiers:
  small: {model: a, price: {input_per_mtok: 1, output_per_mtok: 1}}
  large:
    model: b
    price: {input_per_mtok: 10, output_per_mtok: 30}
    thinking: {control: chat_template_kwargs, max_budget: 512}
bands:
  - {name: all, min: 0, max: 1, tier: small,
     cascade: {to: large, threshold: 0.5, thinking: true, thinking_budget: 128}}
"""
Q = "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many apples are left?"


def run(cheap_answer: str):
    small = FakeTierModel(tier="small", script=[ai(cheap_answer, input_tokens=20, output_tokens=15)])
    large = FakeTierModel(tier="large", script=[ai("3 * 4 = 12, 12 - 2 = 10. The answer is 10.", input_tokens=20,
                                                   output_tokens=30)])
    mw = EfficiencyMiddleware(parse_policy(POLICY, env={}), models={"small": small, "large": large})
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    out = agent.invoke({"messages": [HumanMessage(Q)]})
    return out, mw, small, large


def test_a_sound_cheap_answer_is_kept():
    out, mw, small, large = run("3 * 4 = 12 apples. 12 - 2 = 10. The answer is 10.")
    assert out["messages"][-1].content.endswith("The answer is 10.") and not large.calls
    assert [r.tier for r in mw.ledger.records()] == ["small"]


def test_a_wrong_looking_cheap_answer_is_escalated_and_both_calls_are_paid():
    out, mw, small, large = run("3 * 4 = 13, 13 - 2 = 9. Hmm, maybe it is 9, I am not sure")
    assert len(small.calls) == 1 and len(large.calls) == 1
    assert large.calls[0]["kwargs"]["extra_body"] == {"chat_template_kwargs": {"enable_thinking": True},
                                                      "thinking_token_budget": 128}
    assert out["messages"][-1].content.endswith("The answer is 10.")
    recs = mw.ledger.records()
    assert [r.tier for r in recs] == ["small", "large"] and "escalated to large" in recs[-1].reason
    assert mw.ledger.total().cost_usd == pytest.approx((20 * 1 + 15 * 1 + 20 * 10 + 30 * 30) / 1e6)
    meta = out["messages"][-1].response_metadata["effagent"]
    assert meta["tier"] == "large" and "cascade" in meta["decision"]["reason"]


def test_cascade_in_a_stategraph_node():
    small = FakeTierModel(tier="small", script=[ai("I don't know")])
    large = FakeTierModel(tier="large", script=[ai("The answer is 10.")])
    node = EfficiencyNode(parse_policy(POLICY, env={}), models={"small": small, "large": large})
    out = node.invoke({"messages": [HumanMessage(Q)]})
    assert out["messages"][-1].content == "The answer is 10." and len(large.calls) == 1


def test_unknown_cascade_tier_is_a_policy_error():
    import pytest

    from effagent import PolicyError
    with pytest.raises(PolicyError) as e:
        parse_policy(POLICY.replace("to: large", "to: huge"), source="p.yaml", env={})
    assert "bands.0.cascade.to" in str(e.value) and "unknown tier 'huge'" in str(e.value)


def test_a_failed_escalation_keeps_the_cheap_answer():
    small = FakeTierModel(tier="small", script=[ai("I don't know")])
    large = FakeTierModel(tier="large", fail_with=FakeEndpointDown)
    mw = EfficiencyMiddleware(parse_policy(POLICY, env={}), models={"small": small, "large": large})
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    out = agent.invoke({"messages": [HumanMessage(Q)]})
    assert out["messages"][-1].content == "I don't know"
    recs = mw.ledger.records()
    assert [(r.tier, r.ok) for r in recs] == [("small", True), ("large", False)]

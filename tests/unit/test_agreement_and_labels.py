"""Agreement cascades (several cheap votes, escalate when they disagree) and labels from production (shadow
calls on the strong tier, outcomes reported by application code), inside create_agent agents on fake tiers."""

from __future__ import annotations

import json

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from effagent import parse_policy
from effagent.errors import PolicyError
from effagent.integrations.langchain import EfficiencyMiddleware
from tests.fakes import FakeTierModel, ai

POLICY = """
tiers:
  small: {model: openai/small, price: {input_per_mtok: 1, output_per_mtok: 2}}
  mid: {model: openai/mid, price: {input_per_mtok: 2, output_per_mtok: 4}}
  large: {model: openai/large, price: {input_per_mtok: 20, output_per_mtok: 40}}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: small, agreement: AGREEMENT}
"""
QUESTION = "Which planet is known as the red planet? Answer with its name."


def agent(agreement: str, small, large, mid=None):
    policy = parse_policy(POLICY.replace("AGREEMENT", agreement), env={})
    mw = EfficiencyMiddleware(policy, models={"small": small, "large": large, "mid": mid or FakeTierModel(tier="mid")})
    return create_agent(mw.default_model, tools=[], middleware=[mw]), mw


def test_agreeing_votes_keep_the_cheap_answer():
    small = FakeTierModel(tier="small", script=[ai("Mars."), ai("mars"), ai("Mars")])
    large = FakeTierModel(tier="large", script=[ai("Mars")])
    graph, mw = agent("{to: large, samples: 3}", small, large)
    last = graph.invoke({"messages": [HumanMessage(QUESTION)]})["messages"][-1]
    assert last.content == "Mars." and not large.calls
    votes = last.response_metadata["effagent"]["agreement"]
    assert votes["agreed"] == 1.0 and votes["escalated"] is False and votes["votes"] == ["mars"] * 3
    recs = mw.ledger.records()
    assert [r.kind for r in recs] == ["sample"] * 3  # every vote is paid for
    assert [c["kwargs"]["seed"] for c in small.calls] == [0, 1, 2]


def test_disagreeing_votes_escalate_to_the_strong_tier():
    small = FakeTierModel(tier="small", script=[ai("Mars"), ai("Venus"), ai("Jupiter")])
    large = FakeTierModel(tier="large", script=[ai("Mars, the red planet.", input_tokens=40, output_tokens=8)])
    graph, mw = agent("{to: large, samples: 3, threshold: 0.67}", small, large)
    last = graph.invoke({"messages": [HumanMessage(QUESTION)]})["messages"][-1]
    assert last.content == "Mars, the red planet." and len(large.calls) == 1
    meta = last.response_metadata["effagent"]["agreement"]
    assert meta["escalated"] and meta["to"] == "large" and meta["agreed"] == pytest.approx(1 / 3)
    recs = mw.ledger.records()
    assert [(r.kind, r.tier) for r in recs] == [("sample", "small")] * 3 + [("model", "large")]
    assert "agreement cascade: 33% of the votes agreed" in recs[-1].reason
    total = mw.ledger.total()
    assert total.cost_usd == pytest.approx((3 * (10 * 1 + 5 * 2) + 40 * 20 + 8 * 40) / 1e6)


def test_votes_from_several_cheap_tiers():
    small = FakeTierModel(tier="small", script=[ai("42")])
    mid = FakeTierModel(tier="mid", script=[ai("41")])
    large = FakeTierModel(tier="large", script=[ai("42")])
    graph, mw = agent("{to: large, tiers: [mid], extractor: number}", small, large, mid)
    graph.invoke({"messages": [HumanMessage("What is 6 * 7?")]})
    assert len(small.calls) == 1 and len(mid.calls) == 1 and len(large.calls) == 1  # 1 of 2 agreed < 1.0
    assert [r.tier for r in mw.ledger.records()] == ["small", "mid", "large"]


def test_a_shared_budget_reserves_every_vote_and_the_escalation():
    small = FakeTierModel(tier="small", script=[ai("a"), ai("b"), ai("c")])
    graph, mw = agent("{to: large, samples: 3}", small, FakeTierModel(tier="large"))
    d = mw.governor.plan(__import__("effagent").Step.from_prompt(QUESTION), "r")
    tokens, usd, calls = mw.governor.step_maximum(d, 20)
    assert calls == 4 and usd >= 3 * mw.policy.tier("small").price.cost(20, d.max_tokens)


def test_agreement_settings_are_checked():
    with pytest.raises(PolicyError, match="unknown tier 'huge'"):
        parse_policy(POLICY.replace("AGREEMENT", "{to: huge}"), env={})
    bad = POLICY.replace("agreement: AGREEMENT", "samples: 3, agreement: {to: large}")
    with pytest.raises(PolicyError, match="agreement does not combine with samples > 1"):
        parse_policy(bad, env={})


LEARNING = """
tiers:
  small: {model: openai/small, price: {input_per_mtok: 1, output_per_mtok: 2}}
  large: {model: openai/large, price: {input_per_mtok: 20, output_per_mtok: 40}}
bands:
  - {name: easy, min: 0.0, max: 0.9, tier: small}
  - {name: hard, min: 0.9, max: 1.0, tier: large}
learning: {shadow_share: SHARE, outcomes: OUT}
"""


def learner(tmp_path, share: float, small, large):
    out = tmp_path / "outcomes.jsonl"
    policy = parse_policy(LEARNING.replace("SHARE", str(share)).replace("OUT", str(out)), env={})
    mw = EfficiencyMiddleware(policy, models={"small": small, "large": large})
    return create_agent(mw.default_model, tools=[], middleware=[mw]), mw, out


def test_shadowed_steps_ask_the_strong_tier_too_and_write_a_label(tmp_path):
    small = FakeTierModel(tier="small", script=[ai("Mars"), ai("Venus")])
    large = FakeTierModel(tier="large", script=[ai("mars"), ai("Mars")])
    graph, mw, out = learner(tmp_path, 1.0, small, large)
    answers = [graph.invoke({"messages": [HumanMessage(f"{QUESTION} ({i})")]})["messages"][-1] for i in range(2)]
    assert [a.content for a in answers] == ["Mars", "Venus"]  # the agent only ever sees the cheap answer
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["cheap_correct"], x["strong_correct"], x["label"]) for x in lines] == [
        (True, True, "agreement"), (False, True, "agreement")]
    assert lines[0]["prompt"].startswith("Which planet") and lines[0]["cheap_tier"] == "small"
    assert lines[0]["strong_tier"] == "large" and lines[0]["id"].endswith(":0")
    kinds = [r.kind for r in mw.ledger.records()]
    assert kinds == ["model", "shadow", "model", "shadow"]  # the shadow call is paid for and marked
    assert answers[1].response_metadata["effagent"]["shadow"] == {"tier": "large", "agree": False}


def test_no_shadow_with_share_zero_and_the_share_is_what_the_policy_says(tmp_path):
    small = FakeTierModel(tier="small", script=[ai("x")])
    large = FakeTierModel(tier="large", script=[ai("x")])
    graph, mw, out = learner(tmp_path, 0.0, small, large)
    graph.invoke({"messages": [HumanMessage(QUESTION)]})
    assert not large.calls and not out.exists()
    graph, mw, out = learner(tmp_path, 0.3, small, large)
    for i in range(40):
        graph.invoke({"messages": [HumanMessage(f"{QUESTION} {i}")]})
    shadowed = sum(r.kind == "shadow" for r in mw.ledger.records())
    assert 4 <= shadowed <= 20  # 30 % of 40 steps, drawn per run and step


def test_application_code_reports_outcomes_for_learning(tmp_path):
    small = FakeTierModel(tier="small", script=[ai("Mars")])
    graph, mw, out = learner(tmp_path, 0.0, small, FakeTierModel(tier="large"))
    last = graph.invoke({"messages": [HumanMessage(QUESTION)]})["messages"][-1]
    run_id = last.response_metadata["effagent"]["run_id"]
    assert mw.record_outcome(run_id, True, feedback="thumbs up")
    assert not mw.record_outcome("no-such-run", False)
    [line] = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["label"] == "outcome" and line["cheap_correct"] is True and line["feedback"] == "thumbs up"
    assert line["id"] == f"{run_id}:0" and line["prompt"] == QUESTION

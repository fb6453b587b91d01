"""A team budget shared by several agents: each step reserves its maximum before the call."""

from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from effagent import InMemoryLedger, parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from tests.fakes import FakeTierModel, ai, call
from tests.unit.test_langchain_middleware import calculator

POLICY = """\
tiers:
  small: {model: a, price: {input_per_mtok: 1, output_per_mtok: 1}, max_tokens: 50}
bands: [{name: all, min: 0, max: 1, tier: small}]
budgets:
  team: {tokens: 400}
  on_exhausted: finalize
  finalize: {max_tokens: 20}
ledger: {redis: {team: research}}
loop_guard: {enabled: false}
"""


def test_agents_sharing_a_team_budget_stop_before_overspending():
    pol = parse_policy(POLICY, env={})
    ledger = InMemoryLedger(scopes={"team": "research"})  # one ledger shared by all the team's agents
    looper = FakeTierModel(tier="small", script=[ai("", tool_calls=[call("calculator", {"expression": "1+1"})],
                                                    input_tokens=30, output_tokens=20)])
    finals = []
    for i in range(3):
        mw = EfficiencyMiddleware(pol, models={"small": looper}, ledger=ledger)
        agent = create_agent(mw.default_model, tools=[calculator], middleware=[mw])
        out = agent.invoke({"messages": [HumanMessage(f"task {i}: keep adding")]}, {"recursion_limit": 200})
        finals.append(out["messages"][-1])
    team = ledger.scope_usage("team", "research")
    model_calls = [r for r in ledger.records() if r.kind == "model"]
    # every normal step reserved its maximum (prompt estimate + 50 output) before running: the team's
    # spending never passes its 400-token limit by more than the one last finalize call of each agent
    assert sum(r.usage.total_tokens for r in model_calls) <= 400
    assert team.total_tokens <= 400 + 3 * 50
    assert all("team budget exhausted" in r.reason for r in ledger.records() if r.kind == "finalize")
    assert all(not m.tool_calls for m in finals)
    assert ledger.reserved("team", "research") == (0, 0.0)  # no hold leaked


SC_POLICY = """\
tiers:
  small: {model: a, price: {input_per_mtok: 1, output_per_mtok: 1}, max_tokens: 50}
bands: [{name: all, min: 0, max: 1, tier: small, samples: 4, consistency: {batch: 1, threshold: null, decided: false}}]
budgets: {team: {tokens: 100000}}
ledger: {redis: {team: research}}
"""


def test_a_step_of_several_calls_holds_its_whole_maximum_until_it_ends():
    """Self-consistency samples are separate calls: the step's reservation (4 samples' maximum) stays held
    while they run, so concurrent workers never see budget that the later samples will spend."""
    ledger = InMemoryLedger(scopes={"team": "research"})
    held: list[int] = []

    def respond(messages, kwargs):
        held.append(ledger.reserved("team", "research")[0])
        return ai("The answer is 4.", input_tokens=10, output_tokens=5)

    mw = EfficiencyMiddleware(parse_policy(SC_POLICY, env={}),
                              models={"small": FakeTierModel(tier="small", responder=respond)}, ledger=ledger)
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    agent.invoke({"messages": [HumanMessage("What is 2 + 2?")]})
    step = mw.ledger.records()[0]
    assert len(held) == 4
    assert held[0] == held[-1] > 0  # the same hold during every sample, not released by the first one
    assert held[0] >= 4 * 50  # four samples' output maximum
    assert ledger.reserved("team", "research") == (0, 0.0)  # freed when the step ended
    assert ledger.scope_usage("team", "research").total_tokens == 4 * 15 and step.kind == "sample"



def test_the_step_maximum_counts_every_call_a_step_can_make():
    from effagent.governor import Governor
    from effagent.levers.early_exit import TURN_SLACK_TOKENS
    from effagent.observe import NullObserver
    from effagent.records import Step

    pol = parse_policy("""
tiers:
  small: {model: a, price: {input_per_mtok: 1, output_per_mtok: 2}, max_tokens: 100}
  large: {model: b, price: {input_per_mtok: 10, output_per_mtok: 20}, max_tokens: 300,
          thinking: {control: chat_template_kwargs}}
bands:
  - {name: easy, min: 0, max: 0.5, tier: small, cascade: {to: large, thinking: false}}
  - {name: hard, min: 0.5, max: 1, tier: large, thinking: true, thinking_budget: 128,
     early_exit: {chunk: 32, probe_tokens: 8}}
fallback: {enabled: false}
""", env={})
    gov = Governor(pol, ledger=InMemoryLedger(), observer=NullObserver())
    easy = gov.plan(Step.from_prompt("hi"), "r1")
    assert easy.verify and easy.band == "easy"
    # the cheap call, then the escalated one on the large tier
    tokens, usd, calls = gov.step_maximum(easy, 10)
    assert (tokens, calls) == (10 + 100 + 10 + 300, 2)
    assert usd == pytest.approx((10 * 1 + 100 * 2 + 10 * 10 + 300 * 20) / 1e6)
    hard = gov.plan(Step.from_prompt("prove " * 400), "r2")
    assert hard.early_exit is not None and hard.thinking_budget == 128
    # 4 chunks of 32, a probe after each and the answer: 9 calls, each re-sending prompt + thinking
    tokens, usd, calls = gov.step_maximum(hard, 10)
    assert calls == 9
    resent = sum(k * 32 for k in range(4)) + sum(k * 32 for k in range(1, 5)) + 128  # thinking sent back
    assert tokens == 9 * (10 + TURN_SLACK_TOKENS) + resent + 128 + 5 * 8 + 300

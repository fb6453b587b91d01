"""A team budget shared by several agents: each step reserves its maximum before the call."""

from __future__ import annotations

from effagent.integrations.langchain import EfficiencyMiddleware
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from effagent import InMemoryLedger, parse_policy
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

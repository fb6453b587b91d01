"""Bands with samples > 1: adaptive self-consistency inside the agent step (fake models, seeded)."""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from effagent import parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.integrations.langgraph import EfficiencyNode
from tests.fakes import FakeTierModel, ai

POLICY = """\
tiers:
  small: {model: a, price: {input_per_mtok: 1, output_per_mtok: 1}}
bands:
  - {name: all, min: 0, max: 1, tier: small, samples: 8,
     consistency: {batch: 2, threshold: 0.95, extractor: number, temperature: 0.6, seed: 100}}
"""


def answers_by_seed(table):
    def respond(messages, kwargs):
        return ai(f"The answer is {table(kwargs['seed'])}.", input_tokens=10, output_tokens=4)
    return respond


def test_unanimous_samples_stop_early_and_every_sample_is_accounted():
    model = FakeTierModel(tier="small", responder=answers_by_seed(lambda seed: 42))
    mw = EfficiencyMiddleware(parse_policy(POLICY, env={}), models={"small": model})
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    out = agent.invoke({"messages": [HumanMessage("What is 6 * 7?")]})
    last = out["messages"][-1]
    sc = last.response_metadata["effagent"]["consistency"]
    assert sc["answer"] == "42" and sc["used"] < 8 and sc["stopped"] != "max_samples"
    assert [c["kwargs"]["seed"] for c in model.calls] == list(range(100, 100 + sc["used"]))
    assert all(c["kwargs"]["temperature"] == 0.6 for c in model.calls)
    recs = mw.ledger.records()
    assert [r.kind for r in recs] == ["sample"] * sc["used"]
    assert mw.ledger.total().input_tokens == 10 * sc["used"]


def test_split_votes_draw_more_and_return_the_majority():
    model = FakeTierModel(tier="small", responder=answers_by_seed(lambda seed: 7 if seed % 3 == 0 else 5))
    node = EfficiencyNode(parse_policy(POLICY, env={}), models={"small": model})
    out = node.invoke({"messages": [HumanMessage("What is 2 + 3?")]})
    sc = out["messages"][-1].response_metadata["effagent"]["consistency"]
    assert sc["answer"] == "5" and sc["used"] > 2
    assert "The answer is 5." == out["messages"][-1].content


async def test_async_sampling():
    model = FakeTierModel(tier="small", responder=answers_by_seed(lambda seed: 9))
    mw = EfficiencyMiddleware(parse_policy(POLICY, env={}), models={"small": model})
    agent = create_agent(mw.default_model, tools=[], middleware=[mw])
    out = await agent.ainvoke({"messages": [HumanMessage("What is 3 * 3?")]})
    assert out["messages"][-1].response_metadata["effagent"]["consistency"]["answer"] == "9"

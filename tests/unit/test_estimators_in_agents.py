"""The policy's estimators (rule + learned) drive per-step decisions inside both integrations."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool

from effagent import parse_policy
from effagent.difficulty import Step, build_estimator
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.integrations.langgraph import EfficiencyNode
from tests.fakes import FakeTierModel, ai, call
from tests.fakes.completions import FakeCompletions

TEMPLATE = """\
tiers:
  small: {model: a, price: {input_per_mtok: 1, output_per_mtok: 1}}
  large: {model: b, price: {input_per_mtok: 9, output_per_mtok: 9}}
difficulty:
  estimators: ESTIMATORS
bands:
  - {name: easy, min: 0.0, max: 0.5, tier: small}
  - {name: hard, min: 0.5, max: 1.0, tier: large}
"""


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A learned model: questions about tax are hard for the cheap tier."""
    from effagent.difficulty.learned import LabeledPrompt, learn, save_model

    rows = [LabeledPrompt(prompt=f"{'tax refund' if i % 3 == 0 else 'garden'} question {i}",
                          cheap_correct=i % 3 != 0, strong_correct=True) for i in range(120)]
    return save_model(learn(rows), tmp_path_factory.mktemp("learned") / "m.json")


@pytest.fixture
def policy_text(model_file: Path) -> str:
    return TEMPLATE.replace("ESTIMATORS", f"[{{name: rule, weight: 0.6}}, {{name: learned, weight: 0.4, "
                                          f"path: '{model_file}'}}]")


@tool
def search(query: str) -> str:
    """Search."""
    return "error: service unavailable"


def test_policy_estimators_are_combined(policy_text: str):
    pol = parse_policy(policy_text, env={})
    est = build_estimator(pol.difficulty)
    d = est.estimate(Step.from_prompt("What is 2 + 2?"))
    assert {"rule.score", "learned.score", "rule.tool_errors"} <= set(d.signals)
    assert 0.0 <= d.score <= 1.0


def test_agent_steps_are_scored_with_history_and_the_score_reaches_the_decision(policy_text: str):
    pol = parse_policy(policy_text, env={})

    def respond(messages, kwargs):
        errors = sum(isinstance(m, ToolMessage) for m in messages)
        if errors < 3:
            return ai("", tool_calls=[call("search", {"query": f"try {errors}"}, f"c{errors}")])
        return ai("gave up")

    small = FakeTierModel(tier="small", responder=respond)
    large = FakeTierModel(tier="large", responder=respond)
    mw = EfficiencyMiddleware(pol, models={"small": small, "large": large})
    agent = create_agent(mw.default_model, tools=[search], middleware=[mw])
    agent.invoke({"messages": [HumanMessage("Find the population of Lyon.")]})
    est = build_estimator(pol.difficulty)
    steps = [r for r in mw.ledger.records()]
    assert len(steps) == 4
    # the same estimator, fed the same step, gives the score the decision carried
    first = est.estimate(Step.from_prompt("Find the population of Lyon.")).score
    assert f"difficulty {first:.2f}" in steps[0].reason
    # three failed tool calls later the step is judged harder than the first one
    scores = [float(r.reason.split()[1]) for r in steps]
    assert scores[-1] > scores[0]


def test_stategraph_node_uses_the_same_estimators(policy_text: str):
    pol = parse_policy(policy_text, env={})
    small = FakeTierModel(tier="small", script=[ai("ok")])
    large = FakeTierModel(tier="large", script=[ai("ok")])
    node = EfficiencyNode(pol, models={"small": small, "large": large})
    node.invoke({"messages": [HumanMessage("What is 2 + 2?")]})
    est = build_estimator(pol.difficulty)
    score = est.estimate(Step.from_prompt("What is 2 + 2?")).score
    assert f"difficulty {score:.2f}" in node.ledger.records()[0].reason


def test_probe_estimator_from_the_policy_is_paid_for_on_the_step():
    """A logprob probe (here with a fake completion function) feeds the score and its call is in the ledger."""
    from effagent.difficulty.probe import LogprobProbeEstimator
    from effagent.governor import Governor
    from effagent.llm.client import Completion

    text = TEMPLATE.replace("ESTIMATORS",
                            "[{name: rule, weight: 0.5}, {name: probe, weight: 0.5, options: {tier: small}}]")
    pol = parse_policy(text, env={})
    gov = Governor(pol)
    probe = gov.estimator.members["probe"]
    assert isinstance(probe, LogprobProbeEstimator)

    probe._complete = FakeCompletions(Completion(content="4", input_tokens=12, output_tokens=2, logprobs=[-2.0, -1.5]))
    decision = gov.plan(Step.from_prompt("What is 2 + 2?"), "run-1")
    assert "probe.score" in decision.signals and decision.signals["probe.score"] > 0.5  # unsure probe
    (rec,) = gov.ledger.records("run-1")
    assert rec.kind == "probe" and rec.tier == "small" and rec.usage.input_tokens == 12

"""The whole learning loop on fake tiers: an agent with `learning.shadow_share` writes agreement labels ->
`effagent difficulty learn` -> `effagent calibrate --estimator-model --write` -> a policy that validates and
routes with the learned model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from effagent import load_policy, parse_policy
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.tools.cli import main
from tests.fakes import FakeTierModel, ai

POLICY = """\
# the policy the loop starts from: nearly every step on the small tier, each of them shadowed on the large one
version: 1
name: learning-loop
tiers:
  small: {model: hosted_vllm/small, api_base: "http://127.0.0.1:9/v1",
          price: {input_per_mtok: 0.10, output_per_mtok: 0.20}}
  large: {model: hosted_vllm/large, api_base: "http://127.0.0.1:9/v1",
          price: {input_per_mtok: 1.00, output_per_mtok: 3.00}}
difficulty: {estimators: [{name: rule}]}   # the default, until the workload is learned
bands:
  - {name: easy, min: 0.0, max: 0.99, tier: small}
  - {name: hard, min: 0.99, max: 1.0, tier: large}
learning: {shadow_share: 1.0, outcomes: OUT}
telemetry: {enabled: false}
"""
HARD = "tax refund rules"  # the small tier gets these wrong (it disagrees with the large one)
EASY = "dog walking tips"  # the same cues for the default rule: only a learned model tells them apart
STEPS = 300


def _question(messages: list[BaseMessage]) -> str:
    return next(str(m.content) for m in reversed(messages) if isinstance(m, HumanMessage))


def small_answers(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    return ai("42")


def large_answers(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    return ai("17" if HARD in _question(messages) else "42")


def _agent(policy_path: Path) -> tuple[Any, EfficiencyMiddleware, FakeTierModel, FakeTierModel]:
    small = FakeTierModel(tier="small", responder=small_answers)
    large = FakeTierModel(tier="large", responder=large_answers)
    mw = EfficiencyMiddleware(load_policy(policy_path), models={"small": small, "large": large})
    return create_agent(mw.default_model, tools=[], middleware=[mw]), mw, small, large


def test_shadow_labels_learn_calibrate_and_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcomes, model = tmp_path / "outcomes.jsonl", tmp_path / "difficulty-model.json"
    start, calibrated = tmp_path / "policy.yaml", tmp_path / "calibrated.yaml"
    start.write_text(POLICY.replace("OUT", str(outcomes)), encoding="utf-8")

    # 1. production: every step the small tier answers is also asked of the large one, never shown to the agent
    graph, mw, small, large = _agent(start)
    fillers = ["a question about", "please help with"]
    for i in range(STEPS):
        topic = HARD if i % 3 == 0 else EASY
        answer = graph.invoke({"messages": [HumanMessage(f"{fillers[i % 2]} {topic} (case {i})")]})["messages"][-1]
        assert answer.content == "42"  # the agent only ever sees the small tier's answer
    lines = [json.loads(x) for x in outcomes.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == STEPS and {x["label"] for x in lines} == {"agreement"}
    assert all(x["cheap_correct"] == (HARD not in x["prompt"]) and x["strong_correct"] for x in lines)
    assert sum(r.kind == "shadow" for r in mw.ledger.records()) == STEPS

    # 2. learn the workload from the outcomes file as the agent wrote it
    assert main(["difficulty", "learn", "--input", str(outcomes), "--out", str(model)]) == 0
    assert "wrote" in capsys.readouterr().out

    # 3. calibrate the boundary for the learned model and write the new policy
    rc = main(["calibrate", "--policy", str(start), "--outcomes", str(outcomes), "--target-quality", "0.95",
               "--estimator-model", str(model), "--write", str(calibrated)])
    cap = capsys.readouterr()
    assert rc == 0, cap.out + cap.err
    assert "strong share 0.333 (100 of 300" in cap.out  # exactly the steps the small tier gets wrong

    assert f"wrote {calibrated} (validated)" in cap.out
    assert start.read_text(encoding="utf-8") == POLICY.replace("OUT", str(outcomes))  # the input is untouched
    text = calibrated.read_text(encoding="utf-8")
    assert text.startswith("# the policy the loop starts from")  # comments kept
    new = load_policy(calibrated)
    assert [(e.name, e.path) for e in new.difficulty.estimators] == [("learned", str(model))]
    hard_band = new.band_named("hard")
    assert hard_band is not None and hard_band.min < 0.99  # the boundary moved down to take the hard steps
    parse_policy(text)  # the written text validates as it is

    # 4. the calibrated policy routes with the learned model: the hard topic to the large tier, the rest small
    graph, mw, small, large = _agent(calibrated)
    hard = graph.invoke({"messages": [HumanMessage(f"a question about {HARD} (new case)")]})["messages"][-1]
    easy = graph.invoke({"messages": [HumanMessage(f"a question about {EASY} (new case)")]})["messages"][-1]
    assert hard.response_metadata["effagent"]["decision"]["tier"] == "large"
    assert easy.response_metadata["effagent"]["decision"]["tier"] == "small"
    assert hard.content == "17" and easy.content == "42"

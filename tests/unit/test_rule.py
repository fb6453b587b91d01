"""The default estimator: what a policy author sees from it."""

from __future__ import annotations

import pytest

from effagent.difficulty.combine import DEFAULT_ESTIMATOR, get_estimator
from effagent.records import Message, Step


def test_the_default_is_the_rule_and_orders_prompts_sensibly() -> None:
    est = get_estimator(DEFAULT_ESTIMATOR)
    assert est.name == "rule"
    easy, hard = est.score_prompts([
        "What is the capital of France?",
        "A store sells 3 kinds of pens at $1.20, $2.45 and $3.10. Maria buys 14 pens, spends $31.75, and buys at "
        "least 2 of each kind. If she bought twice as many of the cheapest as of the dearest, how many of each did "
        "she buy, and what would the total have been with a 15% discount on orders over $25?",
    ])
    assert 0.0 <= easy < 0.5 < hard <= 1.0


def test_batch_and_step_scores_agree_and_the_run_raises_them() -> None:
    est = get_estimator("rule")
    prompt = "Summarise the quarterly report, listing revenue, costs, and the three largest risks."
    assert est.estimate(Step.from_prompt(prompt)).score == pytest.approx(est.score_prompts([prompt])[0])
    failing = Step(messages=[
        Message(role="user", content=prompt),
        Message(role="tool", content="error: file not found", is_error=True),
        Message(role="tool", content="error: file not found", is_error=True),
    ], index=4)
    d = est.estimate(failing)
    assert d.score > est.score_prompts([prompt])[0]
    assert d.signals["tool_errors"] > 0 and {"length", "vocabulary", "quantities", "clauses"} <= set(d.signals)

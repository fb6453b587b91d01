"""The governor: ``plan`` asks ``decide`` with the ledger's view of the run, ``account`` books each call at its
tier's prices, and the next step's plan sees what was booked."""

from __future__ import annotations

import pytest

from effagent import Governor, InMemoryLedger, Policy, Step, UnknownTierError
from effagent.observe import NullObserver
from tests.fakes.estimators import FakeEstimator

POLICY = {
    "name": "governor",
    "tiers": {
        "small": {"model": "fake/small", "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}, "max_tokens": 800},
        "large": {"model": "fake/large", "price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
                  "thinking": {"control": "chat_template_kwargs", "max_budget": 1000}, "max_tokens": 2000},
    },
    "bands": [
        {"name": "easy", "min": 0.0, "max": 0.5, "tier": "small"},
        {"name": "hard", "min": 0.5, "max": 1.0, "tier": "large", "thinking": True, "thinking_budget": 600},
    ],
    "budgets": {"run": {"tokens": 5_000}},
    "telemetry": {"enabled": False},
}


def governor(**scores: float) -> tuple[Governor, InMemoryLedger, FakeEstimator]:
    ledger = InMemoryLedger()
    est = FakeEstimator(score=0.1, scores=scores)
    gov = Governor(Policy.model_validate(POLICY), ledger=ledger, estimator=est, observer=NullObserver())
    return gov, ledger, est


def test_plan_routes_by_the_estimate():
    gov, _, est = governor(**{"prove it": 0.9})
    run = gov.start_run()
    easy = gov.plan(Step.from_prompt("hi"), run)
    hard = gov.plan(Step.from_prompt("prove it"), run)
    assert (easy.tier, easy.band, easy.thinking, easy.max_tokens) == ("small", "easy", False, 800)
    assert (hard.tier, hard.band, hard.thinking, hard.thinking_budget, hard.max_tokens) == (
        "large", "hard", True, 600, 2000)
    assert [s.prompt for s in est.seen] == ["hi", "prove it"]
    assert hard.signals == {"fake.score": 0.9}


def test_account_books_tokens_and_cost_at_the_tier_prices():
    gov, ledger, _ = governor(**{"prove it": 0.9})
    run = gov.start_run("t1")
    d = gov.plan(Step.from_prompt("prove it"), run, "t1")
    rec = gov.account(run, "t1", d, tier=d.tier, input_tokens=1_000, output_tokens=500, reasoning_tokens=300)
    cost = (1_000 * 1.0 + 500 * 4.0) / 1e6
    assert rec.usage.cost_usd == pytest.approx(cost) and rec.model == "fake/large" and rec.step == 0
    usage = ledger.run_usage(run)
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens, usage.calls) == (1_000, 500, 300, 1)
    assert usage.cost_usd == pytest.approx(cost)
    assert ledger.thread_usage("t1").total_tokens == 1_500
    # the same call booked on the tier it fell back to costs that tier's prices
    gov.account(run, "t1", d, tier="small", input_tokens=1_000, output_tokens=500)
    assert ledger.run_usage(run).cost_usd == pytest.approx(cost + (1_000 * 0.1 + 500 * 0.2) / 1e6)


def test_account_clamps_counts_a_server_misreports():
    gov, ledger, _ = governor()
    run = gov.start_run()
    d = gov.plan(Step.from_prompt("hi"), run)
    rec = gov.account(run, None, d, tier="small", input_tokens=-5, output_tokens=10, reasoning_tokens=99)
    assert (rec.usage.input_tokens, rec.usage.output_tokens, rec.usage.reasoning_tokens) == (0, 10, 10)
    with pytest.raises(UnknownTierError, match="unknown tier 'huge'"):
        gov.account(run, None, d, tier="huge", input_tokens=1, output_tokens=1)


def test_next_plan_sees_what_was_booked():
    gov, _, _ = governor(**{"prove it": 0.9})
    run = gov.start_run()
    first = gov.plan(Step.from_prompt("prove it"), run)
    gov.account(run, None, first, tier=first.tier, input_tokens=2_000, output_tokens=2_000)
    second = gov.plan(Step.from_prompt("prove it"), run)
    assert second.step == 1 and second.action == "call"
    assert second.budget_left.run_tokens == 500  # of what steps may use: 4,500 of the 5,000
    # steps may use 4,500 of the 5,000 (budgets.finalize.reserve keeps 10 % for the final answer): 500 left, less
    # the prompt as litellm's counter counts it; the thinking budget no longer fits and is halved
    inp = gov.prompt_tokens(Step.from_prompt("prove it"))
    assert 2 < inp < 20
    assert (second.max_tokens, second.thinking_budget) == (500 - inp, (500 - inp) // 2)
    gov.account(run, None, second, tier=second.tier, input_tokens=250, output_tokens=250)
    third = gov.plan(Step.from_prompt("prove it"), run)
    assert (third.step, third.action, third.tier, third.thinking) == (2, "finalize", "small", False)
    assert third.max_tokens == 256  # the reserve holds 500 tokens: the final answer gets its whole cap
    assert "run budget exhausted" in third.reason
    assert gov.end_run(run).total_tokens == 4_500


def test_step_index_is_the_ledgers_count_not_the_callers():
    gov, _, _ = governor()
    run = gov.start_run()
    d = gov.plan(Step(index=7), run)
    assert d.step == 0


def test_an_ordinary_steps_reservation_limits_are_the_ones_worked_out_in_full():
    """Most steps reserve against the limits kept when the governor was made (less the final answer's reserve);
    they must be exactly what the full computation gives for a state nobody else changed, every scope alike."""
    from effagent.ledger.base import LedgerState, Usage

    policy = Policy.model_validate({**POLICY, "budgets": {
        "run": {"tokens": 5_001, "usd": 0.73}, "thread": {"tokens": 90_000}, "team": {"usd": 12.5},
        "finalize": {"reserve": 0.13}}})
    gov = Governor(policy, ledger=InMemoryLedger(), estimator=FakeEstimator(score=0.1), observer=NullObserver())
    own = LedgerState(run=Usage(input_tokens=40, cost_usd=0.01), thread=Usage(output_tokens=7), steps=2)
    same = LedgerState(*own)  # equal, but not the ledger's own object: the full computation
    scopes = {"run": "r", "thread": "t", "team": "research"}
    kept = gov._scope_limits(False, None, own, own, scopes)
    assert kept == gov._scope_limits(False, None, own, same, scopes)
    assert kept["run"].tokens == 5_001 - 651 and kept["team"].usd == pytest.approx(12.5 * 0.87)
    assert set(gov._scope_limits(False, None, own, own, {"run": "r"})) == {"run"}  # no thread id: no thread scope

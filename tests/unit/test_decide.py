"""``decide``: policy + difficulty + spending so far -> the Decision a step gets.

Table-driven: each row is a small policy change, a difficulty score and what the run has spent, and the
tier, band, thinking, budgets and action the step must get. A wrong row is a step sent to the wrong model,
thinking when it should not, or allowed more tokens than the policy or the budget leaves.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from effagent import BudgetExceeded, Decision, Difficulty, LedgerState, Policy, Usage, decide
from effagent.checkin import Grant

# small cannot think and is cheap; large thinks (its own cap 2000 thinking tokens) and costs 10-20x more
BASE: dict[str, Any] = {
    "name": "decide-table",
    "tiers": {
        "small": {"model": "fake/small", "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
                  "max_tokens": 4096},
        "large": {"model": "fake/large", "price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
                  "thinking": {"control": "chat_template_kwargs", "max_budget": 2000}, "max_tokens": 8192},
    },
    "bands": [
        {"name": "easy", "min": 0.0, "max": 0.3, "tier": "small"},
        {"name": "medium", "min": 0.3, "max": 0.7, "tier": "large", "thinking": True, "thinking_budget": 500,
         "max_tokens": 1000},
        {"name": "hard", "min": 0.7, "max": 1.0, "tier": "large", "thinking": True},
    ],
    "telemetry": {"enabled": False},
    "budgets": {"finalize": {"reserve": 0.0}},  # rows on the final answer's reserve set their own
}


def merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``change`` merged in key by key (lists are replaced whole)."""
    out = copy.deepcopy(base)
    for k, v in change.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def policy_with(change: dict[str, Any] | None = None) -> Policy:
    return Policy.model_validate(merged(BASE, change or {}))


def spent(run_tokens: int = 0, run_usd: float = 0.0, thread_tokens: int = 0, thread_usd: float = 0.0,
          steps: int = 0) -> LedgerState:
    """A ledger state: tokens spent (counted as input), dollars spent, for the run and the thread."""
    return LedgerState(run=Usage(input_tokens=run_tokens, cost_usd=run_usd),
                       thread=Usage(input_tokens=max(thread_tokens, run_tokens), cost_usd=max(thread_usd, run_usd)),
                       steps=steps)


@dataclass
class Row:
    id: str
    score: float
    want: dict[str, Any]  # Decision fields the step must get
    policy: dict[str, Any] = field(default_factory=dict)  # change to BASE
    state: LedgerState = field(default_factory=LedgerState)
    kwargs: dict[str, Any] = field(default_factory=dict)  # step / loop / input_tokens / shared_exhausted
    reason: tuple[str, ...] = ()  # substrings of the decision's reason
    bug: str | None = None  # a known wrong decision: the row fails until it is fixed (strict xfail)


CALL = {"action": "call"}
EASY = {**CALL, "band": "easy", "tier": "small", "model": "fake/small", "thinking": False, "thinking_budget": None,
        "max_tokens": 4096}
MEDIUM = {**CALL, "band": "medium", "tier": "large", "model": "fake/large", "thinking": True, "thinking_budget": 500,
          "max_tokens": 1000}
HARD = {**CALL, "band": "hard", "tier": "large", "thinking": True, "thinking_budget": 2000, "max_tokens": 8192}
FINAL = {"action": "finalize", "band": None, "tier": "small", "thinking": False, "thinking_budget": None,
         "max_tokens": 256, "samples": 1}  # finalize: the cheapest tier, no thinking, finalize.max_tokens

ROWS = [
    # -- band boundaries: [min, max), and a score of 1.0 in the top band ---------------------------------
    Row("score 0 -> first band", 0.0, EASY, reason=("band easy", "thinking off")),
    Row("just under a boundary -> lower band", 0.2999, EASY),
    Row("score exactly at min -> that band", 0.3, MEDIUM, reason=("band medium", "thinking on, budget 500")),
    Row("score exactly at max -> next band", 0.7, HARD, reason=("band hard", "thinking on, budget 2000")),
    Row("score 1.0 -> top band", 1.0, HARD),
    Row("score 1.0 -> top band, listed first", 1.0, HARD, policy={"bands": list(reversed(BASE["bands"]))}),
    # -- thinking budget: the smallest of band, tier max_budget and step max_thinking_tokens ---------------
    Row("band budget smallest", 0.5, {"thinking_budget": 500}),
    Row("tier max_budget caps an unbounded band", 0.9, {"thinking_budget": 2000}),
    Row("step cap smallest", 0.5, {"thinking_budget": 300},
        policy={"budgets": {"step": {"max_thinking_tokens": 300}}}, reason=("thinking on, budget 300",)),
    Row("step cap below the tier cap", 0.9, {"thinking_budget": 1200},
        policy={"budgets": {"step": {"max_thinking_tokens": 1200}}}),
    Row("no cap anywhere -> unbounded", 0.9, {"thinking": True, "thinking_budget": None},
        policy={"tiers": {"large": {"thinking": {"max_budget": 0}}}}, reason=("budget unbounded",)),
    # -- max_tokens: the smallest of band, tier and step max_output_tokens ---------------------------------
    Row("band max_tokens under the tier's", 0.5, {"max_tokens": 1000}),
    Row("tier max_tokens when the band sets none", 0.9, {"max_tokens": 8192}),
    Row("tier max_tokens under the band's", 0.1, {"max_tokens": 4096},
        policy={"bands": [{**BASE["bands"][0], "max_tokens": 6000}, *BASE["bands"][1:]]}),
    Row("step max_output_tokens smallest", 0.9, {"max_tokens": 600, "thinking_budget": 2000},
        policy={"budgets": {"step": {"max_output_tokens": 600}}}),
    Row("step max_output_tokens above the band's", 0.5, {"max_tokens": 1000},
        policy={"budgets": {"step": {"max_output_tokens": 3000}}}),
    # -- what is left of the token budget cuts max_tokens, then the thinking budget -----------------------
    Row("run tokens left above the plan: untouched", 0.5, MEDIUM,
        policy={"budgets": {"run": {"tokens": 10_000}}}, state=spent(run_tokens=8_000), kwargs={"input_tokens": 500}),
    Row("run tokens left cut max_tokens", 0.5, {**MEDIUM, "max_tokens": 800},
        policy={"budgets": {"run": {"tokens": 10_000}}}, state=spent(run_tokens=9_000), kwargs={"input_tokens": 200},
        reason=("max_tokens cut to 800 by the remaining token budget",)),
    Row("run tokens left below the thinking budget: halved", 0.5, {**MEDIUM, "max_tokens": 400, "thinking_budget": 200},
        policy={"budgets": {"run": {"tokens": 10_000}}}, state=spent(run_tokens=9_400), kwargs={"input_tokens": 200},
        reason=("max_tokens cut to 400", "thinking budget cut to 200")),
    Row("thread tokens left cut max_tokens", 0.9, {**HARD, "max_tokens": 300, "thinking_budget": 150},
        policy={"budgets": {"thread": {"tokens": 50_000}}}, state=spent(run_tokens=100, thread_tokens=49_700)),
    Row("the smaller of run and thread left wins", 0.1, {**EASY, "max_tokens": 700},
        policy={"budgets": {"run": {"tokens": 5_000}, "thread": {"tokens": 50_000}}},
        state=spent(run_tokens=4_300, thread_tokens=10_000)),
    Row("prompt bigger than what is left: no call at all (was: max_tokens 1, over the limit)", 0.1,
        {"action": "halt"}, policy={"budgets": {"run": {"tokens": 5_000}}}, state=spent(run_tokens=4_000),
        kwargs={"input_tokens": 2_000}),
    # -- dollars left: a step whose worst case does not fit moves to a cheaper tier ----------------------
    # medium on large at most (0 in + 1000 out) x $4/Mtok = $0.004; on small $0.0002
    Row("$ left covers the step: stays", 0.5, MEDIUM, policy={"budgets": {"run": {"usd": 1.0}}},
        state=spent(run_usd=0.99)),
    Row("$ left short: cheaper tier, which cannot think", 0.5,
        {**CALL, "band": "medium", "tier": "small", "model": "fake/small", "thinking": False, "thinking_budget": None,
         "max_tokens": 1000, "fallback": ["large"]},
        policy={"budgets": {"run": {"usd": 1.0}}}, state=spent(run_usd=0.999),
        reason=("tier large -> small: $0.001000 left", "thinking off")),
    Row("thread $ left short: cheaper tier", 0.9, {"tier": "small", "thinking": False},
        policy={"budgets": {"thread": {"usd": 0.05}}}, state=spent(thread_usd=0.049)),
    Row("samples multiply the worst case", 0.5, {"tier": "small", "samples": 3, "thinking": False},
        policy={"bands": [BASE["bands"][0], {**BASE["bands"][1], "samples": 3}, BASE["bands"][2]],
                "budgets": {"run": {"usd": 1.0}}},
        state=spent(run_usd=0.99)),  # $0.004 x 3 > $0.01 left; $0.0002 x 3 on small fits
    Row("one sample fits the same $", 0.5, {"tier": "large", "samples": 1},
        policy={"budgets": {"run": {"usd": 1.0}}}, state=spent(run_usd=0.99)),
    # -- a spent budget ends the run with one last call (on_exhausted: finalize) --------------------------
    Row("run tokens spent -> finalize from the reserve", 0.9, {**FINAL, "max_tokens": 100},
        policy={"budgets": {"run": {"tokens": 1_000}, "finalize": {"reserve": 0.1}}},
        state=spent(run_tokens=900), reason=("run budget exhausted (900 tokens of 900 tokens usable by steps)",
                                             "one last call without thinking")),
    Row("steps stop at limit x (1 - reserve)", 0.5, {**FINAL, "max_tokens": 256},
        policy={"budgets": {"run": {"tokens": 10_000}, "finalize": {"reserve": 0.1}}},
        state=spent(run_tokens=8_950), kwargs={"input_tokens": 100}, reason=("run budget exhausted",)),
    Row("no room even for the final answer -> halt, no call", 0.9,
        {"action": "halt", "band": None, "max_tokens": 0},
        policy={"budgets": {"run": {"tokens": 1_000}}}, state=spent(run_tokens=1_000),
        reason=("run budget exhausted", "no room left for a final answer", "without another model call")),
    Row("the final answer's prompt alone fills the reserve -> halt", 0.9, {"action": "halt"},
        policy={"budgets": {"run": {"tokens": 1_000}, "finalize": {"reserve": 0.1}}},
        state=spent(run_tokens=900), kwargs={"input_tokens": 95}),
    Row("a step whose prompt does not fit what is left -> finalize, not max_tokens 1", 0.5, {"action": "halt"},
        policy={"budgets": {"run": {"tokens": 1_000}}}, state=spent(run_tokens=700), kwargs={"input_tokens": 400}),
    Row("thread $ spent -> finalize", 0.1, FINAL,
        policy={"budgets": {"thread": {"usd": 0.5}, "finalize": {"reserve": 0.1}}},
        state=spent(thread_usd=0.46), reason=("thread budget exhausted ($0.460000 of $0.450000",)),
    Row("thread $ all spent -> halt", 0.1, {"action": "halt"}, policy={"budgets": {"thread": {"usd": 0.5}}},
        state=spent(thread_usd=0.6)),
    Row("a grant raises the limits", 0.5, MEDIUM, policy={"budgets": {"run": {"tokens": 1_000}}},
        state=spent(run_tokens=1_000), kwargs={"grant": Grant(tokens=5_000)}),
    Row("finalize on the tier the policy names, never thinking", 0.9,
        {**FINAL, "tier": "large", "model": "fake/large", "max_tokens": 300},
        policy={"budgets": {"run": {"tokens": 1_000}, "finalize": {"tier": "large", "max_tokens": 300,
                                                                    "reserve": 0.5}}},
        state=spent(run_tokens=600)),
    Row("finalize max_tokens capped by the tier's", 0.9, {**FINAL, "max_tokens": 4096},
        policy={"budgets": {"run": {"tokens": 10_000}, "finalize": {"max_tokens": 5000, "reserve": 0.5}}},
        state=spent(run_tokens=5_000)),
    Row("a loop verdict -> finalize", 0.9, {**FINAL, "loop": "search called 3 times with the same arguments"},
        kwargs={"loop": "search called 3 times with the same arguments"},
        reason=("loop capped: search called 3 times with the same arguments",)),
    Row("a loop verdict finalizes even with on_exhausted: error", 0.5, FINAL,
        policy={"budgets": {"on_exhausted": "error"}}, kwargs={"loop": "reflection without change"},
        reason=("loop capped: reflection without change",)),
    Row("shared (team) budget without room -> finalize", 0.5, FINAL,
        kwargs={"shared_exhausted": "no room left for this step's reserved maximum"},
        reason=("team budget exhausted (no room left for this step's reserved maximum)",)),
    Row("a spent budget is named before a loop", 0.5, {**FINAL, "loop": "stuck", "max_tokens": 40},
        policy={"budgets": {"run": {"tokens": 100}, "finalize": {"reserve": 0.5}}}, state=spent(run_tokens=60),
        kwargs={"loop": "stuck"},
        reason=("run budget exhausted",)),
    # -- the step's number ----------------------------------------------------------------------------
    Row("step defaults to the ledger's count", 0.1, {"step": 4}, state=spent(steps=4)),
    Row("an explicit step wins", 0.1, {"step": 7}, state=spent(steps=4), kwargs={"step": 7}),
]


@pytest.mark.parametrize("row", [
    pytest.param(r, id=r.id, marks=[pytest.mark.xfail(reason=r.bug, strict=True)] if r.bug else []) for r in ROWS])
def test_decide_table(row: Row):
    d = decide(policy_with(row.policy), Difficulty(score=row.score, signals={"s": row.score}), row.state,
               **row.kwargs)
    assert isinstance(d, Decision)
    got = {k: getattr(d, k) for k in row.want}
    assert got == row.want
    for part in row.reason:
        assert part in d.reason, (part, d.reason)
    assert d.difficulty == row.score and d.signals == {"s": row.score}


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in ROWS if not r.bug])
def test_the_policy_facts_a_governor_keeps_decide_every_row_alike(row: Row):
    """A governor works out the policy's facts once and hands them to every decision: a row decided with them (the
    same facts for two steps in a row) gets exactly the decision it gets without, grants included."""
    from effagent.decide import PolicyFacts

    policy = policy_with(row.policy)
    facts = PolicyFacts.of(policy)
    difficulty = Difficulty(score=row.score, signals={"s": row.score})
    plain = decide(policy, difficulty, row.state, **row.kwargs)
    kept = decide(policy, difficulty, row.state, facts=facts, **row.kwargs)
    kept.fallback.append("changed by the caller")  # a decision's list is its own: the kept facts do not change
    assert decide(policy, difficulty, row.state, facts=facts, **row.kwargs) == plain


EXHAUSTED = [
    ("run tokens", {"run": {"tokens": 1_000}}, spent(run_tokens=1_000), "run", "1000 tokens"),
    ("run $", {"run": {"usd": 0.5}}, spent(run_usd=0.5), "run", "$0.500000"),
    ("thread tokens", {"thread": {"tokens": 2_000}}, spent(run_tokens=10, thread_tokens=2_500), "thread",
     "2500 tokens"),
]


@pytest.mark.parametrize(("budgets", "state", "scope", "amount"), [e[1:] for e in EXHAUSTED],
                         ids=[e[0] for e in EXHAUSTED])
def test_spent_budget_raises_when_the_policy_says_error(budgets, state, scope, amount):
    policy = policy_with({"budgets": {**budgets, "on_exhausted": "error"}})
    with pytest.raises(BudgetExceeded) as e:
        decide(policy, Difficulty(score=0.5, signals={}), state)
    assert e.value.scope == scope and e.value.spent == amount
    assert f"budgets.{scope}" in str(e.value) and "on_exhausted: finalize" in str(e.value)


def test_shared_budget_without_room_raises_when_the_policy_says_error():
    policy = policy_with({"budgets": {"on_exhausted": "error"}})
    with pytest.raises(BudgetExceeded) as e:
        decide(policy, Difficulty(score=0.5, signals={}), LedgerState(), shared_exhausted="no room left")
    assert e.value.scope == "team" and "no room left" in str(e.value)


def test_budget_left_reports_what_remains_before_the_step():
    policy = policy_with({"budgets": {"run": {"tokens": 10_000, "usd": 1.0}, "thread": {"tokens": 50_000}}})
    d = decide(policy, Difficulty(score=0.1, signals={}), spent(run_tokens=4_000, run_usd=0.25, thread_tokens=9_000))
    assert d.budget_left.run_tokens == 6_000 and d.budget_left.run_usd == pytest.approx(0.75)
    assert d.budget_left.thread_tokens == 41_000 and d.budget_left.thread_usd is None


def test_same_inputs_same_decision():
    policy, state = policy_with({"budgets": {"run": {"tokens": 10_000}}}), spent(run_tokens=9_400)
    first = decide(policy, Difficulty(score=0.5, signals={}), state, input_tokens=200)
    assert decide(policy, Difficulty(score=0.5, signals={}), state, input_tokens=200) == first
    assert decide(policy, Difficulty(score=0.5, signals={}), LedgerState()).max_tokens == 1000  # nothing carried

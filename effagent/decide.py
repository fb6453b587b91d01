"""The one place that decides: policy + difficulty + spending so far -> Decision.

Nothing else in effagent chooses a tier, a thinking budget, a sample count or whether to stop.
``decide`` is pure: same inputs, same Decision; it calls no model and touches no ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from effagent._trusted import trusted
from effagent.difficulty.base import Difficulty
from effagent.errors import BudgetExceeded
from effagent.ledger.base import LedgerState
from effagent.policy import Band, Policy, Tier


def _least(a: Any, b: Any) -> Any:
    """The smaller of two limits, None meaning no limit."""
    return b if a is None else a if b is None else min(a, b)


class BudgetLeft(BaseModel):
    """Remaining budget before this step (None = no limit set)."""

    run_tokens: int | None = None
    run_usd: float | None = None
    thread_tokens: int | None = None
    thread_usd: float | None = None

    def tokens(self) -> int | None:
        return _least(self.run_tokens, self.thread_tokens)

    def usd(self) -> float | None:
        return _least(self.run_usd, self.thread_usd)


class Decision(BaseModel):
    """What one model step gets. Serialisable; logged, traced and testable without a model."""

    step: int = 0
    action: Literal["call", "finalize"] = "call"
    tier: str
    model: str
    thinking: bool = False
    thinking_budget: int | None = None  # None with thinking on = unbounded
    max_tokens: int
    samples: int = 1
    prompt_budget: Literal["none", "tale", "draft"] = "none"
    consistency: dict[str, Any] | None = None  # the band's self-consistency settings when samples > 1
    band: str | None = None
    difficulty: float = 0.0
    signals: dict[str, float] = Field(default_factory=dict)
    reason: str = ""
    budget_left: BudgetLeft = Field(default_factory=BudgetLeft)
    loop: str | None = None  # why a loop was capped, when it was
    fallback: list[str] = Field(default_factory=list)  # tiers to try, in order, if this one fails
    verify: bool = False  # the band cascades: verify the answer, escalate when it looks wrong
    early_exit: dict[str, Any] | None = None  # the band's early-exit settings when it thinks with early exit

    def summary(self) -> dict[str, Any]:
        """The few fields that say what a step got (``telemetry.answer_metadata: summary``)."""
        return {"step": self.step, "action": self.action, "band": self.band, "difficulty": self.difficulty,
                "thinking": self.thinking, "max_tokens": self.max_tokens}

    def as_dict(self) -> dict[str, Any]:
        """``model_dump()``, built directly (it is attached to every answer): every field already holds JSON
        types (the settings dicts hold scalars), so copying the containers is enough."""
        d = dict(self.__dict__)
        d["budget_left"] = dict(self.budget_left.__dict__)
        d["signals"] = dict(self.signals)
        d["fallback"] = list(self.fallback)
        if d["consistency"] is not None:
            d["consistency"] = dict(d["consistency"])
        if d["early_exit"] is not None:
            d["early_exit"] = dict(d["early_exit"])
        return d


def budget_left(policy: Policy, state: LedgerState) -> BudgetLeft:
    return _budget_left(_band_plans(policy).limits, state)[0]


def _budget_left(limits: _Limits, state: LedgerState) -> tuple[BudgetLeft, int | None, float | None]:
    """What is left, and its tokens and dollars (the smaller of the run's and the thread's)."""
    run, thread = state.run, state.thread
    run_tokens, run_usd, thread_tokens, thread_usd = limits
    rt = None if run_tokens is None else max(0, run_tokens - run.input_tokens - run.output_tokens)
    rd = None if run_usd is None else max(0.0, run_usd - run.cost_usd)
    tt = None if thread_tokens is None else max(0, thread_tokens - thread.input_tokens - thread.output_tokens)
    td = None if thread_usd is None else max(0.0, thread_usd - thread.cost_usd)
    left = trusted(BudgetLeft, run_tokens=rt, run_usd=rd, thread_tokens=tt, thread_usd=td)
    return left, _least(rt, tt), _least(rd, td)


def _exhausted(policy: Policy, state: LedgerState, left: BudgetLeft) -> tuple[str, str, str] | None:
    scopes = (("run", policy.budgets.run, state.run), ("thread", policy.budgets.thread, state.thread))
    for scope, limit, usage in scopes:
        if limit.tokens is not None and usage.total_tokens >= limit.tokens:
            return scope, f"{usage.total_tokens} tokens", f"{limit.tokens} tokens"
        if limit.usd is not None and usage.cost_usd >= limit.usd:
            return scope, f"${usage.cost_usd:.6f}", f"${limit.usd:.6f}"
    return None


def _worst_cost(tier: Tier, out_tokens: int, in_tokens: int) -> float:
    return tier.price.cost(in_tokens, out_tokens)


def _fallback(policy: Policy, tier: str) -> list[str]:
    if not policy.fallback.enabled:
        return []
    order = policy.fallback_order
    if tier in order:
        i = order.index(tier)
        return order[i + 1:] + order[:i]
    return list(order)


def decide(
    policy: Policy,
    difficulty: Difficulty,
    state: LedgerState,
    *,
    step: int | None = None,
    loop: str | None = None,
    input_tokens: int = 0,
    shared_exhausted: str | None = None,
) -> Decision:
    """Decide one step. Raises BudgetExceeded when a budget is spent and the policy says ``error``.

    Every value comes from the validated policy, the estimate (a score in [0, 1]) and the ledger, so the
    Decision is built without re-validation (this runs on every model step).

    ``loop`` is the loop guard's verdict (why the agent looks stuck), ``input_tokens`` an estimate of the
    prompt size, used to keep the step inside the remaining budget; ``shared_exhausted`` says a shared
    (team) budget had no room for this step's reservation.
    """
    step = state.steps if step is None else step
    plans = _band_plans(policy)
    left, tokens_left, usd_left = _budget_left(plans.limits, state)
    # a budget is spent exactly when what is left of it is 0 (left = max(0, limit - spent))
    spent = _exhausted(policy, state, left) if tokens_left == 0 or usd_left == 0 else None
    if spent is None and shared_exhausted is not None:
        if policy.budgets.on_exhausted == "error":
            raise BudgetExceeded("team", shared_exhausted, "the team limit")
    if spent is not None and policy.budgets.on_exhausted == "error":
        raise BudgetExceeded(*spent)
    if spent is not None or loop is not None or shared_exhausted is not None:
        fin = policy.budgets.finalize
        name = fin.tier or policy.cheapest_tier
        tier = policy.tier(name)
        if spent is not None:
            why = f"{spent[0]} budget exhausted ({spent[1]} of {spent[2]})"
        elif shared_exhausted is not None:
            why = f"team budget exhausted ({shared_exhausted})"
        else:
            why = f"loop capped: {loop}"
        return trusted(Decision,
            step=step, action="finalize", tier=name, model=tier.model, thinking=False, thinking_budget=None,
            max_tokens=min(fin.max_tokens, tier.max_tokens), samples=1, band=None,
            difficulty=difficulty.score, signals=dict(difficulty.signals),
            reason=f"{why}; one last call without thinking for the final answer",
            budget_left=left, loop=loop, fallback=_fallback(policy, name),
        )

    score = difficulty.score
    plan = plans.for_score(score)
    max_tokens, budget = plan.max_tokens, plan.thinking_budget
    # the common case: what is left covers the band's plan as it is (the cost is Price.cost's sum)
    if (tokens_left is None or (tokens_left - input_tokens >= max_tokens
                                and (budget is None or budget < max_tokens))) and (
            usd_left is None
            or (input_tokens * plan.price_in + max_tokens * plan.price_out) / 1e6 * plan.samples <= usd_left):
        return trusted(
            Decision, step=step, action="call", tier=plan.tier_name, model=plan.model, thinking=plan.thinking,
            thinking_budget=budget, max_tokens=max_tokens, samples=plan.samples,
            prompt_budget=plan.prompt_budget, band=plan.band_name,
            consistency=None if plan.consistency is None else dict(plan.consistency), verify=plan.verify,
            early_exit=None if plan.early_exit is None else dict(plan.early_exit),
            difficulty=score, signals=dict(difficulty.signals), reason=f"difficulty {score:.2f} {plan.where_thinking}",
            budget_left=left, loop=None, fallback=list(plan.fallback),
        )
    return _fitted(policy, plan, difficulty, step, left, tokens_left, usd_left, input_tokens)


def _fitted(policy: Policy, plan: _BandPlan, difficulty: Difficulty, step: int, left: BudgetLeft,
            tokens_left: int | None, usd_left: float | None, input_tokens: int) -> Decision:
    """The band's plan cut down to what is left of the budget (``decide`` builds the plan as it is directly
    when it fits)."""
    name, tier = plan.tier_name, plan.tier
    max_tokens, thinking, budget = plan.max_tokens, plan.thinking, plan.thinking_budget
    fallback = plan.fallback
    reasons = [f"difficulty {difficulty.score:.2f} {plan.where}"]

    # stay inside what is left: fewer output tokens, then a cheaper tier if even that does not fit in $.
    if tokens_left is not None:
        room = max(1, tokens_left - input_tokens)
        if room < max_tokens:
            max_tokens = room
            reasons.append(f"max_tokens cut to {room} by the remaining token budget")
        if budget is not None and budget >= max_tokens:
            budget = max(0, max_tokens // 2)
            reasons.append(f"thinking budget cut to {budget}")
    if usd_left is not None:
        samples_cost = _worst_cost(tier, max_tokens, input_tokens) * plan.samples
        if samples_cost > usd_left:
            cheaper = sorted(
                (n for n in policy.tiers if _worst_cost(policy.tiers[n], max_tokens, input_tokens) < samples_cost),
                key=lambda n: _worst_cost(policy.tiers[n], max_tokens, input_tokens),
            )
            if cheaper and cheaper[-1] != name:
                # the most capable tier that still fits, or the cheapest one
                fitting = [n for n in cheaper if _worst_cost(policy.tiers[n], max_tokens, input_tokens) <= usd_left]
                new = fitting[-1] if fitting else cheaper[0]
                reasons.append(f"tier {name} -> {new}: ${usd_left:.6f} left")
                name, tier = new, policy.tiers[new]
                fallback = tuple(_fallback(policy, new))
                thinking = thinking and tier.thinking.supported
                if not thinking:
                    budget = None
    reasons.append(_thinking_reason(thinking, budget))
    return trusted(
        Decision, step=step, action="call", tier=name, model=tier.model, thinking=thinking, thinking_budget=budget,
        max_tokens=max_tokens, samples=plan.samples, prompt_budget=plan.band.prompt_budget, band=plan.band.name,
        consistency=dict(plan.consistency) if plan.consistency is not None else None, verify=plan.verify,
        early_exit=dict(plan.early_exit) if plan.early_exit is not None and thinking else None,
        difficulty=difficulty.score, signals=dict(difficulty.signals), reason="; ".join(reasons),
        budget_left=left, loop=None, fallback=list(fallback),
    )


# ---------------------------------------------------------------------------------------------------
# What a band gives before any budget is looked at, worked out once per policy (decide runs every step).
# Policies are treated as immutable once in use.
# ---------------------------------------------------------------------------------------------------
def _thinking_reason(thinking: bool, budget: int | None) -> str:
    return f"thinking on, budget {budget if budget is not None else 'unbounded'}" if thinking else "thinking off"


_Limits = tuple[int | None, float | None, int | None, float | None]  # run tokens, run $, thread tokens, thread $


@dataclass(frozen=True, slots=True)
class _BandPlan:
    band: Band
    band_name: str
    prompt_budget: Literal["none", "tale", "draft"]
    model: str  # the tier's
    price_in: float  # the tier's, per million tokens
    price_out: float
    where: str  # "in band NAME [min, max)"
    where_thinking: str  # where, then the thinking part of the reason when no budget changes the plan
    tier_name: str
    tier: Tier
    max_tokens: int
    thinking: bool
    thinking_budget: int | None
    samples: int
    consistency: dict[str, Any] | None
    verify: bool
    early_exit: dict[str, Any] | None
    fallback: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _BandPlans:
    policy: Policy
    limits: _Limits
    ranges: tuple[tuple[float, float, _BandPlan], ...]  # (min, max, plan) in the policy's band order
    top: _BandPlan  # the band with the highest max (a score of 1.0 falls in it)

    def for_score(self, score: float) -> _BandPlan:
        """The plan of ``Policy.band_for(score)``."""
        for lo, hi, plan in self.ranges:
            if lo <= score < hi:
                return plan
        return self.top


def _compile_band(policy: Policy, band: Band) -> _BandPlan:
    tier = policy.tier(band.tier)
    max_tokens = min(x for x in (band.max_tokens, tier.max_tokens, policy.budgets.step.max_output_tokens) if x)
    thinking = band.thinking and tier.thinking.supported
    budget: int | None = None
    if thinking:
        caps = [c for c in (band.thinking_budget, tier.thinking.max_budget,
                            policy.budgets.step.max_thinking_tokens) if c]
        budget = min(caps) if caps else None
    where = f"in band {band.name} [{band.min}, {band.max})"
    return _BandPlan(band=band, band_name=band.name, prompt_budget=band.prompt_budget, model=tier.model,
                     price_in=tier.price.input_per_mtok, price_out=tier.price.output_per_mtok,
                     where=where, where_thinking=f"{where}; {_thinking_reason(thinking, budget)}",
                     tier_name=band.tier, tier=tier,
                     max_tokens=max_tokens, thinking=thinking, thinking_budget=budget, samples=band.samples,
                     consistency=band.consistency.model_dump() if band.samples > 1 else None,
                     verify=band.cascade is not None and band.samples == 1,
                     early_exit=band.early_exit.model_dump() if band.early_exit is not None and thinking else None,
                     fallback=tuple(_fallback(policy, band.tier)))


_PLANS: dict[int, _BandPlans] = {}


def _band_plans(policy: Policy) -> _BandPlans:
    got = _PLANS.get(id(policy))
    if got is None or got.policy is not policy:
        plans = {id(b): _compile_band(policy, b) for b in policy.bands}
        top = max(policy.bands, key=lambda b: b.max)
        b = policy.budgets
        got = _BandPlans(policy, (b.run.tokens, b.run.usd, b.thread.tokens, b.thread.usd),
                         tuple((band.min, band.max, plans[id(band)]) for band in policy.bands), plans[id(top)])
        if len(_PLANS) >= 64:  # a process holds a handful of policies; drop the oldest beyond that
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS[id(policy)] = got
    return got


def escalate(policy: Policy, decision: Decision, p_wrong: float) -> Decision | None:
    """The cascade's second decision: after the cheap answer was scored (P(wrong) by the verifier), the
    escalated call's Decision, or None to keep the cheap answer."""
    band = policy.band_named(decision.band)
    if band is None or band.cascade is None or decision.action != "call":
        return None
    c = band.cascade
    if p_wrong < c.threshold:
        return None
    tier = policy.tier(c.to)
    thinking = c.thinking and tier.thinking.supported
    caps = [x for x in (c.thinking_budget, tier.thinking.max_budget, policy.budgets.step.max_thinking_tokens) if x]
    budget = (min(caps) if caps else None) if thinking else None
    max_tokens = min(x for x in (tier.max_tokens, policy.budgets.step.max_output_tokens) if x)
    return decision.model_copy(update={
        "tier": c.to, "model": tier.model, "thinking": thinking, "thinking_budget": budget, "max_tokens": max_tokens,
        "verify": False, "early_exit": None, "fallback": _fallback(policy, c.to),
        "reason": f"{decision.reason}; cascade: the {decision.tier} answer looks wrong "
                  f"(P={p_wrong:.2f} >= {c.threshold}), escalated to {c.to}",
    })

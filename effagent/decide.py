"""The one place that decides: policy + difficulty + spending so far -> Decision.

Nothing else in effagent chooses a tier, a thinking budget, a sample count or whether to stop.
``decide`` is pure: same inputs, same Decision; it calls no model and touches no ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from effagent.checkin import Grant
from effagent.errors import BudgetExceeded
from effagent.ledger.base import LedgerState
from effagent.policy import Agreement, Consistency, EarlyExit, Policy, Tier
from effagent.records import Difficulty


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
    action: Literal["call", "finalize", "pause"] = "call"  # pause: a person is asked for more budget
    tier: str
    model: str
    thinking: bool = False
    thinking_budget: int | None = None  # None with thinking on = unbounded
    max_tokens: int
    samples: int = 1
    prompt_budget: Literal["none", "tale", "draft"] = "none"
    consistency: Consistency | None = None  # the band's self-consistency settings when samples > 1
    band: str | None = None
    difficulty: float = 0.0
    signals: dict[str, float] = Field(default_factory=dict)
    reason: str = ""
    budget_left: BudgetLeft = Field(default_factory=BudgetLeft)
    loop: str | None = None  # why a loop was capped, when it was
    fallback: list[str] = Field(default_factory=list)  # tiers to try, in order, if this one fails
    verify: bool = False  # the band cascades: verify the answer, escalate when it looks wrong
    warning: str | None = None  # budgets.warn_at reached: the note the step's request gets
    agreement: Agreement | None = None  # the band's agreement cascade: votes, and where to escalate
    shadow_tier: str | None = None  # learning.shadow_share: this step is also asked of this tier, for a label
    early_exit: EarlyExit | None = None  # the band's early-exit settings when it thinks with early exit

    def summary(self) -> dict[str, Any]:
        """The few fields that say what a step got (``telemetry.answer_metadata: summary``)."""
        out = {"step": self.step, "action": self.action, "band": self.band, "difficulty": self.difficulty,
               "thinking": self.thinking, "max_tokens": self.max_tokens}
        if self.action != "call":  # a step that ends the run early says why
            out["reason"] = self.reason
        if self.warning is not None:
            out["warning"] = self.warning
        return out


@dataclass(frozen=True)
class _Limits:
    """The run's and the thread's limits: the policy's, raised by what a person granted (None = no limit)."""

    run_tokens: int | None
    run_usd: float | None
    thread_tokens: int | None
    thread_usd: float | None

    @classmethod
    def of(cls, policy: Policy, grant: Grant | None) -> _Limits:
        b, g = policy.budgets, grant or Grant()

        def plus(limit: float | None, extra: float) -> Any:
            return None if limit is None else limit + extra

        return cls(plus(b.run.tokens, g.tokens), plus(b.run.usd, g.usd), plus(b.thread.tokens, g.tokens),
                   plus(b.thread.usd, g.usd))

    def scopes(self, state: LedgerState) -> list[tuple[str, str, float, float | None]]:
        """(scope, unit, spent, limit) of each budget."""
        return [("run", "tokens", state.run.total_tokens, self.run_tokens), ("run", "$", state.run.cost_usd,
                                                                             self.run_usd),
                ("thread", "tokens", state.thread.total_tokens, self.thread_tokens),
                ("thread", "$", state.thread.cost_usd, self.thread_usd)]


def _budget_left(limits: _Limits, state: LedgerState) -> BudgetLeft:
    """What is left of the run's and the thread's budgets before this step."""
    left = {f"{scope}_{'tokens' if unit == 'tokens' else 'usd'}": None if limit is None else max(0, limit - spent)
            for scope, unit, spent, limit in limits.scopes(state)}
    return BudgetLeft(**left)


def _exhausted(limits: _Limits, state: LedgerState) -> tuple[str, str, str] | None:
    """(scope, spent, limit) of the first spent budget, or None."""
    for scope, unit, spent, limit in limits.scopes(state):
        if limit is not None and spent >= limit:
            if unit == "tokens":
                return scope, f"{spent} tokens", f"{limit} tokens"
            return scope, f"${spent:.6f}", f"${limit:.6f}"
    return None


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
    grant: Grant | None = None,
    refused: bool = False,
    shadow_draw: float | None = None,
) -> Decision:
    """Decide one step. Raises BudgetExceeded when a budget is spent and the policy says ``error``.

    ``loop`` is the loop guard's verdict (why the agent looks stuck), ``input_tokens`` an estimate of the
    prompt size, used to keep the step inside the remaining budget; ``shared_exhausted`` says a shared
    (team) budget had no room for this step's reservation. ``grant`` is extra budget a person gave the thread
    (``on_exhausted: interrupt``), ``refused`` that they declined to give more. ``shadow_draw`` is this step's
    uniform draw in [0, 1) for ``learning.shadow_share`` (the caller draws it, so decide stays pure).

    With ``on_exhausted: interrupt`` a spent run or thread budget gives ``action: pause`` (the integration asks a
    person; see :mod:`effagent.checkin`) unless more was refused.
    """
    step = state.steps if step is None else step
    limits = _Limits.of(policy, grant)
    left = _budget_left(limits, state)
    spent = _exhausted(limits, state)
    if spent is not None and policy.budgets.on_exhausted == "interrupt" and not refused:
        tier = policy.tier(policy.budgets.finalize.tier or policy.cheapest_tier)
        return Decision(step=step, action="pause", tier=policy.budgets.finalize.tier or policy.cheapest_tier,
                        model=tier.model, max_tokens=1, difficulty=difficulty.score,
                        signals=dict(difficulty.signals), budget_left=left,
                        reason=f"{spent[0]} budget exhausted ({spent[1]} of {spent[2]}); waiting for a person to "
                               "grant more or refuse")
    if spent is not None and policy.budgets.on_exhausted == "error":
        raise BudgetExceeded(*spent)
    if spent is None and shared_exhausted is not None and policy.budgets.on_exhausted == "error":
        raise BudgetExceeded("team", shared_exhausted, "the team limit")
    if spent is not None or loop is not None or shared_exhausted is not None:
        if spent is not None:
            why = f"{spent[0]} budget exhausted ({spent[1]} of {spent[2]})"
            why += "; more budget was refused" if refused else ""
        elif shared_exhausted is not None:
            why = f"team budget exhausted ({shared_exhausted})"
        else:
            why = f"loop capped: {loop}"
        return _finalize(policy, difficulty, step, left, loop, why)

    band = policy.band_for(difficulty.score)
    name = band.tier
    tier = policy.tier(name)
    caps = (band.max_tokens, tier.max_tokens, policy.budgets.step.max_output_tokens)
    max_tokens = min(c for c in caps if c)
    thinking = band.thinking and tier.thinking.supported
    budget = _thinking_budget(band.thinking_budget, tier, policy) if thinking else None
    reasons = [f"difficulty {difficulty.score:.2f} in band {band.name} [{band.min}, {band.max})"]

    # stay inside what is left: fewer output tokens, then a cheaper tier if even that does not fit in $
    tokens_left, usd_left = left.tokens(), left.usd()
    if tokens_left is not None:
        room = max(1, tokens_left - input_tokens)
        if room < max_tokens:
            max_tokens = room
            reasons.append(f"max_tokens cut to {room} by the remaining token budget")
        if budget is not None and budget >= max_tokens:
            budget = max(0, max_tokens // 2)
            reasons.append(f"thinking budget cut to {budget}")
    if usd_left is not None:
        cheaper = _cheaper_tier(policy, name, max_tokens, input_tokens, band.samples, usd_left)
        if cheaper is not None:
            reasons.append(f"tier {name} -> {cheaper}: ${usd_left:.6f} left")
            name, tier = cheaper, policy.tier(cheaper)
            thinking = thinking and tier.thinking.supported
            budget = budget if thinking else None
    reasons.append(_thinking_reason(thinking, budget))
    warning = _warning(policy, limits, state)
    if warning is not None:
        reasons.append(warning)
    shadow = None
    if shadow_draw is not None and shadow_draw < policy.learning.shadow_share and band.samples == 1 \
            and band.agreement is None and name != policy.strong_tier:
        shadow = policy.strong_tier
        reasons.append(f"shadowed on {shadow} for a label")
    return Decision(
        step=step, action="call", tier=name, model=tier.model, thinking=thinking, thinking_budget=budget,
        max_tokens=max_tokens, samples=band.samples, prompt_budget=band.prompt_budget, band=band.name,
        agreement=band.agreement, shadow_tier=shadow,
        consistency=band.consistency if band.samples > 1 else None,
        verify=band.cascade is not None and band.samples == 1,
        early_exit=band.early_exit if thinking else None,
        difficulty=difficulty.score, signals=dict(difficulty.signals), reason="; ".join(reasons),
        budget_left=left, fallback=_fallback(policy, name), warning=warning,
    )


def _warning(policy: Policy, limits: _Limits, state: LedgerState) -> str | None:
    """The soft limit's note once ``budgets.warn_at`` of the run's or the thread's budget is spent."""
    at = policy.budgets.warn_at
    if at is None:
        return None
    shares = [(used / limit, scope, "token" if unit == "tokens" else unit)
              for scope, unit, used, limit in limits.scopes(state) if limit]
    if not shares:
        return None
    share, scope, unit = max(shares)
    if share < at:
        return None
    return f"budget nearly spent: {share:.0%} of the {scope}'s {unit} budget is used; wrap up and answer soon"


def _thinking_budget(asked: int | None, tier: Tier, policy: Policy) -> int | None:
    """The smallest of the asked budget, the tier's cap and the step cap (None: unbounded)."""
    caps = [c for c in (asked, tier.thinking.max_budget, policy.budgets.step.max_thinking_tokens) if c]
    return min(caps) if caps else None


def _cheaper_tier(policy: Policy, name: str, max_tokens: int, input_tokens: int, samples: int,
                  usd_left: float) -> str | None:
    """When the step's worst case on ``name`` (every sample at ``max_tokens``) costs more than what is left:
    the most capable cheaper tier that fits (the dearest one that does), or else the cheapest tier; None when
    ``name`` fits or no tier is cheaper."""
    if policy.tier(name).price.cost(input_tokens, max_tokens) * samples <= usd_left:
        return None
    cost = {n: t.price.cost(input_tokens, max_tokens) * samples for n, t in policy.tiers.items()}
    cheaper = sorted((n for n in policy.tiers if cost[n] < cost[name]), key=lambda n: cost[n])
    if not cheaper:
        return None
    fitting = [n for n in cheaper if cost[n] <= usd_left]
    return fitting[-1] if fitting else cheaper[0]


def _finalize(policy: Policy, difficulty: Difficulty, step: int, left: BudgetLeft, loop: str | None,
              why: str) -> Decision:
    """One last call without tools or thinking for the final answer."""
    fin = policy.budgets.finalize
    name = fin.tier or policy.cheapest_tier
    tier = policy.tier(name)
    return Decision(
        step=step, action="finalize", tier=name, model=tier.model, thinking=False, thinking_budget=None,
        max_tokens=min(fin.max_tokens, tier.max_tokens), samples=1, band=None,
        difficulty=difficulty.score, signals=dict(difficulty.signals),
        reason=f"{why}; one last call without thinking for the final answer",
        budget_left=left, loop=loop, fallback=_fallback(policy, name),
    )


def _thinking_reason(thinking: bool, budget: int | None) -> str:
    return f"thinking on, budget {budget if budget is not None else 'unbounded'}" if thinking else "thinking off"


def escalate_on_disagreement(policy: Policy, decision: Decision, agreed: float) -> Decision | None:
    """The agreement cascade's second decision: the votes gave the majority answer ``agreed`` of the time; below
    the band's threshold, the escalated call's Decision (thinking off, the tier's own output cap), else None."""
    a = decision.agreement
    if a is None or decision.action != "call" or agreed >= a.threshold:
        return None
    tier = policy.tier(a.to)
    max_tokens = min(x for x in (tier.max_tokens, policy.budgets.step.max_output_tokens) if x)
    return decision.model_copy(update={
        "tier": a.to, "model": tier.model, "thinking": False, "thinking_budget": None, "max_tokens": max_tokens,
        "agreement": None, "verify": False, "early_exit": None, "fallback": _fallback(policy, a.to),
        "reason": f"{decision.reason}; agreement cascade: {agreed:.0%} of the votes agreed "
                  f"(< {a.threshold:.0%}), escalated to {a.to}",
    })


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
    budget = _thinking_budget(c.thinking_budget, tier, policy) if thinking else None
    max_tokens = min(x for x in (tier.max_tokens, policy.budgets.step.max_output_tokens) if x)
    return decision.model_copy(update={
        "tier": c.to, "model": tier.model, "thinking": thinking, "thinking_budget": budget, "max_tokens": max_tokens,
        "verify": False, "early_exit": None, "fallback": _fallback(policy, c.to),
        "reason": f"{decision.reason}; cascade: the {decision.tier} answer looks wrong "
                  f"(P={p_wrong:.2f} >= {c.threshold}), escalated to {c.to}",
    })

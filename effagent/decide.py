"""The one place that decides: policy + difficulty + spending so far -> Decision.

Nothing else in effagent chooses a tier, a thinking budget, a sample count or whether to stop.
``decide`` is pure: same inputs, same Decision; it calls no model and touches no ledger.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field

from effagent.checkin import Grant
from effagent.errors import BudgetExceeded
from effagent.ledger.base import LedgerState
from effagent.policy import Agreement, Band, Consistency, EarlyExit, Policy, Tier
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


Lever = Literal["plain", "samples", "agreement", "early_exit", "cascade"]
"""What a call step runs, decided here once: ``plain`` one call; ``samples`` adaptive self-consistency
(``consistency``, up to ``samples`` calls); ``agreement`` an agreement cascade (``agreement``); ``early_exit``
chunked thinking with answer probes (``early_exit``: answer steps only, no tools offered, thinking on);
``cascade`` one call whose answer is verified and may be escalated (``verify``). A finalize, pause or halt
decision, and an escalated one, is ``plain``."""


def lever_for(band: Band, thinking: bool, tools_offered: bool) -> Lever:
    """The lever a band's call step runs (the policy forbids combining them, see ``policy.Band``)."""
    if band.agreement is not None:
        return "agreement"
    if band.samples > 1:
        return "samples"
    if band.early_exit is not None and thinking and not tools_offered:
        return "early_exit"
    return "cascade" if band.cascade is not None else "plain"


class Decision(BaseModel):
    """What one model step gets. Serialisable; logged, traced and testable without a model."""

    step: int = 0
    action: Literal["call", "finalize", "pause", "halt"] = "call"
    """call: the step is made; finalize: one last answer without tools or thinking; pause: a person is asked for
    more budget; halt: the run ends with a message made without a model call (no room even for a final answer)."""
    tier: str
    model: str
    thinking: bool = False
    thinking_budget: int | None = None  # None with thinking on = unbounded
    effort: str | None = None  # the band's effort / thinking level, when it names one (request.encode sends it)
    max_tokens: int
    samples: int = 1
    prompt_budget: Literal["none", "tale", "draft"] = "none"
    consistency: Consistency | None = None  # the band's self-consistency settings when samples > 1
    band: str | None = None
    difficulty: float = 0.0
    signals: dict[str, float] = Field(default_factory=dict)
    reason: str = ""
    budget_left: BudgetLeft = Field(default_factory=BudgetLeft)
    """What is left before this step: of what steps may use (the limits less the final answer's reserve) on a
    call, of the whole limits on a final answer or a pause."""
    loop: str | None = None  # why a loop was capped, when it was
    fallback: list[str] = Field(default_factory=list)  # tiers to try, in order, if this one fails
    verify: bool = False  # the band cascades: verify the answer, escalate when it looks wrong
    warning: str | None = None  # budgets.warn_at reached: the note the step's request gets
    agreement: Agreement | None = None  # the band's agreement cascade: votes, and where to escalate
    shadow_tier: str | None = None  # learning.shadow_share: this step is also asked of this tier, for a label
    early_exit: EarlyExit | None = None  # the band's early-exit settings when it thinks with early exit
    role: str | None = None  # the step's role in its run (effagent.records.StepRole), when known
    switch_cost: float | None = None
    """USD the band's tier change would forfeit: the cached part of the conversation at the new tier's input
    price less the previous tier's cache-read price (None: the band's tier is the previous step's)."""
    switch_saving: float | None = None  # USD the band's tier change was expected to save on this step
    stayed_for_cache: bool = False  # routing: the step stayed on the previous step's tier instead of the band's
    lever: Lever = "plain"
    """How the step is carried out (:data:`Lever`); ``effagent.step`` dispatches on it and nothing else."""

    def summary(self) -> dict[str, Any]:
        """The few fields that say what a step got (``telemetry.answer_metadata: summary``)."""
        out = {"step": self.step, "action": self.action, "band": self.band, "difficulty": self.difficulty,
               "thinking": self.thinking, "max_tokens": self.max_tokens}
        if self.role is not None:
            out["role"] = self.role
        if self.stayed_for_cache:
            out["stayed_for_cache"] = True
        if self.action != "call":  # a step that ends the run early says why
            out["reason"] = self.reason
        if self.warning is not None:
            out["warning"] = self.warning
        return out


MIN_OUTPUT_TOKENS = 16
"""A step (or a final answer) with room for fewer output tokens than this is not made: the budget is spent."""


def _plus(limit: Any, extra: float) -> Any:
    return None if limit is None else limit + extra


def _left(limit: Any, spent: float) -> Any:
    return None if limit is None else max(0, limit - spent)


class _Limits(NamedTuple):
    """The run's and the thread's limits: the policy's, raised by what a person granted (None = no limit)."""

    run_tokens: int | None
    run_usd: float | None
    thread_tokens: int | None
    thread_usd: float | None

    @classmethod
    def of(cls, policy: Policy, grant: Grant | None) -> _Limits:
        b = policy.budgets
        tokens, usd = (grant.tokens, grant.usd) if grant is not None else (0, 0.0)
        return cls(_plus(b.run.tokens, tokens), _plus(b.run.usd, usd), _plus(b.thread.tokens, tokens),
                   _plus(b.thread.usd, usd))

    def for_steps(self, reserve: float) -> _Limits:
        """What ordinary steps may use: each limit less the share kept back for the final answer."""
        return _Limits(steps_share(self.run_tokens, reserve), steps_share(self.run_usd, reserve),
                       steps_share(self.thread_tokens, reserve), steps_share(self.thread_usd, reserve))

    def scopes(self, state: LedgerState) -> list[tuple[str, str, float, float | None]]:
        """(scope, unit, spent, limit) of each budget."""
        return [("run", "tokens", state.run.total_tokens, self.run_tokens), ("run", "$", state.run.cost_usd,
                                                                             self.run_usd),
                ("thread", "tokens", state.thread.total_tokens, self.thread_tokens),
                ("thread", "$", state.thread.cost_usd, self.thread_usd)]


def steps_share(limit: Any, reserve: float) -> Any:
    """The part of a limit ordinary steps may use (``budgets.finalize.reserve`` is kept for the final answer);
    tokens round down, so the reserve is never smaller than asked. None stays None."""
    if limit is None:
        return None
    if isinstance(limit, int):
        return limit - math.ceil(limit * reserve)
    return limit * (1.0 - reserve)


def _budget_left(limits: _Limits, state: LedgerState) -> dict[str, Any]:
    """What is left of the run's and the thread's budgets before this step (:class:`BudgetLeft`'s fields: the
    Decision validates them once, with the rest of the decision)."""
    run, thread = state.run, state.thread
    return {"run_tokens": _left(limits.run_tokens, run.total_tokens), "run_usd": _left(limits.run_usd, run.cost_usd),
            "thread_tokens": _left(limits.thread_tokens, thread.total_tokens),
            "thread_usd": _left(limits.thread_usd, thread.cost_usd)}


def _tokens_usd(left: dict[str, Any]) -> tuple[int | None, float | None]:
    """The tokens and dollars left (:meth:`BudgetLeft.tokens`, :meth:`BudgetLeft.usd`) of a ``_budget_left``."""
    return _least(left["run_tokens"], left["thread_tokens"]), _least(left["run_usd"], left["thread_usd"])


def _exhausted(limits: _Limits, state: LedgerState, need_tokens: int = 0,
               need_usd: float = 0.0) -> tuple[str, str, str] | None:
    """(scope, spent, limit) of the first budget without room for ``need_tokens`` / ``need_usd`` more, or None."""
    for scope, unit, spent, limit in limits.scopes(state):
        if limit is None:
            continue
        if unit == "tokens" and (spent >= limit or spent + need_tokens > limit):
            more = f" + ~{need_tokens} for this step" if spent < limit else ""
            return scope, f"{spent} tokens{more}", f"{limit} tokens"
        if unit == "$" and (spent >= limit or spent + need_usd > limit):
            more = f" + ~${need_usd:.6f} for this step" if spent < limit else ""
            return scope, f"${spent:.6f}{more}", f"${limit:.6f}"
    return None


def _fallback(policy: Policy, tier: str) -> list[str]:
    if not policy.fallback.enabled:
        return []
    order = policy.fallback_order
    if tier in order:
        i = order.index(tier)
        return order[i + 1:] + order[:i]
    return list(order)


class PolicyFacts(NamedTuple):
    """What ``decide`` reads of a policy on every step that depends on the policy alone, worked out once: a
    :class:`~effagent.governor.Governor` keeps one for its policy (which never changes under it), and ``decide``
    works one out when given none."""

    limits: _Limits  # the run's and the thread's limits (no grant)
    step_limits: _Limits  # ... less the final answer's reserve: what ordinary steps may use
    cheapest: str  # the cheapest tier
    fallbacks: dict[str, list[str]]  # per tier, the tiers to try if it fails

    @classmethod
    def of(cls, policy: Policy) -> PolicyFacts:
        limits = _Limits.of(policy, None)
        return cls(limits, limits.for_steps(policy.budgets.finalize.reserve), policy.cheapest_tier,
                   {name: _fallback(policy, name) for name in policy.tiers})


def decide(
    policy: Policy,
    difficulty: Difficulty,
    state: LedgerState,
    *,
    step: int | None = None,
    loop: str | None = None,
    input_tokens: int = 0,
    shared_exhausted: str | None = None,
    denied_scope: str | None = None,
    final_denied: str | None = None,
    final_input_tokens: int | None = None,
    grant: Grant | None = None,
    refused: bool = False,
    shadow_draw: float | None = None,
    tools_offered: bool = False,
    role: str | None = None,
    prev_tier: str | None = None,
    cached_tokens: int = 0,
    facts: PolicyFacts | None = None,
) -> Decision:
    """Decide one step. Raises BudgetExceeded when a budget is spent and the policy says ``error``.

    ``loop`` is the loop guard's verdict (why the agent looks stuck), ``input_tokens`` the prompt's token count,
    used to keep the step inside the remaining budget; ``shared_exhausted`` says the ledger had no room for this
    step's reservation (``denied_scope``: the scope that had none), ``final_denied`` that it had no room for the
    final answer either (whose prompt, its instruction included, is ``final_input_tokens``; default
    ``input_tokens``). ``grant`` is extra budget a person gave the thread (``on_exhausted: interrupt``),
    ``refused`` that they declined to give more. ``shadow_draw`` is this step's uniform draw in [0, 1) for
    ``learning.shadow_share`` (the caller draws it, so decide stays pure). ``tools_offered``: the step offers
tools (early exit is for answer steps only; see :data:`Lever`).

    ``role`` is the step's role (:data:`effagent.records.StepRole`): bands with ``roles`` match it first.
    ``prev_tier`` is the tier that answered the run's previous step and ``cached_tokens`` the part of this
    step's prompt that tier has cached (the conversation up to its answer); ``routing.switch`` says whether the
    step may leave that tier (:func:`switch_check`). ``facts``: the policy's :class:`PolicyFacts`, when the caller
    keeps them (worked out here otherwise).

    Ordinary steps use each limit less ``budgets.finalize.reserve``; the final answer of an exhausted run may use
    the reserve. A budget is exhausted once the step's prompt and the least useful answer
    (:data:`MIN_OUTPUT_TOKENS`) no longer fit. With ``on_exhausted: interrupt`` an exhausted run or thread budget
    gives ``action: pause`` (the integration asks a person; see :mod:`effagent.checkin`) unless more was refused;
    when the final answer has no room, ``action: halt`` ends the run without a model call.
    """
    step = state.steps if step is None else step
    facts = PolicyFacts.of(policy) if facts is None else facts
    if grant is None:
        limits, step_limits = facts.limits, facts.step_limits
    else:  # a person's grant raises the run's and the thread's limits
        limits = _Limits.of(policy, grant)
        step_limits = limits.for_steps(policy.budgets.finalize.reserve)
    cheapest = policy.tier(facts.cheapest).price
    need = input_tokens + MIN_OUTPUT_TOKENS
    spent = _exhausted(step_limits, state, need, cheapest.cost(input_tokens, MIN_OUTPUT_TOKENS))
    mode = policy.budgets.on_exhausted
    ours = spent is not None or denied_scope in ("run", "thread")  # a budget a person can raise
    if ours and mode == "interrupt" and not refused and final_denied is None:
        name = policy.budgets.finalize.tier or facts.cheapest
        why = (f"{spent[0]} budget exhausted ({spent[1]} of {spent[2]} usable by steps)" if spent is not None
               else f"{denied_scope} budget exhausted ({shared_exhausted})")
        return Decision(step=step, action="pause", tier=name, model=policy.tier(name).model, max_tokens=1,
                        difficulty=difficulty.score, signals=dict(difficulty.signals),
                        budget_left=_budget_left(limits, state),
                        reason=f"{why}; waiting for a person to grant more or refuse", role=role)
    if spent is not None and mode == "error":
        raise BudgetExceeded(*spent)
    if spent is None and shared_exhausted is not None and mode == "error":
        raise BudgetExceeded(denied_scope or "team", shared_exhausted, f"the {denied_scope or 'team'} limit")
    if spent is not None or loop is not None or shared_exhausted is not None:
        if spent is not None:
            why = f"{spent[0]} budget exhausted ({spent[1]} of {spent[2]} usable by steps)"
            why += "; more budget was refused" if refused else ""
        elif shared_exhausted is not None:
            why = f"{denied_scope or 'team'} budget exhausted ({shared_exhausted})"
        else:
            why = f"loop capped: {loop}"
        final_input = input_tokens if final_input_tokens is None else final_input_tokens
        return _finalize(policy, facts, difficulty, step, limits, state, final_input, loop, why, final_denied
                         ).model_copy(update={"role": role})

    band = policy.band_for(difficulty.score, role)
    name = band.tier
    tier = policy.tier(name)
    caps = (band.max_tokens, tier.max_tokens, policy.budgets.step.max_output_tokens)
    max_tokens = min(c for c in caps if c)
    reasons = [f"difficulty {difficulty.score:.2f} in band {band.name} [{band.min}, {band.max})"
               + (f", role {role}" if role else "")]
    switch = switch_check(policy, name, prev_tier, role, input_tokens, cached_tokens,
                          _expected_output(state, max_tokens))
    if switch.reason:
        reasons.append(switch.reason)
    if switch.tier != name:
        name, tier = switch.tier, policy.tier(switch.tier)
        max_tokens = min(c for c in (band.max_tokens, tier.max_tokens, policy.budgets.step.max_output_tokens) if c)
    thinking = band.thinking and tier.thinking.supported
    budget = _thinking_budget(band.thinking_budget, tier, policy) if thinking else None

    # stay inside what is left for steps: fewer output tokens, then a cheaper tier if even that does not fit in $
    step_left = _budget_left(step_limits, state)
    tokens_left, usd_left = _tokens_usd(step_left)
    if tokens_left is not None:
        room = max(MIN_OUTPUT_TOKENS, tokens_left - input_tokens)
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
    lever = lever_for(band, thinking, tools_offered)
    return Decision(
        step=step, action="call", tier=name, model=tier.model, thinking=thinking, thinking_budget=budget,
        effort=band.effort if thinking else None, max_tokens=max_tokens, samples=band.samples,
        prompt_budget=band.prompt_budget, band=band.name,
        agreement=band.agreement, shadow_tier=shadow,
        consistency=band.consistency if band.samples > 1 else None,
        verify=lever == "cascade", lever=lever,
        early_exit=band.early_exit if lever == "early_exit" else None,
        difficulty=difficulty.score, signals=dict(difficulty.signals), reason="; ".join(reasons),
        budget_left=step_left, fallback=facts.fallbacks[name], warning=warning,
        role=role, switch_cost=switch.cost, switch_saving=switch.saving, stayed_for_cache=switch.stayed,
    )


class Switch(NamedTuple):
    """What ``routing.switch`` made of a step whose band names another tier than the previous step's."""

    tier: str  # where the step goes
    cost: float | None = None  # USD the change forfeits (None: no change was asked for)
    saving: float | None = None  # USD the change was expected to save
    stayed: bool = False  # it stays on the previous tier
    reason: str = ""


def _expected_output(state: LedgerState, max_tokens: int) -> int:
    """This step's expected output: the run's mean per call so far, else half its cap."""
    run = state.run
    if run.calls > 0:
        return max(1, min(max_tokens, round(run.output_tokens / run.calls)))
    return max(1, max_tokens // 2)


def switch_check(policy: Policy, band_tier: str, prev_tier: str | None, role: str | None, input_tokens: int,
                 cached_tokens: int, expected_output: int) -> Switch:
    """Whether a step goes to its band's tier or stays on the tier that answered the run's previous step.

    Switching forfeits the previous tier's prompt cache: the cached ``cached_tokens`` are paid at the new tier's
    input price instead of the old tier's cache-read price (``switch_cost``). The saving is the rest of the
    step at the new tier's prices instead of the old one's: the uncached part of the prompt and the expected
    output. ``routing.switch: cost`` moves to a cheaper tier only when the saving is the larger (a move to a
    dearer tier is for capability and always made); ``turn`` keeps the previous tier for every step of a user
    turn but its first; ``step`` always follows the band."""
    if prev_tier is None or prev_tier == band_tier or prev_tier not in policy.tiers:
        return Switch(band_tier)
    inp = max(0, input_tokens)
    cached = min(max(0, cached_tokens), inp)
    old_in, old_read, _, old_out = policy.tier(prev_tier).price.rates(inp)
    new_in, _, _, new_out = policy.tier(band_tier).price.rates(inp)
    cost = cached * (new_in - old_read) / 1e6
    saving = ((inp - cached) * (old_in - new_in) + expected_output * (old_out - new_out)) / 1e6
    mode = policy.routing.switch
    if mode == "step":
        return Switch(band_tier, cost, saving)
    if mode == "turn":
        if role == "first":
            return Switch(band_tier, cost, saving, reason=f"routing.switch turn: a new user turn may change tier "
                                                          f"({prev_tier} -> {band_tier})")
        return Switch(prev_tier, cost, saving, stayed=True,
                      reason=f"routing.switch turn: stays on {prev_tier} for the rest of the user turn "
                             f"(band tier {band_tier})")
    if inp * new_in + expected_output * new_out > inp * old_in + expected_output * old_out:
        # a dearer tier: the band asks for capability
        return Switch(band_tier, cost, saving, reason=f"switch {prev_tier} -> {band_tier} (a dearer tier, for "
                                                      f"capability; forfeits ${cost:.6f} of cached prompt)")
    if cost > saving:
        return Switch(prev_tier, cost, saving, stayed=True,
                      reason=f"stayed on {prev_tier} for its cache: switching to {band_tier} would forfeit "
                             f"${cost:.6f} ({cached} cached prompt tokens) to save ${saving:.6f}")
    return Switch(band_tier, cost, saving, reason=f"switch {prev_tier} -> {band_tier}: saves ${saving:.6f}, more "
                                                  f"than the ${cost:.6f} of cached prompt it forfeits")


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
    if policy.tier(name).price.max_cost(input_tokens, max_tokens) * samples <= usd_left:
        return None
    cost = {n: t.price.max_cost(input_tokens, max_tokens) * samples for n, t in policy.tiers.items()}
    cheaper = sorted((n for n in policy.tiers if cost[n] < cost[name]), key=lambda n: cost[n])
    if not cheaper:
        return None
    fitting = [n for n in cheaper if cost[n] <= usd_left]
    return fitting[-1] if fitting else cheaper[0]


def _finalize(policy: Policy, facts: PolicyFacts, difficulty: Difficulty, step: int, limits: _Limits,
              state: LedgerState, input_tokens: int, loop: str | None, why: str, final_denied: str | None) -> Decision:
    """One last call without tools or thinking for the final answer, inside what is left of the limits (the
    reserve included); ``halt`` when not even :data:`MIN_OUTPUT_TOKENS` of answer fit."""
    fin = policy.budgets.finalize
    name = fin.tier or facts.cheapest
    tier = policy.tier(name)
    left = _budget_left(limits, state)
    max_tokens = min(fin.max_tokens, tier.max_tokens)
    tokens_left, usd_left = _tokens_usd(left)
    if tokens_left is not None:
        max_tokens = min(max_tokens, tokens_left - input_tokens)
    if usd_left is not None:
        # $ per output token at the prompt's size (a long-context price raises both rates)
        rate = (tier.price.max_cost(input_tokens, 1_000_000) - tier.price.max_cost(input_tokens, 0)) / 1_000_000
        room = usd_left - tier.price.max_cost(input_tokens, 0)
        if room < 0:
            max_tokens = 0
        elif rate > 0:
            max_tokens = min(max_tokens, math.floor(room / rate))
    if final_denied is not None or max_tokens < MIN_OUTPUT_TOKENS:
        detail = final_denied or f"{max(0, max_tokens)} output tokens would fit"
        return Decision(
            step=step, action="halt", tier=name, model=tier.model, max_tokens=0, samples=1, band=None,
            difficulty=difficulty.score, signals=dict(difficulty.signals), budget_left=left, loop=loop,
            reason=f"{why}; no room left for a final answer ({detail}): the run ends without another model call")
    return Decision(
        step=step, action="finalize", tier=name, model=tier.model, thinking=False, thinking_budget=None,
        max_tokens=max_tokens, samples=1, band=None,
        difficulty=difficulty.score, signals=dict(difficulty.signals),
        reason=f"{why}; one last call without thinking for the final answer",
        budget_left=left, loop=loop, fallback=facts.fallbacks[name],
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
        "agreement": None, "verify": False, "early_exit": None, "lever": "plain",
        "fallback": _fallback(policy, a.to),
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
        "verify": False, "early_exit": None, "lever": "plain", "fallback": _fallback(policy, c.to),
        "reason": f"{decision.reason}; cascade: the {decision.tier} answer looks wrong "
                  f"(P={p_wrong:.2f} >= {c.threshold}), escalated to {c.to}",
    })

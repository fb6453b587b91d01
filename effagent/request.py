"""Decision -> request: the one place that turns a :class:`~effagent.decide.Decision` and a tier into the
keyword arguments of that tier's call.

``decide`` chooses (tier, thinking on/off, thinking budget, max_tokens); this module only says how the chosen
values are written for the tier's server, within the tier's own limits (a fallback or escalation tier may
allow less than the decided one), per ``tier.thinking.control``:

- ``chat_template_kwargs``: ``extra_body.chat_template_kwargs.enable_thinking`` (vLLM chat templates);
  ``reasoning_effort``: ``reasoning_effort`` = effort_on / effort_off (OpenAI-compatible servers). The budget
  per ``tier.thinking.budget_param`` (the *enforcement*): ``server`` — vLLM's ``thinking_token_budget``
  request field; ``forcing`` — client-side budget forcing by the tier's chat model
  (:class:`effagent.integrations.tier_models.BudgetForcingChatModel`, which takes it as its ``thinking_budget``
  call argument); ``none`` — not bounded beyond ``max_tokens``;
- ``anthropic`` (Anthropic, Bedrock and Vertex Claude, through litellm): before Claude 4.6 (and with
  ``manual_budget`` on 4.6), ``thinking={"type": "enabled", "budget_tokens": N}`` with N >= 1,024 and
  N < max_tokens (``budget_over_max_tokens`` says whether max_tokens rises or the budget falls); thinking off
  sends no ``thinking``. Claude 4.6 and later think adaptively: ``reasoning_effort=<level>`` (the band's
  ``effort``, or the level its budget maps to), which litellm sends as ``thinking: {type: adaptive, display:
  summarized}`` and ``output_config.effort``; off sends ``reasoning_effort="none"`` (litellm: ``thinking:
  {type: disabled}``) where the model thinks by default, nothing where it does not;
- ``gemini`` (Gemini 2.5): litellm's ``thinking={"type": "enabled", "budget_tokens": N}`` (sent as
  ``thinkingConfig.thinkingBudget``), N within the model's range, -1 (dynamic) without a budget,
  ``{"type": "disabled", "budget_tokens": 0}`` for off (2.5 Pro cannot stop thinking: its least budget);
- ``gemini_levels`` (Gemini 3), ``openai_effort`` (o-series, GPT-5) and ``deepseek``: ``reasoning_effort``,
  the band's ``effort`` or the level a budget maps to by ``tier.thinking.effort_levels`` among the levels the
  model accepts (:mod:`effagent.capabilities`; ``effort_on`` without a budget, ``effort_off`` when off); a level
  is not a token bound, so the enforcement is ``none``;
- ``max_tokens``, and the tier's own ``extra_body``.

What had to give way to a provider's rule is said in :attr:`TierRequest.notes` (``effagent explain`` prints it).

The path of a band's ``thinking_budget``: policy -> ``decide`` -> :func:`encode` -> chat model -> HTTP body.
The other calls effagent makes on a tier (a difficulty probe, a thinking chunk of early exit or budget
forcing, the answer that continues closed thinking) get their settings here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from effagent.capabilities import LEVEL_ORDER, capabilities, level_for_budget
from effagent.policy import ANTHROPIC_MIN_BUDGET, LEVEL_CONTROLS, Tier, gemini_budget_limits, sends_manual_budget

if TYPE_CHECKING:  # for annotations only: decide does not depend on how its decisions are sent
    from effagent.decide import Decision

Enforcement = Literal["server", "forcing", "none"]

# request keys that shape sampling and go to an answer's continuation as well
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "stop", "presence_penalty", "frequency_penalty",
                 "repetition_penalty")
THINKING_ONLY_KEYS = ("chat_template_kwargs", "thinking_token_budget", "reasoning_effort", "thinking")

#: the call argument that carries a client-side thinking budget to a budget-forcing chat model
FORCED_BUDGET_ARG = "thinking_budget"


class TierRequest(NamedTuple):
    """What one call on one tier gets: the decided values as this tier can take them, and the call's keyword
    arguments (``settings``: what ``litellm.completion`` / ``ChatLiteLLM`` take)."""

    tier: str
    model: str
    thinking: bool
    thinking_budget: int | None  # None: thinking off, or on without a budget
    max_tokens: int
    enforcement: Enforcement | None  # how the budget is held to; None without a budget
    settings: dict[str, Any]
    notes: tuple[str, ...] = ()  # what gave way to the provider's rules (a budget raised, max_tokens raised, ...)
    effort: str | None = None  # the effort / thinking level sent (level controls, adaptive Claude), if any


def encode(decision: Decision, tier_name: str, tier: Tier) -> TierRequest:
    """The request for ``decision`` on ``tier`` (the decided tier, or a fallback/escalation tier)."""
    ctl = tier.thinking
    on = decision.thinking and ctl.supported
    budget = decision.thinking_budget if on else None
    if budget is not None and ctl.max_budget:
        budget = min(budget, ctl.max_budget)
    max_tokens = _capped_max_tokens(decision, tier)
    notes: list[str] = []
    manual = sends_manual_budget(tier)
    if on and manual:
        on, budget, max_tokens = _anthropic_budget(tier, budget, max_tokens, _raise_room(decision, tier), notes)
    elif on and ctl.control == "gemini" and budget is not None:
        budget = _gemini_budget(tier, budget, notes)
    elif not on and ctl.control == "gemini" and not gemini_budget_limits(tier.model)[2]:
        notes.append(f"{tier.model} cannot stop thinking: off sends its least budget "
                     f"({gemini_budget_limits(tier.model)[0]})")
    level = None
    if _sends_level(tier):
        level = thinking_level(tier, on, budget, decision.effort if on else None, notes)
    settings = switch_thinking(tier, on, {"max_tokens": max_tokens}, budget=budget, level=level)
    enforcement: Enforcement | None = None
    if budget is not None:
        param = ctl.budget_param
        if manual or ctl.control == "gemini":
            enforcement = "server"
        elif ctl.provider_native:
            enforcement = "none"  # a level, not a token bound
        elif param == "thinking_token_budget":
            settings.setdefault("extra_body", {})["thinking_token_budget"] = budget
            enforcement = "server"
        elif param == "budget_forcing":
            settings[FORCED_BUDGET_ARG] = budget
            enforcement = "forcing"
        else:
            enforcement = "none"
    return TierRequest(tier=tier_name, model=tier.model, thinking=on, thinking_budget=budget, max_tokens=max_tokens,
                       enforcement=enforcement, settings=settings, notes=tuple(notes), effort=level)


def max_tokens_sent(decision: Decision, tier_name: str, tier: Tier) -> int:
    """``encode(decision, tier_name, tier).max_tokens`` without building the request: the decided ``max_tokens``
    within the tier's cap, which only Claude's manual thinking budget (:func:`_anthropic_budget`) may raise."""
    if decision.thinking and tier.thinking.supported and sends_manual_budget(tier):
        return encode(decision, tier_name, tier).max_tokens
    return _capped_max_tokens(decision, tier)


def _capped_max_tokens(decision: Decision, tier: Tier) -> int:
    """The decided ``max_tokens`` within the tier's cap (at least 1)."""
    return max(1, min(decision.max_tokens, tier.max_tokens))


def _sends_level(tier: Tier) -> bool:
    """The tier's thinking goes as a level: a level control, or Claude 4.6+ without a manual budget."""
    ctl = tier.thinking
    return ctl.control in LEVEL_CONTROLS or (ctl.control == "anthropic" and not sends_manual_budget(tier))


def thinking_level(tier: Tier, on: bool, budget: int | None, effort: str | None = None,
                   notes: list[str] | None = None) -> str | None:
    """The ``reasoning_effort`` a level-sending tier gets (None: send none), within the levels its model
    accepts (:func:`effagent.capabilities.capabilities`). On: ``effort`` (a band's level), else the level
    ``budget`` maps to by ``effort_levels`` (the nearest at or above it), else ``effort_on``. Off: ``effort_off``;
    on Claude, ``none`` where the model thinks by default (litellm sends ``thinking: {type: disabled}``) and
    nothing where it does not."""
    ctl, caps = tier.thinking, capabilities(tier.model)
    notes = [] if notes is None else notes
    accepted = caps.named_levels
    claude = ctl.control == "anthropic"
    if not on:
        if not caps.can_off:
            notes.append(f"{tier.model} cannot switch thinking off: thinking off sends "
                         + ("nothing (the model thinks anyway)" if claude else
                            "its lowest thinking level" if ctl.effort_off == "none" else f"effort {ctl.effort_off}"))
        if claude:
            return "none" if caps.thinks_by_default and caps.can_off else None
        return ctl.effort_off
    if effort is not None:
        level = effort
    elif budget is not None:
        level = level_for_budget(budget, ctl.effort_levels, accepted, ctl.effort_on)
        what = "output_config.effort" if claude else "thinkingLevel" if ctl.control == "gemini_levels" else \
            "reasoning_effort"
        notes.append(f"thinking budget {budget} sent as {what} {level}: {tier.model} takes levels, not a token "
                     "budget (the nearest level at or above the budget, by effort_levels)")
    else:
        level = ctl.effort_on
    if accepted and level not in accepted:
        at = LEVEL_ORDER.index(level) if level in LEVEL_ORDER else 3
        fitted = min(accepted, key=lambda v: (abs(LEVEL_ORDER.index(v) - at), -LEVEL_ORDER.index(v)))
        notes.append(f"level {level} moved to {fitted}: {tier.model} takes {'/'.join(accepted)}")
        level = fitted
    return level


def _raise_room(decision: Decision, tier: Tier) -> int:
    """The most ``max_tokens`` may be raised to for Claude's rule: the tier's cap, and no more than the run's and
    the thread's remaining tokens and dollars buy (what ``decide`` left of the budgets before this step)."""
    room = tier.max_tokens
    left = decision.budget_left
    tokens, usd = left.tokens(), left.usd()
    if tokens is not None:
        room = min(room, tokens)
    if usd is not None and tier.price.output_per_mtok > 0:
        room = min(room, int(usd / tier.price.output_per_mtok * 1e6))
    return max(room, min(decision.max_tokens, tier.max_tokens))


def _anthropic_budget(tier: Tier, budget: int | None, max_tokens: int, room: int,
                      notes: list[str]) -> tuple[bool, int | None, int]:
    """(thinking on, budget_tokens, max_tokens) for Claude: at least 1,024, below max_tokens; max_tokens raised
    (``raise_max_tokens``) at most to ``room``."""
    want = budget if budget is not None else max_tokens - 1  # unbounded: think up to max_tokens
    if want < ANTHROPIC_MIN_BUDGET:
        if budget is not None:
            notes.append(f"thinking budget {want} raised to Claude's least, {ANTHROPIC_MIN_BUDGET}")
        want = ANTHROPIC_MIN_BUDGET
    if want >= max_tokens:
        if tier.thinking.budget_over_max_tokens == "raise_max_tokens":
            raised = min(room, want + max_tokens)
            if raised > max_tokens:
                capped = " (capped by the tier and the budget left)" if raised < want + max_tokens else ""
                notes.append(f"max_tokens raised from {max_tokens} to {raised}: Claude needs budget_tokens < "
                             f"max_tokens (budget_over_max_tokens: raise_max_tokens){capped}")
                max_tokens = raised
        if want >= max_tokens:
            notes.append(f"thinking budget {want} lowered to {max_tokens - 1}: Claude needs budget_tokens < "
                         f"max_tokens ({max_tokens})")
            want = max_tokens - 1
    if want < ANTHROPIC_MIN_BUDGET:
        notes.append(f"thinking off: max_tokens {max_tokens} leaves less than Claude's least thinking budget "
                     f"({ANTHROPIC_MIN_BUDGET})")
        return False, None, max_tokens
    return True, want, max_tokens


def _gemini_budget(tier: Tier, budget: int, notes: list[str]) -> int:
    """A Gemini 2.5 budget within the model's range (0 stays "dynamic": -1)."""
    low, high, _ = gemini_budget_limits(tier.model)
    if budget <= 0:
        return -1
    fitted = max(low, min(high, budget))
    if fitted != budget:
        notes.append(f"thinking budget {budget} moved to {fitted}: {tier.model} takes {low}-{high}")
    return fitted


def switch_thinking(tier: Tier, on: bool, settings: Mapping[str, Any] | None = None,
                    budget: int | None = None, level: str | None = None) -> dict[str, Any]:
    """``settings`` (copied) with the tier's ``extra_body`` and thinking switched on or off the way its server
    understands it (``budget``: the thinking budget of a provider control, already within the provider's
    limits; ignored by the others; ``level``: the level a level-sending tier gets, worked out from ``budget`` by
    :func:`thinking_level` when not given). An ``extra_body`` in the result is a dict of its own."""
    out = {k: v for k, v in (settings or {}).items() if k != "extra_body"}
    extra = {**tier.extra_body, **dict((settings or {}).get("extra_body") or {})}
    ctl = tier.thinking
    if _sends_level(tier):
        out.pop("thinking", None)
        out.pop("reasoning_effort", None)
        chosen = level if level is not None else thinking_level(tier, on, budget)
        if chosen is not None:
            out["reasoning_effort"] = chosen
    elif ctl.control == "chat_template_kwargs":
        extra["chat_template_kwargs"] = {**dict(extra.get("chat_template_kwargs") or {}), "enable_thinking": on}
    elif ctl.control == "reasoning_effort":
        out["reasoning_effort"] = ctl.effort_on if on else ctl.effort_off
    elif ctl.control == "anthropic":
        out.pop("thinking", None)
        if on:
            max_tokens = int(out.get("max_tokens") or tier.max_tokens)
            out["thinking"] = {"type": "enabled",
                               "budget_tokens": budget if budget is not None else max(ANTHROPIC_MIN_BUDGET,
                                                                                      max_tokens - 1)}
    elif ctl.control == "gemini":
        low, _, can_off = gemini_budget_limits(tier.model)
        if on:
            out["thinking"] = {"type": "enabled", "budget_tokens": budget if budget is not None else -1}
        elif can_off:
            out["thinking"] = {"type": "disabled", "budget_tokens": 0}
        else:
            out["thinking"] = {"type": "enabled", "budget_tokens": low}
    if extra:
        out["extra_body"] = extra
    return out


def probe_settings(tier: Tier, max_tokens: int) -> dict[str, Any]:
    """A difficulty probe: thinking off, temperature 0, at most ``max_tokens`` (and the tier's own cap)."""
    return switch_thinking(tier, False, {"max_tokens": max(1, min(max_tokens, tier.max_tokens)), "temperature": 0.0})


def thinking_chunk_settings(tier: Tier, settings: Mapping[str, Any], tokens: int) -> dict[str, Any]:
    """A call that thinks for at most ``tokens`` tokens and is cut there (budget forcing's first call, a chunk
    of early exit): thinking on, no server-side budget, ``max_tokens = tokens`` (never above the call's own)."""
    out = switch_thinking(tier, True, settings)
    out.pop(FORCED_BUDGET_ARG, None)
    if "extra_body" in out:
        out["extra_body"].pop("thinking_token_budget", None)
    total = int(settings.get("max_tokens") or tier.max_tokens)
    out["max_tokens"] = max(1, min(tokens, total))
    return out


def answer_settings(settings: Mapping[str, Any], max_tokens: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(top-level keys, ``extra_body`` keys) of the call that writes the answer after closed thinking (budget
    forcing's continuation, early exit's answer): sampling settings and tools kept, thinking switches and
    budgets dropped, at most ``max_tokens``."""
    top = {k: v for k, v in settings.items() if k in (*SAMPLING_KEYS, "tools", "tool_choice")}
    extra = {k: v for k, v in dict(settings.get("extra_body") or {}).items() if k not in THINKING_ONLY_KEYS}
    top["max_tokens"] = max(1, int(max_tokens))
    return top, extra

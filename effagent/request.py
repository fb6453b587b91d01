"""Decision -> request: the one place that turns a :class:`~effagent.decide.Decision` and a tier into the
keyword arguments of that tier's call.

``decide`` chooses (tier, thinking on/off, thinking budget, max_tokens); this module only says how the chosen
values are written for the tier's server, within the tier's own limits (a fallback or escalation tier may
allow less than the decided one):

- thinking on/off: ``extra_body.chat_template_kwargs.enable_thinking`` (vLLM chat templates) or
  ``reasoning_effort`` (OpenAI style), per ``tier.thinking.control``;
- the thinking budget, per ``tier.thinking.budget_param`` (the *enforcement*):
  ``server`` — vLLM's ``thinking_token_budget`` request field; ``forcing`` — client-side budget forcing by
  the tier's chat model (:class:`effagent.integrations.chat_models.BudgetForcingChatModel`, which takes it as
  its ``thinking_budget`` call argument); ``none`` — not bounded beyond ``max_tokens``;
- ``max_tokens``, and the tier's own ``extra_body``.

The path of a band's ``thinking_budget``: policy -> ``decide`` -> :func:`encode` -> chat model -> HTTP body.
The other calls effagent makes on a tier (a difficulty probe, a thinking chunk of early exit or budget
forcing, the answer that continues closed thinking) get their settings here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from effagent.policy import Tier

if TYPE_CHECKING:  # for annotations only: decide does not depend on how its decisions are sent
    from effagent.decide import Decision

Enforcement = Literal["server", "forcing", "none"]

# request keys that shape sampling and go to an answer's continuation as well
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "stop", "presence_penalty", "frequency_penalty",
                 "repetition_penalty")
THINKING_ONLY_KEYS = ("chat_template_kwargs", "thinking_token_budget", "reasoning_effort")

#: the call argument that carries a client-side thinking budget to a budget-forcing chat model
FORCED_BUDGET_ARG = "thinking_budget"


@dataclass(frozen=True)
class TierRequest:
    """What one call on one tier gets: the decided values as this tier can take them, and the call's keyword
    arguments (``settings``: what ``litellm.completion`` / ``ChatLiteLLM`` take)."""

    tier: str
    model: str
    thinking: bool
    thinking_budget: int | None  # None: thinking off, or on without a budget
    max_tokens: int
    enforcement: Enforcement | None  # how the budget is held to; None without a budget
    settings: dict[str, Any]


def encode(decision: Decision, tier_name: str, tier: Tier) -> TierRequest:
    """The request for ``decision`` on ``tier`` (the decided tier, or a fallback/escalation tier)."""
    on = decision.thinking and tier.thinking.supported
    budget = decision.thinking_budget if on else None
    if budget is not None and tier.thinking.max_budget:
        budget = min(budget, tier.thinking.max_budget)
    max_tokens = max(1, min(decision.max_tokens, tier.max_tokens))
    settings = switch_thinking(tier, on, {"max_tokens": max_tokens})
    enforcement: Enforcement | None = None
    if budget is not None:
        param = tier.thinking.budget_param
        if param == "thinking_token_budget":
            settings.setdefault("extra_body", {})["thinking_token_budget"] = budget
            enforcement = "server"
        elif param == "budget_forcing":
            settings[FORCED_BUDGET_ARG] = budget
            enforcement = "forcing"
        else:
            enforcement = "none"
    return TierRequest(tier=tier_name, model=tier.model, thinking=on, thinking_budget=budget, max_tokens=max_tokens,
                       enforcement=enforcement, settings=settings)


def switch_thinking(tier: Tier, on: bool, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``settings`` (copied) with the tier's ``extra_body`` and thinking switched on or off the way its server
    understands it. An ``extra_body`` in the result is a dict of its own."""
    out = {k: v for k, v in (settings or {}).items() if k != "extra_body"}
    extra = {**tier.extra_body, **dict((settings or {}).get("extra_body") or {})}
    ctl = tier.thinking
    if ctl.control == "chat_template_kwargs":
        extra["chat_template_kwargs"] = {**dict(extra.get("chat_template_kwargs") or {}), "enable_thinking": on}
    elif ctl.control == "reasoning_effort":
        out["reasoning_effort"] = ctl.effort_on if on else ctl.effort_off
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

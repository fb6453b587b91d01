"""The policy's cross-checks beyond one field: bands that overlap for a role, and what a tier's provider
refuses (found without a call): unpriced hosted models, budgets outside a provider's limits, levels a model
does not take, early exit where a turn cannot be continued."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from effagent.capabilities import LEVEL_ORDER, capabilities
from effagent.policy.tiers import ANTHROPIC_MIN_BUDGET, LEVEL_CONTROLS, Tier, gemini_budget_limits

if TYPE_CHECKING:
    from effagent.policy.schema import Band

def role_band_problems(bands: list[Band]) -> list[tuple[tuple[Any, ...], str]]:
    """Bands with roles that overlap for a role they share: which one a step gets would depend on their order."""
    out: list[tuple[tuple[Any, ...], str]] = []
    with_roles = [(i, b) for i, b in enumerate(bands) if b.roles is not None]
    for k, (_i, a) in enumerate(with_roles):
        for j, b in with_roles[k + 1:]:
            shared = sorted(set(a.roles or ()) & set(b.roles or ()))
            if shared and a.min < b.max and b.min < a.max:
                out.append((("bands", j, "roles"), f"band {b.name!r} overlaps band {a.name!r} for role(s) "
                            f"{', '.join(shared)} ([{b.min}, {b.max}) vs [{a.min}, {a.max})); give them "
                            "disjoint ranges or different roles"))
    return out


def tier_problems(name: str, tier: Tier) -> list[tuple[tuple[Any, ...], str]]:
    """What a tier's provider refuses, found without a call: an unpriced hosted model, a Claude cap below its
    least budget, a Gemini cap above its largest, budget forcing on a hosted API."""
    loc = ("tiers", name)
    out: list[tuple[tuple[Any, ...], str]] = []
    ctl = tier.thinking
    if "price" not in tier.model_fields_set and tier.price_source == "policy" and not tier.self_hosted:
        out.append(((*loc, "model"), f"tier {name!r}: litellm's price table does not know {tier.model!r} and the "
                    "tier has no price; add price: {input_per_mtok: ..., output_per_mtok: ...} (USD per million "
                    "tokens; write 0s for a free endpoint) or use a model name the table knows"))
    caps = capabilities(tier.model)
    if ctl.control == "anthropic":
        if 0 < ctl.max_budget < ANTHROPIC_MIN_BUDGET and sends_manual_budget(tier):
            out.append(((*loc, "thinking", "max_budget"), f"tier {name!r}: Claude's least thinking budget is "
                        f"{ANTHROPIC_MIN_BUDGET:,} tokens; set max_budget: {ANTHROPIC_MIN_BUDGET} or more (or 0)"))
        if ctl.manual_budget and caps.budget is None:
            out.append(((*loc, "thinking", "manual_budget"), f"tier {name!r}: {tier.model} refuses a manual thinking "
                        "budget (thinking.budget_tokens); it thinks adaptively with an effort level. Drop "
                        "manual_budget: a band's thinking_budget is then sent as the nearest effort level "
                        f"({'/'.join(caps.efforts)}), or write effort: <level> on the band"))
    if ctl.manual_budget and ctl.control != "anthropic":
        out.append(((*loc, "thinking", "manual_budget"), f"tier {name!r}: manual_budget is for Claude tiers "
                    "(control: anthropic); drop it"))
    accepted = _levels_accepted(tier)
    if accepted:
        for field in ("effort_on", "effort_off"):
            value = getattr(ctl, field)
            ok = value in accepted or (field == "effort_off" and value == "none"
                                       and (caps.can_off or ctl.control == "gemini_levels"))
            if field in ctl.model_fields_set and not ok:
                out.append(((*loc, "thinking", field), f"tier {name!r}: {tier.model} does not take the level "
                            f"{value!r}; it takes {'/'.join(accepted)}: write {field}: {_nearest(value, accepted)}"))
    if ctl.control == "gemini":
        _, high, _ = gemini_budget_limits(tier.model)
        if ctl.max_budget > high:
            out.append(((*loc, "thinking", "max_budget"), f"tier {name!r}: {tier.model} thinks at most {high:,} "
                        f"tokens; set max_budget: {high} or less"))
    if ctl.provider_native and ctl.budget_param == "budget_forcing":
        out.append(((*loc, "thinking", "budget_param"), f"tier {name!r}: budget forcing continues a raw "
                    f"completion, which {ctl.control} endpoints do not offer; drop budget_param (the budget goes in "
                    "the provider's own field)"))
    return out


def sends_manual_budget(tier: Tier) -> bool:
    """A Claude tier whose thinking budget goes as ``thinking.budget_tokens``: a model before 4.6, or
    ``manual_budget`` on one that still takes it (4.6). Claude 4.6+ otherwise gets an effort level."""
    caps = capabilities(tier.model)
    return tier.thinking.control == "anthropic" and (
        not caps.adaptive or (tier.thinking.manual_budget and caps.budget is not None))


def _levels_accepted(tier: Tier) -> tuple[str, ...]:
    """The levels the tier's model takes, for a control that sends levels (empty: not a level control, or a
    model the capability table does not know)."""
    ctl = tier.thinking
    if ctl.control in LEVEL_CONTROLS or (ctl.control == "anthropic" and not sends_manual_budget(tier)):
        return capabilities(tier.model).named_levels
    return ()


def _nearest(level: str, accepted: tuple[str, ...]) -> str:
    """The accepted level nearest to ``level`` (ties: the higher one)."""
    at = LEVEL_ORDER.index(level) if level in LEVEL_ORDER else 3
    return min(accepted, key=lambda v: (abs(LEVEL_ORDER.index(v) - at), -LEVEL_ORDER.index(v)))


def _budget_problem(tier_name: str, tier: Tier, budget: int) -> str | None:
    """Why a provider refuses a thinking budget of ``budget`` tokens on ``tier`` (None when it takes it)."""
    ctl = tier.thinking
    if ctl.control == "anthropic" and 0 < budget < ANTHROPIC_MIN_BUDGET and sends_manual_budget(tier):
        return (f"a {budget}-token thinking budget is below Claude's least ({ANTHROPIC_MIN_BUDGET:,}) on tier "
                f"{tier_name!r}; set it to {ANTHROPIC_MIN_BUDGET} or more, 0 for up to max_tokens, or turn "
                "thinking off")
    if ctl.control == "gemini" and budget:
        low, high, _ = gemini_budget_limits(tier.model)
        if not low <= budget <= high:
            return (f"{tier.model} takes thinking budgets from {low:,} to {high:,} tokens (tier {tier_name!r}); "
                    f"set one in that range, or 0 for a dynamic budget")
    return None


def band_provider_problems(i: int, band: Band, tiers: dict[str, Tier]) -> list[tuple[tuple[Any, ...], str]]:
    """Band settings the band's (or its cascade's) tier provider refuses."""
    out: list[tuple[tuple[Any, ...], str]] = []
    tier = tiers.get(band.tier)
    if tier is not None and band.thinking and tier.thinking.supported:
        why = _budget_problem(band.tier, tier, band.thinking_budget)
        if why:
            out.append((("bands", i, "thinking_budget"), why))
        if sends_manual_budget(tier) and tier.max_tokens <= ANTHROPIC_MIN_BUDGET:
            out.append((("bands", i, "thinking"), f"tier {band.tier!r} has max_tokens {tier.max_tokens}: Claude "
                        f"thinks only with max_tokens above its least thinking budget ({ANTHROPIC_MIN_BUDGET:,}); "
                        "raise the tier's max_tokens (2048 or more) or set thinking: false"))
        if band.early_exit is not None and tier.thinking.provider_native:
            out.append((("bands", i, "early_exit"), f"early exit continues a partial assistant turn (vLLM), which "
                        f"tier {band.tier!r} ({tier.thinking.control}) does not offer; drop early_exit or route "
                        "the band to a vLLM tier"))
        if (band.samples > 1 and tier.thinking.control == "anthropic" and band.consistency.temperature != 1.0):
            out.append((("bands", i, "consistency", "temperature"), f"Claude takes only temperature 1 while "
                        f"thinking (tier {band.tier!r}); set consistency.temperature: 1.0 or thinking: false"))
        if band.effort is not None:
            accepted = _levels_accepted(tier)
            if tier.thinking.control in ("anthropic", "gemini", "chat_template_kwargs") and not accepted:
                out.append((("bands", i, "effort"), f"tier {band.tier!r} ({tier.model}) takes a thinking budget, "
                            f"not an effort level; write thinking_budget: "
                            f"{tier.thinking.effort_levels.get(band.effort, 2048)} instead of effort"))
            elif accepted and band.effort not in accepted:
                out.append((("bands", i, "effort"), f"{tier.model} does not take the level {band.effort!r} (tier "
                            f"{band.tier!r}); it takes {'/'.join(accepted)}: write effort: "
                            f"{_nearest(band.effort, accepted)}"))
    if tier is not None and not band.thinking and tier.thinking.supported:
        caps = capabilities(tier.model)
        if (tier.thinking.control in (*LEVEL_CONTROLS, "anthropic") and not caps.can_off and caps.named_levels
                and caps.least_level == caps.default_level):
            out.append((("bands", i, "thinking"), f"{tier.model} cannot switch thinking off and has no level below "
                        f"its default ({caps.default_level}) (tier {band.tier!r}); set thinking: true (effort: "
                        f"{caps.least_level}) or route the band to a tier that can stop thinking"))
    if band.cascade is not None and band.cascade.thinking:
        up = tiers.get(band.cascade.to)
        if up is not None and up.thinking.supported:
            why = _budget_problem(band.cascade.to, up, band.cascade.thinking_budget)
            if why:
                out.append((("bands", i, "cascade", "thinking_budget"), why))
    return out


class CrossCheckError(ValueError):
    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(m for _, m in problems))


"""Length budgeting: max_tokens, thinking-token budgets, and prompt-level budgets (TALE / Chain-of-Draft)."""

from __future__ import annotations

from typing import Any

from effagent.policy import Tier

BUDGET_KWARG = "effagent_thinking_budget"


def length_settings(tier: Tier, max_tokens: int, thinking: bool, budget: int | None) -> dict[str, Any]:
    """Request keys that bound the output and, when the server supports it, the thinking part."""
    out: dict[str, Any] = {"max_tokens": max_tokens}
    if thinking and budget is not None:
        if tier.thinking.budget_param == "thinking_token_budget":
            out["extra_body"] = {"thinking_token_budget": budget}
        elif tier.thinking.budget_param == "budget_forcing":
            out[BUDGET_KWARG] = budget  # read and stripped by the budget-forcing chat model
    return out


def needs_budget_forcing(tier: Tier, thinking: bool, budget: int | None) -> bool:
    """True when the budget must be enforced client-side (the server has no budget parameter)."""
    return thinking and budget is not None and tier.thinking.budget_param == "budget_forcing"


def estimate_answer_tokens(prompt: str, difficulty: float, floor: int = 16, ceiling: int = 512) -> int:
    """TALE-style token budget for the answer: grows with the task's length and difficulty."""
    words = len(prompt.split())
    est = floor + int(words * (0.5 + 2.0 * difficulty)) + int(difficulty * 200)
    return max(floor, min(ceiling, est))


def prompt_budget_instruction(style: str, prompt: str, difficulty: float) -> str | None:
    """An instruction to append to the conversation, or None for ``style == 'none'``."""
    if style == "tale":
        n = estimate_answer_tokens(prompt, difficulty)
        return f"Let's think step by step and use less than {n} tokens."
    if style == "draft":
        return ("Think step by step, but only keep a minimum draft for each thinking step, with 5 words at "
                "most. Return the answer at the end after a separator ####.")
    return None

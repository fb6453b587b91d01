"""Length budgeting in the prompt: TALE / Chain-of-Draft instructions (``prompt_budget`` of a band).

The token-level budgets (``max_tokens``, the thinking budget) are written into the request by
:mod:`effagent.request`."""

from __future__ import annotations


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

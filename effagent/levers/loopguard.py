"""Reflection-loop guard: detect an agent that repeats itself without progress."""

from __future__ import annotations

import json
from difflib import SequenceMatcher

from effagent.difficulty.base import Step
from effagent.policy import LoopGuard

_REFLECT = ("let me double-check", "let me verify", "let me re-check", "let me check again", "wait,",
            "on second thought", "let me reconsider", "revised", "revision", "critique", "i apologize")


def _call_key(name: str, args: dict[str, object]) -> str:
    return name + json.dumps(args, sort_keys=True, default=str)


def check(step: Step, cfg: LoopGuard) -> str | None:
    """The reason the agent looks stuck, or None. Looks only at this run's messages."""
    if not cfg.enabled:
        return None
    if cfg.max_steps is not None and step.index >= cfg.max_steps:
        return f"step {step.index} reached loop_guard.max_steps={cfg.max_steps}"
    counts: dict[str, int] = {}
    for call in step.tool_calls:
        k = _call_key(call.name, call.args)
        counts[k] = counts.get(k, 0) + 1
        if counts[k] > cfg.max_repeated_tool_calls:
            return (f"tool call {call.name}({json.dumps(call.args, sort_keys=True, default=str)[:80]}) repeated "
                    f"{counts[k]} times (limit {cfg.max_repeated_tool_calls})")
    drafts = [m.content for m in step.messages if m.role == "assistant" and not m.tool_calls and m.content]
    stalled = 0
    for prev, cur in zip(drafts, drafts[1:], strict=False):
        change = 1.0 - SequenceMatcher(None, prev, cur, autojunk=False).ratio()
        reflective = any(w in cur.lower() for w in _REFLECT)
        stalled = stalled + 1 if change < cfg.min_change_ratio or (reflective and change < 0.5) else 0
        if stalled >= cfg.max_reflection_rounds:
            return (f"{stalled} revision rounds changed the draft by less than "
                    f"{max(cfg.min_change_ratio, 0.5) if reflective else cfg.min_change_ratio:.0%}")
    return None

"""Reflection-loop guard: detect an agent that repeats itself without progress."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache

from effagent.policy import LoopGuard
from effagent.records import Message, Step, ToolCall, summarize

_REFLECT = ("let me double-check", "let me verify", "let me re-check", "let me check again", "wait,",
            "on second thought", "let me reconsider", "revised", "revision", "critique", "i apologize")


@lru_cache(maxsize=4096)  # every step re-reads the same drafts: compare each pair once
def _revision(prev: str, cur: str) -> tuple[float, bool]:
    """How much ``cur`` changed ``prev`` (0 = identical, 1 = nothing in common) and whether it reads as a
    reflection round."""
    low = cur.lower()
    return 1.0 - SequenceMatcher(None, prev, cur, autojunk=False).ratio(), any(w in low for w in _REFLECT)


def in_scope(step: Step, cfg: LoopGuard) -> Sequence[Message]:
    """The messages the guard counts: those of the current turn (from the last user message on) for
    ``scope: turn``, all of them for ``scope: thread``."""
    start = step.stats().turn_start if cfg.scope == "turn" else 0
    return step.messages[start:] if start else step.messages


def check(step: Step, cfg: LoopGuard, *, blocks_calls: bool = False) -> str | None:
    """The reason the agent looks stuck, or None.

    ``blocks_calls``: the integration answers an over-limit identical tool call with a message instead of
    running it (:func:`blocked_calls`); the agent then gets one chance to change course, and only a further
    identical call ends the run."""
    if not cfg.enabled:
        return None
    if cfg.max_steps is not None and step.index >= cfg.max_steps:
        return f"step {step.index} reached loop_guard.max_steps={cfg.max_steps}"
    scoped = in_scope(step, cfg)
    stats = step.stats() if scoped is step.messages else summarize(list(scoped))
    allowed = cfg.max_repeated_tool_calls + (1 if blocks_calls else 0)
    if stats.max_call_repeats > allowed:  # name the first call that went over the limit
        counts: dict[str, int] = {}
        for m in scoped:
            for call in m.tool_calls:
                k = call.key
                counts[k] = counts.get(k, 0) + 1
                if counts[k] > allowed:
                    return (f"tool call {call.name}({k[len(call.name):][:80]}) repeated "
                            f"{counts[k]} times (limit {cfg.max_repeated_tool_calls})")
    drafts = stats.drafts
    stalled = 0
    for prev, cur in zip(drafts, drafts[1:], strict=False):
        change, reflective = _revision(prev, cur)
        stalled = stalled + 1 if change < cfg.min_change_ratio or (reflective and change < 0.5) else 0
        if stalled >= cfg.max_reflection_rounds:
            return (f"{stalled} revision rounds changed the draft by less than "
                    f"{max(cfg.min_change_ratio, 0.5) if reflective else cfg.min_change_ratio:.0%}")
    if stats.last_reasoning:  # the last assistant message's thinking
        return check_reasoning(stats.last_reasoning, cfg.max_reasoning_verifications)
    return None


def blocked_calls(step: Step, calls: Sequence[ToolCall], cfg: LoopGuard) -> list[str | None]:
    """For each of ``calls`` (the tool calls of the answer to ``step``): why it must not run, or None. A call must
    not run when the agent has asked for that same call (name and arguments) more than
    ``max_repeated_tool_calls`` times in scope, this answer included. The text is what the agent is told instead
    of the tool's result. The step's statistics (the most times any one call was asked for) answer the usual
    case, no call near the limit, without reading the history."""
    limit = cfg.max_repeated_tool_calls
    if not cfg.enabled or not calls or step.stats().max_call_repeats + len(calls) <= limit:
        return [None] * len(calls)  # (no call can pass the limit: asked at most max_call_repeats + len(calls))
    keys = [c.key for c in calls]
    asked: dict[str, int] = {}
    for k in keys:
        asked[k] = asked.get(k, 0) + 1
    for m in in_scope(step, cfg):
        for c in m.tool_calls:
            if c.key in asked:
                asked[c.key] += 1
    where = "in this turn" if cfg.scope == "turn" else "in this conversation"
    return [None if asked[k] <= limit else
            (f"Not run: {c.name} with these same arguments was already called {asked[k] - 1} times {where} "
             f"(loop_guard.max_repeated_tool_calls={limit}), and repeating it will not give a different result. "
             f"Change the arguments, try another approach, or answer with what you have.")
            for c, k in zip(calls, keys, strict=True)]


# ---------------------------------------------------------------------------------------------------
# Self-verification loops inside one reasoning text ("wait, ... let me double-check ... wait, ...").
# ---------------------------------------------------------------------------------------------------
_VERIFY = re.compile(
    r"\b(?:wait\b|hold on\b|hmm+\b|let me (?:double[- ]check|re-?check|check (?:again|that|this|my)|verify|"
    r"re-?verify|reconsider|re-?examine|recalculate|re-?compute|re-?evaluate|make sure|confirm)|"
    r"let'?s (?:double[- ]check|verify|re-?check|check again|make sure|confirm)|double[- ]check(?:ing)?\b|"
    r"on second thought|to verify|verifying|checking again|i should (?:double[- ])?check|"
    r"but let me|actually,)",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?\n])\s+")


@dataclass(frozen=True)
class VerificationScan:
    """Self-verification sentences found in a reasoning text: how many, and where each one starts."""

    count: int
    starts: tuple[int, ...]  # character offsets of the sentences that verify
    samples: tuple[str, ...]  # their first words, for the reason string


def scan_verifications(text: str) -> VerificationScan:
    """Count sentences that re-verify ("Wait, ...", "Let me double-check ...", "Hmm, ...") in ``text``."""
    starts: list[int] = []
    samples: list[str] = []
    pos = 0
    for piece in _SENTENCE_END.split(text or ""):
        at = (text or "").find(piece, pos)
        at = pos if at < 0 else at
        pos = at + len(piece)
        m = _VERIFY.search(piece[:80])  # the cue opens the sentence (or nearly)
        if m and m.start() <= 20:
            starts.append(at)
            samples.append(" ".join(piece.split()[:6]))
    return VerificationScan(len(starts), tuple(starts), tuple(samples))


@lru_cache(maxsize=1024)  # the last assistant message's reasoning is re-checked every later step
def check_reasoning(text: str, limit: int) -> str | None:
    """Why the reasoning is looping on self-verification (more than ``limit`` such sentences), or None."""
    scan = scan_verifications(text)
    if scan.count <= limit:
        return None
    return (f"reasoning re-verified itself {scan.count} times (limit {limit}), e.g. {scan.samples[limit]!r}; "
            f"capped at the {limit + 1}th verification")


@dataclass(frozen=True)
class CappedReasoning:
    text: str  # the reasoning cut right before the first verification beyond the limit
    verifications: int  # verification sentences in the original text
    cut: bool
    reason: str | None  # why it was cut (None when it was not)


def cap_reasoning(text: str, limit: int) -> CappedReasoning:
    """Cut ``text`` before its ``limit + 1``-th self-verification sentence; the caller then forces the answer
    (e.g. closes the thinking and asks for the final answer) and records ``reason`` on the decision."""
    scan = scan_verifications(text)
    if scan.count <= limit:
        return CappedReasoning(text, scan.count, False, None)
    why = check_reasoning(text, limit)
    return CappedReasoning(text[:scan.starts[limit]].rstrip(), scan.count, True, why)


def reasoning_stop_check(cfg: LoopGuard, limit: int | None = None) -> Callable[[str], str | None]:
    """A ``stop_check`` for chunked thinking (see ``levers.early_exit``): the reasoning cap, or never when the
    guard is off. ``limit`` defaults to ``cfg.max_reasoning_verifications``."""
    lim = cfg.max_reasoning_verifications if limit is None else limit

    def stop(text: str) -> str | None:
        return check_reasoning(text, lim) if cfg.enabled else None

    return stop

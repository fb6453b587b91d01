"""Early exit of thinking, run as chunked calls on a tier's endpoint: the lever
(:mod:`effagent.levers.early_exit`) driven through :func:`effagent.llm.client.complete`.

Thinking chunks and probes continue one partial assistant turn (``continue_final_message`` on vLLM's chat
endpoint): the turn opens with the tier's ``thinking.think_prefix``, then the reasoning so far, then (probe)
the answer cue. The written answer follows the closed thinking block the way budget forcing continues
(:func:`effagent.llm.budget_forcing.continue_message`). The caller accounts for every call:
``on_call(role, completion)`` runs after each one, so usage already spent is recorded even when a later call
fails (``role`` is think, probe or answer; a probe is a ledger record of kind ``probe``, the others of kind
``model``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from effagent.levers.early_exit import (
    CONTINUE_BODY,
    Chunk,
    Completion,
    EarlyExitConfig,
    EarlyExitResult,
    StopCheck,
    continuation_callables,
    early_exit,
)
from effagent.llm.budget_forcing import continue_message
from effagent.llm.client import THINK_CLOSE, complete
from effagent.llm.client import Completion as ServerCompletion
from effagent.policy import Tier
from effagent.request import thinking_chunk_settings

CompleteFn = Callable[..., list[ServerCompletion]]
Role = Literal["think", "probe", "answer"]
OnCall = Callable[[Role, ServerCompletion], None]


def run_on_tier(tier: Tier, messages: Sequence[Mapping[str, Any]], cfg: EarlyExitConfig, *, max_tokens: int,
                answer: Literal["write", "probe"] = "write", seed: int | None = None,
                stop_check: StopCheck | None = None, on_call: OnCall | None = None,
                complete_fn: CompleteFn = complete) -> EarlyExitResult:
    """Answer ``messages`` on ``tier`` with early exit. ``max_tokens`` bounds thinking + probes' answer room:
    thinking stops at ``cfg.max_thinking``; a written answer gets what is left of ``max_tokens`` (at least
    ``cfg.probe_tokens``). Raises the endpoint error of a failing call (calls made before it were reported)."""
    msgs = [dict(m) for m in messages]
    role: list[Role] = ["think"]  # what the next call is, for on_call
    thought = [0]  # thinking tokens spent so far

    def call(turn: list[dict[str, str]], k: int) -> ServerCompletion:
        # thinking on, continuing the partial turn, at most k tokens (budget forcing's first-call settings)
        settings = thinking_chunk_settings(tier, {"extra_body": CONTINUE_BODY}, k)
        got = complete_fn(tier, turn, settings=settings, seed=seed)[0]
        if on_call is not None:
            on_call(role[0], got)
        return got

    think_c, probe_c = continuation_callables(call, msgs, probe_tokens=cfg.probe_tokens,
                                              think_prefix=tier.thinking.think_prefix)

    def think(reasoning: str, k: int) -> Chunk:
        role[0] = "think"
        chunk = think_c(reasoning, k)
        thought[0] += chunk.output_tokens
        return chunk

    def probe(reasoning: str) -> Completion:
        role[0] = "probe"
        return probe_c(reasoning)

    def write(reasoning: str, early: bool) -> Completion:
        # the thinking closed, the answer continues the turn: budget forcing's continuation (chat
        # continuation, or the server-rendered prompt on /v1/completions where the chat template drops
        # closed thinking blocks from assistant turns)
        room = max(cfg.probe_tokens, max_tokens - thought[0])
        o, _ = continue_message(tier, msgs, f"{reasoning.rstrip()}\n{THINK_CLOSE}\n\n",
                                settings={"extra_body": dict(tier.extra_body)}, max_tokens=room, seed=seed,
                                complete_fn=complete_fn)
        if on_call is not None:
            on_call("answer", o)
        # without a closing tag in its own output a reasoning parser may file the answer as reasoning
        return Completion(((o.reasoning or "") + (o.content or "")).strip(), o.input_tokens, o.output_tokens)

    return early_exit(think, probe, cfg, answer=write if answer == "write" else None, stop_check=stop_check)

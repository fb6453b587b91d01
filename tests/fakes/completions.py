"""Fake completion functions: stand-ins for ``effagent.llm.client.complete`` (``fn(tier, messages, *, settings,
...) -> list[Completion]``) that answer from a script and record every request."""

from __future__ import annotations

import math
from typing import Any

from effagent.levers.early_exit import PROBE_CUE
from effagent.llm.client import Completion, EndpointUnavailable
from effagent.policy import Tier

CONFIDENT_LOGPROBS = [math.log(0.95)] * 8


class FakeCompletions:
    """A fake completion function: returns scripted Completions and records (messages, settings)."""

    def __init__(self, *answers: Completion) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    def __call__(self, tier: Tier, messages: list[dict[str, Any]], *, settings: dict[str, Any],
                 seed: int | None = None, **_: Any) -> list[Completion]:
        self.calls.append((messages, settings))
        return [self.answers.pop(0)]


class FakeComplete:
    """A fake ``complete`` for the logprob probe: answers from a prompt -> logprobs table (a prompt not in it
    gets ``default``; None in the table: a server that sends no logprobs), records every request."""

    def __init__(self, table: dict[str, list[float] | None] | None = None, *, error: Exception | None = None,
                 input_tokens: int = 21, default: list[float] | None = None) -> None:
        self.table = table or {}
        self.error = error
        self.input_tokens = input_tokens
        self.default = CONFIDENT_LOGPROBS if default is None else default
        self.calls: list[dict[str, Any]] = []

    def __call__(self, tier: Tier, messages: list[dict[str, Any]], *, settings: dict[str, Any], n: int = 1,
                 logprobs: int | None = None, seed: int | None = None) -> list[Completion]:
        self.calls.append({"tier": tier, "messages": messages, "settings": settings, "logprobs": logprobs})
        if self.error is not None:
            raise self.error
        lps = self.table.get(messages[-1]["content"], self.default)
        k = settings["max_tokens"]
        lps = None if lps is None else lps[:k]
        return [Completion(content="x", input_tokens=self.input_tokens, output_tokens=len(lps or [0, 0, 0]),
                           finish_reason="length", logprobs=lps)]


class FakeEndpoint:
    """A fake thinking endpoint for early exit: continues a partial assistant turn like vLLM with
    continue_final_message: thinking chunks of k tokens, probe answers from ``probes`` in order, and a written
    answer after a closed thinking block; raises like a dead server after ``fail_at`` calls."""

    def __init__(self, probes=("maybe 41?", "42", "42"), fail_at: int | None = None, thought: str = "step ",
                 prefix: str = "<think>\n", answer: str = "The answer is 42.") -> None:
        self.probes = list(probes)
        self.answer = answer
        self.calls: list[dict] = []
        self.fail_at = fail_at
        self.thought = thought
        self.prefix = prefix

    def __call__(self, tier, messages, *, settings, seed=None, **kw):
        self.calls.append({"tier": tier.model, "messages": messages, "settings": settings})
        if self.fail_at is not None and len(self.calls) > self.fail_at:
            raise EndpointUnavailable(tier.model, tier.api_base, "connection refused")
        assert settings["extra_body"]["continue_final_message"] is True
        turn = messages[-1]["content"]
        if not turn.endswith("</think>\n\n"):  # thinking and probes continue the open thinking turn
            assert settings["extra_body"]["chat_template_kwargs"] == {"enable_thinking": True}
        assert messages[-1]["role"] == "assistant" and turn.startswith(self.prefix)
        inp = 20 + len(turn) // 4
        if turn.endswith(PROBE_CUE):
            text = self.probes.pop(0) if self.probes else "42"
            return [Completion(content=text, input_tokens=inp, output_tokens=2, finish_reason="stop")]
        if turn.endswith("</think>\n\n"):
            return [Completion(content=self.answer, input_tokens=inp, output_tokens=6, finish_reason="stop")]
        k = settings["max_tokens"]
        return [Completion(reasoning=self.thought * k, input_tokens=inp, output_tokens=k, finish_reason="length")]

"""Reasoning tokens from what was billed, for providers that bill thinking inside the output tokens and return
only a summary of it (Claude 4 on Anthropic, Bedrock and Vertex: ``display: summarized``, or an empty thinking
block with ``display: omitted``).

Counting the visible summary undercounts: a 28-token summary may stand for 900 billed thinking tokens. What was
billed for thinking is the output tokens less the visible answer (its text and tool calls), counted with litellm's
token counter for the model. The result is an estimate (the answer's count is a tokenizer's, not the provider's),
and the ledger marks it so (``reasoning_estimated``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def visible_tokens(model: str | None, content: str, tool_calls: Sequence[Any] = ()) -> int:
    """Tokens of the visible answer: its text and its tool calls (name and arguments)."""
    text = content or ""
    if tool_calls:
        text += json.dumps([tc for tc in tool_calls], default=str)
    if not text:
        return 0
    try:
        import litellm

        return int(litellm.token_counter(model=model or "", text=text))
    except Exception:  # no tokenizer for the model: about 4 characters a token
        return max(1, len(text) // 4)


def billed_reasoning_tokens(model: str | None, output_tokens: int, content: str,
                            tool_calls: Sequence[Any] = ()) -> int:
    """Output tokens less the visible answer's tokens (never below 0): the thinking the provider billed."""
    return max(0, int(output_tokens) - visible_tokens(model, content, tool_calls))

"""Framework-free model calls: litellm requests shaped by a tier and the governor's settings, server-side
token counting, and client-side budget forcing.

- :func:`complete` / :func:`acomplete`: one call to a tier, retried on transient failures, parsed into
  :class:`Completion` objects (content, reasoning, token counts, finish reason, logprobs);
- :class:`ServerTokenCounter` / :func:`reasoning_counter_for`: token counts with a vLLM server's tokenizer;
- :func:`budget_forced_complete`: a thinking budget for servers without ``thinking_token_budget``.
"""

from effagent.llm.budget_forcing import ForcedCompletion, budget_forced_complete
from effagent.llm.client import (
    Completion,
    EndpointCallError,
    EndpointRejected,
    EndpointUnavailable,
    MalformedResponse,
    acomplete,
    complete,
    parse_response,
    split_think,
)
from effagent.llm.tokens import ServerTokenCounter, TokenizeUnavailable, reasoning_counter_for

__all__ = [
    "Completion", "EndpointCallError", "EndpointRejected", "EndpointUnavailable", "ForcedCompletion",
    "MalformedResponse", "ServerTokenCounter", "TokenizeUnavailable", "acomplete", "budget_forced_complete",
    "complete", "parse_response", "reasoning_counter_for", "split_think",
]

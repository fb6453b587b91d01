"""Budget forcing: a client-side thinking budget for servers without ``thinking_token_budget``.

The s1 recipe, in two calls:

1. generate with thinking on and ``max_tokens = budget``; if that call stopped by itself (the model closed its
   thinking and answered within the budget) it is the result;
2. otherwise close the thinking block (``{reasoning}\\n</think>\\n\\n``, or the reasoning and the answer so far
   when the block did close) and let the model continue the *same* assistant message for the answer, with the
   rest of ``max_tokens``.

How the continuation reaches the server (``mode``):

- ``"chat"``: ``/v1/chat/completions`` with the prefix as the last assistant message and
  ``continue_final_message: true, add_generation_prompt: false`` (tools pass through, the server's tool parser
  applies). It needs a chat template that keeps the thinking of the last assistant turn; templates that strip
  ``<think>...</think>`` from history (Qwen3, DeepSeek-R1, effagent's local SmolLM) make vLLM answer 400
  ("the final message does not appear in the chat after applying the chat template");
- ``"completions"``: the prompt rendered by the server's own template (``POST /tokenize`` with the messages,
  ``chat_template_kwargs`` and tools) plus the tokens of the prefix, sent as token ids to ``/v1/completions``.
  Works with any template; tool calls in the answer come back as text (no tool parser on that endpoint);
- ``"auto"`` (default): ``chat`` first; after a 400, ``completions`` (remembered per server and model).

Usage is the sum of both calls, the prompt counted for each (the second call re-reads it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import Field

from effagent.llm.client import (
    THINK_CLOSE,
    THINK_OPEN,
    Completion,
    EndpointRejected,
    MalformedResponse,
    complete,
    parse_response,
    with_retries,
)
from effagent.llm.tokens import counter_for, served_model_name
from effagent.policy import Tier
from effagent.request import answer_settings, thinking_chunk_settings

Mode = Literal["auto", "chat", "completions"]
CompleteFn = Callable[..., list[Completion]]
ContinueFn = Callable[..., Completion]

_MODE_CACHE: dict[tuple[str | None, str], str] = {}


class ForcedCompletion(Completion):
    """A :class:`Completion` assembled from the thinking call and (when forced) the answer call."""

    forced: bool = False
    continuation: Literal["chat", "completions"] | None = None
    calls: list[Completion] = Field(default_factory=list)


def close_prefix(first: Completion) -> str:
    """The assistant text to continue after the thinking call: the reasoning, closed, and any answer so far."""
    reasoning = first.reasoning or ""
    if first.content:  # the block closed inside the budget; the answer was cut by max_tokens
        return f"{reasoning}{THINK_CLOSE}{first.content}"
    return f"{reasoning}\n{THINK_CLOSE}\n\n"


def budget_forced_complete(tier: Tier, messages: list[dict[str, Any]], *, budget: int, settings: dict[str, Any],
                           seed: int | None = None, mode: Mode = "auto", complete_fn: CompleteFn = complete,
                           continue_fn: ContinueFn | None = None) -> ForcedCompletion:
    """Answer ``messages`` on ``tier`` with at most ``budget`` thinking tokens, enforced client-side.

    ``settings`` are the call's litellm kwargs (:func:`effagent.request.encode`): ``max_tokens`` bounds
    thinking + answer together; ``extra_body``/``tools``/``temperature`` are kept. ``complete_fn``/``continue_fn``
    replace the two calls (tests). Raises the :class:`effagent.llm.client.EndpointCallError` of a failing call.
    """
    total = int(settings.get("max_tokens") or tier.max_tokens)
    first = complete_fn(tier, messages, settings=thinking_chunk_settings(tier, settings, budget), seed=seed)[0]
    remaining = total - first.output_tokens
    if first.finish_reason != "length" or remaining <= 0:
        return ForcedCompletion(**first.model_dump(), calls=[first])
    prefix = close_prefix(first)
    if continue_fn is not None:
        second = continue_fn(tier, messages, prefix, settings=settings, max_tokens=remaining, seed=seed)
        how: str | None = None
    else:
        second, how = continue_message(tier, messages, prefix, settings=settings, max_tokens=remaining, seed=seed,
                                       mode=mode, complete_fn=complete_fn)
    answer = second.content or second.reasoning or ""  # a reasoning parser may file the continuation as reasoning
    logprobs = (first.logprobs or []) + (second.logprobs or []) if first.logprobs is not None else None
    return ForcedCompletion(
        content=(first.content or "") + answer,
        reasoning=first.reasoning,
        input_tokens=first.input_tokens + second.input_tokens,
        output_tokens=first.output_tokens + second.output_tokens,
        reasoning_tokens=first.reasoning_tokens,
        cache_read_tokens=first.cache_read_tokens + second.cache_read_tokens,
        cache_write_tokens=first.cache_write_tokens + second.cache_write_tokens,
        finish_reason=second.finish_reason,
        logprobs=logprobs,
        tool_calls=second.tool_calls,
        model=first.model or second.model,
        forced=True,
        continuation=how,  # type: ignore[arg-type]
        calls=[first, second],
    )


def continue_message(tier: Tier, messages: list[dict[str, Any]], prefix: str, *, settings: Mapping[str, Any],
                     max_tokens: int, seed: int | None = None, mode: Mode = "auto",
                     complete_fn: CompleteFn = complete) -> tuple[Completion, str]:
    """Continue the assistant message ``prefix`` (which follows the thinking opened by the template)."""
    key = (tier.api_base, tier.model)
    chosen = _MODE_CACHE.get(key, "chat") if mode == "auto" else mode
    if chosen == "chat":
        try:
            return continue_chat(tier, messages, prefix, settings=settings, max_tokens=max_tokens, seed=seed,
                                 complete_fn=complete_fn), "chat"
        except EndpointRejected as err:
            if mode != "auto" or err.status not in (400, 422):
                raise
            _MODE_CACHE[key] = "completions"
    return continue_completions(tier, messages, prefix, settings=settings, max_tokens=max_tokens,
                                seed=seed), "completions"


def continue_chat(tier: Tier, messages: list[dict[str, Any]], prefix: str, *, settings: Mapping[str, Any],
                  max_tokens: int, seed: int | None = None, complete_fn: CompleteFn = complete) -> Completion:
    """``continue_final_message`` on ``/v1/chat/completions`` (the template must keep the last turn's thinking)."""
    top, extra = answer_settings(settings, max_tokens)
    extra.update(continue_final_message=True, add_generation_prompt=False)
    msgs = [*messages, {"role": "assistant", "content": f"{THINK_OPEN}\n{prefix}"}]
    return complete_fn(tier, msgs, settings={**top, "extra_body": extra}, seed=seed)[0]


def continue_completions(tier: Tier, messages: list[dict[str, Any]], prefix: str, *, settings: Mapping[str, Any],
                         max_tokens: int, seed: int | None = None) -> Completion:
    """The server-rendered prompt + prefix as token ids on ``/v1/completions`` (vLLM)."""
    import httpx

    model = served_model_name(tier)
    if model is None:
        raise EndpointRejected(tier.model, tier.api_base, "budget forcing through /v1/completions needs a "
                               "hosted_vllm/<name> tier with api_base (a vLLM server)")
    top, extra = answer_settings(settings, max_tokens)
    tools = top.pop("tools", None)
    top.pop("tool_choice", None)
    ctk = dict((settings.get("extra_body") or {}).get("chat_template_kwargs") or {})
    if tier.thinking.control == "chat_template_kwargs":
        ctk["enable_thinking"] = True
    counter = counter_for(tier.api_base or "")
    payload: dict[str, Any] = {**extra, **top, "model": model}
    if seed is not None:
        payload["seed"] = seed
    url = f"{counter.root}/v1/completions"
    headers = {"Authorization": f"Bearer {tier.api_key.get_secret_value()}"} if tier.api_key is not None else {}
    with httpx.Client(timeout=httpx.Timeout(tier.timeout_s, connect=min(5.0, tier.timeout_s)),
                      trust_env=False) as client:

        def once() -> Completion:
            if "prompt" not in payload:
                prompt_ids = counter.render_chat(messages, model, chat_template_kwargs=ctk, tools=tools)
                payload["prompt"] = prompt_ids + counter.tokenize(prefix, model)
            response = client.post(url, json=payload, headers=headers)
            response.raise_for_status()
            try:
                body = response.json()
            except ValueError as err:
                raise MalformedResponse(f"the body is not JSON: {response.text[:200]!r}") from err
            return parse_response(body)[0]

        return with_retries(tier, once)

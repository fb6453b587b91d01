"""Framework-free model calls through litellm, shaped by a tier and the governor's settings.

```python
from effagent.llm import complete

settings = encode(decision, "large", policy.tier("large")).settings   # effagent.request.encode
[c] = complete(policy.tier("large"), [{"role": "user", "content": "..."}], settings=settings, seed=7)
c.content, c.reasoning, c.input_tokens, c.output_tokens, c.reasoning_tokens, c.finish_reason
```

``complete`` is the one entry point levers build on (self-consistency: ``n``; early-exit probes and the
logprob difficulty probe: ``logprobs``). Its contract:

- ``settings`` are litellm keyword arguments and go to the request as they are (``max_tokens``, ``extra_body``
  whose keys litellm sends at the top level of the body, ``reasoning_effort``, ``temperature``, ``tools``, ...);
  the tier supplies ``model``, ``api_base``, ``api_key`` and ``timeout``.
- One :class:`Completion` per choice. Reasoning comes from ``reasoning_content``/``reasoning`` (a server-side
  reasoning parser) or, without a parser, from a ``<think>...</think>`` block at the start of the content.
- Token counts are the server's ``usage``: the sum over the returned list equals it (with ``n > 1`` the
  prompt is counted on the first completion and the output is split per choice, exactly when logprobs were
  asked for, else in proportion to each choice's text). ``reasoning_tokens`` is None when the server did not
  report it, and also when it reported 0 for a non-empty reasoning text (vLLM does): count the text with
  :class:`effagent.llm.tokens.ServerTokenCounter` instead.
- Calls follow the tier's retry rule (below), then raise :class:`EndpointUnavailable` (a transient kind) or
  :class:`EndpointRejected` (other 4xx, not retried). Both are :class:`effagent.errors.EndpointError`.

The retry rule — this module holds the only one; :func:`complete`, the budget-forcing and early-exit calls and
the agent path (:mod:`effagent.step` wraps every call of an integration's endpoint in :func:`retried`) all use it:

- ``tier.retries = N`` is N retries after the first attempt (at most N + 1 requests per call);
- retried (:func:`should_retry`): connection errors, timeouts, 5xx, 429 and malformed bodies; other 4xx are not;
- the wait before a retry is the server's ``Retry-After`` (seconds or an HTTP date, ``retry-after-ms`` too; read
  from litellm's ``litellm_response_headers`` or the error's response) when it sent one, else exponential backoff
  with jitter (``BACKOFF_BASE_S * 2**k`` up to ``BACKOFF_MAX_S``, plus up to ``BACKOFF_BASE_S``);
- a ``Retry-After`` longer than ``tier.max_retry_after_s`` is not waited for: the call gives up at once, so the
  step falls back to its next tier instead of sleeping;
- tenacity does the looping; the litellm client and ChatLiteLLM are told not to retry on their own.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import tenacity
from pydantic import BaseModel, Field

from effagent.errors import (
    EndpointCallError,
    EndpointError,
    EndpointRejected,
    EndpointUnavailable,
    MalformedResponse,
    TokenizeUnavailable,
)
from effagent.policy import Tier

R = TypeVar("R")

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


class Completion(BaseModel):
    """One choice of a chat completion, with the usage attributed to it."""

    content: str = ""
    reasoning: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int | None = None
    reasoning_estimated: bool = False  # the count is litellm's estimate from the thinking text (Anthropic-style)
    finish_reason: str | None = None
    logprobs: list[float] | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    model: str | None = None
    cache_read_tokens: int = 0  # parts of input_tokens read from / written to the provider's prompt cache
    cache_write_tokens: int = 0


def is_endpoint_failure(err: BaseException) -> bool:
    """True when ``err`` says a model endpoint failed (unreachable, timed out, refused the request, answered
    with an error status or a body that cannot be read) — the one definition of what moves a step to the next
    tier. Anything else (a bug, a budget error, LangGraph's control flow) is not a failure of the endpoint.

    Exception types of client libraries are checked only when that library is loaded: an error cannot be of a
    type whose module was never imported."""
    if isinstance(err, EndpointError | MalformedResponse | TokenizeUnavailable | ConnectionError | TimeoutError):
        return True
    for module, names in (("httpx", ("HTTPError",)), ("openai", ("APIError",)),
                          ("litellm.exceptions", ("APIError", "APIConnectionError", "Timeout"))):
        mod = sys.modules.get(module)
        for name in names:
            cls = getattr(mod, name, None) if mod is not None else None
            if isinstance(cls, type) and isinstance(err, cls):
                return True
    return False


def classify(err: BaseException) -> tuple[bool, int | None]:
    """(retriable, HTTP status) of an exception raised by litellm, httpx, the response parser or the server's
    tokenizer endpoints (rendering a prompt for ``/v1/completions``)."""
    if isinstance(err, MalformedResponse | TokenizeUnavailable):
        return True, None
    import httpx

    if isinstance(err, httpx.TransportError):  # connect errors and timeouts of direct HTTP calls
        return True, None
    if isinstance(err, httpx.HTTPStatusError):
        code = err.response.status_code
        return code >= 500 or code == 429, code
    litellm = _litellm()
    exc = litellm.exceptions
    status = getattr(err, "status_code", None)
    status = status if isinstance(status, int) else None
    if isinstance(err, exc.Timeout | exc.APIConnectionError):
        return True, status
    if isinstance(err, exc.InternalServerError | exc.ServiceUnavailableError | exc.BadGatewayError):
        return True, status
    if isinstance(err, exc.APIResponseValidationError):
        return True, status
    if status == 429 or isinstance(err, exc.RateLimitError):  # too many requests: retried, after Retry-After
        return True, status if status is not None else 429
    if status is not None:  # litellm reports a body it could not parse as an APIError with status 200
        return not 400 <= status < 500, status
    if isinstance(err, exc.APIError):  # litellm's catch-all for provider errors without a status
        return True, None
    return False, None


def endpoint_error(tier: Tier, err: BaseException, tries: int) -> EndpointCallError:
    retriable, status = classify(err)
    if isinstance(err, TokenizeUnavailable):
        detail = f"rendering the prompt: {err}"
    else:
        text, key = str(err), tier.api_key.get_secret_value() if tier.api_key is not None else ""
        detail = f"{type(err).__name__}: {text.replace(key, '[REDACTED]') if len(key) >= 4 else text}"[:300]
    after = retry_after_s(err)
    if after is not None and after > tier.max_retry_after_s:
        detail += f" (Retry-After {after:g} s is over the tier's max_retry_after_s {tier.max_retry_after_s:g} s)"
    cls = EndpointUnavailable if retriable else EndpointRejected
    return cls(tier.model, tier.api_base, detail, status=status, attempts=tries)


# ---------------------------------------------------------------------------------------- the retry rule


def should_retry(err: BaseException) -> bool:
    """Whether a failed call is tried again: an endpoint failure of a transient kind (:func:`classify`). An
    :class:`EndpointCallError` already went through the rule (a call made with :func:`complete`), so it is not
    retried again; anything that is not an endpoint failure (a bug, a budget error, LangGraph's control flow)
    never is."""
    if isinstance(err, EndpointCallError) or not is_endpoint_failure(err):
        return False
    return classify(err)[0]


def retry_after_s(err: BaseException | None) -> float | None:
    """Seconds the server asked to wait (``Retry-After``: seconds or an HTTP date; ``retry-after-ms``), read from
    litellm's ``litellm_response_headers``, the error's ``response.headers`` or its ``headers``; None without."""
    if err is None:
        return None
    sources = (getattr(err, "litellm_response_headers", None), getattr(getattr(err, "response", None), "headers", None),
               getattr(err, "headers", None))
    for headers in sources:
        if not isinstance(headers, Mapping) and not hasattr(headers, "items"):
            continue
        found = {str(k).lower(): v for k, v in headers.items()}
        try:
            if found.get("retry-after-ms") is not None:
                return max(0.0, float(found["retry-after-ms"]) / 1000)
            value = found.get("retry-after")
            if value is None:
                continue
            try:
                return max(0.0, float(value))
            except ValueError:
                return max(0.0, parsedate_to_datetime(str(value)).timestamp() - time.time())
        except (TypeError, ValueError, IndexError, OverflowError):
            continue  # a header that is neither seconds nor a date: backoff as without one
    return None


def _rule(tier: Tier) -> dict[str, Any]:
    """tenacity's arguments for the tier's rule (see the module docstring)."""
    backoff = tenacity.wait_exponential(multiplier=BACKOFF_BASE_S, max=BACKOFF_MAX_S) + tenacity.wait_random(
        0, BACKOFF_BASE_S)

    def stop(state: tenacity.RetryCallState) -> bool:  # the tries are spent, or the server asks too long a wait
        after = retry_after_s(state.outcome.exception() if state.outcome else None)
        return state.attempt_number > tier.retries or (after is not None and after > tier.max_retry_after_s)

    def wait(state: tenacity.RetryCallState) -> float:
        after = retry_after_s(state.outcome.exception() if state.outcome else None)
        return backoff(state) if after is None else after

    return {"stop": stop, "wait": wait, "retry": tenacity.retry_if_exception(should_retry), "reraise": True}


def _replaying(first: BaseException, call: Callable[[], R]) -> Callable[[], R]:
    """``call`` whose first attempt is the failure already seen: tenacity is entered only once a call failed, so
    the common case (the first attempt answers) costs one plain call, and the rule still counts that attempt."""
    pending = [first]

    def attempt() -> R:
        if pending:
            raise pending.pop()
        return call()

    return attempt


def retried(tier: Tier, call: Callable[[], R]) -> R:
    """``call()`` under the tier's retry rule; the last error is raised as it is (the agent path: the step
    procedure reads the client library's own exceptions)."""
    try:
        return call()
    except Exception as err:
        if tier.retries == 0 or not should_retry(err):
            raise
        first = err
    return tenacity.Retrying(**_rule(tier))(_replaying(first, call))  # type: ignore[no-any-return]


async def aretried(tier: Tier, call: Callable[[], Awaitable[R]]) -> R:
    """Async :func:`retried` (waits without blocking the loop)."""
    try:
        return await call()
    except Exception as err:
        if tier.retries == 0 or not should_retry(err):
            raise
        first = err
    pending = [first]

    async def attempt() -> R:
        if pending:
            raise pending.pop()
        return await call()

    return await tenacity.AsyncRetrying(**_rule(tier))(attempt)


def with_retries(tier: Tier, call: Callable[[], R]) -> R:
    """``call()`` under the tier's retry rule; when it fails for good, :class:`EndpointUnavailable` (a transient
    kind) or :class:`EndpointRejected` (not retried); an :class:`EndpointCallError` from ``call`` passes through."""
    retrying = tenacity.Retrying(**_rule(tier))
    try:
        return retrying(call)  # type: ignore[no-any-return]
    except EndpointCallError:
        raise
    except Exception as err:
        raise endpoint_error(tier, err, retrying.statistics.get("attempt_number", 1)) from err


async def awith_retries(tier: Tier, call: Callable[[], Awaitable[R]]) -> R:
    """Async :func:`with_retries` (the waits do not block the loop)."""
    retrying = tenacity.AsyncRetrying(**_rule(tier))

    async def once() -> R:
        return await call()

    try:
        return await retrying(once)
    except EndpointCallError:
        raise
    except Exception as err:
        raise endpoint_error(tier, err, retrying.statistics.get("attempt_number", 1)) from err


# ------------------------------------------------------------------------------------------ parsing

_THINK_BLOCK = re.compile(r"^\s*(?:<think>)?(.*?)</think>(.*)$", re.DOTALL)


def split_think(content: str) -> tuple[str | None, str]:
    """(reasoning, answer) from raw text that may hold a ``<think>...</think>`` block (no server parser).

    ``<think>a</think>b`` -> ("a", "b"); ``a</think>b`` (the template opened the block) -> ("a", "b");
    ``<think>a`` (never closed) -> ("a", ""); text without markers -> (None, text).
    """
    if THINK_CLOSE in content:
        m = _THINK_BLOCK.match(content)
        if m:
            return m.group(1).strip("\n") or None, m.group(2).lstrip("\n")
    stripped = content.lstrip()
    if stripped.startswith(THINK_OPEN):
        return stripped[len(THINK_OPEN):].strip("\n") or None, ""
    return None, content


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    for attr in ("model_dump", "dict", "to_dict"):
        fn = getattr(obj, attr, None)
        if callable(fn):
            try:
                out = fn()
            except Exception:  # try the next serialisation
                continue
            if isinstance(out, Mapping):
                return dict(out)
    raise MalformedResponse(f"not a chat completion object: {type(obj).__name__}")


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 else None


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, list):  # content parts
        return "".join(p.get("text", "") if isinstance(p, Mapping) else str(p) for p in v)
    return str(v)


def _reasoning_of(message: Mapping[str, Any]) -> str:
    for key in ("reasoning_content", "reasoning"):
        val = message.get(key)
        if isinstance(val, str) and val:
            return val
    psf = message.get("provider_specific_fields")
    if isinstance(psf, Mapping):
        for key in ("reasoning_content", "reasoning"):
            val = psf.get(key)
            if isinstance(val, str) and val:
                return val
    return ""


def _token_logprobs(choice: Mapping[str, Any]) -> list[float] | None:
    lp = choice.get("logprobs")
    if not isinstance(lp, Mapping):
        return None
    content = lp.get("content")
    if isinstance(content, list):
        return [float(t["logprob"]) for t in content if isinstance(t, Mapping) and "logprob" in t]
    tl = lp.get("token_logprobs")  # /v1/completions shape
    if isinstance(tl, list):
        return [float(x) for x in tl if isinstance(x, int | float)]
    return None


def _tool_calls(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for tc in message.get("tool_calls") or []:
        d = _as_dict(tc)
        fn = d.get("function")
        d["function"] = _as_dict(fn) if fn is not None else {}
        out.append(d)
    return out


def parse_response(response: Any, provider_counts_reasoning: bool = True) -> list[Completion]:
    """Completions (one per choice) from a chat-completion body: a dict or litellm's ``ModelResponse``.

    Reasoning tokens come from litellm's normalised ``usage.completion_tokens_details.reasoning_tokens``: OpenAI's
    own field, Gemini's ``thoughtsTokenCount``, Bedrock's ``output_tokens_details``. Anthropic reports thinking
    inside ``output_tokens`` only, and litellm counts the thinking text: with ``provider_counts_reasoning=False``
    such a count is marked :attr:`Completion.reasoning_estimated`.

    Raises :class:`MalformedResponse` when there are no choices, a choice has no message, or a field has the
    wrong type.
    """
    try:
        return _parse(response, provider_counts_reasoning)
    except MalformedResponse:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise MalformedResponse(f"unexpected response shape: {type(err).__name__}: {err}") from err


def _parse(response: Any, provider_counts_reasoning: bool = True) -> list[Completion]:
    data = _as_dict(response)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse(f"the response has no choices (keys: {sorted(data)})")
    usage = data.get("usage")
    usage = _as_dict(usage) if usage is not None else {}
    prompt = _int(usage.get("prompt_tokens")) or 0
    completion_total = _int(usage.get("completion_tokens"))
    details = usage.get("completion_tokens_details")
    details = _as_dict(details) if details is not None else {}
    reported_reasoning = _int(details.get("reasoning_tokens"))
    cache_read, cache_write = _cache_counts(usage)

    parsed: list[dict[str, Any]] = []
    for raw in choices:
        choice = _as_dict(raw)
        msg = choice.get("message")
        if msg is None and "text" in choice:  # /v1/completions shape
            msg = {"content": choice.get("text")}
        if msg is None:
            raise MalformedResponse("a choice has no message")
        message = _as_dict(msg)
        content = _text(message.get("content"))
        reasoning = _reasoning_of(message)
        if not reasoning:
            found, content = split_think(content)
            reasoning = found or ""
        thought = bool(reasoning) or bool(message.get("thinking_blocks"))  # an empty block (display: omitted) too
        parsed.append({"content": content, "reasoning": reasoning or None, "_thought": thought,
                       "finish_reason": choice.get("finish_reason"), "logprobs": _token_logprobs(choice),
                       "tool_calls": _tool_calls(message), "model": data.get("model")})

    outputs = _split_output(parsed, completion_total)
    out: list[Completion] = []
    for i, (p, n_out) in enumerate(zip(parsed, outputs, strict=True)):
        thought = p.pop("_thought")
        rt = reported_reasoning if len(parsed) == 1 else None
        if rt == 0 and p["reasoning"]:
            rt = None  # the server reported 0 for a non-empty reasoning text: not a count (vLLM)
        if not provider_counts_reasoning and thought and n_out:
            # thinking billed inside the output, only a summary returned: output less the visible answer
            from effagent.llm.billed import billed_reasoning_tokens

            rt = billed_reasoning_tokens(p["model"], n_out, p["content"], p["tool_calls"])
        estimated = bool(rt) and not provider_counts_reasoning
        out.append(Completion(input_tokens=prompt if i == 0 else 0, output_tokens=n_out, reasoning_tokens=rt,
                              reasoning_estimated=estimated, cache_read_tokens=cache_read if i == 0 else 0,
                              cache_write_tokens=cache_write if i == 0 else 0, **p))
    return out


def _cache_counts(usage: dict[str, Any]) -> tuple[int, int]:
    """(cache-read, cache-write) prompt tokens of a usage block, both parts of ``prompt_tokens``: Anthropic's and
    Bedrock's ``cache_read_input_tokens``/``cache_creation_input_tokens`` (litellm adds them to prompt_tokens),
    else OpenAI's ``prompt_tokens_details.cached_tokens`` (Gemini's cachedContentTokenCount lands there too) and
    litellm's ``cache_creation_tokens``/``cache_write_tokens``."""
    raw = usage.get("prompt_tokens_details")
    details = _as_dict(raw) if raw is not None else {}
    read = _int(usage.get("cache_read_input_tokens"))
    write = _int(usage.get("cache_creation_input_tokens"))
    if read is None:
        read = _int(details.get("cached_tokens"))
    if write is None:
        write = _int(details.get("cache_creation_tokens")) or _int(details.get("cache_write_tokens"))
    return read or 0, write or 0


def _split_output(parsed: list[dict[str, Any]], total: int | None) -> list[int]:
    """Per-choice output tokens summing to the server's ``completion_tokens``."""
    if total is None:
        return [len(p["logprobs"]) if p["logprobs"] is not None else 0 for p in parsed]
    if len(parsed) == 1:
        return [total]
    if all(p["logprobs"] is not None for p in parsed) and sum(len(p["logprobs"]) for p in parsed) == total:
        return [len(p["logprobs"]) for p in parsed]
    weights = [len(p["content"]) + len(p["reasoning"] or "") + 1 for p in parsed]
    shares = [total * w // sum(weights) for w in weights]
    shares[0] += total - sum(shares)
    return shares


# -------------------------------------------------------------------------------------------- calls


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map at run time
    import litellm

    return litellm


def request_kwargs(tier: Tier, messages: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], n: int,
                   logprobs: int | None, seed: int | None) -> dict[str, Any]:
    """The litellm keyword arguments of one call (exposed for tests and for callers that log requests)."""
    kwargs: dict[str, Any] = {"model": tier.model, "messages": [dict(m) for m in messages],
                              "timeout": tier.timeout_s, "max_retries": 0}
    if tier.api_base:
        kwargs["api_base"] = tier.api_base
    if tier.api_key is not None:
        kwargs["api_key"] = tier.api_key.get_secret_value()
    for key, value in settings.items():
        kwargs[key] = dict(value) if key == "extra_body" and isinstance(value, Mapping) else value
    if n != 1:
        kwargs["n"] = n
    if logprobs is not None:
        kwargs["logprobs"] = True
        if logprobs > 0:
            kwargs["top_logprobs"] = logprobs
    if seed is not None:
        kwargs["seed"] = seed
    return kwargs


def complete(tier: Tier, messages: list[dict[str, Any]], *, settings: dict[str, Any], n: int = 1,
             logprobs: int | None = None, seed: int | None = None) -> list[Completion]:
    """Call ``tier`` once (retrying transient failures) and return one :class:`Completion` per choice.

    Args:
        tier: the policy's tier (model, api_base, api_key, timeout_s, retries).
        messages: OpenAI-style chat messages.
        settings: litellm kwargs, typically :func:`effagent.request.encode`'s ``settings``; may add ``temperature``,
            ``tools``, ``stop``, ... They are sent as given (``extra_body`` keys at the top level of the body).
        n: number of choices (self-consistency).
        logprobs: None for no logprobs; 0 for the chosen tokens' logprobs; k > 0 also asks ``top_logprobs=k``.
            ``Completion.logprobs`` then holds one float per generated token (reasoning included).
        seed: sampling seed forwarded to the server.

    Raises:
        EndpointUnavailable: connect error, timeout, 5xx or malformed body after ``1 + tier.retries`` tries.
        EndpointRejected: a 4xx answer (not retried).
    """
    litellm = _litellm()
    kwargs = request_kwargs(tier, messages, settings, n, logprobs, seed)
    counts = tier.reports_reasoning_tokens
    return with_retries(tier, lambda: parse_response(litellm.completion(**kwargs), counts))


async def acomplete(tier: Tier, messages: list[dict[str, Any]], *, settings: dict[str, Any], n: int = 1,
                    logprobs: int | None = None, seed: int | None = None) -> list[Completion]:
    """Async :func:`complete` (same arguments, result and errors)."""
    litellm = _litellm()
    kwargs = request_kwargs(tier, messages, settings, n, logprobs, seed)

    async def once() -> list[Completion]:
        return parse_response(await litellm.acompletion(**kwargs), tier.reports_reasoning_tokens)

    return await awith_retries(tier, once)

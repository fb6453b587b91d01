"""Token counts with the serving model's own tokenizer, through vLLM's ``/tokenize`` endpoint.

vLLM reports ``usage.completion_tokens_details.reasoning_tokens`` as 0 even when the reasoning parser split
off a thinking block, so effagent counts the reasoning text with the server's tokenizer::

    counter = ServerTokenCounter("http://127.0.0.1:8000/v1")
    counter.count("some reasoning", model="smol-think")

For the integrations, :func:`reasoning_counter_for` maps a policy's tier names to their servers and returns
the ``(tier name, text) -> tokens`` callable that ``EfficiencyMiddleware(reasoning_counter=...)`` takes.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from effagent.errors import TokenizeUnavailable
from effagent.policy import Policy, Tier

VLLM_PREFIX = "hosted_vllm/"
CACHE_SIZE = 4096


def root_url(base_url: str) -> str:
    """``http://h:p/v1/`` or ``http://h:p`` -> ``http://h:p`` (``/tokenize`` lives at the root, not under /v1)."""
    url = base_url.strip().rstrip("/")
    return url.removesuffix("/v1")


def served_model_name(tier: Tier) -> str | None:
    """The name a vLLM server knows the tier's model by (``hosted_vllm/<name>`` -> ``<name>``), else None."""
    if tier.model.startswith(VLLM_PREFIX) and tier.api_base:
        return tier.model[len(VLLM_PREFIX):]
    return None


class ServerTokenCounter:
    """Counts and renders tokens with a vLLM server's tokenizer (``POST /tokenize``, ``/detokenize``).

    ``base_url`` may end in ``/v1`` or not. Text counts are cached (LRU, per model). A server without the
    endpoint raises :class:`TokenizeUnavailable` with what to do.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 30.0, client: httpx.Client | None = None,
                 cache_size: int = CACHE_SIZE) -> None:
        self.root = root_url(base_url)
        self._client = client or httpx.Client(timeout=httpx.Timeout(timeout_s, connect=5.0), trust_env=False)
        self._cache: OrderedDict[tuple[str | None, str], int] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.root}{path}"
        try:
            response = self._client.post(url, json=payload)
        except httpx.TransportError as err:
            raise TokenizeUnavailable(f"cannot reach {url}: {type(err).__name__}: {err}") from err
        if response.status_code in (404, 405):
            raise TokenizeUnavailable(
                f"{url} answered {response.status_code}: this server has no {path} endpoint (it is not vLLM, "
                "or an older/proxied one). Count tokens another way, or point the tier at a vLLM server."
            )
        if response.status_code >= 400:
            raise TokenizeUnavailable(f"{url} answered {response.status_code}: {response.text[:300]}")
        try:
            data = response.json()
        except ValueError as err:
            raise TokenizeUnavailable(f"{url} did not answer JSON: {response.text[:200]!r}") from err
        if not isinstance(data, dict):
            raise TokenizeUnavailable(f"{url} answered {type(data).__name__}, not an object")
        return data

    def tokenize(self, text: str, model: str | None = None, *, add_special_tokens: bool = False) -> list[int]:
        payload: dict[str, Any] = {"prompt": text, "add_special_tokens": add_special_tokens}
        if model:
            payload["model"] = model
        return [int(t) for t in self._post("/tokenize", payload)["tokens"]]

    def count(self, text: str, model: str | None = None) -> int:
        """Tokens in ``text`` (no special tokens added); 0 for the empty string."""
        if not text:
            return 0
        key = (model, text)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        payload: dict[str, Any] = {"prompt": text, "add_special_tokens": False}
        if model:
            payload["model"] = model
        data = self._post("/tokenize", payload)
        n = int(data["count"]) if "count" in data else len(data.get("tokens") or [])
        with self._lock:
            self._cache[key] = n
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return n

    def render_chat(self, messages: Sequence[Mapping[str, Any]], model: str | None = None, *,
                    chat_template_kwargs: Mapping[str, Any] | None = None,
                    tools: Sequence[Mapping[str, Any]] | None = None,
                    add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the chat as the server's template renders it (the prompt a chat call would send)."""
        payload: dict[str, Any] = {"messages": [dict(m) for m in messages],
                                   "add_generation_prompt": add_generation_prompt}
        if model:
            payload["model"] = model
        if chat_template_kwargs:
            payload["chat_template_kwargs"] = dict(chat_template_kwargs)
        if tools:
            payload["tools"] = [dict(t) for t in tools]
        return [int(t) for t in self._post("/tokenize", payload)["tokens"]]

    def detokenize(self, tokens: Sequence[int], model: str | None = None) -> str:
        payload: dict[str, Any] = {"tokens": list(tokens)}
        if model:
            payload["model"] = model
        return str(self._post("/detokenize", payload)["prompt"])

    def close(self) -> None:
        self._client.close()


_COUNTERS: dict[str, ServerTokenCounter] = {}
_COUNTERS_LOCK = threading.Lock()


def counter_for(base_url: str) -> ServerTokenCounter:
    """A shared counter per server (one HTTP client and cache per root URL)."""
    root = root_url(base_url)
    with _COUNTERS_LOCK:
        if root not in _COUNTERS:
            _COUNTERS[root] = ServerTokenCounter(root)
        return _COUNTERS[root]


def reasoning_counter_for(policy: Policy) -> Callable[[str, str], int]:
    """``(tier name, reasoning text) -> tokens`` counted with each tier's own vLLM server.

    A tier that is not ``hosted_vllm/...`` with an ``api_base`` (e.g. a hosted API), or whose server has no
    ``/tokenize``, counts 0 and warns once; a transient failure counts 0 for that call and warns once.
    """
    targets: dict[str, tuple[ServerTokenCounter, str] | None] = {}
    for name, tier in policy.tiers.items():
        served = served_model_name(tier)
        targets[name] = (counter_for(tier.api_base or ""), served) if served else None
    warned: set[str] = set()
    disabled: set[str] = set()

    def warn_once(tier: str, message: str) -> None:
        if tier not in warned:
            warned.add(tier)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def count(tier: str, text: str) -> int:
        if not text:
            return 0
        target = targets.get(tier)
        if target is None or tier in disabled:
            warn_once(tier, f"effagent: tier {tier!r} is not a vLLM server with /tokenize; its reasoning tokens "
                            "count 0 unless the provider reports them")
            return 0
        counter, model = target
        try:
            return counter.count(text, model)
        except TokenizeUnavailable as err:
            if "no /tokenize endpoint" in str(err):
                disabled.add(tier)
            warn_once(tier, f"effagent: cannot count tier {tier!r}'s reasoning tokens: {err}")
            return 0

    return count


PER_MESSAGE_TOKENS = 4  # a chat template's role markers and separators around each message
REPLY_PRIMING_TOKENS = 3  # the assistant turn the template opens for the answer
PROMPT_MARGIN = 0.10  # tokenizers differ (litellm's counter vs the server's): reservations round up by this share


class PromptTokens:
    """The size of a step's prompt in tokens, for reservations and for keeping a step inside what is left:
    litellm's token counter for ``model`` (the governor passes the strong tier's: a step's prompt is counted once,
    before its tier is decided; litellm's own tokenizer where it has one, else tiktoken's),
    over every message, tool call and tool schema, plus the chat template's markers, rounded up by
    :data:`PROMPT_MARGIN`. Accounting never uses it: a call's record holds the usage its server reported.

    Counts are kept per text (the last ``cache_size`` texts): an agent re-sends its conversation every step, so
    each message is counted once.
    """

    def __init__(self, model: str, *, cache_size: int = CACHE_SIZE) -> None:
        self.model = model
        self._cache: dict[str, int] = {}  # text -> tokens; the oldest half goes when it is full
        self._cache_size = cache_size
        self._count_text: Callable[[str], int] | None = None

    def _counter(self) -> Callable[[str], int]:
        if self._count_text is None:
            import os

            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch anything at run time
            import litellm

            model = self.model

            def count(text: str) -> int:
                return int(litellm.token_counter(model=model, text=text))

            self._count_text = count
        return self._count_text

    def text(self, text: str) -> int:
        if not text:
            return 0
        n = self._cache.get(text)
        if n is None:
            n = self._counter()(text)
            if len(self._cache) >= self._cache_size:  # a dict keeps insertion order: drop the older half
                for old in list(self._cache)[: self._cache_size // 2]:
                    self._cache.pop(old, None)
            self._cache[text] = n
        return n

    def messages(self, contents: Sequence[str], extra: Sequence[str] = ()) -> int:
        """Tokens of a chat of ``contents`` (one text per message) plus ``extra`` texts (tool calls, tool schemas)."""
        counted = self._cache  # an agent's history is counted again every step: most texts are known
        raw = PER_MESSAGE_TOKENS * len(contents)
        for text in (*contents, *extra):
            n = counted.get(text)
            raw += self.text(text) if n is None else n
        return int((raw + REPLY_PRIMING_TOKENS) * (1 + PROMPT_MARGIN)) + 1

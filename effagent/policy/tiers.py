"""What a tier is: the model's provider, its price (the policy's, or litellm's bundled table) and how its
thinking is switched and bounded (the provider's controls and their limits)."""

from __future__ import annotations

import importlib.util
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from effagent.capabilities import capabilities

NonNeg = Annotated[float, Field(ge=0)]
NonNegInt = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_attribute_docstrings=True, frozen=True,
                              allow_inf_nan=False)  # .inf / .nan / 1e400 are refused wherever a number is read


class Price(_Strict):
    """US dollars per million tokens. Omit a tier's `price` to take it from litellm's bundled price table
    (known hosted models, e.g. `anthropic/claude-sonnet-4-5`, `gemini/gemini-2.5-flash`, `openai/gpt-5-mini`);
    a self-hosted tier (`hosted_vllm/`, `ollama/`, ... or any tier with an `api_base` whose model the table does
    not know) without a price costs $0; a hosted tier whose model the table does not know needs a price.

    A table-priced tier's calls are billed with litellm's own cost calculation (cache reads and writes,
    long-context rates, reasoning); a policy price bills cached prompt tokens at its cache rates. Reservations
    and decisions count every prompt token at the dearest of the input and cache rates (the worst case)."""

    input_per_mtok: NonNeg = 0.0
    """USD per million input (prompt) tokens not served from the provider's prompt cache."""
    output_per_mtok: NonNeg = 0.0
    """USD per million output tokens (thinking included)."""
    cache_read_per_mtok: NonNeg | None = None
    """USD per million prompt tokens read from the provider's prompt cache (e.g. Anthropic's cache reads,
    OpenAI's cached tokens, Gemini's cached content); unset: billed at `input_per_mtok`."""
    cache_write_per_mtok: NonNeg | None = None
    """USD per million prompt tokens written to the provider's prompt cache (Anthropic's and Bedrock's cache
    writes); unset: billed at `input_per_mtok`."""
    long_context_above: Annotated[int, Field(gt=0)] | None = None
    """Prompts longer than this many tokens are billed at the `long_context_*` rates (e.g. 200000 for Gemini 2.5
    Pro and for Claude Sonnet 4.5 on Bedrock); their cache rates scale with the input rate."""
    long_context_input_per_mtok: NonNeg | None = None
    """USD per million input tokens of a prompt longer than `long_context_above`; unset: `input_per_mtok`."""
    long_context_output_per_mtok: NonNeg | None = None
    """USD per million output tokens of a call whose prompt is longer than `long_context_above`; unset:
    `output_per_mtok`."""

    @model_validator(mode="after")
    def _long_context_needs_a_bound(self) -> Price:
        if self.long_context_above is None and (self.long_context_input_per_mtok is not None
                                                or self.long_context_output_per_mtok is not None):
            raise ValueError("long_context_* rates need long_context_above: the prompt length they start at")
        return self

    def rates(self, input_tokens: int) -> tuple[float, float, float, float]:
        """USD per million (input, cache read, cache write, output) tokens of a call with an ``input_tokens`` prompt."""
        inp, out = self.input_per_mtok, self.output_per_mtok
        read = inp if self.cache_read_per_mtok is None else self.cache_read_per_mtok
        write = inp if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        if self.long_context_above is not None and input_tokens > self.long_context_above:
            long_in = inp if self.long_context_input_per_mtok is None else self.long_context_input_per_mtok
            scale = long_in / inp if inp > 0 else 1.0
            inp, read, write = long_in, read * scale, write * scale
            out = out if self.long_context_output_per_mtok is None else self.long_context_output_per_mtok
        return inp, read, write, out

    def prompt_cost(self, input_tokens: int, cache_read_tokens: int = 0, cache_write_tokens: int = 0) -> float:
        """USD for a prompt of ``input_tokens`` (the whole prompt, cached or not), of which ``cache_read_tokens``
        were read from and ``cache_write_tokens`` written to the prompt cache."""
        total = max(0, input_tokens)
        read = min(max(0, cache_read_tokens), total)
        write = min(max(0, cache_write_tokens), total - read)
        inp, read_rate, write_rate, _ = self.rates(total)
        return ((total - read - write) * inp + read * read_rate + write * write_rate) / 1e6

    def cost(self, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0,
             cache_write_tokens: int = 0) -> float:
        """USD for one call. ``input_tokens`` is the whole prompt, the cache counts are part of it; with no cache
        counts the whole prompt is billed at the input rate."""
        return self.prompt_cost(input_tokens, cache_read_tokens, cache_write_tokens) + (
            max(0, output_tokens) * self.rates(max(0, input_tokens))[3] / 1e6)

    def max_cost(self, input_tokens: int, output_tokens: int) -> float:
        """The most one call of this size can cost, whatever the cache does and however long its prompt turns
        out: every prompt token at the dearest of the input, cache-read and cache-write rates (a cache write costs
        more than plain input at Anthropic), long-context rates included. What reservations and decisions count."""
        short = self.rates(0)
        long = self.rates(self.long_context_above + 1) if self.long_context_above is not None else short
        rate = max(*short[:3], *long[:3])
        return (max(0, input_tokens) * rate + max(0, output_tokens) * max(short[3], long[3])) / 1e6


#: litellm providers that run on the user's own machines: a tier on one of them is never priced from the table
LOCAL_PROVIDERS = frozenset({"hosted_vllm", "vllm", "ollama", "ollama_chat", "lm_studio", "llamafile", "openai_like",
                             "custom_openai", "fake", "xinference", "triton"})


def provider_of(model: str) -> str:
    """The litellm provider prefix of a model string (``anthropic/claude-...`` -> ``anthropic``; none -> "")."""
    return model.split("/", 1)[0].lower() if "/" in model else ""


@lru_cache(maxsize=1)
def _price_table() -> dict[str, Any]:
    """litellm's bundled price table, read from the installed package without importing litellm (the same data
    ``litellm.model_cost`` holds offline, ``LITELLM_LOCAL_MODEL_COST_MAP=True``); empty without litellm."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _rate(entry: dict[str, Any], *keys: str) -> float | None:
    """The highest of ``keys``'s per-token rates in an entry of litellm's table (None when it gives none)."""
    found = [v for k in keys if isinstance(v := entry.get(k), int | float) and not isinstance(v, bool)]
    return max(found) if found else None


def _mtok(rate: float | None) -> float | None:
    return None if rate is None else round(rate * 1e6, 6)


def _table_entry_price(entry: dict[str, Any]) -> Price | None:
    """A :class:`Price` from one entry of litellm's table: its base rates, reasoning output at the dearer of the
    output and reasoning rates, cache writes at the dearer of the 5-minute and 1-hour rates, and its long-context
    tier (``*_above_200k_tokens`` keys, or ``tiered_pricing`` ranges: the dearest tier from the first bound on)."""
    tiers = entry.get("tiered_pricing")
    ranges = sorted((t for t in tiers if isinstance(t, dict) and isinstance(t.get("range"), list) and t["range"])
                    if isinstance(tiers, list) else [], key=lambda t: t["range"][0])
    base = ranges[0] if ranges and not isinstance(entry.get("input_cost_per_token"), int | float) else entry
    inp = _rate(base, "input_cost_per_token")
    out = _rate(base, "output_cost_per_token", "output_cost_per_reasoning_token")
    if inp is None or out is None:
        return None
    above: list[tuple[int, float | None, float | None]] = []
    for key in entry:
        m = re.fullmatch(r"input_cost_per_token_above_(\d+)k_tokens", key)
        if m:
            n = m.group(1)
            above.append((int(n) * 1000, _rate(entry, key),
                          _rate(entry, f"output_cost_per_token_above_{n}k_tokens",
                                f"output_cost_per_reasoning_token_above_{n}k_tokens")))
    above += [(int(t["range"][0]), _rate(t, "input_cost_per_token"),
               _rate(t, "output_cost_per_token", "output_cost_per_reasoning_token")) for t in ranges[1:]]
    long: dict[str, Any] = {}
    if above:
        ins = [a[1] for a in above if a[1] is not None]
        outs = [a[2] for a in above if a[2] is not None]
        long = {"long_context_above": min(a[0] for a in above),
                "long_context_input_per_mtok": _mtok(max(ins)) if ins else None,
                "long_context_output_per_mtok": _mtok(max(outs)) if outs else None}
    return Price(input_per_mtok=_mtok(inp), output_per_mtok=_mtok(out),
                 cache_read_per_mtok=_mtok(_rate(entry, "cache_read_input_token_cost")),
                 cache_write_per_mtok=_mtok(_rate(entry, "cache_creation_input_token_cost",
                                                  "cache_creation_input_token_cost_above_1hr")),
                 **long)


def table_price(model: str) -> Price | None:
    """The price litellm's bundled table gives ``model`` (its full string, or the name after each ``/`` prefix
    in turn), or None when the table does not know it. Self-hosted providers are never looked up: a local
    ``hosted_vllm/gpt-4o`` does not cost what OpenAI charges.

    What a call on a table-priced tier really cost is litellm's own calculation on the call's usage
    (:func:`effagent.telemetry.pricing.call_cost`); this price is what reservations and decisions count on
    (:meth:`Price.max_cost`) and what ``effagent explain`` shows."""
    provider = provider_of(model)
    if provider in LOCAL_PROVIDERS:
        return None
    table = _price_table()
    parts = model.split("/")
    for key in ("/".join(parts[i:]) for i in range(len(parts))):  # bedrock/converse/us.anthropic... -> us.anthropic...
        entry = table.get(key)
        if isinstance(entry, dict):
            price = _table_entry_price(entry)
            if price is not None:
                return price
    return None


ControlKind = Literal["auto", "chat_template_kwargs", "reasoning_effort", "anthropic", "gemini", "gemini_levels",
                      "openai_effort", "deepseek", "none"]
#: the kinds whose budget or level goes in the provider's own request field (not vLLM's, not budget forcing)
PROVIDER_CONTROLS = ("anthropic", "gemini", "gemini_levels", "openai_effort", "deepseek")
#: the kinds that send a level (OpenAI-style ``reasoning_effort``, which litellm turns into the provider's field)
LEVEL_CONTROLS = ("gemini_levels", "openai_effort", "deepseek")
ANTHROPIC_MIN_BUDGET = 1024
"""Anthropic's least `thinking.budget_tokens` (Anthropic API, Bedrock and Vertex Claude)."""
#: Gemini 2.5 thinkingBudget limits by model family: (least budget when on, largest, can thinking be off)
GEMINI_BUDGETS: tuple[tuple[str, int, int, bool], ...] = (
    ("gemini-2.5-flash-lite", 512, 24576, True),
    ("gemini-2.5-pro", 128, 32768, False),
    ("gemini-2.5-flash", 1, 24576, True),
)
GEMINI_DEFAULT_BUDGETS = (1, 24576, True)


def gemini_budget_limits(model: str) -> tuple[int, int, bool]:
    """(least budget when on, largest budget, whether thinking can be switched off) of a Gemini 2.5 model."""
    name = model.lower()
    for family, low, high, can_off in GEMINI_BUDGETS:
        if family in name:
            return low, high, can_off
    return GEMINI_DEFAULT_BUDGETS


def auto_control(model: str) -> str:
    """The thinking control ``control: auto`` picks from a litellm model string:
    ``anthropic/``, ``bedrock/...claude...``, ``vertex_ai/claude...`` -> anthropic; ``gemini/gemini-3...``,
    ``vertex_ai/gemini-3...`` -> gemini_levels; other ``gemini/``, ``vertex_ai/gemini...`` -> gemini;
    ``openai/o1|o3|o4...``, ``openai/gpt-5...`` (or those names bare) -> openai_effort; ``deepseek/`` -> deepseek;
    ``hosted_vllm/``, ``vllm/`` -> chat_template_kwargs; anything else -> none (the tier cannot think)."""
    provider = provider_of(model)
    name = (model.split("/", 1)[1] if provider else model).lower()
    tail = name.rsplit("/", 1)[-1]
    if provider == "anthropic" or (provider in ("bedrock", "vertex_ai") and "claude" in name):
        return "anthropic"
    if provider == "gemini" or (provider == "vertex_ai" and tail.startswith("gemini")):
        return "gemini_levels" if re.match(r"gemini-([3-9]|\d\d)", tail) else "gemini"
    if provider in ("openai", "azure", "") and re.match(r"(o\d|gpt-5)", tail):
        return "openai_effort"
    if provider == "deepseek":
        return "deepseek"
    if provider in ("hosted_vllm", "vllm"):
        return "chat_template_kwargs"
    return "none"


def _default_effort_off(model: str) -> str:
    """What effort means "least thinking" on ``model`` (the capability table, :mod:`effagent.capabilities`):
    ``none`` where the model can switch thinking off, else its least level (o-series: low, GPT-5: minimal,
    Gemini 3 Pro: low; litellm sends Gemini 3's ``none`` as its lowest level too)."""
    caps = capabilities(model)
    if caps.can_off or caps.family == "gemini":
        return "none"
    return caps.least_level or "none"


def _default_effort_on(model: str) -> str:
    """The level thinking on without a budget sends: medium where the model takes it, else its default level."""
    caps = capabilities(model)
    named = caps.named_levels
    return "medium" if not named or "medium" in named else (caps.default_level or named[-1])


class ThinkingControl(_Strict):
    """How a tier turns thinking on/off and bounds it (`control`), by the kind of server:

    - ``chat_template_kwargs``: vLLM ``extra_body.chat_template_kwargs: {enable_thinking: bool}`` (Qwen3,
      DeepSeek-R1 style); the budget per ``budget_param``;
    - ``reasoning_effort``: ``reasoning_effort`` = ``effort_on`` when on, ``effort_off`` when off (any server that
      takes OpenAI's parameter); the budget per ``budget_param``;
    - ``anthropic`` (Anthropic API, Bedrock and Vertex Claude): on = ``thinking: {type: enabled, budget_tokens:
      N}``, off = no ``thinking``. Anthropic's limits: N >= 1,024 and N < max_tokens (`budget_over_max_tokens`
      says which gives way); on without a budget thinks up to max_tokens - 1; sampling must keep temperature 1
      while thinking;
    - ``gemini`` (Gemini 2.5 on `gemini/` or `vertex_ai/`): litellm's ``thinking: {type: enabled, budget_tokens:
      N}``, sent as ``thinkingConfig.thinkingBudget`` N; on without a budget = -1 (dynamic); off = 0. Limits:
      2.5 Flash 1-24,576 (0 = off), Flash-Lite 512-24,576 (0 = off), 2.5 Pro 128-32,768 and never off (off sends
      128);
    - ``gemini_levels`` (Gemini 3): ``reasoning_effort`` levels (litellm sends ``thinkingConfig.thinkingLevel``);
      a budget picks the level by `effort_levels`; off = ``effort_off`` (Gemini 3 cannot stop thinking: litellm
      maps `none` to its lowest level);
    - ``openai_effort`` (OpenAI o-series, GPT-5): ``reasoning_effort``; a budget picks the level by
      `effort_levels` (levels are not token bounds: the budget is not enforced beyond max_tokens, which litellm
      sends as `max_completion_tokens`); on without a budget = ``effort_on``; off = ``effort_off`` (o-series
      cannot switch off: low; GPT-5: minimal; GPT-5.1 and later: none — the default follows the model);
    - ``deepseek`` (DeepSeek API): ``reasoning_effort`` (high / max), which litellm sends as ``thinking: {type:
      enabled}`` and ``reasoning_effort``; off = ``none``, sent as ``thinking: {type: disabled}``;

    Claude 4.6 and later think adaptively: a budget (or a band's ``effort``) becomes ``output_config.effort`` (the
    level a budget maps to by `effort_levels`), unless `manual_budget` asks for ``budget_tokens`` where the model
    still takes it. Only the levels each model accepts are used (see `effagent.capabilities`).
    - ``auto``: picked from the tier's model string (see `effagent.policy.auto_control`): anthropic for
      `anthropic/`, `bedrock/...claude...`, `vertex_ai/claude...`; gemini_levels for Gemini 3; gemini for other
      `gemini/` and `vertex_ai/gemini...`; openai_effort for `openai/o...` and `openai/gpt-5...`;
      chat_template_kwargs for `hosted_vllm/`; none otherwise;
    - ``none``: the tier cannot think; a decision to think on it is an error in the policy.
    """

    control: ControlKind = "none"
    """How thinking is switched on/off for this tier: chat_template_kwargs | reasoning_effort (vLLM and
    OpenAI-compatible servers), anthropic | gemini | gemini_levels | openai_effort (hosted providers through
    litellm's own parameters), auto (picked from the model string), none."""
    max_budget: NonNegInt = 0
    """Largest thinking budget (tokens) this tier allows; 0 = no cap of its own (anthropic: at least 1,024)."""
    budget_param: Literal["thinking_token_budget", "budget_forcing", "none"] = "thinking_token_budget"
    """How a thinking budget is enforced on chat_template_kwargs / reasoning_effort tiers: vLLM's
    `thinking_token_budget` request field, client-side budget forcing (think up to N, close the block, answer),
    or not at all. The provider controls (anthropic, gemini, gemini_levels, openai_effort) write the budget in
    the provider's own field and ignore this."""
    budget_over_max_tokens: Literal["raise_max_tokens", "lower_budget"] = "raise_max_tokens"
    """Anthropic needs budget_tokens < max_tokens. `raise_max_tokens`: max_tokens becomes budget + the decided
    max_tokens (the answer keeps its room), at most the tier's max_tokens and what the run's and thread's
    remaining tokens and dollars allow (beyond that the budget is lowered as well); `lower_budget`: the budget
    becomes max_tokens - 1. Either way, when less than 1,024 tokens are left for thinking, the call runs with
    thinking off."""
    effort_on: str = "medium"
    """`reasoning_effort` sent when thinking is on without a budget (reasoning_effort, openai_effort,
    gemini_levels)."""
    effort_off: str = "none"
    """`reasoning_effort` sent when thinking is off (reasoning_effort, openai_effort, gemini_levels). Unset on an
    openai_effort tier, it is what the model takes as least thinking (o-series: low, GPT-5: minimal, later:
    none)."""
    effort_levels: dict[str, NonNegInt] = Field(
        default_factory=lambda: {"low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192})
    """Budget -> level (openai_effort, gemini_levels, deepseek, adaptive Claude): among the levels the model
    accepts, a budget gets the first whose bound is at least the budget, in order of bound; above every bound,
    the level with the largest. The default bounds are litellm's own level -> budget mapping (low 1,024, medium
    2,048, high 4,096, xhigh 8,192); add `minimal: 128` for GPT-5 or Gemini 3 Flash, `max: 16384` for Claude."""
    manual_budget: bool = False
    """Claude 4.6 (adaptive, still takes a manual budget, deprecated): send a band's budget as
    ``thinking.budget_tokens`` (a token bound) instead of the nearest effort level. A model that refuses manual
    budgets (Claude 4.7 and later, Sonnet 5) fails validation with it."""
    think_prefix: str = "<think>\n"
    """What the chat template writes when a thinking turn opens; early exit continues a partial turn after it
    (the local `smol-think` template writes `<think>\nLet me think step by step.\n`)."""

    @property
    def supported(self) -> bool:
        return self.control not in ("none", "auto")

    @property
    def provider_native(self) -> bool:
        """The budget goes in the provider's own field (anthropic, gemini, gemini_levels, openai_effort)."""
        return self.control in PROVIDER_CONTROLS

    def level_for(self, budget: int | None) -> str:
        """The effort level a thinking budget maps to (``effort_on`` without a budget or levels)."""
        if budget is None or not self.effort_levels:
            return self.effort_on
        ordered = sorted(self.effort_levels.items(), key=lambda kv: kv[1])
        return next((level for level, bound in ordered if budget <= bound), ordered[-1][0])

    @field_validator("effort_levels")
    @classmethod
    def _some_levels(cls, v: dict[str, int]) -> dict[str, int]:
        if len(set(v.values())) != len(v):
            raise ValueError("two levels share a bound; give each level its own largest budget")
        return v


class Tier(_Strict):
    """One model endpoint the policy may route a step to."""

    model: str = Field(description="litellm model string, e.g. hosted_vllm/Qwen/Qwen3-8B")
    api_base: str | None = None
    """Endpoint base URL, e.g. http://gpu-host:8000/v1 for vLLM."""
    api_key: SecretStr | None = None
    """API key (use ${ENV_VAR}); never printed or traced."""
    price: Price = Field(default_factory=Price)
    thinking: ThinkingControl = Field(default_factory=ThinkingControl)
    max_tokens: Annotated[int, Field(gt=0)] = 1024
    """Largest output (thinking included) one call on this tier may produce."""
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """Per-request timeout in seconds."""
    retries: NonNegInt = 1
    """Retries after the first attempt of a call (`retries: 1` = at most 2 requests), on every path (the agent's
    chat models and effagent's own calls), before the step falls back to the next tier. Retried: connection
    errors, timeouts, 5xx, 429 and bodies that are not a chat completion; other 4xx are not. The wait is the
    server's `Retry-After` when it sends one, else exponential backoff with jitter (0.5 s, 1 s, 2 s, ... up to
    8 s, plus up to 0.5 s)."""
    max_retry_after_s: NonNeg = 30.0
    """Longest `Retry-After` (seconds, or an HTTP date) a retry waits for. A server asking for longer is not
    waited for: the call gives up at once and the step falls back to the next tier."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra request-body fields sent on every call to this tier."""

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        """``thinking.control: auto`` becomes the kind the model string names; an omitted price is taken from
        litellm's bundled price table when it knows the model; openai_effort's ``effort_off`` follows the
        model when unset."""
        if not isinstance(data, dict) or not isinstance(data.get("model"), str):
            return data
        model: str = data["model"]
        out = dict(data)
        thinking = out.get("thinking")
        if isinstance(thinking, ThinkingControl):
            thinking = thinking.model_dump(exclude_unset=True)
        if isinstance(thinking, dict):
            thinking = dict(thinking)
            if thinking.get("control") == "auto":
                thinking["control"] = auto_control(model)
            if thinking.get("control") in LEVEL_CONTROLS and "effort_off" not in thinking:
                thinking["effort_off"] = _default_effort_off(model)
            if thinking.get("control") in (*LEVEL_CONTROLS, "anthropic") and "effort_on" not in thinking:
                thinking["effort_on"] = _default_effort_on(model)
            out["thinking"] = thinking
        if "price" not in out and not out.get("api_base"):  # a tier with an api_base is self-hosted: $0 unless priced
            known = table_price(model)
            if known is not None:
                out["price"] = known
                out["price_source"] = "litellm"
        return out

    price_source: Literal["policy", "litellm"] = "policy"
    """Where the tier's price comes from: the policy (or $0 for a self-hosted tier without one), or litellm's
    bundled price table (set by effagent when `price` is omitted; not written in a policy)."""

    @property
    def reports_reasoning_tokens(self) -> bool:
        """Whether the provider's usage carries its own reasoning-token count. Anthropic-style tiers do not
        (thinking is inside ``output_tokens``; litellm counts the thinking text), so their counts are estimates."""
        return self.thinking.control != "anthropic" and auto_control(self.model) != "anthropic"

    @property
    def self_hosted(self) -> bool:
        """A tier on the user's own server: a local litellm provider, or any tier with an ``api_base``."""
        return provider_of(self.model) in LOCAL_PROVIDERS or bool(self.api_base)


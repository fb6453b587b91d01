"""The budget policy: pydantic schema of the YAML file, and its loader.

``load_policy(path)`` returns a validated :class:`Policy` or raises :class:`PolicyError` whose lines read
``PATH:LINE:COL: field.path: what is wrong — what to change``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from effagent.capabilities import capabilities
from effagent.errors import PolicyError, UnknownTierError
from effagent.records import STEP_ROLES, StepRole
from effagent.redact import Redactor, url_secrets

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


#: the estimators a policy can name (``effagent.difficulty`` builds each; a test keeps the two lists equal)
EstimatorName = Literal["rule", "learned", "heuristic", "length", "trained", "probe"]


class EstimatorRef(_Strict):
    name: EstimatorName
    """Estimator name: rule (the default: prompt cues + agent context), learned (a model file from `effagent
    difficulty learn`, given as `path`), heuristic, length, trained (shipped model, in-domain only), probe."""
    weight: NonNeg = 1.0
    path: str | None = None
    """The model file of a `learned` estimator (written by `effagent difficulty learn --out PATH`)."""
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _path_for_learned(self) -> EstimatorRef:
        if self.name == "learned" and not (self.path or self.options.get("path")):
            raise ValueError("the learned estimator needs its model file: {name: learned, path: MODEL}")
        if self.path and self.name != "learned":
            raise ValueError(f"path is an option of the learned estimator only, not of {self.name!r}")
        return self


class DifficultyConfig(_Strict):
    estimators: list[EstimatorRef] = Field(default_factory=lambda: [EstimatorRef(name="rule")])
    """The estimators whose weighted mean scores a step (default: `rule`, prompt cues that hold up across
    workloads plus the run so far)."""

    @field_validator("estimators")
    @classmethod
    def _some_weight(cls, v: list[EstimatorRef]) -> list[EstimatorRef]:
        if not v:
            raise ValueError("list at least one estimator, e.g. [{name: heuristic}]")
        if sum(e.weight for e in v) <= 0:
            raise ValueError("the estimator weights sum to 0; give at least one a positive weight")
        return v


class Consistency(_Strict):
    """Adaptive self-consistency for bands with samples > 1: sample in batches, stop early when the vote is
    settled (Adaptive-Consistency's Beta rule and/or ESC's all-agree window), return the majority."""

    batch: Annotated[int, Field(ge=1, le=16)] = 2
    """Samples drawn per round."""
    threshold: Annotated[float, Field(gt=0.5, lt=1.0)] | None = 0.95
    """Stop when P(the leading answer is the majority) reaches this (Beta rule); null = off."""
    window: Annotated[int, Field(ge=2)] | None = None
    """Stop when this many samples in a row agree (ESC); null = off."""
    decided: bool = True
    """Stop when the samples still allowed cannot change the majority (exact: never changes the answer)."""
    extractor: Literal["number", "boxed", "choice", "exact"] = "number"
    """How an answer is read from a sample (tool-call steps always vote on the exact call)."""
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.7
    """Sampling temperature for the samples."""
    seed: int = 0
    """Sample i is drawn with seed + i, so runs are reproducible."""


class Cascade(_Strict):
    """FrugalGPT-style cascade: the band's (cheap) tier answers first; the cascade verifier scores that answer
    (final answer present, arithmetic checks out, truncation, hedging) and the step goes to ``to`` only when
    the answer looks wrong. The cheap call is always paid."""

    to: str
    """Tier to escalate to."""
    threshold: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Escalate when the verifier's P(cheap answer is wrong) is at least this."""
    thinking: bool = False
    """Thinking on the escalated call."""
    thinking_budget: NonNegInt = 0
    """Thinking budget of the escalated call (0 = the tier's own cap)."""


class Agreement(_Strict):
    """An agreement cascade: the band's cheap tier answers with several votes (`samples` draws, or one call to
    each tier in `tiers`); when at least `threshold` of the votes give the majority's answer, that answer stands,
    otherwise the step escalates to `to`. Every vote and the escalation are paid for, reserved and accounted as
    one step; the answer's metadata and the trace carry the votes. On recorded outcomes this "do other cheap
    models give the cheap answer too?" signal routes far better than any prompt-only estimate
    (docs/benchmarks.md)."""

    to: str
    """Tier to escalate to when the votes disagree."""
    samples: Annotated[int, Field(ge=2, le=16)] = 3
    """Votes drawn on the band's tier (ignored when `tiers` is given)."""
    tiers: list[str] = Field(default_factory=list)
    """One vote from each of these tiers instead (e.g. several small models); the band's tier answers first."""
    threshold: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Share of the votes that must give the majority's answer for it to stand (1.0 = all agree)."""
    extractor: Literal["number", "boxed", "choice", "exact", "code"] = "exact"
    """How an answer is read from a vote: a number, \\boxed{}, a choice letter, the normalised short text, or
    code compared with whitespace and comments removed. A vote that calls tools is compared by its exact call."""
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.7
    """Sampling temperature of the votes drawn on one tier."""
    seed: int = 0


class EarlyExit(_Strict):
    """Early exit of thinking (Dynasor-CoT): think in chunks, after each chunk probe for the answer with a few
    tokens, stop thinking when `agree` probes in a row give the same answer. For answer steps with thinking on
    (a step that offers tools is called normally); the tier's server must continue a partial assistant turn
    (vLLM: `continue_final_message`). Every chunk and probe is a ledger record (probes as kind `probe`)."""

    chunk: Annotated[int, Field(ge=1)] = 64
    """Thinking tokens between probes."""
    agree: Annotated[int, Field(ge=1)] = 2
    """Consecutive probes that must give the same (unhedged) answer to stop thinking."""
    probe_tokens: Annotated[int, Field(ge=1)] = 16
    """Tokens a probe may generate."""
    min_thinking: NonNegInt = 0
    """No probe before this many thinking tokens."""
    extractor: Literal["number", "boxed", "choice", "exact"] = "number"
    """How an answer is read from a probe."""
    answer: Literal["write", "probe"] = "write"
    """After the thinking stops: `write` closes the thinking and lets the model write its answer (one more
    call, within the step's max_tokens); `probe` returns the agreed probe's text as the answer (no call)."""


class Band(_Strict):
    """A difficulty band [min, max) and what a step in it gets."""

    name: str
    min: Annotated[float, Field(ge=0, le=1)] = 0.0
    max: Annotated[float, Field(ge=0, le=1)] = 1.0
    tier: str
    thinking: bool = False
    thinking_budget: NonNegInt = 0
    effort: Literal["minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    """Ask the tier's model for this effort or thinking level directly (needs thinking: true; instead of
    thinking_budget): OpenAI and DeepSeek `reasoning_effort`, Claude 4.6+ `output_config.effort`, Gemini 3
    `thinkingLevel`. Validation checks that the model takes it."""
    max_tokens: Annotated[int, Field(gt=0)] | None = None
    samples: Annotated[int, Field(ge=1, le=64)] = 1
    """Most samples for adaptive self-consistency (1 = a single call)."""
    prompt_budget: Literal["none", "tale", "draft"] = "none"
    """Prompt-level length budget: TALE-style token estimate, or Chain-of-Draft terse steps."""
    consistency: Consistency = Field(default_factory=Consistency)
    """How the samples are drawn and when to stop (used when samples > 1)."""
    cascade: Cascade | None = None
    """Answer on this band's tier first and escalate only when the answer looks wrong (answer steps only;
    a step that calls tools is not verified)."""
    early_exit: EarlyExit | None = None
    """Stop thinking early once probes agree on the answer (needs thinking: true; answer steps only)."""
    agreement: Agreement | None = None
    """Answer with several cheap votes and escalate when they disagree (an agreement cascade)."""
    roles: list[StepRole] | None = None
    """Only for steps in these roles (first, after_tool, restate, tool_error, retry, final; see
    docs/routing.md): a step whose role is listed and whose score is in [min, max) gets this band before the
    bands without roles, which must still cover 0 to 1. Example, every restatement of a tool result on the
    small tier whatever its score: `{name: restate-small, min: 0, max: 1, tier: small, roles: [restate]}`."""

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        if self.roles is not None and not self.roles:
            raise ValueError(f"roles is empty; list at least one of {', '.join(STEP_ROLES)} or drop roles")
        if self.thinking_budget and not self.thinking:
            raise ValueError("thinking_budget is set but thinking is false; set thinking: true or drop the budget")
        if self.effort is not None and not self.thinking:
            raise ValueError("effort is set but thinking is false; set thinking: true or drop effort")
        if self.effort is not None and self.thinking_budget:
            raise ValueError("effort and thinking_budget are both set; keep one of them")
        if self.early_exit is not None and not self.thinking:
            raise ValueError("early_exit is set but thinking is false; set thinking: true or drop early_exit")
        if self.early_exit is not None and self.samples > 1:
            raise ValueError("early_exit and samples > 1 do not combine; use one of them in a band")
        if self.early_exit is not None and self.cascade is not None:
            raise ValueError("early_exit and cascade do not combine; use one of them in a band")
        others = [k for k, on in (("samples > 1", self.samples > 1), ("cascade", self.cascade is not None),
                                  ("early_exit", self.early_exit is not None)) if on]
        if self.agreement is not None and others:
            raise ValueError(f"agreement does not combine with {', '.join(others)}; use one of them in a band")
        return self


class Limit(_Strict):
    tokens: Annotated[int, Field(ge=0, le=2**53)] | None = None
    """Token limit (input + output); unset = none."""
    usd: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    """Dollar limit at the prices the provider bills (cache reads and writes included); unset = none."""

    @property
    def is_set(self) -> bool:
        return self.tokens is not None or self.usd is not None


class GrantLimit(_Strict):
    """The most a person's grants may add (`budgets.grants.per_grant`, `budgets.grants.per_thread`)."""

    tokens: Annotated[int, Field(ge=0)]
    """Tokens."""
    usd: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    """Dollars."""


class Grants(_Strict):
    """Bounds on what a person may grant at a check-in (`on_exhausted: interrupt`). A resume value above them is
    not applied: the run stays paused and the pause says why. Grants are ledger records and reach every scope's
    reservations; only the interrupt's resume value grants (a graph-state update cannot)."""

    per_grant: GrantLimit = Field(default_factory=lambda: GrantLimit(tokens=1_000_000, usd=10.0))
    """The most one answer may grant."""
    per_thread: GrantLimit = Field(default_factory=lambda: GrantLimit(tokens=10_000_000, usd=100.0))
    """The most all grants of one thread may add up to."""


class StepLimit(_Strict):
    max_output_tokens: Annotated[int, Field(gt=0)] | None = None
    max_thinking_tokens: NonNegInt | None = None


class Finalize(_Strict):
    tier: str | None = None  # default: the cheapest tier
    instruction: str = (
        "The budget for this task is spent. Do not call tools. Using what you already know, "
        "give your best final answer now, briefly."
    )
    """Appended to the conversation of the last call when a budget is spent."""
    loop_instruction: str = (
        "You are repeating yourself without progress ({reason}). Do not call tools. Using what you already "
        "know, give your best final answer now, briefly."
    )
    """Appended when the loop guard ends the run; `{reason}` is what it found."""
    halt_message: str = ("I have to stop here: the budget for this task is spent and there is no room left for "
                         "another answer ({reason}).")
    """The run's last answer when not even a final model call fits what is left (made without a model call);
    `{reason}` says which budget and why."""
    max_tokens: Annotated[int, Field(gt=0)] = 256
    """The final answer's output cap (cut further to what the reserve has room for)."""
    reserve: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """The share of every token and dollar limit (run, thread, team) kept back for final answers: ordinary steps
    stop at `limit x (1 - reserve)`, and the final answer of an exhausted run is reserved like any step from what
    is left up to the limit itself. When even that has no room, the run ends with a final message made without a
    model call that says why. 0 keeps nothing back (exhausted runs then end without a final model call)."""


class Budgets(_Strict):
    run: Limit = Field(default_factory=Limit)
    """Per agent invocation."""
    thread: Limit = Field(default_factory=Limit)
    """Per conversation thread (carried in graph state, so a resumed thread keeps its budget)."""
    team: Limit = Field(default_factory=Limit)
    """Shared by every worker of `ledger.redis.team` (per `ledger.redis.window`); enforced by atomic
    reservations of each step's maximum before the call."""
    step: StepLimit = Field(default_factory=StepLimit)
    warn_at: Annotated[float, Field(gt=0, lt=1)] | None = None
    """A soft limit: once this share of the run's or the thread's budget is spent, each further step's request
    gets a short note ("budget nearly spent: wrap up"), recorded on the decision and in the trace (unset = none)."""
    on_exhausted: Literal["finalize", "error", "interrupt"] = "finalize"
    """When a budget is spent: `finalize` makes one last cheap call without tools or thinking for the final
    answer; `error` raises effagent.BudgetExceeded; `interrupt` pauses a checkpointed agent with a LangGraph
    `interrupt()` carrying what was spent and what is left: resume with `Command(resume={"grant": {"tokens": N}})`
    (or `{"usd": X}`) to go on with that much more budget for the thread (a ledger record of kind `grant`), or
    `Command(resume={"refuse": true})` for the final answer. A team budget that is spent finalizes."""
    finalize: Finalize = Field(default_factory=Finalize)
    grants: Grants = Field(default_factory=Grants)


class Fallback(_Strict):
    """On endpoint failure after retries, try the next tier in ``order`` (default: the tiers as listed)."""

    enabled: bool = True
    order: list[str] | None = None


class LoopGuard(_Strict):
    enabled: bool = True
    scope: Literal["turn", "thread"] = "turn"
    """Where repeats are counted: `turn` (since the last user message: a new user message starts a fresh count,
    so a loop in one turn does not hold back the next) or `thread` (the whole conversation)."""
    max_repeated_tool_calls: Annotated[int, Field(ge=1)] = 2
    """The same tool call (same name and arguments) may run this many times in a turn. With the LangChain
    middleware a further identical call is not run: the agent gets a tool message saying why, and may change
    course or answer; if it asks for that same call once more, its next step is a final answer. (With the
    LangGraph node, which does not run the tools, the step after the over-limit call is a final answer.)
    A call whose arguments changed is progress, not a repeat."""
    max_reflection_rounds: Annotated[int, Field(ge=1)] = 3
    """Critique→revise rounds whose drafts barely change before a final answer is forced."""
    min_change_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    """A revision that changes less than this share of the draft counts as no progress."""
    max_reasoning_verifications: Annotated[int, Field(ge=1)] = 8
    """Self-verification sentences ("wait", "let me double-check", ...) allowed in one step's reasoning; a step
    whose reasoning re-verified itself more often forces a final answer on the next step."""
    max_steps: Annotated[int, Field(ge=1)] | None = None
    """Hard cap on model steps per run (unset = none)."""


class Telemetry(_Strict):
    enabled: bool = True
    exporter: Literal["file", "console", "otlp", "none"] = "file"
    """Where spans go: a local JSONL file (read by `effagent report`), the console, or OTLP (configured by the
    standard OTEL_* variables)."""
    path: str = "effagent-out/traces.jsonl"
    service_name: str = "effagent"
    project: str | None = None
    record_content: bool = False
    """Record prompt and completion text in spans (off by default)."""
    answer_metadata: Literal["decision", "summary"] = "decision"
    """What each answer carries in `response_metadata["effagent"]`: `decision`, the whole decision (tier,
    thinking, budgets, signals, reason, what was left of the budget); or `summary`, its tier, band, action,
    difficulty, thinking and max_tokens only. A checkpointer stores every answer again at every step, so
    `summary` makes checkpointed agents cheaper to run."""


class RedisLedger(_Strict):
    """The shared ledger in Redis (`backend: redis`): every worker with the same `url` and `key_prefix` shares
    its totals, records and reservations. docs/budgets.md, "Redis faults and namespacing", says what each
    fault does."""

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: Annotated[str, Field(min_length=1, pattern=r"^[^{}]+$")] | None = None
    """The namespace of every key: the apps (or environments) that share one Redis keep apart by it, and the
    workers of one app share budgets through it. Unset: `effagent:NAME` from the policy's `name`, so two
    policies with different names never share totals; set it to share a team budget between policies, or to
    `effagent` to keep the keys that earlier versions wrote (they all used `effagent`)."""
    on_unavailable: Literal["fail_open", "fail_closed"] = "fail_open"
    """Redis unreachable: fail_open keeps going on a local ledger that starts from the last totals this worker
    saw (with a warning); fail_closed refuses new steps (LedgerUnavailable). In both modes the record of a call
    that was made is never lost: it is journaled and written once Redis is back."""
    team: str | None = None
    window: Literal["none", "daily"] = "none"
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.5
    """The most one Redis call waits for a reply (a frozen or unreachable Redis holds a ledger call, and so an
    agent step, at most about a second longer: pool wait and connect are bounded too)."""
    hold_ttl_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    """A step's reservation expires this long after its worker last renewed it. A live worker renews its
    holds every third of it while their calls run (however long), so only a dead worker's holds expire, and
    its budget is free again within this time."""
    journal: str | None = None
    """JSON-lines file (appended, fsync'd) that keeps the records Redis could not take until they are written
    to it, each once by its id; a worker restarted after a crash writes what it holds. Default
    `effagent-out/ledger-journal-PREFIX.jsonl` under the working directory; give workers a path on a disk
    that survives them."""
    run_ttl_s: Annotated[int, Field(ge=3600)] = 7 * 86400
    """How long a run's totals, records and step set are kept after its last record."""
    thread_ttl_s: Annotated[int, Field(ge=3600)] = 30 * 86400
    """How long a thread's total (its budget) and grants are kept after its last record."""
    totals_ttl_s: Annotated[int, Field(ge=86400)] = 400 * 86400
    """How long a user or team total without a window is kept after its last record (a daily window's total
    is kept 3 days)."""


class LedgerConfig(_Strict):
    backend: Literal["memory", "redis"] = "memory"
    redis: RedisLedger = Field(default_factory=RedisLedger)


class Learning(_Strict):
    """Labels from production without people: for `shadow_share` of the steps a cheaper tier answers, the
    strong tier is asked too (never shown to the agent; its cost is recorded as kind `shadow` in the ledger and
    the trace, and reserved under shared budgets), and a line saying whether the two answers agree is appended
    to `outcomes` — the input of `effagent difficulty learn` and `effagent calibrate`."""

    shadow_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Share of cheap-tier steps that are also asked of the strong tier (0 = off)."""
    outcomes: str | None = None
    """JSON-lines file the shadow comparisons and `record_outcome` calls are appended to."""
    strong_tier: str | None = None
    """The tier that labels (default: the tier of the band with the highest max)."""
    extractor: Literal["number", "boxed", "choice", "exact", "code"] = "exact"
    """How the two answers are compared."""

    @model_validator(mode="after")
    def _file_for_shadows(self) -> Learning:
        if self.shadow_share > 0 and not self.outcomes:
            raise ValueError("shadow_share needs an outcomes file to write to: learning: {outcomes: PATH}")
        return self


class Routing(_Strict):
    """When a run's steps may change tier. A step sent to another tier than the one that answered the run's
    previous step pays the whole conversation again at the new tier's input price instead of the old tier's
    cache-read price (providers and vLLM cache the prefix)."""

    switch: Literal["cost", "step", "turn"] = "cost"
    """`cost`: a step moves to a cheaper tier only when the expected saving is larger than what the switch
    forfeits (the conversation at the new tier's input price vs the old tier's cache-read price; moving to a
    dearer tier is always allowed); `step`: every step goes where its band says; `turn`: the tier is chosen on
    the first step of each user turn and kept for the rest of the turn."""


def _role_band_problems(bands: list[Band]) -> list[tuple[tuple[Any, ...], str]]:
    """Bands with roles that overlap for a role they share: which one a step gets would depend on their order."""
    out: list[tuple[tuple[Any, ...], str]] = []
    with_roles = [(i, b) for i, b in enumerate(bands) if b.roles is not None]
    for k, (_i, a) in enumerate(with_roles):
        for j, b in with_roles[k + 1:]:
            shared = sorted(set(a.roles or ()) & set(b.roles or ()))
            if shared and a.min < b.max and b.min < a.max:
                out.append((("bands", j, "roles"), f"band {b.name!r} overlaps band {a.name!r} for role(s) "
                            f"{', '.join(shared)} ([{b.min}, {b.max}) vs [{a.min}, {a.max})); give them "
                            "disjoint ranges or different roles"))
    return out


class Policy(_Strict):
    """A validated budget policy. Immutable (every section is frozen): effagent works its per-step plans out
    once per policy, so a changed policy is a new one, validated like the first
    (``Policy.model_validate({**policy.model_dump(), ...})``, or load the file again)."""

    version: Literal[1] = 1
    name: str = "policy"
    tiers: dict[str, Tier]
    difficulty: DifficultyConfig = Field(default_factory=DifficultyConfig)
    bands: list[Band]
    budgets: Budgets = Field(default_factory=Budgets)
    fallback: Fallback = Field(default_factory=Fallback)
    loop_guard: LoopGuard = Field(default_factory=LoopGuard)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    learning: Learning = Field(default_factory=Learning)
    routing: Routing = Field(default_factory=Routing)
    baseline_tier: str | None = Field(
        default=None, description="tier every step would use without effagent (for 'tokens saved')"
    )
    # secret values read from the environment while loading (see effagent.redact); never serialised
    _env_secrets: frozenset[str] = PrivateAttr(default=frozenset())
    _redactor: Redactor | None = PrivateAttr(default=None)

    @field_validator("tiers")
    @classmethod
    def _has_tiers(cls, v: dict[str, Tier]) -> dict[str, Tier]:
        if not v:
            raise ValueError("define at least one tier")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Policy:
        problems: list[tuple[tuple[Any, ...], str]] = []
        names = list(self.tiers)

        def need_tier(loc: tuple[Any, ...], name: str | None) -> None:
            if name is not None and name not in self.tiers:
                problems.append((loc, f"unknown tier {name!r}; defined tiers: {', '.join(names)}"))

        bands = sorted(((i, b) for i, b in enumerate(self.bands) if b.roles is None), key=lambda ib: ib[1].min)
        problems.extend(_role_band_problems(self.bands))
        if not bands:
            problems.append((("bands",), "define at least one band covering difficulty 0 to 1"))
        else:
            if bands[0][1].min > 0:
                problems.append(((("bands", bands[0][0], "min")), "bands must start at 0 (missing [0, "
                                 f"{bands[0][1].min}))"))
            if bands[-1][1].max < 1:
                problems.append(((("bands", bands[-1][0], "max")), f"bands must end at 1 (missing "
                                 f"[{bands[-1][1].max}, 1])"))
            for (_, a), (j, b) in zip(bands, bands[1:], strict=False):
                if b.min < a.max:
                    problems.append((("bands", j, "min"), f"band {b.name!r} overlaps band {a.name!r} "
                                     f"([{b.min}, {b.max}) vs [{a.min}, {a.max})); make min >= {a.max}"))
                elif b.min > a.max:
                    problems.append((("bands", j, "min"), f"gap between band {a.name!r} and {b.name!r}: "
                                     f"[{a.max}, {b.min}) is not covered; set min: {a.max}"))
        for i, band in enumerate(self.bands):
            need_tier(("bands", i, "tier"), band.tier)
            if band.agreement is not None:
                need_tier(("bands", i, "agreement", "to"), band.agreement.to)
                for j, name in enumerate(band.agreement.tiers):
                    need_tier(("bands", i, "agreement", "tiers", j), name)
            if band.cascade is not None:
                need_tier(("bands", i, "cascade", "to"), band.cascade.to)
                target = self.tiers.get(band.cascade.to)
                if target is not None and band.cascade.thinking and not target.thinking.supported:
                    problems.append((("bands", i, "cascade", "thinking"), f"tier {band.cascade.to!r} cannot think; "
                                     "set cascade.thinking: false or escalate to a thinking tier"))
            tier = self.tiers.get(band.tier)
            if tier is not None and band.thinking:
                if not tier.thinking.supported:
                    problems.append((("bands", i, "thinking"), f"tier {band.tier!r} cannot think "
                                     "(thinking.control: none); set thinking: false or pick a thinking tier"))
                elif tier.thinking.max_budget and band.thinking_budget > tier.thinking.max_budget:
                    problems.append((("bands", i, "thinking_budget"), f"{band.thinking_budget} exceeds tier "
                                     f"{band.tier!r}'s max_budget {tier.thinking.max_budget}"))
        for name, tier in self.tiers.items():
            problems.extend(_tier_problems(name, tier))
        for i, band in enumerate(self.bands):
            problems.extend(_band_provider_problems(i, band, self.tiers))
        need_tier(("budgets", "finalize", "tier"), self.budgets.finalize.tier)
        need_tier(("learning", "strong_tier"), self.learning.strong_tier)
        need_tier(("baseline_tier",), self.baseline_tier)
        for i, name in enumerate(self.fallback.order or []):
            need_tier(("fallback", "order", i), name)
        if problems:
            raise _CrossCheckError(problems)
        return self

    # -- helpers the rest of the code uses -------------------------------------------------------
    def band_named(self, name: str | None) -> Band | None:
        return next((b for b in self.bands if b.name == name), None)

    def band_for(self, score: float, role: str | None = None) -> Band:
        """The band of a score: a band listing the step's ``role`` first, then the bands without roles."""
        if role is not None:
            for band in self.bands:
                if band.roles is not None and role in band.roles and (band.min <= score < band.max
                                                                      or score == band.max == 1.0):
                    return band
        plain = [b for b in self.bands if b.roles is None]
        for band in plain:
            if band.min <= score < band.max:
                return band
        return max(plain, key=lambda b: b.max)  # score == 1.0 falls in the top band

    @property
    def strong_tier(self) -> str:
        """The tier that labels shadowed steps: ``learning.strong_tier``, else the top band's tier."""
        return self.learning.strong_tier or max(self.bands, key=lambda b: b.max).tier

    def tier(self, name: str) -> Tier:
        try:
            return self.tiers[name]
        except KeyError:
            raise UnknownTierError(f"unknown tier {name!r}; defined tiers: {', '.join(self.tiers)}") from None

    @property
    def cheapest_tier(self) -> str:
        return min(self.tiers, key=lambda n: (self.tiers[n].price.output_per_mtok, self.tiers[n].price.input_per_mtok))

    @property
    def fallback_order(self) -> list[str]:
        return list(self.fallback.order or self.tiers)

    def summary(self) -> str:
        lines = [f"policy {self.name!r}: {len(self.tiers)} tier(s), {len(self.bands)} band(s)"]
        for n, t in self.tiers.items():
            think = t.thinking.control if t.thinking.supported else "no thinking"
            caps = capabilities(t.model)
            if t.thinking.supported and not caps.can_off and t.thinking.provider_native:
                least = (f"its least budget ({caps.budget[0]})" if t.thinking.control == "gemini" and caps.budget
                         else f"level {caps.least_level}")
                think += f"; {t.model} cannot switch thinking off: thinking off sends {least}"
            lines.append(f"  tier {n}: {t.model} @ {t.api_base or 'default endpoint'} "
                         f"(${t.price.input_per_mtok}/${t.price.output_per_mtok} per Mtok, {think})")
        for b in sorted(self.bands, key=lambda b: b.min):
            think = f"thinking {b.thinking_budget or 'unbounded'}" if b.thinking else "no thinking"
            more = "".join([f", early exit every {b.early_exit.chunk} tokens" if b.early_exit else "",
                            f", cascade to {b.cascade.to}" if b.cascade else ""])
            lines.append(f"  band {b.name} [{b.min}, {b.max}) -> {b.tier}, {think}, samples {b.samples}{more}")
        r, t = self.budgets.run, self.budgets.thread
        lines.append(f"  budgets: run {r.tokens or '-'} tok / ${r.usd if r.usd is not None else '-'}, "
                     f"thread {t.tokens or '-'} tok / ${t.usd if t.usd is not None else '-'}, "
                     f"on_exhausted={self.budgets.on_exhausted}")
        return self.redact("\n".join(lines))

    @property
    def redactor(self) -> Redactor:
        """Masks this policy's secrets (tier api keys, values read from ``${VAR}``, URL userinfo and key-like
        query parameters) and every secret shape in a text: use it on anything written out."""
        if self._redactor is None:
            values = set(self._env_secrets)
            for tier in self.tiers.values():
                if tier.api_key is not None:
                    values.add(tier.api_key.get_secret_value())
                values.update(_string_secrets(tier.model_dump(mode="json", exclude={"api_key"})))
            values.update(url_secrets(self.ledger.redis.url))
            self._redactor = Redactor(values)
        return self._redactor

    def redact(self, text: str) -> str:
        """``text`` with this policy's secrets masked (see :attr:`redactor`)."""
        return self.redactor(text)


def _tier_problems(name: str, tier: Tier) -> list[tuple[tuple[Any, ...], str]]:
    """What a tier's provider refuses, found without a call: an unpriced hosted model, a Claude cap below its
    least budget, a Gemini cap above its largest, budget forcing on a hosted API."""
    loc = ("tiers", name)
    out: list[tuple[tuple[Any, ...], str]] = []
    ctl = tier.thinking
    if "price" not in tier.model_fields_set and tier.price_source == "policy" and not tier.self_hosted:
        out.append(((*loc, "model"), f"tier {name!r}: litellm's price table does not know {tier.model!r} and the "
                    "tier has no price; add price: {input_per_mtok: ..., output_per_mtok: ...} (USD per million "
                    "tokens; write 0s for a free endpoint) or use a model name the table knows"))
    caps = capabilities(tier.model)
    if ctl.control == "anthropic":
        if 0 < ctl.max_budget < ANTHROPIC_MIN_BUDGET and sends_manual_budget(tier):
            out.append(((*loc, "thinking", "max_budget"), f"tier {name!r}: Claude's least thinking budget is "
                        f"{ANTHROPIC_MIN_BUDGET:,} tokens; set max_budget: {ANTHROPIC_MIN_BUDGET} or more (or 0)"))
        if ctl.manual_budget and caps.budget is None:
            out.append(((*loc, "thinking", "manual_budget"), f"tier {name!r}: {tier.model} refuses a manual thinking "
                        "budget (thinking.budget_tokens); it thinks adaptively with an effort level. Drop "
                        "manual_budget: a band's thinking_budget is then sent as the nearest effort level "
                        f"({'/'.join(caps.efforts)}), or write effort: <level> on the band"))
    if ctl.manual_budget and ctl.control != "anthropic":
        out.append(((*loc, "thinking", "manual_budget"), f"tier {name!r}: manual_budget is for Claude tiers "
                    "(control: anthropic); drop it"))
    accepted = _levels_accepted(tier)
    if accepted:
        for field in ("effort_on", "effort_off"):
            value = getattr(ctl, field)
            ok = value in accepted or (field == "effort_off" and value == "none"
                                       and (caps.can_off or ctl.control == "gemini_levels"))
            if field in ctl.model_fields_set and not ok:
                out.append(((*loc, "thinking", field), f"tier {name!r}: {tier.model} does not take the level "
                            f"{value!r}; it takes {'/'.join(accepted)}: write {field}: {_nearest(value, accepted)}"))
    if ctl.control == "gemini":
        _, high, _ = gemini_budget_limits(tier.model)
        if ctl.max_budget > high:
            out.append(((*loc, "thinking", "max_budget"), f"tier {name!r}: {tier.model} thinks at most {high:,} "
                        f"tokens; set max_budget: {high} or less"))
    if ctl.provider_native and ctl.budget_param == "budget_forcing":
        out.append(((*loc, "thinking", "budget_param"), f"tier {name!r}: budget forcing continues a raw "
                    f"completion, which {ctl.control} endpoints do not offer; drop budget_param (the budget goes in "
                    "the provider's own field)"))
    return out


def sends_manual_budget(tier: Tier) -> bool:
    """A Claude tier whose thinking budget goes as ``thinking.budget_tokens``: a model before 4.6, or
    ``manual_budget`` on one that still takes it (4.6). Claude 4.6+ otherwise gets an effort level."""
    caps = capabilities(tier.model)
    return tier.thinking.control == "anthropic" and (
        not caps.adaptive or (tier.thinking.manual_budget and caps.budget is not None))


def _levels_accepted(tier: Tier) -> tuple[str, ...]:
    """The levels the tier's model takes, for a control that sends levels (empty: not a level control, or a
    model the capability table does not know)."""
    ctl = tier.thinking
    if ctl.control in LEVEL_CONTROLS or (ctl.control == "anthropic" and not sends_manual_budget(tier)):
        return capabilities(tier.model).named_levels
    return ()


def _nearest(level: str, accepted: tuple[str, ...]) -> str:
    """The accepted level nearest to ``level`` (ties: the higher one)."""
    from effagent.capabilities import LEVEL_ORDER

    at = LEVEL_ORDER.index(level) if level in LEVEL_ORDER else 3
    return min(accepted, key=lambda v: (abs(LEVEL_ORDER.index(v) - at), -LEVEL_ORDER.index(v)))


def _budget_problem(tier_name: str, tier: Tier, budget: int) -> str | None:
    """Why a provider refuses a thinking budget of ``budget`` tokens on ``tier`` (None when it takes it)."""
    ctl = tier.thinking
    if ctl.control == "anthropic" and 0 < budget < ANTHROPIC_MIN_BUDGET and sends_manual_budget(tier):
        return (f"a {budget}-token thinking budget is below Claude's least ({ANTHROPIC_MIN_BUDGET:,}) on tier "
                f"{tier_name!r}; set it to {ANTHROPIC_MIN_BUDGET} or more, 0 for up to max_tokens, or turn "
                "thinking off")
    if ctl.control == "gemini" and budget:
        low, high, _ = gemini_budget_limits(tier.model)
        if not low <= budget <= high:
            return (f"{tier.model} takes thinking budgets from {low:,} to {high:,} tokens (tier {tier_name!r}); "
                    f"set one in that range, or 0 for a dynamic budget")
    return None


def _band_provider_problems(i: int, band: Band, tiers: dict[str, Tier]) -> list[tuple[tuple[Any, ...], str]]:
    """Band settings the band's (or its cascade's) tier provider refuses."""
    out: list[tuple[tuple[Any, ...], str]] = []
    tier = tiers.get(band.tier)
    if tier is not None and band.thinking and tier.thinking.supported:
        why = _budget_problem(band.tier, tier, band.thinking_budget)
        if why:
            out.append((("bands", i, "thinking_budget"), why))
        if sends_manual_budget(tier) and tier.max_tokens <= ANTHROPIC_MIN_BUDGET:
            out.append((("bands", i, "thinking"), f"tier {band.tier!r} has max_tokens {tier.max_tokens}: Claude "
                        f"thinks only with max_tokens above its least thinking budget ({ANTHROPIC_MIN_BUDGET:,}); "
                        "raise the tier's max_tokens (2048 or more) or set thinking: false"))
        if band.early_exit is not None and tier.thinking.provider_native:
            out.append((("bands", i, "early_exit"), f"early exit continues a partial assistant turn (vLLM), which "
                        f"tier {band.tier!r} ({tier.thinking.control}) does not offer; drop early_exit or route "
                        "the band to a vLLM tier"))
        if (band.samples > 1 and tier.thinking.control == "anthropic" and band.consistency.temperature != 1.0):
            out.append((("bands", i, "consistency", "temperature"), f"Claude takes only temperature 1 while "
                        f"thinking (tier {band.tier!r}); set consistency.temperature: 1.0 or thinking: false"))
        if band.effort is not None:
            accepted = _levels_accepted(tier)
            if tier.thinking.control in ("anthropic", "gemini", "chat_template_kwargs") and not accepted:
                out.append((("bands", i, "effort"), f"tier {band.tier!r} ({tier.model}) takes a thinking budget, "
                            f"not an effort level; write thinking_budget: "
                            f"{tier.thinking.effort_levels.get(band.effort, 2048)} instead of effort"))
            elif accepted and band.effort not in accepted:
                out.append((("bands", i, "effort"), f"{tier.model} does not take the level {band.effort!r} (tier "
                            f"{band.tier!r}); it takes {'/'.join(accepted)}: write effort: "
                            f"{_nearest(band.effort, accepted)}"))
    if tier is not None and not band.thinking and tier.thinking.supported:
        caps = capabilities(tier.model)
        if (tier.thinking.control in (*LEVEL_CONTROLS, "anthropic") and not caps.can_off and caps.named_levels
                and caps.least_level == caps.default_level):
            out.append((("bands", i, "thinking"), f"{tier.model} cannot switch thinking off and has no level below "
                        f"its default ({caps.default_level}) (tier {band.tier!r}); set thinking: true (effort: "
                        f"{caps.least_level}) or route the band to a tier that can stop thinking"))
    if band.cascade is not None and band.cascade.thinking:
        up = tiers.get(band.cascade.to)
        if up is not None and up.thinking.supported:
            why = _budget_problem(band.cascade.to, up, band.cascade.thinking_budget)
            if why:
                out.append((("bands", i, "cascade", "thinking_budget"), why))
    return out


class _CrossCheckError(ValueError):
    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(m for _, m in problems))


# ---------------------------------------------------------------------------------------------------
# Loading with line numbers and ${ENV} interpolation
# ---------------------------------------------------------------------------------------------------
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

#: the most a policy file may hold or make the YAML loader do; a policy is a few kilobytes
MAX_POLICY_BYTES = 64 * 1024
MAX_ALIASES = 100  # alias uses (*name) in one file
MAX_NODES = 5_000  # YAML nodes once every alias is expanded (what the loader builds)
MAX_DEPTH = 64  # nesting of mappings and lists
#: fields whose ${VAR} values are not secrets (what to call and which file to write), and plain scalars
_NOT_SECRET_FIELDS = frozenset({"model", "path", "outcomes"})
_PLAIN = re.compile(r"(?i)[-+]?(\d[\d_]*\.?\d*(e[-+]?\d+)?|\.\d+|true|false|yes|no|on|off|null|none|~)?")


def _env_secrets(field: Any, value: str) -> list[str]:
    """The secret parts of a value read from the environment (see :mod:`effagent.redact`)."""
    if "://" in value:
        return url_secrets(value)
    if field in _NOT_SECRET_FIELDS or _PLAIN.fullmatch(value.strip()):
        return []
    return [value]


def _interpolate(value: str, env: dict[str, str], field: Any = None, secrets: set[str] | None = None) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            if secrets is not None:
                secrets.update(_env_secrets(field, env[name]))
            return env[name]
        if default is not None:
            return default
        raise KeyError(name)

    return _ENV.sub(sub, value)


def _string_secrets(data: Any) -> set[str]:
    """URL userinfo and key-like query parameter values anywhere in ``data``."""
    if isinstance(data, str):
        return set(url_secrets(data)) if "://" in data else set()
    if isinstance(data, dict):
        return set().union(*(_string_secrets(v) for v in data.values())) if data else set()
    if isinstance(data, list):
        return set().union(*(_string_secrets(v) for v in data)) if data else set()
    return set()


def _locate(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], yaml.Node]:
    """Map each field path to its YAML node (for LINE:COL in errors)."""
    out: dict[tuple[Any, ...], yaml.Node] = {path: node}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = v
            out[(path + (key,), "key")] = k  # type: ignore[index]
            out.update(_locate(v, path + (key,)))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_locate(v, path + (i,)))
    return out


def _walk_env(data: Any, env: dict[str, str], path: tuple[Any, ...], errs: list[tuple[tuple[Any, ...], str]],
              secrets: set[str] | None = None) -> Any:
    if isinstance(data, dict):
        return {k: _walk_env(v, env, path + (k,), errs, secrets) for k, v in data.items()}
    if isinstance(data, list):
        return [_walk_env(v, env, path + (i,), errs, secrets) for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:
        try:
            return _interpolate(data, env, path[-1] if path else None, secrets)
        except KeyError as e:
            errs.append((path, f"environment variable {e.args[0]} is not set; export it or write "
                               f"${{{e.args[0]}:-default}}"))
    return data


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _position(nodes: dict[tuple[Any, ...], yaml.Node], loc: tuple[Any, ...], key: bool = False) -> str:
    for n in range(len(loc), -1, -1):
        node = nodes.get((loc[:n], "key")) if key and n == len(loc) else None  # type: ignore[call-overload]
        node = node or nodes.get(loc[:n])
        if node is not None:
            return f"{node.start_mark.line + 1}:{node.start_mark.column + 1}"
    return "1:1"


def _hint(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key; remove it or check its spelling (see `effagent policy schema`)"
    if kind == "missing":
        return "required; add it"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind.endswith("_type") or kind.endswith("_parsing"):
        msg += f" (got {err.get('input')!r})"
    return msg


class _Refused(Exception):
    """The YAML asks the loader for more than a policy may (aliases, nesting, size): where and why."""

    def __init__(self, mark: Any, message: str) -> None:
        self.mark = mark
        self.message = message
        super().__init__(message)


class _PolicyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, bounded: at most MAX_ALIASES alias uses and MAX_DEPTH levels of nesting while
    composing (what the expanded tree may hold is checked by :func:`_check_tree` before anything is built)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(self.peek_event().start_mark, f"more than {MAX_NODES:,} values; is it a policy?")
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(self.peek_event().start_mark, f"more than {MAX_ALIASES} aliases (*name); write the "
                               "values out")
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(self.peek_event().start_mark, f"nested more than {MAX_DEPTH} levels deep; flatten it")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_tree(root: yaml.Node, loader: _PolicyLoader) -> list[tuple[Any, str]]:
    """Problems of a composed policy before it is built: duplicate keys and non-finite numbers (as (mark,
    message) pairs); raises :class:`_Refused` for an alias that refers to its own mapping or list, or aliases
    that expand the tree past MAX_NODES nodes (a "billion laughs" file). Each distinct node is visited once."""
    import math

    sizes: dict[int, int] = {}
    active: set[int] = set()
    problems: list[tuple[Any, str]] = []

    def visit(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Refused(node.start_mark, "an alias refers to the mapping or list it is in (&x ... *x inside "
                           "it); write the value out")
        active.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], yaml.Node] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE_TAG:
                    first = seen.setdefault((k.tag, k.value), k)
                    if first is not k:
                        problems.append((k.start_mark, f"duplicate key {k.value!r} (first at line "
                                         f"{first.start_mark.line + 1}, column {first.start_mark.column + 1}); "
                                         "keep one (YAML would silently keep the last)"))
                total += visit(k) + visit(v)
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                total += visit(v)
        elif node.tag == _FLOAT_TAG:
            try:
                finite = math.isfinite(loader.construct_yaml_float(node))
            except (ValueError, OverflowError):
                finite = False
            if not finite:
                problems.append((node.start_mark, f"{node.value!r} is not a finite number; write a number (leave a "
                                 "limit out for none)"))
        active.discard(key)
        sizes[key] = total
        if total > MAX_NODES:
            raise _Refused(node.start_mark, f"aliases expand the policy to more than {MAX_NODES:,} values (an "
                           "alias bomb?); write the values out")
        return total

    visit(root)
    return problems


_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _flow_depth(text: str) -> int:
    """How deep ``[`` / ``{`` nest in the text (quotes ignored: an over-estimate). PyYAML's scanner looks ahead
    over every open flow bracket at each one (quadratic), so a deep file is refused before it is scanned."""
    depth = deepest = 0
    for ch in _NOT_BRACKET.sub("", text):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


def _yaml_problem(e: yaml.YAMLError, text: str) -> str:
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        pos = f"{mark.line + 1}:{mark.column + 1}"
    elif isinstance(e, yaml.reader.ReaderError):
        line = text.count("\n", 0, e.position) + 1
        pos = f"{line}:{e.position - (text.rfind(chr(10), 0, e.position) + 1) + 1}"
        return f"{pos}: not valid YAML: character {chr(e.character)!r} is not allowed in a policy file"
    else:
        pos = "1:1"
    return f"{pos}: not valid YAML: {getattr(e, 'problem', None) or e}"


def _compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The policy text's node tree and the data built from it, refused with PATH:LINE:COL when it is too big,
    not YAML, asks for too much (aliases, nesting), or has duplicate keys or non-finite numbers."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_POLICY_BYTES:
        raise PolicyError(source, [f"{source}:1:1: {size:,} bytes, more than a policy may have "
                                   f"({MAX_POLICY_BYTES:,}); is it the right file?"])
    depth = _flow_depth(text)
    if depth > MAX_DEPTH:
        raise PolicyError(source, [f"{source}:1:1: brackets nested {depth} levels deep (more than {MAX_DEPTH}); "
                                   "flatten it"])
    try:
        loader = _PolicyLoader(text)
    except yaml.YAMLError as e:
        raise PolicyError(source, [f"{source}:{_yaml_problem(e, text)}"]) from None
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        problems = _check_tree(root, loader)
        if problems:
            raise PolicyError(source, [f"{source}:{m.line + 1}:{m.column + 1}: {msg}" for m, msg in problems])
        return root, loader.construct_document(root)
    except _Refused as e:
        raise PolicyError(source, [f"{source}:{e.mark.line + 1}:{e.mark.column + 1}: {e.message}"]) from None
    except yaml.YAMLError as e:
        raise PolicyError(source, [f"{source}:{_yaml_problem(e, text)}"]) from None
    finally:
        loader.dispose()


def parse_policy(text: str, source: str = "<policy>", env: dict[str, str] | None = None) -> Policy:
    """Validate policy YAML text. Raises PolicyError with ``source:LINE:COL`` lines."""
    try:
        return _parse_policy(text, source, dict(os.environ) if env is None else env)
    except RecursionError:
        raise PolicyError(source, [f"{source}:1:1: the policy nests too deeply or an alias refers to itself "
                                   "(&x ... *x inside it); flatten it"]) from None


def _parse_policy(text: str, source: str, env: dict[str, str]) -> Policy:
    root, data = _compose(text, source)
    if not isinstance(data, dict) or root is None:
        raise PolicyError(source, [f"{source}:1:1: the policy must be a YAML mapping with tiers and bands"])
    nodes = _locate(root)
    env_errs: list[tuple[tuple[Any, ...], str]] = []
    secrets: set[str] = set()
    data = _walk_env(data, env, (), env_errs, secrets)
    redact = Redactor(secrets | _string_secrets(data))
    if env_errs:
        raise PolicyError(source, [f"{source}:{_position(nodes, loc)}: {_fmt_loc(loc)}: {m}" for loc, m in env_errs])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        problems: list[str] = []
        for err in e.errors(include_url=False):
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, _CrossCheckError):
                for loc, m in ctx_err.problems:
                    problems.append(redact(f"{source}:{_position(nodes, loc)}: {_fmt_loc(loc)}: {m}"))
                continue
            loc = tuple(err["loc"])
            key = err["type"] == "extra_forbidden"
            problems.append(redact(f"{source}:{_position(nodes, loc, key)}: {_fmt_loc(loc)}: {_hint(err)}"))
        raise PolicyError(source, problems) from None
    policy._env_secrets = frozenset(secrets)
    file_problems = _file_problems(policy)
    if file_problems:
        raise PolicyError(source, [redact(f"{source}:{_position(nodes, loc)}: {_fmt_loc(loc)}: {m}")
                                   for loc, m in file_problems])
    return policy


def _file_problems(policy: Policy) -> list[tuple[tuple[Any, ...], str]]:
    """Files the policy appends to that could not be written, or would block (a FIFO, a directory, a device):
    the trace file (file exporter) and the outcomes file."""
    from effagent.files import writable_problem

    out: list[tuple[tuple[Any, ...], str]] = []
    tel = policy.telemetry
    if tel.enabled and tel.exporter == "file":
        p = Path(tel.path)  # and the metrics file beside it (effagent.telemetry.exporters.metrics_path)
        for path in (tel.path, str(p.with_name(p.stem + ".metrics" + (p.suffix or ".jsonl")))):
            why = writable_problem(path)
            if why:
                out.append((("telemetry", "path"), f"{why}; give a regular file's path (or exporter: none)"))
                break
    if policy.learning.outcomes:
        why = writable_problem(policy.learning.outcomes)
        if why:
            out.append((("learning", "outcomes"), f"{why}; give a regular file's path"))
    return out


def load_policy(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Policy:
    """Read and validate a policy file. A relative model ``path`` of a ``learned`` estimator is read from the
    policy file's folder (where ``effagent calibrate --write`` puts the policy next to its model)."""
    from effagent.files import InputFileError, read_text

    p = Path(path)
    try:
        text = read_text(p, "policy file", MAX_POLICY_BYTES)
    except InputFileError as e:
        msg = str(e)  # "PATH: what" or "PATH:LINE:COL: what"
        rest = msg[len(str(p)) + 1:] if msg.startswith(f"{p}:") else " " + msg
        if not re.match(r"\d+:\d+: ", rest):
            rest = "1:1:" + rest
        raise PolicyError(str(p), [f"{p}:{rest}"]) from None
    policy = parse_policy(text, source=str(p), env=env)
    refs = policy.difficulty.estimators
    if not any(r.path and not Path(r.path).is_absolute() for r in refs):
        return policy
    here = p.resolve().parent
    refs = [r.model_copy(update={"path": str(here / r.path)}) if r.path and not Path(r.path).is_absolute() else r
            for r in refs]
    return policy.model_copy(update={"difficulty": policy.difficulty.model_copy(update={"estimators": refs})})


def policy_json_schema() -> str:
    return json.dumps(Policy.model_json_schema(), indent=2)

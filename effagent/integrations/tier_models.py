"""The chat model of each tier, for the LangChain/LangGraph integrations.

```python
from effagent.integrations.tier_models import models_for, reasoning_counter_for

mw = EfficiencyMiddleware(policy, models=models_for(policy), reasoning_counter=reasoning_counter_for(policy))
```

``models_for`` gives each tier a ``ChatLiteLLM`` (litellm speaks to vLLM, OpenAI-compatible servers and hosted
APIs with one interface), except tiers whose policy says ``thinking.budget_param: budget_forcing``: those get
:class:`BudgetForcingChatModel`, which enforces the thinking budget client-side
(see :mod:`effagent.llm.budget_forcing`). ``check_models`` and ``default_reasoning_counter`` are how the adapters
set up their tiers' models: these defaults, or the models a user passed (one for every tier).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from effagent.errors import EffagentError
from effagent.llm.budget_forcing import Mode, budget_forced_complete
from effagent.llm.client import Completion, complete
from effagent.llm.tokens import reasoning_counter_for
from effagent.policy import Policy, Tier
from effagent.request import FORCED_BUDGET_ARG
from effagent.step import ReasoningCounter

__all__ = ["BudgetForcingChatModel", "chat_litellm_for", "check_models", "default_reasoning_counter", "models_for",
           "reasoning_counter_for"]


def _tool_calls(completion: Completion) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tool_calls, invalid_tool_calls) in LangChain's shape."""
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for raw in completion.tool_calls:
        fn = raw.get("function") or {}
        name, args_text, call_id = fn.get("name"), fn.get("arguments") or "{}", raw.get("id")
        try:
            args = json.loads(args_text) if isinstance(args_text, str) else dict(args_text)
            if not isinstance(args, dict):
                raise ValueError("arguments are not an object")
            good.append({"name": name or "", "args": args, "id": call_id, "type": "tool_call"})
        except (ValueError, TypeError) as err:
            bad.append({"name": name, "args": args_text if isinstance(args_text, str) else str(args_text),
                        "id": call_id, "error": str(err), "type": "invalid_tool_call"})
    return good, bad


def to_ai_message(completion: Completion, extra_metadata: Mapping[str, Any] | None = None) -> AIMessage:
    """An AIMessage as ChatLiteLLM would build it: reasoning in ``additional_kwargs``, usage in
    ``usage_metadata`` (a reasoning count only when the server reported a trustworthy one)."""
    usage: dict[str, Any] = {"input_tokens": completion.input_tokens, "output_tokens": completion.output_tokens,
                             "total_tokens": completion.input_tokens + completion.output_tokens}
    if completion.reasoning_tokens:
        usage["output_token_details"] = {"reasoning": completion.reasoning_tokens}
    if completion.cache_read_tokens or completion.cache_write_tokens:
        usage["input_token_details"] = {"cache_read": completion.cache_read_tokens,
                                        "cache_creation": completion.cache_write_tokens}
    tool_calls, invalid = _tool_calls(completion)
    additional = {"reasoning_content": completion.reasoning} if completion.reasoning else {}
    meta = {"model_name": completion.model, "finish_reason": completion.finish_reason, **(extra_metadata or {})}
    return AIMessage(content=completion.content, additional_kwargs=additional, tool_calls=tool_calls,
                     invalid_tool_calls=invalid, usage_metadata=usage, response_metadata=meta)  # type: ignore[arg-type]


def _thinking_on(tier: Tier, settings: Mapping[str, Any]) -> bool:
    ctl = tier.thinking
    if ctl.control == "chat_template_kwargs":
        ctk = (settings.get("extra_body") or {}).get("chat_template_kwargs") or {}
        return bool(ctk.get("enable_thinking"))
    if ctl.control == "reasoning_effort":
        effort = settings.get("reasoning_effort")
        return effort is not None and effort != ctl.effort_off
    return False


class BudgetForcingChatModel(BaseChatModel):
    """A tier's chat model that bounds thinking client-side (budget forcing) when the server cannot.

    Call kwargs are a :class:`effagent.request.TierRequest`'s settings: ``max_tokens``, ``extra_body``
    (``chat_template_kwargs``) or ``reasoning_effort``, and the budget as ``thinking_budget`` (this model's own
    argument; it never reaches the server). With thinking on and a budget, the call is
    :func:`effagent.llm.budget_forcing.budget_forced_complete` (one or two requests, usage
    summed); otherwise it is one plain request. Tools bound with ``bind_tools`` go to every request.
    """

    inner_tier: Tier
    temperature: float | None = None
    seed: int | None = None
    mode: Mode = "auto"

    @property
    def _llm_type(self) -> str:
        return "effagent-budget-forcing"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.inner_tier.model, "api_base": self.inner_tier.api_base, "mode": self.mode}

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], *,
                   tool_choice: str | dict[str, Any] | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None and tool_choice not in ("auto", "none", "required", "any"):
            tool_choice = {"type": "function", "function": {"name": tool_choice}} if isinstance(tool_choice, str) \
                else tool_choice
        if tool_choice == "any":
            tool_choice = "required"
        bound: dict[str, Any] = {"tools": formatted, **kwargs}
        if tool_choice is not None:
            bound["tool_choice"] = tool_choice
        return self.bind(**bound)

    def _settings(self, stop: list[str] | None, kwargs: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
        settings = dict(kwargs)
        budget = settings.pop(FORCED_BUDGET_ARG, None)
        settings.pop("seed", None)
        if self.temperature is not None:
            settings.setdefault("temperature", self.temperature)
        if stop:
            settings["stop"] = list(stop)
        settings.setdefault("max_tokens", self.inner_tier.max_tokens)
        return settings, budget

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        seed = kwargs.get("seed", self.seed)
        settings, budget = self._settings(stop, kwargs)
        msgs = convert_to_openai_messages(messages)
        tier = self.inner_tier
        if budget is not None and _thinking_on(tier, settings):
            forced = budget_forced_complete(tier, msgs, budget=budget, settings=settings, seed=seed, mode=self.mode)
            meta = {"effagent_budget_forcing": {
                "budget": budget, "forced": forced.forced, "continuation": forced.continuation,
                "calls": [{"input_tokens": c.input_tokens, "output_tokens": c.output_tokens,
                           "finish_reason": c.finish_reason} for c in forced.calls]}}
            message = to_ai_message(forced, meta)
        else:
            message = to_ai_message(complete(tier, msgs, settings=settings, seed=seed)[0])
        return ChatResult(generations=[ChatGeneration(message=message)],
                          llm_output={"model_name": tier.model, "token_usage": message.usage_metadata})


def chat_litellm_for(tier: Tier, **overrides: Any) -> BaseChatModel:
    """``ChatLiteLLM`` for a tier (``overrides`` e.g. ``temperature=0, model_kwargs={"seed": 7}``).

    It makes one request per call: the tier's retry rule (``retries``, ``max_retry_after_s``) is applied around
    it by the step procedure (:func:`effagent.llm.client.retried`), so neither ChatLiteLLM (whose ``max_retries``
    counts attempts) nor litellm and the OpenAI SDK under it (``max_retries``/``num_retries``) retry on their own.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map at run time
    import litellm
    from langchain_litellm import ChatLiteLLM

    litellm.suppress_debug_info = True  # no "Give Feedback" banners on every handled error
    kwargs: dict[str, Any] = {"model": tier.model, "request_timeout": tier.timeout_s, "max_retries": 1}
    if tier.api_base:
        kwargs["api_base"] = tier.api_base
    if tier.api_key is not None:
        kwargs["api_key"] = tier.api_key.get_secret_value()
    no_retries = {"max_retries": 0, "num_retries": 0}  # litellm's own and the OpenAI SDK's retries: off
    kwargs.update(overrides)
    kwargs["model_kwargs"] = {**no_retries, **(overrides.get("model_kwargs") or {})}
    return ChatLiteLLM(**kwargs)


def models_for(policy: Policy, **overrides: Any) -> dict[str, BaseChatModel]:
    """One chat model per tier: ChatLiteLLM, or BudgetForcingChatModel for ``budget_param: budget_forcing``.

    ``overrides`` go to every ChatLiteLLM; ``temperature`` and ``model_kwargs["seed"]`` also to the
    budget-forcing models.
    """
    seed = (overrides.get("model_kwargs") or {}).get("seed")
    out: dict[str, BaseChatModel] = {}
    for name, tier in policy.tiers.items():
        if tier.thinking.budget_param == "budget_forcing":
            out[name] = BudgetForcingChatModel(inner_tier=tier, temperature=overrides.get("temperature"), seed=seed)
        else:
            out[name] = chat_litellm_for(tier, **overrides)
    return out


def default_reasoning_counter(policy: Policy, models: Mapping[str, BaseChatModel] | None,
                              counter: ReasoningCounter | None) -> ReasoningCounter | None:
    """With the default (litellm) models, reasoning is counted with each tier's server tokenizer when the
    server reports no reasoning tokens; user-supplied models keep the counter they were given."""
    if counter is None and models is None:
        return reasoning_counter_for(policy)
    return counter


def check_models(policy: Policy, models: Mapping[str, BaseChatModel] | None) -> dict[str, BaseChatModel]:
    """The tiers' chat models: ``models_for(policy)`` when none are given, else the given ones, which must name every
    tier of the policy (an EffagentError says which are missing)."""
    if models is None:
        return models_for(policy)
    missing = sorted(set(policy.tiers) - set(models))
    if missing:
        raise EffagentError(f"no chat model given for tier(s) {missing}; pass models={{name: model}} for every "
                            f"tier in the policy ({', '.join(policy.tiers)})")
    return dict(models)

"""Default chat models for a policy's tiers: one ``ChatLiteLLM`` per tier (litellm speaks to vLLM,
OpenAI-compatible servers and hosted APIs with one interface)."""

from __future__ import annotations

import os

from langchain_core.language_models import BaseChatModel

from effagent.policy import Policy, Tier


def chat_model_for(tier: Tier) -> BaseChatModel:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map at run time
    import litellm
    from langchain_litellm import ChatLiteLLM

    litellm.suppress_debug_info = True  # no "Give Feedback" banners on every handled error

    kwargs: dict[str, object] = {"model": tier.model, "request_timeout": tier.timeout_s,
                                 "max_retries": tier.retries}
    if tier.api_base:
        kwargs["api_base"] = tier.api_base
    if tier.api_key is not None:
        kwargs["api_key"] = tier.api_key.get_secret_value()
    return ChatLiteLLM(**kwargs)


def tier_models(policy: Policy) -> dict[str, BaseChatModel]:
    return {name: chat_model_for(tier) for name, tier in policy.tiers.items()}

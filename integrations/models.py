"""Default chat models for a policy's tiers: ``ChatLiteLLM`` per tier (litellm speaks to vLLM, OpenAI-compatible
servers and hosted APIs with one interface), or the budget-forcing model where the policy asks for it."""

from .vllm import chat_litellm_for as chat_model_for
from .vllm import models_for as tier_models

__all__ = ["chat_model_for", "tier_models"]

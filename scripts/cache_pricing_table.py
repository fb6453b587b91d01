"""The before/after table in docs/providers.md: one cached agent step per provider, priced the old way (every prompt
token at the input rate) and the way effagent prices it now (litellm's own cost calculation on the usage).

    .venv/bin/python scripts/cache_pricing_table.py

Each usage body is in the provider's documented shape and goes through litellm's own transformation into its
``Usage``, as a real response would; nothing is fetched from the network.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from litellm.llms.anthropic.chat.transformation import AnthropicConfig
from litellm.llms.bedrock.chat.converse_transformation import AmazonConverseConfig
from litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini import VertexGeminiConfig

from effagent.policy import Tier
from effagent.telemetry.pricing import call_cost

# an agent's 8th step: ~21k tokens of conversation re-sent, 20k of it already in the provider's prompt cache,
# 1,000 new tokens (the last tool result) written to the cache where the provider bills writes, 400 out
STEPS = [
    ("anthropic/claude-sonnet-4-5", "Anthropic: 1,000 in + 20,000 cache read + 1,000 cache write, 400 out",
     AnthropicConfig().calculate_usage({"input_tokens": 1000, "cache_read_input_tokens": 20000,
                                        "cache_creation_input_tokens": 1000, "output_tokens": 400},
                                       reasoning_content=None)),
    ("bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
     "Bedrock Converse: inputTokens 1,000, cacheRead 20,000, cacheWrite 1,000, 400 out",
     AmazonConverseConfig().transform_usage({"inputTokens": 1000, "outputTokens": 400, "totalTokens": 22400,
                                             "cacheReadInputTokens": 20000, "cacheWriteInputTokens": 1000})),
    ("openai/gpt-5-mini", "OpenAI: prompt 22,000 (cached_tokens 20,480), 400 out (256 reasoning)",
     litellm.Usage(prompt_tokens=22000, completion_tokens=400, total_tokens=22400,
                   prompt_tokens_details={"cached_tokens": 20480},
                   completion_tokens_details={"reasoning_tokens": 256})),
    ("gemini/gemini-2.5-flash", "Gemini: promptTokenCount 22,000 (cachedContentTokenCount 20,000), 150 + 250 thoughts",
     VertexGeminiConfig._calculate_usage({"usageMetadata": {
         "promptTokenCount": 22000, "cachedContentTokenCount": 20000, "candidatesTokenCount": 150,
         "thoughtsTokenCount": 250, "totalTokenCount": 22400}})),
]


def main() -> None:
    print("| model | the step's usage | before: all input at the input rate | now: effagent = litellm | "
          "before / now |")
    print("|---|---|---:|---:|---:|")
    for model, what, usage in STEPS:
        tier = Tier(model=model)
        reasoning = (usage.completion_tokens_details.reasoning_tokens or 0) if usage.completion_tokens_details else 0
        # before: the table's base rates, every prompt token at the input rate (what effagent charged until now)
        entry = litellm.model_cost.get(model) or litellm.model_cost[model.split("/", 1)[1]]
        base_in, base_out = entry["input_cost_per_token"] * 1e6, entry["output_cost_per_token"] * 1e6
        before = (usage.prompt_tokens * base_in + usage.completion_tokens * base_out) / 1e6
        cached = usage.prompt_tokens_details
        now = call_cost(tier, usage.prompt_tokens, usage.completion_tokens,
                        cache_read_tokens=(cached.cached_tokens or 0) if cached else 0,
                        cache_write_tokens=getattr(usage, "cache_creation_input_tokens", None) or 0,
                        reasoning_tokens=reasoning).total_usd
        reference = litellm.completion_cost(completion_response=litellm.ModelResponse(
            model=model, usage=usage, choices=[{"message": {"role": "assistant", "content": "ok"}}]), model=model)
        assert abs(now - reference) < 1e-9, (model, now, reference)
        print(f"| `{model}` | {what} | ${before:.4f} | ${now:.4f} | {before / now:.2f}x |")


if __name__ == "__main__":
    main()

"""request.encode for each thinking control, control: auto, prices from litellm's table, and the validation
errors (PATH:LINE:COL) for what a provider refuses."""

from __future__ import annotations

import pytest

from effagent import policies
from effagent.decide import decide
from effagent.errors import PolicyError
from effagent.ledger.base import LedgerState
from effagent.policy import Policy, Tier, auto_control, parse_policy
from effagent.records import Difficulty
from effagent.request import answer_settings, encode, max_tokens_sent, probe_settings


def one_tier(tier: str, band: str = "thinking: true, thinking_budget: 2048") -> Policy:
    return parse_policy(f"""
tiers:
  t: {tier}
bands:
  - {{name: all, min: 0.0, max: 1.0, tier: t, {band}}}
""", source="p.yaml", env={})


def request_for(policy: Policy, score: float = 0.5):  # type: ignore[no-untyped-def]
    d = decide(policy, Difficulty(score=score), LedgerState())
    return encode(d, d.tier, policy.tier(d.tier))


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as e:
        parse_policy(text, source="p.yaml", env={})
    return e.value.problems


@pytest.mark.parametrize(("model", "kind"), [
    ("anthropic/claude-sonnet-4-5", "anthropic"),
    ("bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic"),
    ("vertex_ai/claude-sonnet-4-5@20250929", "anthropic"),
    ("gemini/gemini-2.5-flash", "gemini"),
    ("vertex_ai/gemini-2.5-pro", "gemini"),
    ("gemini/gemini-3-pro-preview", "gemini_levels"),
    ("vertex_ai/gemini-3-flash-preview", "gemini_levels"),
    ("openai/o4-mini", "openai_effort"),
    ("openai/gpt-5-mini", "openai_effort"),
    ("gpt-5", "openai_effort"),
    ("hosted_vllm/Qwen/Qwen3-8B", "chat_template_kwargs"),
    ("openai/gpt-4o", "none"),
    ("bedrock/amazon.nova-pro-v1:0", "none"),
])
def test_auto_picks_the_control_from_the_model_string(model: str, kind: str) -> None:
    assert auto_control(model) == kind
    assert Tier(model=model, price={"input_per_mtok": 1, "output_per_mtok": 1},
                thinking={"control": "auto"}).thinking.control == kind


# -- Anthropic --------------------------------------------------------------------------------------------------
CLAUDE = "{model: anthropic/claude-sonnet-4-5, max_tokens: 8192, thinking: {control: anthropic}}"


def test_claude_budget_below_max_tokens_is_sent_as_is() -> None:
    req = request_for(one_tier(CLAUDE, "thinking: true, thinking_budget: 2048, max_tokens: 4096"))
    assert req.settings == {"max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 2048}}
    assert req.enforcement == "server" and req.notes == ()


def test_claude_budget_over_max_tokens_raises_max_tokens_up_to_the_tier_cap() -> None:
    req = request_for(one_tier(CLAUDE, "thinking: true, thinking_budget: 4096, max_tokens: 1024"))
    assert req.settings["max_tokens"] == 5120 and req.thinking_budget == 4096
    assert "max_tokens raised from 1024 to 5120" in req.notes[0]
    capped = request_for(one_tier(CLAUDE.replace("8192", "4096"), "thinking: true, thinking_budget: 4096"))
    assert capped.settings == {"max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 4095}}
    assert any("lowered to 4095" in n for n in capped.notes)


def test_claude_lower_budget_rule_keeps_max_tokens() -> None:
    tier = CLAUDE.replace("control: anthropic", "control: anthropic, budget_over_max_tokens: lower_budget")
    req = request_for(one_tier(tier, "thinking: true, thinking_budget: 4096, max_tokens: 2000"))
    assert req.settings == {"max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1999}}
    too_small = request_for(one_tier(tier, "thinking: true, thinking_budget: 4096, max_tokens: 1000"))
    assert not too_small.thinking and "thinking" not in too_small.settings
    assert "thinking off" in too_small.notes[-1]


def test_claude_unbounded_thinking_fills_max_tokens_and_off_sends_nothing() -> None:
    req = request_for(one_tier(CLAUDE, "thinking: true, max_tokens: 3000"))
    assert req.settings["thinking"] == {"type": "enabled", "budget_tokens": 2999}
    off = request_for(one_tier(CLAUDE, "thinking: false"))
    assert off.settings == {"max_tokens": 8192}
    assert probe_settings(one_tier(CLAUDE).tier("t"), 8) == {"max_tokens": 8, "temperature": 0.0}


def test_claude_budget_cut_at_run_time_below_the_floor_is_raised_to_it() -> None:
    policy = one_tier(CLAUDE, "thinking: true, thinking_budget: 2048")
    d = decide(policy, Difficulty(score=0.5), LedgerState()).model_copy(update={"thinking_budget": 300})
    req = encode(d, "t", policy.tier("t"))
    assert req.thinking_budget == 1024 and "raised to Claude's least" in req.notes[0]


def test_answer_continuation_drops_the_thinking_param() -> None:
    req = request_for(one_tier(CLAUDE))
    top, extra = answer_settings({**req.settings, "temperature": 1.0}, 64)
    assert top == {"temperature": 1.0, "max_tokens": 64} and extra == {}


# -- Gemini -----------------------------------------------------------------------------------------------------
def test_gemini_25_budget_off_and_dynamic() -> None:
    flash = "{model: gemini/gemini-2.5-flash, max_tokens: 8192, thinking: {control: auto}}"
    assert request_for(one_tier(flash)).settings["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert request_for(one_tier(flash, "thinking: false")).settings["thinking"] == {"type": "disabled",
                                                                                    "budget_tokens": 0}
    assert request_for(one_tier(flash, "thinking: true")).settings["thinking"]["budget_tokens"] == -1


def test_gemini_25_pro_cannot_stop_thinking() -> None:
    pro = "{model: gemini/gemini-2.5-pro, max_tokens: 8192, thinking: {control: auto}}"
    off = request_for(one_tier(pro, "thinking: false"))
    assert off.settings["thinking"] == {"type": "enabled", "budget_tokens": 128}
    assert "cannot stop thinking" in off.notes[0]


def test_gemini_3_and_openai_map_a_budget_to_a_level() -> None:
    for model in ("gemini/gemini-3.1-pro-preview", "openai/o4-mini"):
        tier = f"{{model: {model}, max_tokens: 8192, thinking: {{control: auto}}}}"
        for budget, level in ((512, "low"), (1024, "low"), (2000, "medium"), (4096, "high"), (30000, "high")):
            req = request_for(one_tier(tier, f"thinking: true, thinking_budget: {budget}"))
            assert req.settings["reasoning_effort"] == level, (model, budget)
            assert req.enforcement == "none"
    o4 = "{model: openai/o4-mini, thinking: {control: auto}}"
    assert request_for(one_tier(o4, "thinking: false")).settings["reasoning_effort"] == "low"  # o-series: no off
    custom = ("{model: openai/gpt-5-mini, thinking: {control: auto, "
              "effort_levels: {minimal: 128, low: 1024, high: 8192}}}")
    assert request_for(one_tier(custom, "thinking: true, thinking_budget: 100")).settings["reasoning_effort"] \
        == "minimal"
    assert request_for(one_tier(custom, "thinking: true, thinking_budget: 5000")).settings["reasoning_effort"] \
        == "high"
    assert request_for(one_tier(custom, "thinking: false")).settings["reasoning_effort"] == "minimal"  # no none


# -- what validate rejects ----------------------------------------------------------------------------------------
def test_a_500_token_budget_on_a_claude_tier_is_rejected_with_its_line() -> None:
    found = problems("""tiers:
  claude:
    model: anthropic/claude-sonnet-4-5
    max_tokens: 8192
    thinking: {control: auto}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: claude, thinking: true, thinking_budget: 500}
""")
    assert len(found) == 1
    assert found[0].startswith("p.yaml:7:")
    assert "bands.0.thinking_budget" in found[0] and "below Claude's least (1,024)" in found[0]
    assert "set it to 1024 or more" in found[0]


def test_a_budget_on_a_tier_that_cannot_think_is_rejected() -> None:
    found = problems("""tiers:
  plain: {model: openai/gpt-4o, thinking: {control: auto}}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: plain, thinking: true, thinking_budget: 1024}
""")
    assert found[0].startswith("p.yaml:4:") and "cannot think" in found[0]


def test_provider_refusals_each_get_a_located_problem() -> None:
    found = problems("""tiers:
  claude:
    model: anthropic/claude-sonnet-4-5
    max_tokens: 1024
    thinking: {control: auto, max_budget: 512}
  gem:
    model: gemini/gemini-2.5-pro
    thinking: {control: auto, max_budget: 50000, budget_param: budget_forcing}
bands:
  - {name: a, min: 0.0, max: 0.5, tier: claude, thinking: true, samples: 3}
  - {name: b, min: 0.5, max: 1.0, tier: gem, thinking: true, thinking_budget: 64, early_exit: {chunk: 32}}
""")
    text = "\n".join(found)
    assert "p.yaml:5:" in text and "tiers.claude.thinking.max_budget" in text
    assert "tiers.gem.thinking.max_budget" in text and "at most 32,768" in text
    assert "tiers.gem.thinking.budget_param" in text and "budget forcing" in text
    assert "p.yaml:10:" in text and "bands.0.thinking" in text and "max_tokens 1024" in text
    assert "bands.0.consistency.temperature" in text and "temperature 1" in text
    assert "p.yaml:11:" in text and "bands.1.thinking_budget" in text and "128 to 32,768" in text
    assert "bands.1.early_exit" in text


def test_hosted_tier_without_a_price_or_a_known_model_is_rejected() -> None:
    found = problems("""tiers:
  mystery: {model: anthropic/claude-nonexistent-9}
bands:
  - {name: all, min: 0.0, max: 1.0, tier: mystery}
""")
    assert found[0].startswith("p.yaml:2:") and "tiers.mystery.model" in found[0]
    assert "add price:" in found[0]


def test_prices_come_from_litellm_s_table_when_omitted() -> None:
    tier = one_tier("{model: anthropic/claude-sonnet-4-5}", "thinking: false").tier("t")
    assert (tier.price.input_per_mtok, tier.price.output_per_mtok, tier.price_source) == (3.0, 15.0, "litellm")
    given = one_tier("{model: anthropic/claude-sonnet-4-5, price: {input_per_mtok: 1, output_per_mtok: 2}}",
                     "thinking: false").tier("t")
    assert (given.price.output_per_mtok, given.price_source) == (2.0, "policy")
    converse = one_tier("{model: 'bedrock/converse/us.anthropic.claude-sonnet-4-5-20250929-v1:0'}",
                        "thinking: false").tier("t")
    assert (converse.price.input_per_mtok, converse.price.output_per_mtok) == (3.3, 16.5)
    # self-hosted: never priced from the table (a local gpt-4o is not OpenAI's), $0 without a price
    local = one_tier("{model: hosted_vllm/gpt-4o, api_base: 'http://127.0.0.1:8000/v1'}", "thinking: false")
    assert local.tier("t").price.output_per_mtok == 0
    proxied = one_tier("{model: openai/my-finetune, api_base: 'http://10.0.0.5:8000/v1'}", "thinking: false")
    assert proxied.tier("t").price.output_per_mtok == 0


def test_every_shipped_policy_validates_and_mixed_hosted_has_each_provider_kind() -> None:
    for name in policies.names():
        policies.load(name, env={})
    mixed = policies.load("mixed-hosted", env={})
    kinds = {t.thinking.control for t in mixed.tiers.values()}
    assert kinds == {"chat_template_kwargs", "gemini", "openai_effort", "anthropic"}


def test_claude_raise_stays_inside_the_budget_left() -> None:
    policy = parse_policy(f"""
tiers:
  t: {CLAUDE}
bands:
  - {{name: all, min: 0.0, max: 1.0, tier: t, thinking: true, thinking_budget: 2048, max_tokens: 1024}}
budgets:
  run: {{tokens: 100000}}
""", env={})
    from effagent.ledger.base import Usage

    spent = LedgerState(run=Usage(input_tokens=88000))  # 2000 tokens left for steps (10 % kept for the final answer)
    d = decide(policy, Difficulty(score=0.5), spent)
    req = encode(d, "t", policy.tier("t"))
    assert req.max_tokens <= 2000 and req.settings["thinking"]["budget_tokens"] < req.max_tokens
    assert any("capped by the tier and the budget left" in n for n in req.notes), req.notes


@pytest.mark.parametrize("band", ["thinking: true, thinking_budget: 4096, max_tokens: 1024",
                                  "thinking: true, thinking_budget: 2048, max_tokens: 4096", "thinking: false"])
@pytest.mark.parametrize("tier", [CLAUDE, CLAUDE.replace("control: anthropic", "control: anthropic, "
                                                         "budget_over_max_tokens: lower_budget"),
                                  "{model: gemini/gemini-2.5-flash, max_tokens: 8192, thinking: {control: gemini}}",
                                  "{model: hosted_vllm/Qwen/Qwen3-8B, api_base: 'http://h:8000/v1', max_tokens: 2048,"
                                  " price: {input_per_mtok: 0, output_per_mtok: 0},"
                                  " thinking: {control: chat_template_kwargs, max_budget: 4096}}"])
def test_the_reserved_max_tokens_is_what_the_request_sends(tier: str, band: str) -> None:
    """A step's reservation counts the max_tokens its call really asks for (a raise for Claude included)."""
    policy = one_tier(tier, band)
    d = decide(policy, Difficulty(score=0.5), LedgerState())
    assert max_tokens_sent(d, "t", policy.tier("t")) == encode(d, "t", policy.tier("t")).max_tokens

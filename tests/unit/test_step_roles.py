"""Per-step routing inside agent loops (issue 23): each step's role, read off the conversation, and the price of
switching tiers mid-run (the previous tier's prompt cache is forfeited).

What a user would notice if these broke: a step that only restates a tool result going to the expensive model;
a long agent conversation hopping to a "cheaper" tier and paying its whole prompt again at full price; a
decision that does not say why it stayed or switched.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.tools import tool

from effagent import Difficulty, LedgerState, Policy, Usage, decide
from effagent.difficulty.learned import LabeledPrompt, learn, role_shifts
from effagent.difficulty.rule import RuleEstimator
from effagent.errors import PolicyError
from effagent.governor import Governor
from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.ledger.memory import InMemoryLedger
from effagent.policy import load_policy
from effagent.records import Message, Step, ToolCall, step_role, summarize
from tests.fakes import FakeTierModel, call

# Opus-like large tier (its cache reads cost less than the small tier's plain input) and a Haiku-like small one
TIERS: dict[str, Any] = {
    "small": {"model": "fake/small", "price": {"input_per_mtok": 1.0, "output_per_mtok": 5.0}, "max_tokens": 400},
    "large": {"model": "fake/large", "price": {"input_per_mtok": 5.0, "output_per_mtok": 25.0,
                                               "cache_read_per_mtok": 0.5}, "max_tokens": 400},
}
BANDS = [{"name": "easy", "min": 0.0, "max": 0.5, "tier": "small"},
         {"name": "hard", "min": 0.5, "max": 1.0, "tier": "large"}]


def policy(switch: str = "cost", bands: list[dict[str, Any]] | None = None) -> Policy:
    return Policy.model_validate({"tiers": TIERS, "bands": bands or BANDS, "routing": {"switch": switch},
                                  "telemetry": {"enabled": False}})


U = Message(role="user", content="Look up the Orion vault, then tell me its access code.")
LOOKUP = ToolCall(name="lookup", args={"query": "Orion vault"})


def asked(*calls: ToolCall) -> Message:
    return Message(role="assistant", tool_calls=list(calls), tier="large")


def result(content: str, error: bool = False) -> Message:
    return Message(role="tool", content=content, is_error=error)


@pytest.mark.parametrize(("messages", "tools", "role"), [
    ([U], ["lookup"], "first"),
    ([Message(role="system", content="be brief"), U], ["lookup"], "first"),
    ([U, asked(LOOKUP), result("The Orion vault's access code is 7431.")], ["lookup"], "restate"),
    ([U, asked(LOOKUP), result("x" * 900)], ["lookup"], "after_tool"),  # a long result to read
    # the request sequences two rounds ("then ... then"): after the first, work is left
    ([Message(role="user", content="Look up A, then look up B, then add them."), asked(LOOKUP), result("A is 3")],
     ["lookup"], "after_tool"),
    # "then use the calculator" asks for more work; "then tell me" does not
    ([Message(role="user", content="Look up A, then use the calculator to double it."), asked(LOOKUP),
      result("A is 3")], ["lookup"], "after_tool"),
    # a round whose call failed does not count as work done
    ([Message(role="user", content="Compute 2 x 3, then use the calculator to halve it."), asked(LOOKUP),
      result("error: bad", error=True), asked(ToolCall(name="calculator", args={"e": "2*3"})), result("6")],
     ["lookup"], "after_tool"),
    ([U, asked(LOOKUP), result("error: nothing found", error=True)], ["lookup"], "tool_error"),
    ([U, asked(LOOKUP), result("no"), asked(LOOKUP), result("no")], ["lookup"], "retry"),  # the same call again
    ([U, Message(role="assistant", content="7431")], ["lookup"], "retry"),  # asked again after its own answer
    ([U, asked(LOOKUP), result("The code is 7431.")], [], "final"),  # no tools offered: the final answer
    ([U, asked(LOOKUP), result("The code is 7431."), Message(role="assistant", content="7431"),
      Message(role="user", content="And the Vesta club?")], ["lookup"], "first"),  # a new user turn
])
def test_each_step_gets_its_role_from_the_conversation(messages: list[Message], tools: list[str], role: str) -> None:
    step = Step(messages=messages, tools=tools)
    assert step.role == role
    assert step_role(summarize(messages), tools_offered=bool(tools)) == role


def test_the_rule_scores_a_restatement_easy_and_a_tool_error_hard() -> None:
    rule = RuleEstimator()
    base = [U, asked(LOOKUP)]
    first = rule.estimate(Step(messages=[U], tools=["lookup"]))
    restate = rule.estimate(Step(messages=[*base, result("The code is 7431.")], tools=["lookup"], index=1))
    error = rule.estimate(Step(messages=[*base, result("error: nothing found", error=True)], tools=["lookup"], index=1))
    assert restate.score < first.score < error.score
    assert restate.signals["role_shift"] < 0 < error.signals["role_shift"]
    # single-turn prompts (what `bench replay` scores) are not moved
    assert rule.estimate(Step.from_prompt(U.content)).signals["role_shift"] == 0.0


def test_a_band_can_route_by_role_and_its_role_condition_is_validated(tmp_path: Any) -> None:
    def load_policy_text(text: str) -> Policy:
        (tmp_path / "p.yaml").write_text(text)
        return load_policy(tmp_path / "p.yaml")

    bands = [*BANDS, {"name": "restate-small", "min": 0.0, "max": 1.0, "tier": "small", "roles": ["restate"]}]
    pol = policy(bands=bands)
    assert pol.band_for(0.9, "restate").name == "restate-small"
    assert pol.band_for(0.9, "after_tool").name == "hard"
    assert pol.band_for(0.9).name == "hard"
    d = decide(pol, Difficulty(0.9), LedgerState(), role="restate")
    assert (d.tier, d.band, d.role) == ("small", "restate-small", "restate")
    with pytest.raises(PolicyError, match="roles"):  # an unknown role names the ones there are
        load_policy_text("tiers: {s: {model: fake/s}}\nbands: [{name: a, tier: s},"
                         " {name: b, tier: s, roles: [after_tools]}]\n")
    with pytest.raises(PolicyError, match="overlaps band"):
        load_policy_text("tiers: {s: {model: fake/s}}\nbands: [{name: a, tier: s},"
                         " {name: b, tier: s, roles: [restate]}, {name: c, max: 0.5, tier: s, roles: [restate]}]\n")


def state(calls: int = 1, output_tokens: int = 60) -> LedgerState:
    return LedgerState(run=Usage(input_tokens=1000, output_tokens=output_tokens * calls, calls=calls), steps=calls)


def test_a_switch_that_forfeits_more_cache_than_it_saves_stays_and_says_why() -> None:
    d = decide(policy(), Difficulty(0.1), state(), role="restate", input_tokens=10_050, prev_tier="large",
               cached_tokens=10_000)
    assert d.tier == "large" and d.stayed_for_cache and d.band == "easy"
    # 10,000 cached tokens at small's $1 instead of large's $0.50 cache read; saves 50 fresh + 60 output tokens
    assert d.switch_cost == pytest.approx(10_000 * (1.0 - 0.5) / 1e6)
    assert d.switch_saving == pytest.approx((50 * (5.0 - 1.0) + 60 * (25.0 - 5.0)) / 1e6)
    assert "stayed on large for its cache" in d.reason and "forfeit $0.005000" in d.reason


def test_a_switch_that_saves_more_than_it_forfeits_is_made_and_says_why() -> None:
    d = decide(policy(), Difficulty(0.1), state(), role="restate", input_tokens=350, prev_tier="large",
               cached_tokens=300)
    assert d.tier == "small" and not d.stayed_for_cache
    assert d.switch_cost is not None and d.switch_saving is not None and d.switch_saving > d.switch_cost
    assert "switch large -> small: saves" in d.reason


def test_switch_modes_step_and_turn() -> None:
    args: dict[str, Any] = {"input_tokens": 10_050, "prev_tier": "large", "cached_tokens": 10_000}
    assert decide(policy("step"), Difficulty(0.1), state(), role="restate", **args).tier == "small"
    turn = decide(policy("turn"), Difficulty(0.1), state(), role="restate", **args)
    assert turn.tier == "large" and turn.stayed_for_cache and "rest of the user turn" in turn.reason
    assert decide(policy("turn"), Difficulty(0.1), state(), role="first", **args).tier == "small"
    # a dearer tier is for capability: made whatever the cache (the small tier's prompt is cheap to leave)
    up = decide(policy(), Difficulty(0.9), state(), role="tool_error", input_tokens=10_050, prev_tier="small",
                cached_tokens=10_000)
    assert up.tier == "large" and not up.stayed_for_cache and "for capability" in up.reason


# -- through the agent: fakes that report cached-token usage ------------------------------------------------------
class ByRole:
    """First step of a turn: hard (large tier); every later step: easy (the band says small)."""

    name = "by-role"

    def estimate(self, step: Step) -> Difficulty:
        return Difficulty(0.9 if step.role == "first" else 0.1, estimator=self.name)

    def score_prompts(self, prompts: list[str]) -> list[float]:
        return [0.9] * len(prompts)


def cached_reply(content: str = "", tool_calls: list[dict[str, Any]] | None = None, *, prompt: int,
                 cache_read: int, output: int = 60) -> AIMessage:
    return AIMessage(content=content, tool_calls=tool_calls or [], usage_metadata={  # type: ignore[arg-type]
        "input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output,
        "input_token_details": {"cache_read": cache_read}})


def run(system_chars: int) -> tuple[list[str], list[Any], InMemoryLedger]:
    @tool
    def lookup(query: str) -> str:
        """Look a fact up."""
        return "The Orion vault's access code is 7431."

    def responder(tier: str) -> Any:
        def answer(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
            prompt = sum(len(str(m.content)) for m in messages) // 4 + 50
            if not any(m.type == "tool" for m in messages):
                return cached_reply(tool_calls=[call("lookup", {"query": "Orion vault"})], prompt=prompt,
                                    cache_read=0)
            return cached_reply(f"The access code is 7431 ({tier}).", prompt=prompt, cache_read=prompt - 60)
        return answer

    models = {t: FakeTierModel(tier=t, responder=responder(t)) for t in ("small", "large")}
    ledger = InMemoryLedger()
    gov = Governor(policy(), ledger=ledger, estimator=ByRole())
    mw = EfficiencyMiddleware(gov.policy, models=models, governor=gov)
    agent = create_agent(mw.default_model, tools=[lookup], middleware=[mw])
    out = agent.invoke({"messages": [SystemMessage("Policy manual. " * (system_chars // 15)),
                                     {"role": "user", "content": U.content}]})
    metas = [m.response_metadata["effagent"] for m in out["messages"] if "effagent" in m.response_metadata]
    return [m["tier"] for m in metas], metas, ledger


def test_in_an_agent_a_long_cached_conversation_stays_and_a_short_one_switches() -> None:
    tiers, metas, ledger = run(system_chars=60_000)  # ~15,000 prompt tokens cached on the large tier
    assert tiers == ["large", "large"]
    assert metas[1]["role"] == "restate" and metas[1]["stayed_for_cache"] is True
    recs = ledger.records()
    assert recs[1].usage.cache_read_tokens > 10_000  # the fake reported the cache the stay kept
    assert "stayed on large for its cache" in recs[1].reason

    tiers, metas, ledger = run(system_chars=200)
    assert tiers == ["large", "small"]
    assert metas[1]["role"] == "restate" and "stayed_for_cache" not in metas[1]
    assert "switch large -> small: saves" in ledger.records()[1].reason


def test_learned_shifts_a_role_the_cheap_tier_does_well_on() -> None:
    rows = []
    for i in range(200):
        rows.append(LabeledPrompt(prompt=f"first step {i} of a task about topic {i % 7}", cheap_correct=i % 2 == 0,
                            strong_correct=True, role="first"))
        rows.append(LabeledPrompt(prompt=f"the tool said {i}; restate it for topic {i % 5}", cheap_correct=True,
                            strong_correct=True, role="restate"))
    model = learn(rows)
    assert model.role_shift["restate"] < 0 < model.role_shift["first"]
    assert role_shifts([None, None], __import__("numpy").array([1.0, 0.0]), 1.0) == {}

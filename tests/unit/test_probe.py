"""The logprob probe estimator with a fake completion function (no server): confidence -> score, usage,
endpoint failures, the probe request's settings, and the cascade helpers."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest

from effagent import parse_policy
from effagent.difficulty.probe import (
    SIG_ERROR,
    SIG_INPUT,
    SIG_MEAN_LOGPROB,
    SIG_MIN_LOGPROB,
    SIG_NO_LOGPROBS,
    SIG_OUTPUT,
    SIG_TOKENS,
    LogprobProbeEstimator,
    answer_confidence,
    confidence_from_logprobs,
    should_escalate,
    to_openai_messages,
)
from effagent.llm.client import Completion, EndpointRejected, EndpointUnavailable
from effagent.policy import Tier
from effagent.records import Message, Step, ToolCall
from effagent.request import probe_settings
from tests.fakes.completions import FakeComplete

SURE = [math.log(0.95)] * 8
UNSURE = [math.log(0.3), math.log(0.2), math.log(0.5), math.log(0.1)] * 2


def thinking_tier(**kw: Any) -> Tier:
    return Tier(model="hosted_vllm/smol", api_base="http://127.0.0.1:9/v1",
                thinking={"control": "chat_template_kwargs"}, **kw)


def test_confident_answers_score_lower_than_unsure_ones():
    fake = FakeComplete({"easy": SURE, "hard": UNSURE})
    est = LogprobProbeEstimator(thinking_tier(), complete=fake)
    easy, hard = est.estimate(Step.from_prompt("easy")), est.estimate(Step.from_prompt("hard"))
    assert 0.0 <= easy.score < hard.score <= 1.0
    assert easy.score == pytest.approx(0.05)
    assert hard.signals[SIG_MEAN_LOGPROB] < easy.signals[SIG_MEAN_LOGPROB]
    assert hard.signals[SIG_MIN_LOGPROB] == pytest.approx(math.log(0.1))
    assert hard.signals[SIG_TOKENS] == 8.0 and easy.estimator == "probe"
    assert est.score_prompts(["easy", "hard"]) == [pytest.approx(easy.score), pytest.approx(hard.score)]


@pytest.mark.parametrize("method", ["mean_prob", "geo_mean", "min_prob"])
def test_every_method_orders_sure_below_unsure(method):
    fake = FakeComplete({"easy": SURE, "hard": UNSURE})
    est = LogprobProbeEstimator(thinking_tier(), complete=fake, method=method)
    assert est.estimate(Step.from_prompt("easy")).score < est.estimate(Step.from_prompt("hard")).score


def test_usage_is_reported_in_signals_and_last_usage():
    fake = FakeComplete({"q": UNSURE}, input_tokens=33)
    est = LogprobProbeEstimator(thinking_tier(), complete=fake, max_tokens=4, tier_name="small")
    d = est.estimate(Step.from_prompt("q"))
    assert d.signals[SIG_INPUT] == 33.0 and d.signals[SIG_OUTPUT] == 4.0
    assert est.last_usage is not None
    assert (est.last_usage.tier, est.last_usage.input_tokens, est.last_usage.output_tokens) == ("small", 33, 4)
    est.estimate(Step.from_prompt("q"))
    assert (est.total_usage.input_tokens, est.total_usage.output_tokens) == (66, 8)


def test_endpoint_error_gives_the_neutral_score_and_does_not_raise(caplog):
    for err in (EndpointUnavailable("hosted_vllm/smol", "http://x/v1", "ConnectError", attempts=2),
                EndpointRejected("hosted_vllm/smol", "http://x/v1", "BadRequest", status=400)):
        est = LogprobProbeEstimator(thinking_tier(), complete=FakeComplete(error=err))
        with caplog.at_level(logging.WARNING, logger="effagent.difficulty.probe"):
            d = est.estimate(Step.from_prompt("anything"))
        assert d.score == 0.5 and d.signals[SIG_ERROR] == 1.0
        assert est.last_usage is None
        assert est.score_prompts(["a", "b"]) == [0.5, 0.5]
    assert "difficulty probe" in caplog.text


def test_other_errors_are_not_swallowed():
    est = LogprobProbeEstimator(thinking_tier(), complete=FakeComplete(error=RuntimeError("bug")))
    with pytest.raises(RuntimeError):
        est.estimate(Step.from_prompt("q"))


def test_missing_logprobs_give_the_neutral_score():
    est = LogprobProbeEstimator(thinking_tier(), complete=FakeComplete({"q": None}))
    d = est.estimate(Step.from_prompt("q"))
    assert d.score == 0.5 and d.signals[SIG_NO_LOGPROBS] == 1.0 and d.signals[SIG_INPUT] == 21.0


def test_thinking_is_switched_off_and_the_request_is_short_and_greedy():
    fake = FakeComplete()
    tier = thinking_tier(extra_body={"chat_template_kwargs": {"custom": 1}, "top_k": 5}, max_tokens=4)
    LogprobProbeEstimator(tier, complete=fake, max_tokens=8).estimate(Step.from_prompt("q"))
    [call] = fake.calls
    s = call["settings"]
    assert s["extra_body"]["chat_template_kwargs"] == {"custom": 1, "enable_thinking": False}
    assert s["extra_body"]["top_k"] == 5
    assert s["temperature"] == 0 and s["max_tokens"] == 4  # capped by the tier's own max_tokens
    assert call["logprobs"] == 0


def test_reasoning_effort_tier_is_probed_with_thinking_off_and_plain_tier_gets_no_thinking_keys():
    effort = Tier(model="openai/o", thinking={"control": "reasoning_effort", "effort_off": "minimal"})
    assert probe_settings(effort, 8) == {"max_tokens": 8, "temperature": 0.0, "reasoning_effort": "minimal"}
    assert probe_settings(Tier(model="openai/x"), 8) == {"max_tokens": 8, "temperature": 0.0}


def test_timeout_and_retries_can_be_overridden_for_the_probe():
    fake = FakeComplete()
    LogprobProbeEstimator(thinking_tier(), complete=fake, timeout_s=5, retries=0).estimate(Step.from_prompt("q"))
    assert fake.calls[0]["tier"].timeout_s == 5.0 and fake.calls[0]["tier"].retries == 0


def test_agent_conversation_becomes_plain_chat_messages():
    step = Step(messages=[
        Message(role="system", content="be brief"),
        Message(role="user", content="weather in Paris?"),
        Message(role="assistant", content="", tool_calls=[ToolCall(name="weather", args={"city": "Paris"})]),
        Message(role="tool", name="weather", content="rain", is_error=False),
        Message(role="tool", name="clock", content="timeout", is_error=True),
    ])
    msgs = to_openai_messages(step)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == '[called tools: weather({"city": "Paris"})]'
    assert msgs[3]["content"] == "[tool weather result]: rain\n\n[tool clock error]: timeout"


def test_long_conversations_keep_the_system_message_and_the_latest_turns():
    step = Step(messages=[Message(role="system", content="S"), Message(role="user", content="a" * 500),
                          Message(role="assistant", content="b" * 500), Message(role="user", content="c" * 300)])
    msgs = to_openai_messages(step, max_chars=700)
    assert [m["content"][0] for m in msgs] == ["S", "c"]
    [only] = to_openai_messages(Step.from_prompt("x" * 50 + "END"), max_chars=10)
    assert only["content"].endswith("END") and len(only["content"]) == 10


def test_an_empty_step_is_not_probed():
    fake = FakeComplete()
    d = LogprobProbeEstimator(thinking_tier(), complete=fake).estimate(Step())
    assert d.score == 0.5 and not fake.calls


def test_from_policy_probes_the_cheapest_tier_or_the_named_one(policy_text):
    policy = parse_policy(policy_text)
    fake = FakeComplete()
    est = LogprobProbeEstimator.from_policy(policy, complete=fake)
    assert est.tier_name == policy.cheapest_tier and est.tier == policy.tier(policy.cheapest_tier)
    other = next(n for n in policy.tiers if n != policy.cheapest_tier)
    est = LogprobProbeEstimator.from_policy(policy, {"tier": other, "max_tokens": 4}, complete=fake)
    assert est.tier_name == other and est.max_tokens == 4
    with pytest.raises(ValueError, match="unknown probe option"):
        LogprobProbeEstimator.from_policy(policy, {"tokens": 4}, complete=fake)


def test_answer_confidence_is_a_cascade_signal():
    sure = Completion(content="2", logprobs=SURE)
    unsure = Completion(content="17?", logprobs=UNSURE)
    assert answer_confidence(sure) == pytest.approx(0.95)
    assert answer_confidence(unsure) < answer_confidence(sure)
    assert not should_escalate(answer_confidence(sure), 0.6)
    assert should_escalate(answer_confidence(unsure), 0.6)
    worked = Completion(content="...", logprobs=UNSURE + [0.0, 0.0])
    assert answer_confidence(worked, last=2) == 1.0  # the final answer's tokens only
    assert answer_confidence(worked, method="min_prob") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="logprobs=0"):
        answer_confidence(Completion(content="no logprobs"))
    assert answer_confidence(Completion(content="no logprobs"), default=0.0) == 0.0


def test_confidence_from_logprobs_rejects_nonsense():
    with pytest.raises(ValueError):
        confidence_from_logprobs([])
    with pytest.raises(ValueError):
        confidence_from_logprobs([-1.0], method="median")  # type: ignore[arg-type]
    assert confidence_from_logprobs([float("nan"), 0.0]) == 1.0
    assert confidence_from_logprobs([-1.0, -100.0], k=1) == pytest.approx(math.exp(-1.0))

"""The logprob probe against the real local vLLM server (SmolLM2-135M on CPU: mechanics, and the measured
easy-vs-hard separation reported as it is)."""

from __future__ import annotations

import math
import socket
import statistics
from typing import Any

import pytest

from effagent.difficulty.probe import (
    SIG_CONFIDENCE,
    SIG_ERROR,
    SIG_INPUT,
    SIG_LATENCY,
    SIG_MEAN_LOGPROB,
    SIG_OUTPUT,
    SIG_TOKENS,
    LogprobProbeEstimator,
    answer_confidence,
    should_escalate,
)
from effagent.llm.client import Completion, complete
from effagent.policy import Tier
from effagent.records import Step

pytestmark = pytest.mark.vllm

EASY = [
    "Repeat the word 'yes'.",
    "What is 1+1? Answer with the number only.",
    "What is the capital of France? Answer with one word.",
]
HARD = [
    "A train leaves a station at 3:40 pm at 72 km/h; a second train leaves the same station at 4:15 pm at "
    "90 km/h on the same track. At what time does the second train catch the first, and how far from the station?",
    "Josh buys a house for $80,000 and puts in $50,000 in repairs. This increased the value of the house by 150%. "
    "How much profit did he make?",
    "A bag has 4 red, 5 blue and 6 green marbles. Two are drawn without replacement. What is the probability "
    "that they are different colours? Give the answer as a reduced fraction.",
]


@pytest.fixture(scope="module")
def tier(vllm_server) -> Tier:
    name = "smol" if "smol" in vllm_server.names else vllm_server.names[0]
    return Tier(model=f"hosted_vllm/{name}", api_base=vllm_server.base_url, timeout_s=120, retries=0,
                thinking={"control": "chat_template_kwargs"})


@pytest.fixture(scope="module")
def measured(tier) -> dict[str, list[Any]]:
    """One probe per prompt (8 tokens each), shared by the tests below."""
    est = LogprobProbeEstimator(tier, max_tokens=8, tier_name="small")
    out: dict[str, list[Any]] = {"easy": [], "hard": []}
    for label, prompts in (("easy", EASY), ("hard", HARD)):
        out[label] = [est.estimate(Step.from_prompt(p)) for p in prompts]
    return out


def test_the_probe_gets_real_logprobs_and_the_servers_usage(tier, vllm_server):
    seen: list[Completion] = []

    def spy(*args: Any, **kwargs: Any) -> list[Completion]:
        result = complete(*args, **kwargs)
        seen.extend(result)
        return result

    est = LogprobProbeEstimator(tier, max_tokens=6, complete=spy, tier_name="small")
    prompt = "What is 1+1? Answer with the number only."
    d = est.estimate(Step.from_prompt(prompt))
    [c] = seen
    assert c.logprobs is not None and 0 < len(c.logprobs) <= 6
    assert all(x <= 0.0 and math.isfinite(x) for x in c.logprobs)
    assert c.reasoning is None  # thinking was switched off
    assert 0.0 <= d.score <= 1.0 and d.score == pytest.approx(1.0 - d.signals[SIG_CONFIDENCE])
    assert d.signals[SIG_TOKENS] == len(c.logprobs)
    # the same request sent directly: the server's usage is what the probe reports
    body = {"model": tier.model.split("/", 1)[1], "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 6, "temperature": 0.0, "logprobs": True,
            "chat_template_kwargs": {"enable_thinking": False}}
    r = vllm_server.client.post(f"{vllm_server.base_url}/chat/completions", json=body)
    r.raise_for_status()
    usage = r.json()["usage"]
    assert d.signals[SIG_INPUT] == usage["prompt_tokens"] == c.input_tokens
    assert d.signals[SIG_OUTPUT] == usage["completion_tokens"] == c.output_tokens
    assert est.last_usage is not None and est.last_usage.input_tokens == usage["prompt_tokens"]
    assert r.json()["choices"][0]["message"]["content"] == c.content


def test_scores_on_easy_and_hard_prompts(measured):
    easy = [d.score for d in measured["easy"]]
    hard = [d.score for d in measured["hard"]]
    for d in measured["easy"] + measured["hard"]:
        assert 0.0 <= d.score <= 1.0 and SIG_ERROR not in d.signals
        assert d.signals[SIG_TOKENS] > 0 and d.signals[SIG_MEAN_LOGPROB] < 0.0
    assert len({round(s, 6) for s in easy + hard}) > 1  # the probe discriminates between prompts at all
    latency = [round(d.signals[SIG_LATENCY], 2) for d in measured["easy"] + measured["hard"]]
    print(f"probe scores: easy {[round(s, 3) for s in easy]} mean {statistics.mean(easy):.3f}; "
          f"hard {[round(s, 3) for s in hard]} mean {statistics.mean(hard):.3f}; latency_s {latency}")


TINY_MODEL = ("SmolLM2-135M opens multi-step problems with a fluent formula ('To solve this problem, we need to'), "
              "so its first tokens are more confident on hard prompts than on easy ones; expected to hold with a "
              "capable cheap tier")


@pytest.mark.xfail(strict=False, raises=AssertionError, reason=TINY_MODEL)
def test_hard_prompts_score_higher_than_easy_ones(measured):
    easy = statistics.mean(d.score for d in measured["easy"])
    hard = statistics.mean(d.score for d in measured["hard"])
    assert hard > easy, (easy, hard)


def test_answer_confidence_of_a_real_cheap_answer_is_a_cascade_signal(tier):
    off = {"chat_template_kwargs": {"enable_thinking": False}}
    settings = {"max_tokens": 16, "temperature": 0.0, "extra_body": off}
    [cheap] = complete(tier, [{"role": "user", "content": EASY[1]}], settings=settings, logprobs=0)
    conf = answer_confidence(cheap)
    assert 0.0 < conf <= 1.0
    assert should_escalate(conf, 1.01) and not should_escalate(conf, 0.0)
    assert answer_confidence(cheap, last=1) <= 1.0


def test_an_unreachable_endpoint_gives_the_neutral_score(tier):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = tier.model_copy(update={"api_base": f"http://127.0.0.1:{port}/v1"})
    d = LogprobProbeEstimator(dead, timeout_s=5, retries=0).estimate(Step.from_prompt("hello"))
    assert d.score == 0.5 and d.signals[SIG_ERROR] == 1.0
